"""Stage prune_magnitude: at each rate, each layer's smallest-magnitude weights are removed, then
optional masked fine-tuning (0 epochs by default, as in the reference)."""

from __future__ import annotations

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.methods import Retrainer, one_shot
from nncompress.params import FinetuneParams, MagnitudePruneParams, load_params, section
from nncompress.pruning import magnitude_prune
from nncompress.training import resolve_device


def main() -> None:
    args = sweep_stage.parse_args("magnitude")
    params = load_params(args.params)
    epochs = section(params, MagnitudePruneParams, "prune_magnitude").finetune_epochs
    opt = section(params, FinetuneParams, "finetune")
    device = resolve_device(opt.device, "finetune.device")  # only its optimiser: the epochs are ours
    sweep_stage.execute(
        "magnitude",
        args,
        params,
        lambda train, val: one_shot(magnitude_prune, Retrainer(train, val, opt, epochs, device)),
        finetune_epochs=epochs,
    )


if __name__ == "__main__":
    run_stage(main)
