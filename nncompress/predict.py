"""Any model file the project writes, run on images: the shipped .nnc, an exported .onnx (ONNX
Runtime) or a weights-only .pt state_dict (PyTorch); what `nncompress eval` measures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nncompress.errors import CheckpointError

if TYPE_CHECKING:
    from nncompress.nets import NetConfig

FORMATS = (".nnc", ".onnx", ".pt")
Logits = Callable[[torch.Tensor], np.ndarray]  # images (N, 784) -> logits (N, classes)


def load_state_dict_mlp(path: Path, activation: str, dropout: float = 0.0) -> torch.nn.Module:
    """The MLP a weights-only state_dict holds. The file records no architecture: the widths of its
    hidden layers are read from its weights fc1 .. fcN (so shrunk models load too), the activation
    is the caller's."""
    from nncompress.model import MLP, load_checkpoint

    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or hostile file: refuse it, whatever the cause
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__})") from None
    weights = []
    while isinstance(state, dict) and isinstance(state.get(f"fc{len(weights) + 1}.weight"), torch.Tensor):
        weights.append(state[f"fc{len(weights) + 1}.weight"])
    if len(weights) < 2 or any(w.dim() != 2 for w in weights):
        raise CheckpointError(
            f"{path}: expected the MLP's state_dict (fc1.weight, fc1.bias, fc2.weight, fc2.bias, ...)"
        )
    return load_checkpoint(MLP([w.shape[0] for w in weights[:-1]], activation, dropout), path).eval()


def load_state_dict(path: Path, net: NetConfig) -> torch.nn.Module:
    """The network of the model section `net` holding a weights-only state_dict: an mlp section's
    widths are read from the weights (a shrunk MLP loads too), any other network is built as the
    section says and must match the weights (a one-line CheckpointError otherwise)."""
    from nncompress.model import load_checkpoint
    from nncompress.nets.mlp import MLPConfig

    if isinstance(net, MLPConfig):
        return load_state_dict_mlp(path, net.activation, net.dropout)
    with torch.random.fork_rng(devices=[]):  # the weights are the file's: leave torch's RNG as it was
        model = net.build()
    return load_checkpoint(model, path).eval()


def load(path: str | Path, activation: str | None = None, net: NetConfig | None = None) -> Logits:
    """A function from images to logits for the model file at `path`, chosen by its extension.
    A .pt file records no network: `activation` makes it an MLP whose widths are read from its
    weights (see load_state_dict_mlp), else `net` (a model section, any arch) says what it is."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from nncompress.export import OnnxModel, onnx_logits

        onnx = OnnxModel(path)
        return lambda images: onnx_logits(onnx, images)
    if suffix == ".nnc":
        from nncompress.compress import codec

        model = codec.load(path)
    elif suffix == ".pt":
        if activation is not None:
            model = load_state_dict_mlp(path, activation)
        elif net is not None:
            model = load_state_dict(path, net)
        else:
            raise CheckpointError(
                f"{path}: a state_dict does not record its network (pass --params with its model section, "
                "or --activation for an MLP)"
            )
    else:
        raise CheckpointError(
            f"{path}: unknown model format {suffix or '(no extension)'!r} (expected .nnc, .onnx or .pt)"
        )
    from nncompress.export import torch_logits

    return lambda images: torch_logits(model, images)


def accuracy(logits: Logits, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits(images).argmax(1) == labels.numpy()).mean())
