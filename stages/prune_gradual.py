"""Stage prune_gradual: gradual magnitude pruning (Zhu & Gupta 2017) during fine-tuning: sparsity
rises from 0 to the rate along a cubic schedule, then the rest of the budget recovers accuracy."""

from __future__ import annotations

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.methods import Retrainer, gradual, magnitude_by_scope
from nncompress.params import FinetuneParams, GradualPruneParams, load_params, section
from nncompress.training import resolve_device


def main() -> None:
    args = sweep_stage.parse_args("gradual")
    params = load_params(args.params)
    own = section(params, GradualPruneParams, "prune_gradual")
    opt = section(params, FinetuneParams, "finetune")
    device = resolve_device(opt.device, "finetune.device")
    prune_fn = magnitude_by_scope(own.scope)
    sweep_stage.execute(
        "gradual",
        args,
        params,
        lambda train, val: gradual(prune_fn, Retrainer(train, val, opt, opt.epochs, device), own.steps, own.ramp),
        seeds=own.seeds,
        finetune_epochs=opt.epochs,
    )


if __name__ == "__main__":
    run_stage(main)
