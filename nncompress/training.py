"""Minibatch SGD training with periodic accuracy logging, and accuracy evaluation."""

from __future__ import annotations

import copy
import math
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm import tqdm

from nncompress.data import Split
from nncompress.errors import ParamError
from nncompress.model import build_model

if TYPE_CHECKING:
    from nncompress.config import ModelConfig, TrainConfig

DEVICES = ("auto", "cpu", "cuda")  # auto: the GPU when PyTorch sees one
SHOW_PROGRESS = True  # off in parallel workers, whose bars would garble the parent's
SCHEDULES = ("constant", "cosine")  # the learning rate per step (see `step_lr`)


def step_lr(lr: float, schedule: str, step: int, total: int) -> float:
    """The learning rate of step `step` (0-based) of a run of `total` steps: `lr` throughout, or
    cosine annealing from `lr` towards 0 (Loshchilov & Hutter 2017), which lets a long run settle
    in a minimum instead of rattling around it at a constant rate."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (expected one of {', '.join(SCHEDULES)})")


def resolve_device(name: str, key: str) -> torch.device:
    """`auto` picks the GPU when PyTorch sees one, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError(f"params.yaml: {key} is cuda, but PyTorch sees no CUDA GPU (use auto or cpu)")
    return torch.device(name)


class SGD:
    """torch.optim.SGD (no dampening or Nesterov) as its default path runs on the CPU, one tensor
    after another, bit for bit. Without torch.optim: building or stepping one of its optimisers
    imports torch._dynamo, which takes about as long as importing torch, in every stage and worker
    process that trains. On a GPU torch.optim would take its multi-tensor path (its floats may differ)."""

    def __init__(self, params: Iterable[nn.Parameter], momentum: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """Update every parameter that has a gradient (others are skipped, as torch.optim does)."""
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue
            first = self.momentum != 0 and self.buffers[i] is None
            if first:
                self.buffers[i] = torch.empty_like(param.grad)
            sgd_update(param, param.grad, self.buffers[i], lr, self.momentum, self.weight_decay, first=first)


def sgd_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    buf: torch.Tensor | None,
    lr: float,
    momentum: float,
    weight_decay: float,
    *,
    first: bool = False,
    mask: torch.Tensor | None = None,
) -> None:
    """torch.optim.SGD's update of one tensor (no dampening or Nesterov): `buf` is its momentum
    (None without), taken from the gradient on the `first` step. With `mask`, the gradient is
    masked first, in place (exact: a product with 0 or 1), as torch.nn.utils.prune's hook masks it.
    Called under torch.no_grad() (SGD.step and the batched step are), many times a step."""
    if mask is not None and buf is not None and not first and weight_decay == 0:
        buf.mul_(momentum).addcmul_(grad, mask)  # buf * momentum + grad * mask: one pass fewer
        param.add_(buf, alpha=-lr)
        return
    if mask is not None:
        grad.mul_(mask)
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if buf is not None:
        if first:
            buf.copy_(grad)
        else:
            buf.mul_(momentum).add_(grad)
        grad = buf
    param.add_(grad, alpha=-lr)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _Curve:
    """The accuracies of a training curve's rows, computed beside training: on a forked process
    when a second core is free (the same single-threaded sums, so the same numbers), else inline.
    Rows that process has not reached when training ends are shared with the core training frees."""

    def __init__(self, model: nn.Module, train: Split, val: Split):
        from nncompress.parallel import available_cores, quiet_worker

        self.model, self.train, self.val = model, train, val
        self.pool: ProcessPoolExecutor | None = None
        if available_cores() > 1 and _device_of(model).type == "cpu":
            global _ASIDE
            _ASIDE = (model, train, val)  # inherited by the forked process, not pickled
            self.pool = ProcessPoolExecutor(1, multiprocessing.get_context("fork"), initializer=quiet_worker)
        self.pending: list[Future[tuple[float, float]] | tuple[float, float]] = []
        self.states: list[dict[str, torch.Tensor] | None] = []  # of rows not yet evaluated

    def add(self) -> None:
        """Queue the accuracies of the model as it is now."""
        if self.pool is None:
            self.pending.append((accuracy(self.model, self.train), accuracy(self.model, self.val)))
            return
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        future = self.pool.submit(_evaluate_aside, state)
        self.states.append(state)
        future.add_done_callback(_Forget(self.states, len(self.states) - 1))
        self.pending.append(future)

    def results(self) -> list[tuple[float, float]]:
        """Every row's accuracies. The rows still queued are taken from the last backwards and
        evaluated here, while the forked process goes on forwards, until the two meet."""
        from nncompress.parallel import one_thread
        from nncompress.runner import flush_denormals

        here: nn.Module | None = None
        flush_denormals()  # as in the forked process (and in every stage already)
        with one_thread():  # as the forked process computes them
            # A copy of the trained model, given each row's state_dict: the model of that row, as
            # long as everything its forward pass reads is in the state_dict (true of every network
            # here: weights, biases, pruning masks; dropout is off in evaluation).
            for row in reversed(range(len(self.states))):
                pending, state = self.pending[row], self.states[row]
                if isinstance(pending, Future) and state is not None and pending.cancel():
                    here = here if here is not None else copy.deepcopy(self.model)
                    self.pending[row] = _accuracies(here, state, self.train, self.val)
        return [p.result() if isinstance(p, Future) else p for p in self.pending]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


class _Forget:
    """Drops a row's state once the forked process has evaluated it (a future's done callback)."""

    def __init__(self, states: list[dict[str, torch.Tensor] | None], row: int):
        self.states, self.row = states, row

    def __call__(self, _: Future) -> None:
        self.states[self.row] = None


_ASIDE: Any = None  # (model, train, val) of the curve being evaluated, for the forked process


def _evaluate_aside(state: dict[str, torch.Tensor]) -> tuple[float, float]:
    model, train, val = _ASIDE
    return _accuracies(model, state, train, val)


def _accuracies(model: nn.Module, state: dict[str, torch.Tensor], train: Split, val: Split) -> tuple[float, float]:
    model.load_state_dict(state)
    return accuracy(model, train), accuracy(model, val)


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int = 8192) -> float:
    """Fraction of correctly classified examples, in eval mode (no dropout)."""
    images, labels = split
    device = _device_of(model)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += (logits.argmax(dim=1).cpu() == labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


def fit(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float = 0.0,
    schedule: str = "constant",
    shuffle: bool = False,
    seed: int = 0,
    log_every: int = 0,
    desc: str = "train",
    before_step: Callable[[int], None] | None = None,
    device: torch.device | None = None,
    iterations: int | None = None,
) -> list[dict[str, float]]:
    """Train with cross-entropy and SGD; return the log of the run.

    Every `log_every` iterations (and after the last one) a row records the mean training loss
    since the previous row and the accuracy on the whole train and validation sets; with
    `log_every=0` nothing is logged or evaluated (fine-tuning, whose caller evaluates once). Without
    shuffling, batches follow file order, as in the reference. Pruning masks registered with
    torch.nn.utils.prune stay applied, so pruned weights remain zero. `before_step(i)` runs before
    iteration i (0-based), e.g. to prune gradually. With `device`, the model moves there (pruning
    masks included) and the training data with it. `iterations` stops training early, after that
    many steps: the weights are then exactly those of a full run at that step (the schedule
    runs over the full run's steps).
    """
    if device is not None:
        model.to(device)
    images, labels = (t.to(_device_of(model)) for t in train)
    n_batches = math.ceil(len(images) / batch_size)
    full = epochs * n_batches
    total = full if iterations is None else min(iterations, full)
    optimizer = SGD(model.parameters(), momentum, weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    log: list[dict[str, float]] = []
    curve = _Curve(model, train, val) if log_every else None
    loss_sum, loss_count, iteration = 0.0, 0, 0
    model.train()
    try:
        with tqdm(
            total=total,
            desc=desc,
            unit="it",
            dynamic_ncols=True,
            mininterval=0.5,
            disable=total == 0 or not SHOW_PROGRESS,
        ) as bar:
            for epoch in range(epochs):
                if iteration == total:
                    break
                order = torch.randperm(len(images), generator=generator) if shuffle else None
                for b in range(n_batches):
                    if iteration == total:
                        break
                    idx = slice(b * batch_size, (b + 1) * batch_size)
                    if order is not None:
                        idx = order[idx]
                    if before_step is not None:
                        before_step(iteration)
                    optimizer.zero_grad()
                    loss = loss_fn(model(images[idx]), labels[idx])
                    loss.backward()
                    optimizer.step(step_lr(lr, schedule, iteration, full))
                    iteration += 1
                    if curve is not None:  # the loss is read (a sync on a GPU) only for the curve
                        loss_sum += loss.item()
                        loss_count += 1
                        if iteration % log_every == 0 or iteration == total:
                            log.append({"iteration": iteration, "epoch": epoch + (b + 1) / n_batches})
                            log[-1]["loss"] = loss_sum / loss_count
                            curve.add()
                            loss_sum, loss_count = 0.0, 0
                            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
                    bar.update()
        if curve is not None:
            for row, (train_acc, val_acc) in zip(log, curve.results(), strict=True):
                row["train_accuracy"], row["val_accuracy"] = train_acc, val_acc
    finally:
        if curve is not None:
            curve.close()
    model.eval()
    return log


def train_model(
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    train: Split,
    val: Split,
    *,
    device: torch.device,
    iterations: int | None = None,
    log_every: int | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """The train stage's run: a freshly initialised network trained with the `train` section.

    Seeded from `cfg.seed` (weight init, dropout, shuffling), so with `iterations` it replays the
    first steps of that run exactly, which is what rewinding to early-training weights needs.
    """
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    log = fit(
        model,
        train,
        val,
        epochs=cfg.epochs,
        seed=cfg.seed,
        log_every=cfg.log_every if log_every is None else log_every,
        device=device,
        iterations=iterations,
        **cfg.sgd(),
    )
    return model, log
