"""Stage prune_structured: at each rate, that fraction of hidden neurons is removed (rows of fc1,
columns of fc2), the model shrinks to a smaller dense MLP, which is fine-tuned for the budget."""

from __future__ import annotations

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.methods import Retrainer, structured
from nncompress.params import FinetuneParams, SeedsParams, load_params, section
from nncompress.training import resolve_device


def main() -> None:
    args = sweep_stage.parse_args("structured")
    params = load_params(args.params)
    own = section(params, SeedsParams, "prune_structured")
    opt = section(params, FinetuneParams, "finetune")
    device = resolve_device(opt.device, "finetune.device")
    sweep_stage.execute(
        "structured",
        args,
        params,
        lambda train, val: structured(Retrainer(train, val, opt, opt.epochs, device)),
        seeds=own.seeds,
        finetune_epochs=opt.epochs,
    )


if __name__ == "__main__":
    run_stage(main)
