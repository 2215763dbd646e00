"""Batched training (nncompress.batched): several networks trained at once end bit for bit where
`training.fit` leaves each of them alone: masks, hooks, shuffling, dropout and odd sizes included.

Bit for bit as long as PyTorch's batched matrix products give each network what its single ones
give: on some CPUs (an AMD EPYC with AVX2, MKL) they do not for layers of 10 or fewer units, where
PyTorch and MKL pick other kernels; there those cases are checked to float tolerance, and a test
checks that the pipelines' own layer sizes multiply the same either way.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable

import pytest
import torch
from conftest import plain_sgd, random_split, unbatched_retrainer

from nncompress.batched import Lane, batchable, fit_many
from nncompress.model import MLP
from nncompress.nets import NETS
from nncompress.prune.masks import make_permanent, unstructured
from nncompress.prune.retrain import Retrainer
from nncompress.prune.schedule import GradualPruner
from nncompress.training import fit

magnitude = unstructured("magnitude", "layer")
global_magnitude = unstructured("magnitude", "global")
random_layer = unstructured("random", "layer")


def network(
    seed: int, hidden: int | tuple[int, ...], rate: float, dropout: float = 0.15, prune_fn=magnitude, act="sigmoid"
) -> MLP:
    torch.manual_seed(seed)
    model = MLP(hidden_size=hidden, activation=act, dropout=dropout)
    if rate:
        prune_fn(model, rate)
    return model


def weights(model: MLP) -> dict[str, torch.Tensor]:
    """What the model computes with: masks folded in (a copy, the model untouched)."""
    copy = MLP(hidden_size=model.hidden_sizes, dropout=model.dropout.p)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name in model.layer_names:
        if f"{name}.weight_mask" in state:
            state[f"{name}.weight"] = state.pop(f"{name}.weight_orig") * state.pop(f"{name}.weight_mask")
    copy.load_state_dict(state)
    return copy.state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key}: max difference {(a[key] - b[key]).abs().max().item()}"


def kernels_agree(sizes: tuple[int, ...], batch_sizes: Iterable[int]) -> bool:
    """Whether batched matrix products give, on this machine, what single ones give for an MLP of
    these layer sizes at these batch sizes: forward, input and weight gradients, as
    nncompress.batched and F.linear compute them."""
    gen = torch.Generator().manual_seed(0)
    for rows in batch_sizes:
        for fan_in, fan_out in itertools.pairwise(sizes):
            x, g = torch.randn(3, rows, fan_in, generator=gen), torch.randn(3, rows, fan_out, generator=gen)
            w, b = torch.randn(3, fan_out, fan_in, generator=gen), torch.randn(3, 1, fan_out, generator=gen)
            together = (torch.baddbmm(b, x, w.transpose(1, 2)), g.transpose(1, 2).bmm(x), g.bmm(w))
            for k in range(3):
                alone = (torch.nn.functional.linear(x[k], w[k], b[k, 0]), g[k].t().mm(x[k]), g[k].mm(w[k]))
                if not all(torch.equal(t[k], a) for t, a in zip(together, alone, strict=True)):
                    return False
    return True


def layer_sizes(hidden: int | tuple[int, ...]) -> tuple[int, ...]:
    return (784, *((hidden,) if isinstance(hidden, int) else hidden), 10)


def batch_sizes(n: int, batch: int) -> set[int]:
    """The sizes of fit's batches over n images: full ones and the short last one."""
    return {min(n, batch), n % batch} - {0}


def assert_same_as_kernels_allow(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool) -> None:
    if exact:
        assert_same(a, b)
    else:  # only the matrix products' rounding differs, as it does between two BLAS kernels
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=key)


def train_alone(model: MLP, data, seed: int, hook=None, **opt) -> torch.Generator:
    """As the sweep trains one point: torch seeded per point, then fit; returns the RNG after it."""
    fit(model, data, data, seed=seed, before_step=hook, **opt)
    rng = torch.Generator()
    rng.set_state(torch.get_rng_state())
    return rng


CASES = [  # hidden sizes, training images, batch size, dropout, shuffle, activation
    (32, 96, 16, 0.15, True, "sigmoid"),
    (256, 128, 32, 0.15, True, "sigmoid"),
    (10, 50, 16, 0.3, True, "sigmoid"),  # no size a multiple of the SIMD block; a short last batch
    (12, 40, 8, 0.0, False, "sigmoid"),
    (8, 32, 8, 1.0, True, "sigmoid"),
    # several hidden layers: each lane's dropout draws layer after layer, as fit's
    ((32, 16), 96, 16, 0.15, True, "sigmoid"),
    ((10, 7), 50, 16, 0.3, True, "tanh"),
    ((300, 100), 64, 32, 0.0, True, "relu"),  # LeNet-300-100
    ((16, 12, 8), 40, 8, 0.2, False, "relu"),
]


@pytest.mark.parametrize(("hidden", "n", "batch", "dropout", "shuffle", "act"), CASES)
def test_fit_many_equals_fit_on_each(hidden, n, batch, dropout, shuffle, act):
    data = random_split(torch.Generator().manual_seed(hidden if isinstance(hidden, int) else sum(hidden)), n)
    opt = {"epochs": 2, "batch_size": batch, "lr": 0.3, "momentum": 0.9, "shuffle": shuffle}
    rates = [0.0, 0.5, 0.9, 0.3]
    alone, rngs = [], []
    for k, rate in enumerate(rates):
        model = network(k, hidden, rate, dropout, act=act)
        torch.manual_seed(100 + k)
        rngs.append(train_alone(model, data, 100 + k, **opt).get_state())
        alone.append(weights(model))

    lanes = []
    for k, rate in enumerate(rates):
        model = network(k, hidden, rate, dropout, act=act)
        lanes.append(Lane(model, torch.Generator().manual_seed(100 + k), 100 + k))
    assert batchable([lane.model for lane in lanes])
    fit_many(lanes, *data, **opt)
    exact = kernels_agree(layer_sizes(hidden), batch_sizes(n, batch))
    for k, lane in enumerate(lanes):
        assert_same_as_kernels_allow(weights(lane.model), alone[k], exact)
        assert torch.equal(lane.rng.get_state(), rngs[k])  # dropout drew what fit draws
        assert not lane.model.training


@pytest.mark.parametrize("hidden", [16, (16, 8)])
@pytest.mark.parametrize("prune_fn", [global_magnitude, random_layer])
def test_fit_many_runs_each_lanes_hook_with_its_own_rng(prune_fn, hidden):
    """Gradual pruning's hook re-prunes mid-training (random pruning draws from torch's RNG)."""
    data = random_split(torch.Generator().manual_seed(3), 64)
    opt = {"epochs": 3, "batch_size": 16, "lr": 0.3, "momentum": 0.9, "shuffle": True}
    rates = [0.5, 0.9, 0.75]
    alone = []
    for k, rate in enumerate(rates):
        model = network(k, hidden, 0.0)
        torch.manual_seed(7 + k)
        pruner = GradualPruner(model, prune_fn, rate, steps=3, every=2)
        train_alone(model, data, 7 + k, hook=pruner, **opt)
        make_permanent(model)
        alone.append(weights(model))

    lanes = []
    for k, rate in enumerate(rates):
        model = network(k, hidden, 0.0)
        pruner = GradualPruner(model, prune_fn, rate, steps=3, every=2)
        lanes.append(Lane(model, torch.Generator().manual_seed(7 + k), 7 + k, pruner))
    fit_many(lanes, *data, **opt)
    for k, lane in enumerate(lanes):
        make_permanent(lane.model)
        assert_same(weights(lane.model), alone[k])


@pytest.mark.parametrize("hidden", [(10, 7), 32])
@pytest.mark.parametrize(("weight_decay", "schedule"), [(5e-3, "constant"), (0.0, "cosine"), (1e-3, "cosine")])
def test_fit_many_equals_fit_with_weight_decay_and_a_schedule(hidden, weight_decay, schedule):
    """Decay and the per-step learning rate as torch.optim.SGD applies them, with a gradual hook."""
    data = random_split(torch.Generator().manual_seed(8), 50)
    opt = {"epochs": 2, "batch_size": 16, "lr": 0.3, "momentum": 0.9, "shuffle": True}
    opt |= {"weight_decay": weight_decay, "schedule": schedule}
    rates = [0.0, 0.6, 0.9]
    alone = []
    for k, rate in enumerate(rates):
        model = network(k, hidden, rate)
        torch.manual_seed(30 + k)
        pruner = GradualPruner(model, global_magnitude, 0.8, steps=2, every=2) if k == 0 else None
        train_alone(model, data, 30 + k, hook=pruner, **opt)
        make_permanent(model)
        alone.append(weights(model))
    lanes = []
    for k, rate in enumerate(rates):
        model = network(k, hidden, rate)
        pruner = GradualPruner(model, global_magnitude, 0.8, steps=2, every=2) if k == 0 else None
        lanes.append(Lane(model, torch.Generator().manual_seed(30 + k), 30 + k, pruner))
    fit_many(lanes, *data, **opt)
    exact = kernels_agree(layer_sizes(hidden), batch_sizes(50, opt["batch_size"]))
    for k, lane in enumerate(lanes):
        make_permanent(lane.model)
        assert_same_as_kernels_allow(weights(lane.model), alone[k], exact)
    plain = network(1, hidden, 0.6)
    torch.manual_seed(31)
    train_alone(plain, data, 31, **(opt | {"weight_decay": 0.0, "schedule": "constant"}))
    assert not torch.equal(weights(plain)["fc1.weight"], alone[1]["fc1.weight"])  # the options do act


@pytest.mark.parametrize("sizes", [(784, 256, 10), (784, 300, 100, 10)], ids=["mlp", "lenet300"])
def test_the_pipelines_layer_sizes_multiply_the_same_batched_and_alone(sizes):
    """What makes the committed sweeps independent of how their points are batched (sweep.workers):
    the default MLP's and LeNet-300-100's layers, at every batch size up to params' 32."""
    assert kernels_agree(sizes, range(1, 33))


def test_the_kernel_probe_sees_a_difference_in_the_last_bit(monkeypatch):
    baddbmm = torch.baddbmm
    monkeypatch.setattr(torch, "baddbmm", lambda *a: torch.nextafter(baddbmm(*a), torch.tensor(float("inf"))))
    assert not kernels_agree((784, 256, 10), [32])


def test_one_lane_is_fit():
    data = random_split(torch.Generator().manual_seed(5), 48)
    opt = {"epochs": 1, "batch_size": 16, "lr": 0.1, "momentum": 0.5, "shuffle": True}
    model = network(0, 24, 0.6)
    torch.manual_seed(11)
    train_alone(model, data, 11, **opt)
    lane = Lane(network(0, 24, 0.6), torch.Generator().manual_seed(11), 11)
    fit_many([lane], *data, **opt)
    assert_same(weights(lane.model), weights(model))


def test_a_retrainer_trains_a_lone_lane_as_fit_does_and_leaves_its_rng_where_fit_leaves_torchs():
    """A lockstep run whose other jobs have finished hands Retrainer.train_many one lane: the
    weights, and the lane's RNG afterwards, are fit's (and torch's RNG after it)."""
    data = random_split(torch.Generator().manual_seed(6), 48)
    opt = plain_sgd(2, lr=0.1, batch_size=16)
    models, rngs = [], []
    for batched_path in (False, True):
        model = network(0, 24, 0.3)
        hook = GradualPruner(model, unstructured("random", "layer"), 0.8, 2, 3)  # draws from torch's RNG
        torch.manual_seed(12)
        if batched_path:
            lane = Lane(model, torch.Generator(), torch.initial_seed(), hook)
            lane.rng.set_state(torch.get_rng_state())
            Retrainer(data, data, opt, opt.epochs).train_many([lane])
            rngs.append(lane.rng.get_state())
        else:
            unbatched_retrainer(data, data, opt, opt.epochs)(model, before_step=hook)
            rngs.append(torch.get_rng_state())
        models.append(weights(model))
    assert_same(models[1], models[0])
    assert torch.equal(rngs[1], rngs[0])


def test_the_batched_linear_gives_every_gradient_of_baddbmm_in_the_weights_layout():
    """The weight's gradient comes out contiguous, as the weight, momentum and mask are (a
    transposed one made the optimiser's update three times as slow), with the same floats."""
    from nncompress.batched import _BatchedLinear

    g = torch.Generator().manual_seed(5)
    shapes = [(32, 200), (64, 200), (1, 64), (32, 64)]
    x, weight, bias, upstream = (torch.randn(3, *shape, generator=g) for shape in shapes)
    grads = []
    for linear in (_BatchedLinear.apply, lambda x, w, b: torch.baddbmm(b, x, w.transpose(1, 2))):
        inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = linear(*inputs)
        grads.append((out, *torch.autograd.grad(out, inputs, upstream)))
    ours, autograd = grads
    assert ours[2].is_contiguous()
    for a, b in zip(ours, autograd, strict=True):
        assert torch.equal(a, b)


def test_batchable_needs_one_shape():
    assert batchable([MLP(16), MLP(16)])
    assert not batchable([MLP(16), MLP(17)])
    assert not batchable([MLP(16), MLP(16, dropout=0.2)])
    assert not batchable([MLP(16), MLP(16, activation="relu")])
    assert not batchable([MLP(16), torch.nn.Sequential(torch.nn.Linear(784, 10))])
    assert batchable([MLP((16, 8)), MLP((16, 8))])
    assert not batchable([MLP((16, 8)), MLP((16, 9))])
    assert not batchable([MLP((16, 8)), MLP(16)])
    assert not batchable([MLP(16), MLP((16, 10))])  # fc2 differs in shape, fc1 not


def test_other_networks_are_not_batchable():
    """They train one after another (Retrainer.train_many), each as fit trains it."""
    lenet300, lenet5 = NETS["lenet300"]().build(), NETS["lenet5"]().build()
    assert batchable([lenet300, NETS["lenet300"]().build()])  # an MLP: 784-300-100-10
    assert not batchable([lenet5, NETS["lenet5"]().build()])
    assert not batchable([lenet300, lenet5])


# --- the training curve, evaluated beside training ---------------------------------------------


def test_the_curve_is_the_same_evaluated_aside_or_inline(monkeypatch):
    """With a second core the curve's accuracies are computed on a forked process: same rows."""
    from nncompress import parallel

    data = random_split(torch.Generator().manual_seed(9), 96)
    opt = {"epochs": 2, "batch_size": 16, "lr": 0.3, "momentum": 0.9, "shuffle": False}
    logs = []
    for cores in (2, 1):
        monkeypatch.setattr(parallel, "available_cores", lambda cores=cores: cores)
        model = network(0, 32, 0.0)
        torch.manual_seed(1)
        logs.append(fit(model, data, data, log_every=5, **opt))
    assert logs[0] == logs[1]
    assert [row["iteration"] for row in logs[0]] == [5, 10, 12]
    assert list(logs[0][0]) == ["iteration", "epoch", "loss", "train_accuracy", "val_accuracy"]


def slow_aside(state):
    """The forked process's job, slowed down (a function of this module: jobs are pickled by name)."""
    from nncompress import training

    time.sleep(0.2)
    model, train, val = training._ASIDE
    model.load_state_dict(state)
    return training.accuracy(model, train), training.accuracy(model, val)


def test_rows_the_forked_process_has_not_reached_are_shared_with_the_freed_core(monkeypatch):
    """When training ends first, the rows still queued are evaluated by both processes: the same rows."""
    from nncompress import parallel, training

    data = random_split(torch.Generator().manual_seed(9), 96)
    opt = {"epochs": 2, "batch_size": 16, "lr": 0.3, "momentum": 0.9, "shuffle": False, "log_every": 1}
    monkeypatch.setattr(parallel, "available_cores", lambda: 1)
    torch.manual_seed(1)
    inline = fit(network(0, 32, 0.0), data, data, **opt)

    here = []
    evaluate = training._accuracies
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(training, "_accuracies", lambda *a: here.append(1) or evaluate(*a))
    monkeypatch.setattr(training, "_evaluate_aside", slow_aside)
    torch.manual_seed(1)
    shared = fit(network(0, 32, 0.0), data, data, **opt)
    assert shared == inline
    assert 0 < len(here) < len(inline), "both processes evaluate some of the rows"


@pytest.mark.parametrize("hidden", [16, (16, 8)])
def test_fit_many_trains_shared_weights_as_fit_does(hidden):
    """The compress stage's centroid fine-tuning: weights computed from k-means centroids."""
    from nncompress.compress.quantize import share_weights, unshare_weights

    data = random_split(torch.Generator().manual_seed(4), 64)
    opt = {"epochs": 2, "batch_size": 16, "lr": 0.1, "momentum": 0.9, "shuffle": True}
    opt |= {"weight_decay": 1e-3, "schedule": "cosine"}
    results = []
    for together in (False, True):
        models = [network(k, hidden, rate) for k, rate in enumerate([0.5, 0.8, 0.9])]
        for bits, model in zip([2, 3, 4], models, strict=True):
            make_permanent(model)
            share_weights(model, bits)
        if together:
            assert batchable(models)
            lanes = [Lane(m, torch.Generator().manual_seed(20 + k), 20 + k) for k, m in enumerate(models)]
            fit_many(lanes, *data, **opt)
        else:
            for k, model in enumerate(models):
                torch.manual_seed(20 + k)
                train_alone(model, data, 20 + k, **opt)
        results.append([(unshare_weights(m), m.state_dict()) for m in models])
    for (layers_a, state_a), (layers_b, state_b) in zip(*results, strict=True):
        assert all((layers_a[n].centroids == layers_b[n].centroids).all() for n in layers_a)
        assert_same(state_a, state_b)


def test_fit_many_mixes_shared_and_pruned_networks():
    """Lanes that are not all plain take the general path; a pruned lane there is masked as in fit."""
    from nncompress.compress.quantize import share_weights

    data = random_split(torch.Generator().manual_seed(6), 48)
    opt = {"epochs": 1, "batch_size": 16, "lr": 0.1, "momentum": 0.9, "shuffle": True}
    results = []
    for together in (False, True):
        shared, pruned = network(0, 16, 0.5), network(1, 16, 0.7)
        make_permanent(shared)
        share_weights(shared, 3)
        if together:
            lanes = [Lane(m, torch.Generator().manual_seed(k), k) for k, m in enumerate([shared, pruned])]
            fit_many(lanes, *data, **opt)
        else:
            for k, model in enumerate([shared, pruned]):
                torch.manual_seed(k)
                train_alone(model, data, k, **opt)
        make_permanent(pruned)
        results.append([shared.state_dict(), pruned.state_dict()])
    for a, b in zip(*results, strict=True):
        assert_same(a, b)
