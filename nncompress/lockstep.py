"""Jobs run side by side, so that their retraining runs as one batched model.

A pruning method is plain code, (model, rate) -> model, that calls its Retrainer whenever it
fine-tunes. `run(job, items)` runs job(item) for every item, each in a thread of its own, taking
turns: only one runs at a time, in item order, so torch's global RNG and everything else behave as
if the jobs ran one after another. A job that asks to retrain stops there; once every job has
stopped or finished, the requests are trained together (`Retrainer.train_many`: one batched model
where the networks allow it) and the jobs go on. Each job keeps its own torch RNG state from turn
to turn, so its result is the one it gets alone (tests check it).

The first error, in a job or in the batched training (or a KeyboardInterrupt), stops the run: the
jobs still waiting are woken with `CancelledError`, which unwinds them, and once every job's thread
has ended, `run` raises the error.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import torch

from nncompress.batched import Lane

T = TypeVar("T")
R = TypeVar("R")

_current = threading.local()  # the job running in this thread, if any


class CancelledError(BaseException):  # as asyncio's: job code's `except Exception` lets it through
    """Raised in a waiting job when the run stops on an error elsewhere; it ends the job's thread."""


class Trainer(Protocol):
    def train_many(self, lanes: list[Lane]) -> None: ...


@dataclasses.dataclass
class _Request:
    trainer: Trainer
    lane: Lane


class _Job(threading.Thread):
    """One job's thread; `turn()` (from the caller's thread) runs it until it stops or finishes."""

    def __init__(self, fn: Callable[[Any], Any], item: Any):
        super().__init__(daemon=True)  # a job left waiting (Ctrl-C) does not keep the process alive
        self.fn, self.item = fn, item
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.request: _Request | None = None
        self.rng_state: torch.Tensor | None = None  # torch's RNG as this job left it
        self.in_turn = False  # between turn()'s start and end (still True if an interrupt cut it short)
        self._cancelled = False
        self._go = threading.Semaphore(0)
        self._stopped = threading.Semaphore(0)

    def run(self) -> None:
        self._go.acquire()
        _current.job = self
        try:
            if self._cancelled:  # stopped before its first turn
                return
            self.result = self.fn(self.item)
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc
        finally:
            self.done = True
            self._stop()

    def _stop(self) -> None:
        self.rng_state = torch.get_rng_state()
        self._stopped.release()

    def turn(self) -> None:
        self.in_turn = True
        if self.rng_state is not None:
            torch.set_rng_state(self.rng_state)
        self._go.release()
        self._stopped.acquire()
        self.in_turn = False

    def wait_for(self, request: _Request) -> None:
        """In the job's thread: hand `request` over and sleep until it is trained. CancelledError if
        the run stops instead (at once if the job caught that and asks again: it cannot block)."""
        if self._cancelled:
            raise CancelledError
        self.request = request
        self._stop()
        self._go.acquire()
        if self._cancelled:
            raise CancelledError

    def cancel(self) -> None:
        """From the caller's thread: wake the job with CancelledError where it waits (or at its next
        request, if it is running: a thread cannot be interrupted); it then ends."""
        if not self.done:
            self._cancelled = True  # set before the release, so the woken job sees it
            self._go.release()


def active() -> bool:
    """Whether the calling code runs as a job of `run` (its retraining then waits for the others)."""
    return getattr(_current, "job", None) is not None


def retrain(trainer: Trainer, model: torch.nn.Module, seed: int, before_step: Callable[[int], None] | None) -> None:
    """In a job: have `trainer` train `model` together with the other jobs' requests to it."""
    job: _Job = _current.job
    job.wait_for(_Request(trainer, Lane(model, torch.Generator(), seed, before_step)))


def run(job: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """[job(item) for item in items], with the jobs' retraining batched across them; in order.

    The first exception, of a job or of a `train_many`, is raised as soon as it happens, once the
    other jobs have been cancelled and their threads have ended."""
    jobs = [_Job(job, item) for item in items]
    for j in jobs:
        j.start()
    try:
        _take_turns(jobs)
    except BaseException:
        # One thread at a time, as in the turns (torch's RNG is shared), the job an interrupt left
        # running first; none runs on behind the caller's back.
        for j in sorted(jobs, key=lambda j: not j.in_turn):
            j.cancel()
            j.join()
        raise
    return [j.result for j in jobs]


def _take_turns(jobs: list[_Job]) -> None:
    running = jobs
    while running:
        for j in running:
            j.turn()
            if j.error is not None:
                raise j.error
        waiting = [j for j in running if not j.done]
        groups: dict[int, list[_Job]] = {}
        for j in waiting:
            assert j.request is not None
            groups.setdefault(id(j.request.trainer), []).append(j)
        for group in groups.values():
            lanes = []
            for j in group:
                assert j.request is not None and j.rng_state is not None
                j.request.lane.rng.set_state(j.rng_state)
                lanes.append(j.request.lane)
            group[0].request.trainer.train_many(lanes)  # type: ignore[union-attr]
            for j, lane in zip(group, lanes, strict=True):
                j.rng_state = lane.rng.get_state()
                j.request = None
        running = waiting
