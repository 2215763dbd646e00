"""Stage prune_random: at each rate, a fresh copy of the trained model loses that fraction of
each layer's weights at random; repeated over several seeds; no retraining."""

from __future__ import annotations

from nncompress import sweep_stage
from nncompress.cli import run_stage
from nncompress.methods import one_shot
from nncompress.params import RandomPruneParams, load_params, section
from nncompress.pruning import random_prune


def main() -> None:
    args = sweep_stage.parse_args("random")
    params = load_params(args.params)
    own = section(params, RandomPruneParams, "prune_random")
    sweep_stage.execute("random", args, params, lambda train, val: one_shot(random_prune), seeds=own.seeds)


if __name__ == "__main__":
    run_stage(main)
