"""The optimiser's options (nncompress.training): weight decay and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import random_split

from nncompress.model import MLP
from nncompress.training import fit, step_lr


def test_constant_schedule_is_the_learning_rate():
    assert [step_lr(0.1, "constant", s, 10) for s in (0, 5, 9)] == [0.1, 0.1, 0.1]


def test_cosine_schedule_falls_from_lr_to_zero():
    rates = [step_lr(0.2, "cosine", s, 100) for s in range(101)]
    assert rates[0] == 0.2
    assert rates[50] == pytest.approx(0.1)
    assert rates[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert step_lr(0.2, "cosine", 25, 100) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)))


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        step_lr(0.1, "step", 0, 10)


def trained(steps: int | None = None, **opt) -> dict[str, torch.Tensor]:
    data = random_split(torch.Generator().manual_seed(1), 64)
    torch.manual_seed(0)
    model = MLP(hidden_size=16)
    fit(model, data, data, epochs=3, batch_size=16, lr=0.3, momentum=0.9, shuffle=True, iterations=steps, **opt)
    return model.state_dict()


def test_the_options_change_training_and_default_to_plain_sgd():
    plain = trained()
    assert all(torch.equal(a, b) for a, b in zip(plain.values(), trained(weight_decay=0.0).values(), strict=True))
    for opt in ({"weight_decay": 1e-2}, {"schedule": "cosine"}):
        assert not torch.equal(trained(**opt)["fc1.weight"], plain["fc1.weight"])


def test_weight_decay_shrinks_the_weights():
    plain, decayed = trained(), trained(weight_decay=0.05)
    assert decayed["fc1.weight"].norm() < plain["fc1.weight"].norm()


def test_stopping_early_replays_the_scheduled_run():
    """Lottery rewinding trains `iterations` steps of the train stage's run: the weights after 5
    steps are those of the whole scheduled run at its 5th step."""
    data = random_split(torch.Generator().manual_seed(1), 64)
    torch.manual_seed(0)
    model = MLP(hidden_size=16)
    seen = {}

    def keep(step: int) -> None:
        if step == 5:
            seen.update({k: v.clone() for k, v in model.state_dict().items()})

    opt = {"epochs": 3, "batch_size": 16, "lr": 0.3, "momentum": 0.9, "shuffle": True, "schedule": "cosine"}
    fit(model, data, data, before_step=keep, **opt)
    short = trained(5, schedule="cosine")
    assert all(torch.equal(seen[k], v) for k, v in short.items())
