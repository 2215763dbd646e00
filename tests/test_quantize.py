"""k-means weight sharing: the shared layer, and centroid fine-tuning through a parametrization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from nncompress.compress.quantize import (
    MAX_BITS,
    SharedLayer,
    SharedWeight,
    kmeans_share,
    share_weights,
    unshare_weights,
)
from nncompress.model import MLP
from nncompress.prune.masks import make_permanent, prunable, unstructured

magnitude_prune = unstructured("magnitude", "layer")  # the old pruning.magnitude_prune

HIDDEN = 16


def sparse_weight(shape=(24, 40), sparsity=0.6, seed=0):
    """Random normal weights with `sparsity` of them exactly zero (at random places)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w[torch.rand(shape, generator=g) < sparsity] = 0.0
    return w


def pruned_model(rate=0.6, seed=0):
    torch.manual_seed(seed)
    model = MLP(hidden_size=HIDDEN, dropout=0.0)
    magnitude_prune(model, rate)
    make_permanent(model)
    return model


# --- kmeans_share -------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, MAX_BITS + 1))
def test_kmeans_share_keeps_the_zero_pattern_and_at_most_2_to_the_bits_values(bits):
    w = sparse_weight()
    layer = kmeans_share(w, bits)
    nonzero = w.numpy() != 0
    assert layer.mask.dtype == bool
    assert np.array_equal(layer.mask, nonzero)
    dense = layer.dense()
    assert dense.shape == tuple(w.shape)
    assert dense.dtype == np.float32
    assert np.all(dense[~nonzero] == 0)
    assert np.all(dense[nonzero] != 0)  # no survivor is shared into zero
    assert len(np.unique(dense[nonzero])) <= 2**bits
    # with hundreds of distinct weights, every one of the 2**bits values is used
    assert len(layer.centroids) == 2**bits
    assert layer.centroids.dtype == np.float32


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_codes_index_centroids_and_each_weight_gets_its_nearest_centroid(bits):
    w = sparse_weight(seed=1)
    layer = kmeans_share(w, bits)
    assert layer.codes.dtype == np.uint8
    assert len(layer.codes) == int(layer.mask.sum())
    assert int(layer.codes.max()) < len(layer.centroids)
    values = w.numpy()[layer.mask]  # row-major, the order of the codes
    assert np.array_equal(layer.dense()[layer.mask], layer.centroids[layer.codes])
    nearest = np.abs(values[:, None] - layer.centroids[None, :]).argmin(axis=1)
    assert np.array_equal(layer.centroids[layer.codes], layer.centroids[nearest])
    # the shared values approximate the weights (error below the spread of the weights)
    assert np.abs(layer.centroids[layer.codes] - values).mean() < np.abs(values).mean()


def test_kmeans_share_is_deterministic():
    w = sparse_weight(seed=2)
    a, b = kmeans_share(w, 4), kmeans_share(w.clone(), 4)
    assert np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.centroids, b.centroids)


def test_kmeans_share_of_an_all_zero_weight():
    layer = kmeans_share(torch.zeros(10, 7), 4)
    assert layer.mask.shape == (10, 7)
    assert not layer.mask.any()
    assert len(layer.codes) == 0
    assert len(layer.centroids) == 0
    assert np.array_equal(layer.dense(), np.zeros((10, 7), np.float32))


@pytest.mark.parametrize("values", [[0.1, -0.3, 0.7], [0.37], [-1.5, 2.25]])
def test_fewer_distinct_values_than_2_to_the_bits_are_kept_exactly(values):
    rng = np.random.default_rng(0)
    w = rng.choice(np.float32([0.0, *values]), size=(30, 20))
    w[0, : len(values)] = values  # every value occurs
    layer = kmeans_share(torch.from_numpy(w), 4)
    assert len(layer.centroids) == len(values)
    assert sorted(layer.centroids.tolist()) == sorted(np.float32(values).tolist())
    assert np.array_equal(layer.dense(), w)


@pytest.mark.parametrize("bits", [0, MAX_BITS + 1, -1])
def test_kmeans_share_rejects_bits_outside_1_to_8(bits):
    with pytest.raises(ValueError, match="bits"):
        kmeans_share(sparse_weight(), bits)


def test_kmeans_share_accepts_a_weight_that_requires_grad():
    w = sparse_weight().requires_grad_()
    layer = kmeans_share(w, 2)
    assert np.array_equal(layer.mask, w.detach().numpy() != 0)


# --- SharedLayer --------------------------------------------------------------------------------


def test_dense_scatters_centroids_into_the_mask_in_row_major_order():
    layer = SharedLayer(
        mask=np.array([[True, False, True], [False, True, True]]),
        codes=np.array([2, 0, 1, 2], np.uint8),
        centroids=np.array([1.5, -2.0, 3.25], np.float32),
    )
    expected = np.array([[3.25, 0.0, 1.5], [0.0, -2.0, 3.25]], np.float32)
    assert np.array_equal(layer.dense(), expected)
    assert layer.dense().dtype == np.float32


def test_shared_weight_parametrization_computes_dense():
    layer = kmeans_share(sparse_weight(seed=3), 3)
    computed = SharedWeight(layer)(torch.zeros(1))  # the original weight is ignored
    assert torch.equal(computed, torch.from_numpy(layer.dense()))


@pytest.mark.parametrize("shape", [(24, 40), (6, 3, 5, 5)])
def test_shared_weight_is_masked_scatter_bit_for_bit_forward_and_backward(shape):
    """The parametrization scatters to precomputed positions; the committed centroid fine-tuning
    was run with zeros.masked_scatter(mask, centroids[codes]): same weights, same centroid gradients."""
    layer = kmeans_share(sparse_weight(shape, sparsity=0.8, seed=4), 4)
    shared = SharedWeight(layer)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    weight = shared(torch.zeros(1))
    (grad,) = torch.autograd.grad(weight, shared.centroids, upstream)
    centroids = shared.centroids.detach().clone().requires_grad_(True)
    reference = torch.zeros(shape).masked_scatter(shared.mask, centroids[shared.codes])
    (reference_grad,) = torch.autograd.grad(reference, centroids, upstream)
    assert torch.equal(weight, reference)
    assert torch.equal(grad, reference_grad)


# --- share_weights / unshare_weights ------------------------------------------------------------


def test_share_weights_replaces_each_weight_by_its_shared_version():
    model = pruned_model()
    before = {name: module.weight.detach().clone() for name, module in prunable(model)}
    share_weights(model, 3)
    for name, module in prunable(model):
        assert parametrize.is_parametrized(module, "weight")
        expected = kmeans_share(before[name], 3).dense()
        assert torch.equal(module.weight.detach(), torch.from_numpy(expected))


def training_step(model, bits, lr=0.5):
    """One SGD step on a random batch; returns the centroids' gradients."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(32, 784, generator=g), torch.randint(0, 10, (32,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {name: m.parametrizations.weight[0].centroids.grad.clone() for name, m in prunable(model)}
    opt.step()
    return grads


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_a_training_step_moves_only_the_centroids(bits):
    model = pruned_model()
    share_weights(model, bits)
    mods = dict(prunable(model))
    before = {n: m.weight.detach().clone() for n, m in mods.items()}
    centroids = {n: m.parametrizations.weight[0].centroids.detach().clone() for n, m in mods.items()}
    codes = {n: m.parametrizations.weight[0].codes.clone() for n, m in mods.items()}
    original = {n: m.parametrizations.weight.original.detach().clone() for n, m in mods.items()}
    grads = training_step(model, bits)
    for name, module in mods.items():
        shared = module.parametrizations.weight[0]
        after = module.weight.detach()
        assert torch.count_nonzero(grads[name]) > 0  # gradients reached the centroids
        assert not torch.equal(shared.centroids.detach(), centroids[name])  # and moved them
        assert not torch.equal(after, before[name])
        assert torch.equal(after == 0, before[name] == 0)  # zeros stay zero, survivors stay nonzero
        assert len(torch.unique(after[after != 0])) <= 2**bits
        assert torch.equal(shared.codes, codes[name])  # assignments are frozen
        assert torch.equal(module.parametrizations.weight.original.detach(), original[name])
        expected = torch.zeros_like(after)
        expected[before[name] != 0] = shared.centroids.detach()[codes[name]]
        assert torch.equal(after, expected)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    model = pruned_model()
    share_weights(model, 2)
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(16, 784, generator=g), torch.randint(0, 10, (16,), generator=g)
    for _, module in prunable(model):
        shared = module.parametrizations.weight[0]
        with parametrize.cached():  # the weight is computed once, so its gradient can be taken too
            loss = nn.functional.cross_entropy(model(x), y)
            weight = module.weight
            grad_w, grad_c = torch.autograd.grad(loss, [weight, shared.centroids])
        expected = torch.zeros_like(grad_c).index_add_(0, shared.codes, grad_w[shared.mask])
        assert torch.allclose(grad_c, expected, rtol=1e-5, atol=1e-8)
        assert torch.count_nonzero(grad_c) > 0


def test_unshare_weights_leaves_plain_weights_equal_to_the_shared_layers():
    model = pruned_model()
    share_weights(model, 3)
    training_step(model, 3)
    computed = {n: m.weight.detach().clone() for n, m in prunable(model)}
    layers = unshare_weights(model)
    assert set(layers) == {"fc1", "fc2"}
    for name, module in prunable(model):
        assert not parametrize.is_parametrized(module)
        assert not hasattr(module, "parametrizations")
        assert type(module.weight) is nn.Parameter
        assert module.weight.requires_grad
        layer = layers[name]
        assert layer.codes.dtype == np.uint8
        assert layer.centroids.dtype == np.float32
        assert torch.equal(module.weight.detach(), torch.from_numpy(layer.dense()))
        assert torch.equal(module.weight.detach(), computed[name])  # the fine-tuned values
    assert set(model.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def test_unshare_weights_returns_the_fine_tuned_centroids_not_the_initial_ones():
    model = pruned_model()
    initial = {n: kmeans_share(m.weight, 2) for n, m in prunable(model)}
    share_weights(model, 2)
    training_step(model, 2)
    layers = unshare_weights(model)
    for name, layer in layers.items():
        assert np.array_equal(layer.mask, initial[name].mask)
        assert np.array_equal(layer.codes, initial[name].codes)
        assert not np.array_equal(layer.centroids, initial[name].centroids)


# --- Conv2d kernels -----------------------------------------------------------------------------


def conv_model(rate=0.6, seed=0):
    """A small network with a Conv2d (4-d kernel) and a Linear layer, pruned per layer."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 4, 5, stride=2),  # -> 4 x 12 x 12
        nn.ReLU(),
        nn.Conv2d(4, 3, (3, 2), bias=False),  # -> 3 x 10 x 11
        nn.Flatten(),
        nn.Linear(3 * 10 * 11, 10),
    )
    magnitude_prune(model, rate)
    make_permanent(model)
    return model


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_kmeans_share_of_a_conv_kernel_keeps_its_shape_and_row_major_order(bits):
    w = sparse_weight(shape=(6, 3, 5, 4), sparsity=0.5, seed=4)
    layer = kmeans_share(w, bits)
    assert layer.mask.shape == (6, 3, 5, 4)
    assert np.array_equal(layer.mask, w.numpy() != 0)
    dense = layer.dense()
    assert dense.shape == (6, 3, 5, 4)
    # the codes follow the kernel's row-major order: as the weights of the flattened out x (in*kh*kw) matrix
    flat = kmeans_share(w.reshape(6, -1), bits)
    assert np.array_equal(layer.codes, flat.codes)
    assert np.array_equal(layer.centroids, flat.centroids)
    assert np.array_equal(dense.reshape(6, -1), flat.dense())
    values = w.numpy()[layer.mask]
    nearest = np.abs(values[:, None] - layer.centroids[None, :]).argmin(axis=1)
    assert np.array_equal(layer.centroids[layer.codes], layer.centroids[nearest])
    assert len(np.unique(dense[layer.mask])) <= 2**bits


def test_shared_weight_parametrization_computes_a_conv_kernel():
    layer = kmeans_share(sparse_weight(shape=(5, 2, 3, 3), seed=5), 3)
    computed = SharedWeight(layer)(torch.zeros(1))
    assert computed.shape == (5, 2, 3, 3)
    assert torch.equal(computed, torch.from_numpy(layer.dense()))


def test_conv_weights_are_shared_fine_tuned_and_unshared():
    model = conv_model()
    before = {name: module.weight.detach().clone() for name, module in prunable(model)}
    assert [name for name, _ in prunable(model)] == ["1", "3", "5"]
    share_weights(model, 2)
    mods = dict(prunable(model))
    for name, module in mods.items():
        assert parametrize.is_parametrized(module, "weight")
        assert torch.equal(module.weight.detach(), torch.from_numpy(kmeans_share(before[name], 2).dense()))
    shared = {n: m.weight.detach().clone() for n, m in mods.items()}
    grads = training_step(model, 2)
    for name, module in mods.items():
        after = module.weight.detach()
        assert torch.count_nonzero(grads[name]) > 0
        assert not torch.equal(after, shared[name])  # the centroids moved
        assert torch.equal(after == 0, before[name] == 0)  # zeros stay zero, survivors nonzero
        assert len(torch.unique(after[after != 0])) <= 4
    computed = {n: m.weight.detach().clone() for n, m in mods.items()}
    layers = unshare_weights(model)
    assert {n: layer.mask.shape for n, layer in layers.items()} == {
        "1": (4, 1, 5, 5),
        "3": (3, 4, 3, 2),
        "5": (10, 330),
    }
    for name, module in prunable(model):
        assert not parametrize.is_parametrized(module)
        assert type(module.weight) is nn.Parameter
        assert torch.equal(module.weight.detach(), torch.from_numpy(layers[name].dense()))
        assert torch.equal(module.weight.detach(), computed[name])
    assert set(model.state_dict()) == {"1.weight", "1.bias", "3.weight", "5.weight", "5.bias"}


def test_a_conv_centroids_gradient_is_the_sum_of_its_weights_gradients():
    model = conv_model(seed=1)
    share_weights(model, 3)
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(16, 784, generator=g), torch.randint(0, 10, (16,), generator=g)
    for name in ("1", "3"):
        module = dict(prunable(model))[name]
        shared = module.parametrizations.weight[0]
        with parametrize.cached():
            loss = nn.functional.cross_entropy(model(x), y)
            grad_w, grad_c = torch.autograd.grad(loss, [module.weight, shared.centroids])
        assert grad_w.shape == shared.mask.shape and grad_w.dim() == 4
        expected = torch.zeros_like(grad_c).index_add_(0, shared.codes, grad_w[shared.mask])
        assert torch.allclose(grad_c, expected, rtol=1e-5, atol=1e-8)
        assert torch.count_nonzero(grad_c) > 0
