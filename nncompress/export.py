"""ONNX export checked by ONNX Runtime, timing, and what the export stage reports.

Nothing here knows the MLP's attribute names: a network is any nn.Module that maps a batch of
inputs to logits (the registered networks, of Linear and Conv2d layers, all take the flat
784-pixel images the splits hold, and reshape them themselves). It is exported through torch.export (the
`dynamo` path of torch.onnx.export, which needs onnxscript) with a dynamic batch dimension, and a
file is moved into place only once ONNX Runtime has run it and agreed with PyTorch.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import CheckpointError, ExportError
from nncompress.fileio import atomic_path

if TYPE_CHECKING:
    import onnxruntime

    from nncompress.config import Params
    from nncompress.data import Split

OPSET = 20
INPUT_NAME, OUTPUT_NAME = "input", "logits"
LOGIT_TOLERANCE = 1e-4  # largest |ONNX Runtime logit - PyTorch logit| accepted
BATCH = 8192  # evaluation batch
STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata torch.onnx.export adds


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...]) -> None:
    """Write `model` (put in eval mode, moved to the CPU) as one ONNX file whose first dimension is
    the batch; `input_shape` is one input's shape (every registered network's: (784,))."""
    model = model.eval().cpu()
    example = torch.zeros(2, *input_shape)  # batch 2: torch.export specialises a batch of 1
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=OPSET,
        external_data=False,  # weights inside the file: one self-contained model
        verbose=False,
    )
    _drop_stack_traces(path)


def _drop_stack_traces(path: str | Path) -> None:
    """Remove the exporter's per-node Python stack traces: they hold this checkout's absolute paths,
    so the file's bytes (and its hash in dvc.lock) would depend on where it was made."""
    import onnx

    proto = onnx.load(str(path))
    for graph_nodes in [proto.graph.node, *(f.node for f in proto.functions)]:
        for node in graph_nodes:
            kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    onnx.save(proto, str(path))


class OnnxModel:
    """An ONNX file run by ONNX Runtime on the CPU, on one thread (as the stages run PyTorch)."""

    def __init__(self, path: str | Path):
        import onnxruntime

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: missing")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: they surface as exceptions anyway
        try:
            self.session: onnxruntime.InferenceSession = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types for every kind of bad file
            raise CheckpointError(f"{self.path}: not a loadable ONNX model ({type(exc).__name__})") from None
        (self.input,) = self.session.get_inputs()
        # One input's shape, when the file fixes it (dimension names or None are left as -1).
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in self.input.shape[1:])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input.name: x})[0]

    def shaped(self, images: torch.Tensor) -> np.ndarray:
        """`images` (N, ...) as the float32 array of the shape the model takes (N, *input_shape)."""
        flat = images.reshape(len(images), -1)
        if -1 not in self.input_shape and flat.shape[1] != int(np.prod(self.input_shape)):
            raise CheckpointError(
                f"{self.path}: takes inputs of shape {list(self.input_shape)}, "
                f"the images have {flat.shape[1]} values each"
            )
        return np.ascontiguousarray(flat.reshape(len(images), *self.input_shape).numpy(), dtype=np.float32)


@torch.inference_mode()
def torch_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]).numpy()


def onnx_logits(onnx: OnnxModel, images: torch.Tensor) -> np.ndarray:
    return np.concatenate([onnx(onnx.shaped(images[i : i + BATCH])) for i in range(0, len(images), BATCH)])


def check_agreement(expected: np.ndarray, got: np.ndarray, source: str, tolerance: float = LOGIT_TOLERANCE) -> float:
    """The largest logit difference; an ExportError unless every argmax is equal and logits are within `tolerance`."""
    differ = int((expected.argmax(1) != got.argmax(1)).sum())
    if differ:
        raise ExportError(
            f"{source}: ONNX Runtime predicts another class than PyTorch for {differ} of {len(expected)} inputs"
        )
    diff = float(np.abs(expected - got).max()) if expected.size else 0.0
    if not diff <= tolerance:  # also catches NaN
        raise ExportError(
            f"{source}: ONNX Runtime's logits differ from PyTorch's by {diff:.3g} (allowed: {tolerance:g})"
        )
    return diff


@dataclasses.dataclass(frozen=True)
class Exported:
    onnx: OnnxModel
    max_logit_diff: float  # against PyTorch, on the images it was checked on
    bytes: int


def export_checked(model: nn.Module, path: str | Path, images: torch.Tensor) -> Exported:
    """Export `model` to `path`, run the file with ONNX Runtime on `images` (N, *input shape) and
    compare with PyTorch; the file replaces `path` only if they agree (ExportError otherwise)."""
    with atomic_path(path) as tmp:
        export_onnx(model, tmp, tuple(images.shape[1:]))
        onnx = OnnxModel(tmp)
        diff = check_agreement(torch_logits(model, images), onnx_logits(onnx, images), str(path))
    onnx.path = Path(path)
    return Exported(onnx, diff, Path(path).stat().st_size)


def median_latency(run: Callable[[], Any], runs: int = 15, min_run_time: float = 0.02) -> float:
    """Median seconds per call of `run`: `runs` timed runs, each of enough calls to take `min_run_time`."""
    number = 1
    while True:  # doubling the calls per run also warms up caches and allocators
        start = time.perf_counter()
        for _ in range(number):
            run()
        if time.perf_counter() - start >= min_run_time:
            break
        number *= 2
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(number):
            run()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def latencies(model: nn.Module, onnx: OnnxModel, images: torch.Tensor, batches: tuple[int, ...] = (1, 256)) -> dict:
    """Microseconds per forward pass at each batch size, ONNX Runtime's and PyTorch's (one thread each)."""
    result = {}
    model.eval()
    for n in batches:
        x = images[:n].contiguous()
        x_onnx = onnx.shaped(x)
        with torch.inference_mode():
            torch_s = median_latency(lambda x=x: model(x))
        onnx_s = median_latency(lambda x_onnx=x_onnx: onnx(x_onnx))
        result[f"onnxruntime_latency_b{n}_us"] = round(onnx_s * 1e6, 1)
        result[f"torch_latency_b{n}_us"] = round(torch_s * 1e6, 1)
    return result


def accuracy_from_logits(logits: np.ndarray, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels.numpy()).mean())


def weight_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, nonzero weights): every parameter, and the nonzero entries of every weight tensor."""
    parameters = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(p.count_nonzero()) for name, p in model.named_parameters() if name.endswith("weight"))
    return parameters, nonzero


def report(model: nn.Module, exported: Exported, test: Split) -> dict[str, float | int]:
    """What metrics/export.json says of one exported model: accuracy by both runtimes, size, speed."""
    images, labels = test
    parameters, nonzero = weight_counts(model)
    return {
        "test_accuracy": accuracy_from_logits(onnx_logits(exported.onnx, images), labels),
        "torch_test_accuracy": accuracy_from_logits(torch_logits(model, images), labels),
        "max_logit_diff": float(f"{exported.max_logit_diff:.2g}"),
        "onnx_bytes": exported.bytes,
        "parameters": parameters,
        "nonzero_weights": nonzero,
        **latencies(model, exported.onnx, images),
    }


STRUCTURED = "structured"  # the method whose smaller dense network is exported beside the shipped file


class Unsupported(Exception):
    """The structured method does not handle the network of params.yaml (its message says why)."""


def structured_model(params: Params, checkpoint: Path, train: Split, val: Split) -> nn.Module:
    """The structured method's network at the shipped rate (compress.sparsity), as its sweep would
    make it at that rate: seeded from (its first seed, rate), a fresh copy, pruned, shrunk, fine-tuned.
    Unsupported if structured pruning refuses the network (a `Refused`, a ParamError): before any
    work if it cannot handle the network at all (before the checkpoint is read), else once it has
    chosen the units to remove, if it cannot fold them away (filters feeding a padded convolution)."""
    from nncompress import model as model_lib
    from nncompress.prune import Context
    from nncompress.prune.masks import make_permanent
    from nncompress.prune.structured import Refused
    from nncompress.sweep import rate_seed
    from nncompress.training import resolve_device

    config = params.method(STRUCTURED)  # a missing section stays the ParamError it is
    device = resolve_device(params.finetune.device, "finetune.device")
    try:
        method = config.build(Context(params, train, val, device))  # checks the network first
        network = model_lib.build_model(params.model)
        trained = model_lib.load_checkpoint(network, checkpoint)
        fresh = model_lib.copier(params.model, trained)
        rate = params.compress.sparsity
        torch.manual_seed(rate_seed(config.sweep_seeds()[0], rate))
        model = method(fresh(), rate)
    except Refused as exc:
        raise Unsupported(str(exc)) from None
    make_permanent(model)
    return model.cpu().eval()


def export_stage(
    params: Params, nnc: Path, checkpoint: Path, split_dir: Path, onnx_out: Path, structured_out: Path
) -> dict[str, dict[str, float | int] | None]:
    """What the export stage does: the shipped file decoded (any network it holds), and the structured
    method's smaller dense network at the shipped rate, each exported to ONNX, checked by ONNX Runtime
    against PyTorch on the whole test set, timed; returns the metrics (written by the stage).

    For a network the structured method does not handle, its export is skipped (one line printed
    says why): its metrics are None, and a structured_out left by an earlier run is removed."""
    from nncompress.compress import codec
    from nncompress.data import load_splits

    train, val, test = load_splits(split_dir)
    shipped = codec.load(nnc)
    try:
        structured = structured_model(params, checkpoint, train, val)
    except Unsupported as exc:
        structured = None
        Path(structured_out).unlink(missing_ok=True)
        print(f"{structured_out}: skipped, {exc}")
    metrics: dict[str, dict[str, float | int] | None] = {}
    for name, model, out in (("model", shipped, onnx_out), (STRUCTURED, structured, structured_out)):
        metrics[name] = None if model is None else report(model, export_checked(model, out, test[0]), test)
    metrics["model"]["nnc_bytes"] = nnc.stat().st_size  # type: ignore[index]
    if metrics[STRUCTURED] is not None:
        metrics[STRUCTURED]["rate"] = params.compress.sparsity
    return metrics
