"""The reference MLP and checkpoint loading that refuses anything but a matching state_dict (the
other networks and the registry: tests/test_nets.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nncompress.errors import CheckpointError
from nncompress.model import ACTIVATIONS, MLP, build_model, load_checkpoint, save_checkpoint
from nncompress.nets.mlp import MLPConfig


def ModelConfig(hidden_size: int, activation: str, dropout: float) -> MLPConfig:  # noqa: N802
    """The model section of an MLP with one hidden layer, as the old ModelConfig took it."""
    return MLPConfig(hidden=[hidden_size], activation=activation, dropout=dropout)


class Exploit:
    """Unpickling this creates a file: proof that arbitrary code would have run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_default_mlp_has_the_reference_parameter_count():
    model = MLP()
    assert n_params(model) == 203_530  # 784*256 + 256 + 256*10 + 10
    assert model.fc1.weight.shape == (256, 784)
    assert model.fc2.weight.shape == (10, 256)
    assert n_params(build_model(ModelConfig(hidden_size=256, activation="sigmoid", dropout=0.15))) == 203_530


def test_hidden_size_is_honoured():
    model = build_model(ModelConfig(hidden_size=16, activation="sigmoid", dropout=0.15))
    assert n_params(model) == 784 * 16 + 16 + 16 * 10 + 10


@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28), (5, 1, 28, 28)])
def test_output_shape(shape):
    torch.manual_seed(0)
    model = MLP(hidden_size=8)
    out = model(torch.rand(shape))
    assert out.shape == (5, 10)


@pytest.mark.parametrize(
    ("name", "cls", "fn"),
    [("sigmoid", nn.Sigmoid, torch.sigmoid), ("relu", nn.ReLU, torch.relu), ("tanh", nn.Tanh, torch.tanh)],
)
def test_activation_is_honoured(name, cls, fn):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, activation=name, dropout=0.5)).eval()
    assert type(model.act) is cls
    x = torch.randn(4, 784)
    expected = model.fc2(fn(model.fc1(x)))
    assert torch.allclose(model(x), expected)


def test_the_model_owns_the_activation_names():
    """config.ModelConfig accepts exactly model.ACTIVATIONS, so each must build."""
    assert ACTIVATIONS == ("sigmoid", "relu", "tanh")
    for name in ACTIVATIONS:
        assert build_model(ModelConfig(hidden_size=4, activation=name, dropout=0.0)).fc1.out_features == 4


def test_build_model_builds_what_the_section_says():
    model = build_model(MLPConfig(arch="mlp", hidden=[12], activation="tanh", dropout=0.25))
    assert model.fc1.weight.shape == (12, 784)
    assert type(model.act) is nn.Tanh
    assert model.dropout.p == 0.25


def test_activations_give_different_outputs():
    x = torch.randn(4, 784)
    outputs = []
    for name in ("sigmoid", "relu", "tanh"):
        torch.manual_seed(0)
        outputs.append(MLP(8, name, 0.0).eval()(x))
    assert not torch.allclose(outputs[0], outputs[1])
    assert not torch.allclose(outputs[1], outputs[2])


def test_dropout_is_honoured():
    model = build_model(ModelConfig(hidden_size=8, activation="sigmoid", dropout=0.3))
    assert type(model.dropout) is nn.Dropout
    assert model.dropout.p == 0.3
    assert MLP().dropout.p == 0.15


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    model = MLP(hidden_size=64, dropout=0.5)
    x = torch.rand(3, 784)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    no_dropout = MLP(hidden_size=64, dropout=0.0).train()
    assert torch.equal(no_dropout(x), no_dropout(x))


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    saved = MLP(hidden_size=16, activation="relu")
    path = tmp_path / "models" / "model.pt"
    save_checkpoint(saved, path)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    torch.manual_seed(2)
    loaded = MLP(hidden_size=16, activation="relu")
    assert not torch.equal(loaded.fc1.weight, saved.fc1.weight)
    assert load_checkpoint(loaded, path) is loaded
    for key, tensor in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor)
    x = torch.rand(2, 784)
    assert torch.equal(loaded.eval()(x), saved.eval()(x))


def checkpoint_error(model, path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    message = checkpoint_error(MLP(8), path)
    assert message == f"{path}: missing (run the train stage first: dvc repro train)"


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint"])
def test_garbage_checkpoint(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    message = checkpoint_error(MLP(8), path)
    assert message.startswith(f"{path}: not a loadable weights-only checkpoint (")


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(MLP(8), path)
    path.write_bytes(path.read_bytes()[:300])
    assert "not a loadable weights-only checkpoint" in checkpoint_error(MLP(8), path)


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    torch.save(Exploit(marker), path)
    message = checkpoint_error(MLP(8), path)
    assert message == f"{path}: not a loadable weights-only checkpoint (UnpicklingError)"
    assert not marker.exists()


def test_state_dict_with_an_object_inside_is_refused(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "model.pt"
    state = MLP(8).state_dict()
    state["fc2.bias"] = Exploit(marker)
    torch.save(state, path)
    assert "not a loadable weights-only checkpoint" in checkpoint_error(MLP(8), path)
    assert not marker.exists()


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.zeros(3), path)
    assert checkpoint_error(MLP(8), path) == f"{path}: expected a state_dict, got Tensor"


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(MLP(hidden_size=128), path)
    message = checkpoint_error(MLP(hidden_size=256), path)
    assert message == (f"{path}: fc1.weight has shape [128, 784], the model in params.yaml expects [256, 784]")


def test_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "model.pt"
    state = MLP(8).state_dict()
    del state["fc2.bias"]
    torch.save(state, path)
    message = checkpoint_error(MLP(8), path)
    assert message == f"{path}: does not match the model: missing ['fc2.bias'], unexpected nothing"

    state["fc3.weight"] = torch.zeros(1)
    torch.save(state, path)
    message = checkpoint_error(MLP(8), path)
    assert message == f"{path}: does not match the model: missing ['fc2.bias'], unexpected ['fc3.weight']"


def test_pruned_state_dict_is_refused(tmp_path):
    """A state_dict saved with pruning masks attached has weight_orig / weight_mask keys."""
    from torch.nn.utils import prune

    model = MLP(8)
    prune.random_unstructured(model.fc1, "weight", amount=0.5)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    message = checkpoint_error(MLP(8), path)
    assert "missing ['fc1.weight']" in message
    assert "unexpected ['fc1.weight_mask', 'fc1.weight_orig']" in message


def test_failed_load_leaves_the_model_unchanged(tmp_path):
    path = tmp_path / "model.pt"
    state = MLP(8).state_dict()
    state["fc2.weight"] = torch.zeros(10, 9)
    torch.save(state, path)
    model = MLP(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = checkpoint_error(model, path)
    assert message == f"{path}: fc2.weight has shape [10, 9], the model in params.yaml expects [10, 8]"
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[key])
