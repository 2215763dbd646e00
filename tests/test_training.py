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


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.9, 0.0), (0.5, 1e-3), (0.0, 0.0), (0.0, 5e-4)])
def test_sgd_is_torch_optim_sgd_bit_for_bit(momentum, weight_decay):
    """Per-step rates, a parameter without a gradient (skipped) and pruning masks that change during
    training (the same Parameter objects, new data): every weight as torch.optim.SGD leaves it."""
    from torch.nn.utils import prune

    from nncompress.training import SGD

    data = random_split(torch.Generator().manual_seed(2), 64)
    runs = []
    for ours in (True, False):
        torch.manual_seed(0)
        model = MLP(hidden_size=12, dropout=0.1)
        unused = torch.nn.Parameter(torch.ones(3))
        params = [*model.parameters(), unused]
        if ours:
            optimizer = SGD(params, momentum, weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=0.1, momentum=momentum, weight_decay=weight_decay)
        for step in range(12):
            if step in (3, 7):
                prune.l1_unstructured(model.fc1, "weight", amount=0.2 * step / 3)
            optimizer.zero_grad()
            images, labels = data[0][step * 4 : step * 4 + 8], data[1][step * 4 : step * 4 + 8]
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            lr = 0.1 / (1 + step)
            if ours:
                optimizer.step(lr)
            else:
                optimizer.param_groups[0]["lr"] = lr
                optimizer.step()
        runs.append(({k: v.clone() for k, v in model.state_dict().items()}, unused.detach().clone()))
    (ours_state, ours_unused), (torch_state, torch_unused) = runs
    assert ours_state.keys() == torch_state.keys()
    bits = torch.int32  # compared as bits: torch.equal takes -0.0 for 0.0
    assert all(torch.equal(ours_state[k].view(bits), torch_state[k].view(bits)) for k in ours_state)
    assert torch.equal(ours_unused.view(bits), torch_unused.view(bits))
