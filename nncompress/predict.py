"""Any model file the project writes, run on images: the shipped .nnc, an exported .onnx (ONNX
Runtime) or a weights-only .pt state_dict (PyTorch); what `nncompress eval` measures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nncompress.errors import CheckpointError

FORMATS = (".nnc", ".onnx", ".pt")
Logits = Callable[[torch.Tensor], np.ndarray]  # images (N, 784) -> logits (N, classes)


def load_state_dict_mlp(path: Path, activation: str) -> torch.nn.Module:
    """The MLP a weights-only state_dict holds. The file records no architecture: the hidden size is
    read from its weights (so shrunk models load too), the activation is the caller's."""
    from nncompress.model import MLP, load_checkpoint

    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or hostile file: refuse it, whatever the cause
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__})") from None
    weight = state.get("fc1.weight") if isinstance(state, dict) else None
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise CheckpointError(f"{path}: expected the MLP's state_dict (fc1.weight, fc1.bias, fc2.weight, fc2.bias)")
    return load_checkpoint(MLP(weight.shape[0], activation), path).eval()


def load(path: str | Path, activation: str | None = None) -> Logits:
    """A function from images to logits for the model file at `path`, chosen by its extension.
    `activation` is needed for a .pt file only (see load_state_dict_mlp)."""
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
        if activation is None:
            raise CheckpointError(f"{path}: a state_dict does not record its activation (pass --activation)")
        model = load_state_dict_mlp(path, activation)
    else:
        raise CheckpointError(
            f"{path}: unknown model format {suffix or '(no extension)'!r} (expected .nnc, .onnx or .pt)"
        )
    from nncompress.export import torch_logits

    return lambda images: torch_logits(model, images)


def accuracy(logits: Logits, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits(images).argmax(1) == labels.numpy()).mean())
