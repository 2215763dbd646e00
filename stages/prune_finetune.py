"""Stage prune_finetune: layer-wise magnitude pruning at each rate, then masked fine-tuning for the
shared budget (finetune.epochs); pruned weights stay zero."""

from __future__ import annotations

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.methods import Retrainer, one_shot
from nncompress.params import FinetuneParams, SeedsParams, load_params, section
from nncompress.pruning import magnitude_prune
from nncompress.training import resolve_device


def main() -> None:
    args = sweep_stage.parse_args("finetune")
    params = load_params(args.params)
    own = section(params, SeedsParams, "prune_finetune")
    opt = section(params, FinetuneParams, "finetune")
    device = resolve_device(opt.device, "finetune.device")
    sweep_stage.execute(
        "finetune",
        args,
        params,
        lambda train, val: one_shot(magnitude_prune, Retrainer(train, val, opt, opt.epochs, device)),
        seeds=own.seeds,
        finetune_epochs=opt.epochs,
    )


if __name__ == "__main__":
    run_stage(main)
