"""Stage prune_magnitude: at each rate, each layer's smallest-magnitude weights are removed, then
optional masked fine-tuning (pruned weights stay zero)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.data import Split
from nncompress.params import FinetuneParams, MagnitudePruneParams, load_params, section
from nncompress.pruning import magnitude_prune
from nncompress.training import fit


def main() -> None:
    args = sweep_stage.parse_args("magnitude")
    params = load_params(args.params)
    own = section(params, MagnitudePruneParams, "prune_magnitude")
    opt = section(params, FinetuneParams, "finetune")

    def make_finetune(train: Split, val: Split) -> Callable[[nn.Module], None]:
        def finetune(model: nn.Module) -> None:
            fit(
                model,
                train,
                val,
                epochs=own.finetune_epochs,
                batch_size=opt.batch_size,
                lr=opt.lr,
                momentum=opt.momentum,
                shuffle=opt.shuffle,
                seed=opt.seed,
                desc="fine-tune",
            )

        return finetune

    sweep_stage.execute(
        "magnitude",
        args,
        params,
        magnitude_prune,
        finetune_epochs=own.finetune_epochs,
        make_finetune=make_finetune,
    )


if __name__ == "__main__":
    run_stage(main)
