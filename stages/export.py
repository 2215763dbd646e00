"""Stage export: the shipped model and the structured method's smaller network as ONNX, checked by ONNX Runtime.

Writes models/model.onnx (models/model.nnc decoded: any network of model.arch) and
models/structured.onnx (the structured method's shrunk dense network at the shipped rate,
compress.sparsity); ONNX Runtime must predict every test image's class as PyTorch does, with logits
within 1e-4. metrics/export.json has both runtimes' test accuracy, the file sizes, and batch-1 and
batch-256 CPU latencies. For a network structured pruning refuses (a branching one, say: a
ParamError, before any work), the structured export is skipped: "structured": null in the metrics.
"""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

from pathlib import Path

from nncompress import config
from nncompress.export import export_stage
from nncompress.fileio import write_json
from nncompress.runner import arguments, run_stage


def main() -> None:
    parser = arguments(
        __doc__,
        onnx="models/model.onnx",
        structured="models/structured.onnx",
        metrics="metrics/export.json",
    )
    parser.add_argument("--nnc", type=Path, default=Path("models/model.nnc"), help="the shipped file")
    args = parser.parse_args()
    params = config.load(args.params)
    metrics = export_stage(params, args.nnc, args.model, args.split_dir, args.onnx, args.structured)
    write_json(args.metrics, metrics, digits=9)  # keeps max_logit_diff (~1e-7) from rounding to 0
    for name, out in (("model", args.onnx), ("structured", args.structured)):
        m = metrics[name]
        if m is None:
            continue  # skipped: export_stage said why
        print(
            f"{out}: {m['onnx_bytes']:,} bytes, {m['parameters']:,} parameters; test accuracy "
            f"{m['test_accuracy']:.4f} (ONNX Runtime) = {m['torch_test_accuracy']:.4f} (PyTorch), logits within "
            f"{m['max_logit_diff']:.1g}; latency batch 1: {m['onnxruntime_latency_b1_us']:.1f} us "
            f"(PyTorch {m['torch_latency_b1_us']:.1f}), batch 256: {m['onnxruntime_latency_b256_us']:.1f} us "
            f"(PyTorch {m['torch_latency_b256_us']:.1f})"
        )


if __name__ == "__main__":
    run_stage(main)
