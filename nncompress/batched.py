"""Several MLPs trained as one batched model, each exactly as `training.fit` would train it alone.

The points of a sweep fine-tune copies of one small network. Trained one at a time, a step is a
few small matrix products and much Python; stacked, K networks take one batched product per layer
(`torch.baddbmm`), one backward pass and one optimiser update: about 1.5 times the work per second
on one core. Each network (a lane) keeps its own data order, dropout draws, pruning mask and
`before_step` hook, and its arithmetic is that of `fit`: a batched product computes each matrix as
the single product does, and element-wise operations run on all lanes at once only where a lane's
block is a whole number of SIMD chunks (so that no element moves between vector and scalar code).
The weights that come out are bit for bit those of `fit` (tests check it).

Pruned weights: `fit` trains `weight_orig` through the mask torch.nn.utils.prune applies in every
forward pass; here the stacked weights hold the masked values, zeros, which the masked gradient
keeps at zero. The kept weights and every output are the same; only the values behind the mask,
which nothing reads, differ (and the sign of those zeros).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from nncompress import training
from nncompress.model import MLP

_CHUNK = 64  # floats: a multiple of every SIMD loop's block (2 x 16 floats with AVX-512)
_SMALL = 4096  # multiply-adds: below about 400, torch's batched product takes another kernel than mm's


@dataclasses.dataclass
class Lane:
    """One network to train: its own torch RNG (dropout, and any draws of `before_step`), its own
    shuffling seed, and the hook `fit` would call before every step."""

    model: nn.Module
    rng: torch.Generator
    seed: int
    before_step: Callable[[int], None] | None = None


def batchable(models: list[nn.Module]) -> bool:
    """Whether these networks can be stacked: MLPs of one shape (any number of hidden layers) and
    dropout, all on the CPU."""
    first = models[0]
    if not all(type(m) is MLP for m in models):
        return False
    for m in models:
        if m.hidden_sizes != first.hidden_sizes or m.dropout.p != first.dropout.p:
            return False
        if type(m.act) is not type(first.act) or m.fc1.weight.device.type != "cpu":
            return False
    return True


def _aligned(t: torch.Tensor) -> bool:
    return t[0].numel() % _CHUNK == 0


def _lanewise(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """fn over every lane: at once when aligned, else lane by lane (the same float results)."""
    return fn(t) if _aligned(t) else torch.stack([fn(x) for x in t])


class _Stack:
    """The lanes' weights and biases stacked per layer; each model's parameters are views into it.
    Masks stay per lane (None: nothing pruned), as only the per-lane update reads them."""

    def __init__(self, models: list[nn.Module]):
        self.models = models
        self.names: tuple[str, ...] = models[0].layer_names
        self.weight: dict[str, torch.Tensor] = {}
        self.bias: dict[str, torch.Tensor] = {}
        self.masks: list[dict[str, torch.Tensor | None]] = [{} for _ in models]
        self.remasked = [False] * len(models)  # whether a hook has changed the lane's masks
        self._bound: list[dict[str, tuple[int, ...]]] = [{} for _ in models]
        with torch.no_grad():
            for name in self.names:
                layers = [getattr(m, name) for m in models]
                self.weight[name] = torch.stack([_effective(layer) for layer in layers])
                self.bias[name] = torch.stack([layer.bias.detach() for layer in layers]).unsqueeze(1)
        for k in range(len(models)):
            for name in self.names:
                self._bind(k, name)

    def params(self) -> list[torch.Tensor]:
        return [t for name in self.names for t in (self.weight[name], self.bias[name])]

    def _bind(self, k: int, name: str) -> None:
        """Make layer `name` of model k hold views of lane k (hooks then see current values)."""
        layer = getattr(self.models[k], name)
        _param(layer).data = self.weight[name].detach()[k]
        layer.bias.data = self.bias[name].detach()[k, 0]
        self.masks[k][name] = _mask(layer)
        self._bound[k][name] = _identity(layer)

    def resync(self, k: int) -> None:
        """After model k's hook: take over whatever it replaced (new weights, a new mask)."""
        for name in self.names:
            layer = getattr(self.models[k], name)
            if _identity(layer) == self._bound[k][name]:
                continue
            with torch.no_grad():
                self.weight[name][k] = _effective(layer)
                self.bias[name][k, 0] = layer.bias.detach()
            self.remasked[k] = True
            self._bind(k, name)

    def release(self) -> None:
        """Give every model its own copy of its weights (not views of the stack)."""
        for k, model in enumerate(self.models):
            for name in self.names:
                layer = getattr(model, name)
                _param(layer).data = self.weight[name].detach()[k].clone()
                layer.bias.data = self.bias[name].detach()[k, 0].clone()


class _Gathered:
    """Lanes whose weights are computed from other parameters (shared weights: centroids): each
    step stacks what every model's layers compute (after the hooks, so it sees what they change),
    and each model's own SGD optimiser updates its own parameters, exactly as in `fit`.

    A layer that is shared values at fixed positions in every lane has its values written into
    one stack kept from step to step (`_Scattered`), not computed per lane into a new tensor and
    stacked; not when a lane has a hook (`hooked`), which could change the positions or codes."""

    def __init__(self, models: list[nn.Module], momentum: float, weight_decay: float, hooked: bool):
        self.models = models
        self.names: tuple[str, ...] = models[0].layer_names
        self.optimizers = [training.SGD(m.parameters(), momentum, weight_decay) for m in models]
        self.weight: dict[str, torch.Tensor] = {}
        self.bias: dict[str, torch.Tensor] = {}
        self.scattered: dict[str, tuple[torch.Tensor, list[nn.Module]]] = {}
        for name in self.names if not hooked else ():
            shared = [_scattered(getattr(m, name)) for m in models]
            if all(s is not None for s in shared):
                like = shared[0].centroids
                stack = torch.zeros(len(models), *shared[0].mask.shape, dtype=like.dtype, device=like.device)
                self.scattered[name] = (stack, shared)

    def gather(self) -> None:
        for name in self.names:
            layers = [getattr(m, name) for m in self.models]
            if name in self.scattered:
                _, shared = self.scattered[name]
                self.weight[name] = _Scattered.apply(self.scattered[name], *(s.centroids for s in shared))
            else:
                self.weight[name] = torch.stack([_forward_weight(layer) for layer in layers])
            self.bias[name] = torch.stack([layer.bias for layer in layers]).unsqueeze(1)

    def step(self, loss: torch.Tensor, lr: float) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step(lr)


def _scattered(layer: nn.Module) -> nn.Module | None:
    """The layer's weight parametrization if it is compress.quantize.SharedWeight alone: zeros,
    scattered at `positions` with `centroids[codes]` (the mask's shape); else None."""
    from nncompress.compress.quantize import SharedWeight  # here: quantize imports what imports this module

    chain = getattr(getattr(layer, "parametrizations", None), "weight", None)
    if chain is None or len(chain) != 1 or _mask(layer) is not None:
        return None
    return chain[0] if type(chain[0]) is SharedWeight else None


class _Scattered(torch.autograd.Function):
    """Every lane's shared weight, written into `stack` (zeros but at the lanes' fixed positions,
    kept from step to step); the gradients as autograd computes them through SharedWeight's
    scatter and index: gathered at the positions, then accumulated per centroid by code. (The stack
    comes in a tuple, so autograd does not take it for an input that the forward pass changes.)

    Each step's forward pass overwrites the values the previous step's returned: safe, as that
    step's graph has been used and freed by then (and a view of the stack saved in a graph still
    alive would make its backward pass fail on the stack's version counter, not compute wrong)."""

    @staticmethod
    def forward(ctx, lanes: tuple[torch.Tensor, list[nn.Module]], *centroids: torch.Tensor) -> torch.Tensor:
        stack, shared = lanes
        flat = stack.view(len(stack), -1)
        for k, (s, c) in enumerate(zip(shared, centroids, strict=True)):
            flat[k].scatter_(0, s.positions, c[s.codes])
        ctx.shared = shared
        ctx.sizes = [c.shape for c in centroids]
        return stack.view(stack.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        flat = grad.reshape(len(grad), -1)
        grads = [
            grad.new_zeros(size).index_put_((s.codes,), flat[k].gather(0, s.positions), accumulate=True)
            for k, (s, size) in enumerate(zip(ctx.shared, ctx.sizes, strict=True))
        ]
        return (None, *grads)


def _forward_weight(layer: nn.Module) -> torch.Tensor:
    """The weight as the layer's forward pass computes it (through a parametrization or a mask)."""
    mask = _mask(layer)
    return layer.weight_orig * mask if mask is not None else layer.weight


def _plain(models: list[nn.Module]) -> bool:
    """Whether every weight is a parameter of its own (or one under a pruning mask)."""
    return all(_param(getattr(m, name)) is not None for m in models for name in m.layer_names)


def _param(layer: nn.Module) -> nn.Parameter:
    """The trained weight: `weight_orig` under a pruning mask, else `weight`."""
    return layer._parameters.get("weight_orig", layer._parameters.get("weight"))


def _mask(layer: nn.Module) -> torch.Tensor | None:
    return layer._buffers.get("weight_mask")


def _effective(layer: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses: masked as torch.nn.utils.prune's hook masks it."""
    mask = _mask(layer)
    weight = _param(layer).detach()
    return weight * mask if mask is not None else weight.clone()


def _identity(layer: nn.Module) -> tuple[int, ...]:
    mask = _mask(layer)
    return (id(_param(layer)), _param(layer).data_ptr(), layer.bias.data_ptr(), id(mask) if mask is not None else 0)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """F.linear on every lane: one batched product, or lane by lane for products too small for it."""
    if x.shape[1] * weight.shape[1] * weight.shape[2] < _SMALL:
        return torch.stack([F.linear(a, w, b[0]) for a, w, b in zip(x, weight, bias, strict=True)])
    return _BatchedLinear.apply(x, weight, bias)


class _BatchedLinear(torch.autograd.Function):
    """`baddbmm(bias, x, weight.transpose(1, 2))` whose weight gradient comes out in the weight's own
    layout, each lane's `grad.T @ x` as F.linear's backward computes it. Autograd's baddbmm backward
    computes `x.T @ grad` and hands the weight its transpose: a view whose every element-wise
    operation with the contiguous momentum, mask and weight then takes a strided loop, three times
    as slow as the optimiser's whole update (the same floats either way)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias, x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad.bmm(weight) if ctx.needs_input_grad[0] else None
        grad_weight = grad.transpose(1, 2).bmm(x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(1, keepdim=True) if ctx.needs_input_grad[2] else None  # as broadcasting's
        return grad_x, grad_weight, grad_bias


def _forward(stack: _Stack | _Gathered, x: torch.Tensor, lanes: list[Lane], p: float, act: nn.Module) -> torch.Tensor:
    """MLP.forward on every lane: per hidden layer Linear, activation, dropout (each lane's own
    draws, layer after layer as in `fit`), then the output layer."""
    *hidden, out = stack.names
    for name in hidden:
        x = _lanewise(act, _linear(x, stack.weight[name], stack.bias[name]))
        if p == 1:
            x = x * torch.zeros(())
        elif p > 0:  # as torch's CPU dropout: noise = bernoulli(1 - p) / (1 - p); input * noise
            shape = x.shape[1:]
            noise = torch.stack([torch.empty(shape).bernoulli_(1 - p, generator=lane.rng) for lane in lanes])
            x = x * noise.div_(1 - p)
    return _linear(x, stack.weight[out], stack.bias[out])


@torch.no_grad()
def _sgd_step(
    stack: _Stack,
    grads: tuple[torch.Tensor, ...],
    bufs: list[torch.Tensor | None],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """torch.optim.SGD's single-tensor update (no dampening or Nesterov), lane by lane:
    one lane's tensors stay in the core's cache, where stacked ones would stream from memory at
    every operation.

    A masked weight gets no gradient, as under torch.nn.utils.prune's hook, so its momentum decays
    and, from a zero start, stays zero, and so does the weight. Only after a hook has changed a
    lane's mask can a masked momentum hold an old value, which `fit` keeps too (gradual pruning
    folds its mask into the weights and prunes anew: a weight a random mask revives starts from
    zero with that momentum, there as here): that lane's weights are masked again.
    """
    params = stack.params()
    first = bufs[0] is None
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        name = stack.names[i // 2] if i % 2 == 0 else None  # weights have masks, biases not
        if first:
            bufs[i] = torch.empty_like(grad) if momentum != 0 else None
        buf = bufs[i]
        for k in range(len(param)):
            mask = stack.masks[k][name] if name else None
            lane_buf = buf[k] if buf is not None else None
            training.sgd_update(param[k], grad[k], lane_buf, lr, momentum, weight_decay, first=first, mask=mask)
            if mask is not None and stack.remasked[k]:
                param[k].mul_(mask)


def fit_many(
    lanes: list[Lane],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    shuffle: bool,
    weight_decay: float = 0.0,
    schedule: str = "constant",
) -> None:
    """`fit(lane.model, ..., seed=lane.seed, before_step=lane.before_step)` for every lane, with each
    lane's dropout drawn from `lane.rng` (left where `fit` would leave torch's RNG). Models must be
    `batchable`; their weights end as `fit` would leave them."""
    models = [lane.model for lane in lanes]
    first = models[0]
    p, act = first.dropout.p, first.act
    images = images.reshape(len(images), -1)
    n_batches = math.ceil(len(images) / batch_size)
    orders = [torch.Generator().manual_seed(lane.seed) for lane in lanes]
    hooked = [k for k, lane in enumerate(lanes) if lane.before_step is not None]
    if not _plain(models):
        gathered = _Gathered(models, momentum, weight_decay, bool(hooked))
        stack = None
    else:
        stack = _Stack(models)
    params = stack.params() if stack else []
    for param in params:
        param.requires_grad_(True)
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for m in models:
        m.train()
    iteration = 0
    bar = tqdm(
        total=epochs * n_batches,
        desc=f"fine-tune x{len(lanes)}",
        unit="it",
        dynamic_ncols=True,
        mininterval=0.5,
        disable=not training.SHOW_PROGRESS,
    )
    try:
        for _ in range(epochs):
            if shuffle:
                order = torch.stack([torch.randperm(len(images), generator=g) for g in orders])
            else:
                order = torch.arange(len(images)).expand(len(lanes), -1)
            for b in range(n_batches):
                idx = order[:, b * batch_size : (b + 1) * batch_size]
                for k in hooked:
                    _call_hook(lanes[k], iteration)
                    if stack is not None:
                        stack.resync(k)
                if stack is None:
                    gathered.gather()
                logits = _forward(stack if stack is not None else gathered, images[idx], lanes, p, act)
                losses = F.cross_entropy(logits.flatten(0, 1), labels[idx].flatten(), reduction="none")
                loss = losses.view(len(lanes), -1).mean(dim=1).sum()  # each lane's mean: its own gradient
                rate = training.step_lr(lr, schedule, iteration, epochs * n_batches)
                if stack is None:
                    gathered.step(loss, rate)
                else:
                    _sgd_step(stack, torch.autograd.grad(loss, params), bufs, rate, momentum, weight_decay)
                iteration += 1
                bar.update()
    finally:
        bar.close()
        for param in params:
            param.requires_grad_(False)
        if stack is not None:
            stack.release()
        for m in models:
            m.eval()


def _call_hook(lane: Lane, iteration: int) -> None:
    """Run the lane's hook with torch's RNG set to the lane's, as `fit` would have it."""
    assert lane.before_step is not None
    with drawing_from(lane.rng):
        lane.before_step(iteration)


@contextlib.contextmanager
def drawing_from(rng: torch.Generator) -> Iterator[None]:
    """torch's global RNG draws from `rng` for the duration (and advances it), then is as before."""
    saved = torch.get_rng_state()
    torch.set_rng_state(rng.get_state())
    try:
        yield
        rng.set_state(torch.get_rng_state())
    finally:
        torch.set_rng_state(saved)
