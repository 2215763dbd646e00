"""Stage prune_global: global magnitude pruning (one threshold across layers, so layers lose
different fractions) at each rate, then masked fine-tuning for the shared budget."""

from __future__ import annotations

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.methods import Retrainer, one_shot
from nncompress.params import FinetuneParams, SeedsParams, load_params, section
from nncompress.pruning import global_magnitude_prune
from nncompress.training import resolve_device


def main() -> None:
    args = sweep_stage.parse_args("global")
    params = load_params(args.params)
    own = section(params, SeedsParams, "prune_global")
    opt = section(params, FinetuneParams, "finetune")
    device = resolve_device(opt.device, "finetune.device")
    sweep_stage.execute(
        "global",
        args,
        params,
        lambda train, val: one_shot(global_magnitude_prune, Retrainer(train, val, opt, opt.epochs, device)),
        seeds=own.seeds,
        finetune_epochs=opt.epochs,
    )


if __name__ == "__main__":
    run_stage(main)
