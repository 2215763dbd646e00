"""Jobs side by side (nncompress.lockstep): each job's result is the one it gets alone, its torch RNG
its own, its retraining batched with the others'; the first error, in a job or in the batched
training, reaches the caller at once, with every other job's thread ended."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch
from conftest import fresh, plain_sgd, random_split, unbatched_retrainer

from nncompress import lockstep
from nncompress.batched import Lane
from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, unstructured
from nncompress.prune.retrain import Retrainer

random_prune = unstructured("random", "layer")


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return {"train": random_split(g, 64), "val": random_split(g, 16)}


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(3)
    return {k: v.clone() for k, v in MLP(hidden_size=16).state_dict().items()}


class Counting(Retrainer):
    """Records how many models each train_many call got."""

    calls: list[int]

    def train_many(self, lanes: list[Lane]) -> None:
        self.calls.append(len(lanes))
        super().train_many(lanes)


def test_jobs_get_their_results_alone_with_retraining_batched(data, state):
    opt = plain_sgd(1, lr=0.3, batch_size=16)
    retrain = unbatched_retrainer(data["train"], data["val"], opt, 2)

    def job(rate: float) -> tuple[dict, float]:
        torch.manual_seed(int(rate * 100))
        model = fresh(state)
        random_prune(model, rate)  # draws from torch's RNG, before and after retraining
        retrain(model)
        random_prune(model, rate / 2)
        retrain(model)
        make_permanent(model)  # the weights it computes with (behind the masks, values may differ)
        return {k: v.clone() for k, v in model.state_dict().items()}, torch.rand(()).item()

    rates = [0.2, 0.5, 0.7, 0.9]
    alone = [job(rate) for rate in rates]  # each job alone, trained by `fit`
    retrain = Counting(data["train"], data["val"], opt, 2)
    retrain.calls = []
    together = lockstep.run(job, rates)
    assert retrain.calls == [4, 4]  # each round of retraining: one batched call for every job
    for (a_state, a_draw), (t_state, t_draw) in zip(alone, together, strict=True):
        assert a_draw == t_draw
        assert a_state.keys() == t_state.keys()
        assert all(torch.equal(a_state[k], t_state[k]) for k in a_state)


def test_jobs_that_do_not_retrain_run_in_order():
    seen = []

    def job(i: int) -> int:
        seen.append(i)
        return i * i

    assert lockstep.run(job, [3, 1, 2]) == [9, 1, 4]
    assert seen == [3, 1, 2]
    assert not lockstep.active()


def test_a_failing_job_raises_in_the_caller(data, state):
    def job(i: int) -> int:
        if i == 1:
            raise ValueError("job 1 failed")
        return i

    with pytest.raises(ValueError, match="job 1 failed"):
        lockstep.run(job, [0, 1, 2])


# --- errors stop the run: raised at once, every other job's thread woken and ended, no hang ------


class Recording:
    """A trainer for lockstep.retrain that records its calls and may raise `error` from train_many."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[int] = []

    def train_many(self, lanes: list[Lane]) -> None:
        self.calls.append(len(lanes))
        if self.error is not None:
            raise self.error


def within(seconds: float, fn: Callable[[], object]) -> BaseException | None:
    """What `fn` raises (None if it returns), run in a thread that must end within `seconds` (a
    hang fails the test rather than blocking it)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"lockstep.run still running after {seconds} s"
    return raised[0] if raised else None


def job_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, lockstep._Job)]


def test_a_failing_job_stops_the_others_at_once():
    """Job 1 fails in its first turn: job 0, waiting to retrain, is cancelled; job 2 never starts;
    nothing is trained."""
    trainer = Recording()
    started, cancelled = [], []

    def job(i: int) -> int:
        started.append(i)
        if i == 1:
            raise ValueError("job 1 failed")
        try:
            lockstep.retrain(trainer, torch.nn.Linear(1, 1), 0, None)
        except lockstep.CancelledError:
            cancelled.append(i)
            raise
        return i

    error = within(30, lambda: lockstep.run(job, [0, 1, 2]))
    assert isinstance(error, ValueError) and str(error) == "job 1 failed"
    assert started == [0, 1]
    assert cancelled == [0]
    assert trainer.calls == []
    assert job_threads() == []


@pytest.mark.parametrize("error", [RuntimeError("train_many failed"), KeyboardInterrupt()])
def test_an_error_in_train_many_reaches_the_caller_and_ends_every_job(error):
    trainer = Recording(error)
    ended = []

    def job(i: int) -> int:
        try:
            lockstep.retrain(trainer, torch.nn.Linear(1, 1), 0, None)
        finally:
            ended.append(i)
        return i

    assert within(30, lambda: lockstep.run(job, [0, 1, 2])) is error
    assert trainer.calls == [3]
    assert sorted(ended) == [0, 1, 2]
    assert job_threads() == []


def test_a_job_that_swallows_the_cancellation_cannot_block():
    """A job that catches CancelledError and asks to retrain again gets it again at once."""
    trainer = Recording(RuntimeError("train_many failed"))
    caught = []

    def job(i: int) -> int:
        try:
            lockstep.retrain(trainer, torch.nn.Linear(1, 1), 0, None)
        except BaseException as exc:
            caught.append(type(exc))
        lockstep.retrain(trainer, torch.nn.Linear(1, 1), 0, None)
        return i

    error = within(30, lambda: lockstep.run(job, [0, 1]))
    assert isinstance(error, RuntimeError)
    assert caught == [lockstep.CancelledError, lockstep.CancelledError]
    assert job_threads() == []
