"""Independent jobs (the points of a sweep) on every core, or on a Ray cluster.

Each job seeds its own RNG from its arguments, so results do not depend on how many workers run
them or in which order. Local workers are forked processes with one torch thread each: forking
shares the parent's data and the job's closures without pickling them. Ray (`executor: ray`, an
optional extra) ships them with cloudpickle to a local instance, or to the cluster named by
RAY_ADDRESS.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tqdm import tqdm

from nncompress.errors import ParamError, PipelineError

# No tqdm monitor thread: a process that forks must not have threads that may hold a lock.
tqdm.monitor_interval = 0

EXECUTORS = ("local", "ray")
T = TypeVar("T")
R = TypeVar("R")

_JOB: Callable[[Any], Any] | None = None  # the job of the forked workers (inherited, not pickled)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int) -> int:
    """`workers`, or every available core for 0."""
    return workers if workers > 0 else available_cores()


def quiet_worker() -> None:
    """In a worker: one torch thread, no nested progress bars over the parent's, and Ctrl-C left
    to the parent (which stops the pool), so that one line reports it, not one traceback a worker."""
    import torch

    from nncompress import training
    from nncompress.runner import flush_denormals

    torch.set_num_threads(1)
    flush_denormals()  # inherited when forked, not on Ray's workers
    training.SHOW_PROGRESS = False
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread in this process for the duration, as in the workers: the same float sums."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _call(item: Any) -> Any:
    assert _JOB is not None
    return _JOB(item)


def run_all(
    job: Callable[[T], R], items: Sequence[T], *, workers: int = 1, executor: str = "local", desc: str = "jobs"
) -> list[R]:
    """[job(item) for item in items], on `workers` processes (0: every core) or on Ray; in order."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    bar = tqdm(total=len(items), desc=desc, unit="run", dynamic_ncols=True)
    with bar:
        if executor == "ray":
            return _run_on_ray(job, items, workers, bar)
        workers = min(resolve_workers(workers), len(items))
        if workers > 1 and _cuda_available():
            workers = 1  # CUDA cannot be used in forked children; one process drives the GPU
        if workers <= 1:
            from nncompress.runner import flush_denormals

            flush_denormals()  # as in the workers: the same numbers on one process or several
            results = []
            with one_thread():
                for item in items:
                    results.append(job(item))
                    bar.update()
            return results
        return _run_forked(job, items, workers, bar)


def run_together(
    job: Callable[[T], R], items: Sequence[T], *, workers: int = 1, executor: str = "local", desc: str = "jobs"
) -> list[R]:
    """run_all, with the items split into one group per worker (every item in one for a single
    worker): in each group the jobs run side by side (nncompress.lockstep) and retrain as one
    batched model. Results in order; each job's result is the one it gets alone."""
    groups = min(resolve_workers(workers), len(items)) or 1
    batches = [list(items[g::groups]) for g in range(groups)]  # interleaved: a mix of rates each
    done = run_all(_Together(job), batches, workers=workers, executor=executor, desc=desc)
    results: list[Any] = [None] * len(items)
    for g, batch_results in enumerate(done):
        results[g::groups] = batch_results
    return results


class _Together:
    """A job over a group of items, run side by side (picklable, for Ray)."""

    def __init__(self, job: Callable[[Any], Any]):
        self.job = job

    def __call__(self, items: list[Any]) -> list[Any]:
        from nncompress import lockstep

        return lockstep.run(self.job, items)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _run_forked(job: Callable[[T], R], items: Sequence[T], workers: int, bar: tqdm) -> list[R]:
    global _JOB
    _JOB = job
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=quiet_worker) as pool:
            futures = {pool.submit(_call, item): i for i, item in enumerate(items)}
            results: list[Any] = [None] * len(items)
            try:
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update()
            except BrokenProcessPool:
                raise PipelineError(
                    "a worker process died (out of memory?); try fewer workers (sweep.workers)"
                ) from None
            except BaseException:  # a failed job (or Ctrl-C) ends the run, and the jobs still running
                for process in list(getattr(pool, "_processes", {}).values()):  # no public way to stop them
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return results
    finally:
        _JOB = None


def _ray_call(job: Callable[[T], R], item: T) -> R:
    quiet_worker()
    return job(item)


def _run_on_ray(job: Callable[[T], R], items: Sequence[T], workers: int, bar: tqdm) -> list[R]:
    try:
        import ray
    except ImportError:
        raise ParamError(
            "params.yaml: sweep.executor is ray, but Ray is not installed (pip install -e '.[ray]')"
        ) from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        try:
            if address:
                ray.init(log_to_driver=False)  # join the cluster RAY_ADDRESS names
            else:
                ray.init(num_cpus=resolve_workers(workers), include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # Ray raises many kinds; all mean "no cluster to run on"
            where = f"the Ray cluster at RAY_ADDRESS={address}" if address else "a local Ray instance"
            raise PipelineError(f"cannot start {where} ({type(exc).__name__})") from None
    remote = ray.remote(num_cpus=1)(_ray_call)
    shared = ray.put(job)
    pending = [remote.remote(shared, item) for item in items]
    order = {ref: i for i, ref in enumerate(pending)}
    results: list[Any] = [None] * len(items)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        try:
            results[order[done[0]]] = ray.get(done[0])
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, PipelineError):  # the job's own one-line error, not Ray's trace
                raise exc.cause from None
            raise
        bar.update()
    return results
