"""The `nncompress` command: look into, convert and evaluate the models the pipeline ships.

    nncompress info FILE.nnc                       format, network, per-layer sizes, ratio, checksum
    nncompress export FILE.nnc --onnx OUT.onnx     the decoded network as ONNX (and/or --pt OUT.pt)
    nncompress eval FILE --split DIR               accuracy of a .nnc, .onnx or .pt model on a split

Exit codes: 0 success; 1 a bad file or input, reported as one line `error: ...` on stderr (the
same lines as the pipeline's loaders); 2 a usage error, reported by argparse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nncompress.errors import ParamError, PipelineError

if TYPE_CHECKING:
    from nncompress.nets import NetConfig

EXIT_CODES = """exit codes:
  0  success
  1  bad file or input: one line `error: ...` on stderr
  2  usage error (as argparse reports it)"""
CHECK_INPUTS = 256  # random images an export is checked on (ONNX Runtime against PyTorch)


def _info(args: argparse.Namespace) -> None:
    from nncompress.compress.info import summary

    print(summary(args.file))


def _export(args: argparse.Namespace) -> None:
    import torch

    from nncompress.compress import codec
    from nncompress.fileio import save_torch
    from nncompress.model import IN_FEATURES

    model = codec.load(args.file)
    if args.onnx:
        from nncompress.export import export_checked

        images = torch.rand(CHECK_INPUTS, IN_FEATURES, generator=torch.Generator().manual_seed(0))
        exported = export_checked(model, args.onnx, images)
        print(
            f"{args.onnx}: {exported.bytes:,} bytes, ONNX opset {_opset(args.onnx)}; ONNX Runtime agrees with "
            f"PyTorch on {CHECK_INPUTS} random inputs (logits within {exported.max_logit_diff:.1g})"
        )
    if args.pt:
        save_torch(args.pt, {k: v.detach().clone() for k, v in model.state_dict().items()})
        print(f"{args.pt}: {args.pt.stat().st_size:,} bytes, a weights-only state_dict (torch.save of tensors)")


def _opset(path: Path) -> int:
    import onnx

    return max(o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain == "")


def _eval(args: argparse.Namespace) -> None:
    from nncompress import predict
    from nncompress.data import load_split

    net = None
    if args.activation is None and args.file.suffix.lower() == ".pt" and args.params.is_file():
        net = _network_from(args.params)
    logits = predict.load(args.file, args.activation, net)
    images, labels = load_split(args.split, args.subset)
    accuracy = predict.accuracy(logits, images, labels)
    correct = round(accuracy * len(labels))
    print(
        f"{args.file}: {args.subset} accuracy {accuracy:.4f} "
        f"({correct:,} of {len(labels):,} images in {args.split / f'{args.subset}.pt'})"
    )


def _network_from(params: Path) -> NetConfig:
    """The model section of a params file (any arch), validated as the pipeline validates it; only
    that section is read, its errors are one-line ParamErrors naming the key."""
    from nncompress import config

    data = config.read_yaml(params)
    if "model" not in data:
        raise ParamError(f"{params}: no model section (the network a state_dict holds)")
    return config.parse_section("model", data["model"])


def parser() -> argparse.ArgumentParser:
    from nncompress.data.split import SPLITS
    from nncompress.model import ACTIVATIONS

    formatter = argparse.RawDescriptionHelpFormatter
    root = argparse.ArgumentParser(
        prog="nncompress", description=__doc__.split("\n\n")[0], epilog=EXIT_CODES, formatter_class=formatter
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info",
        help="describe a .nnc file",
        description="""Describe a compressed model file: format version, network, per layer its shape, kept
weights, shared values and bytes, the file's sections, its ratio to the dense fp32 network,
and its checksum. A damaged file is reported as the loader reports it.""",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    info.add_argument("file", type=Path, metavar="FILE.nnc")
    info.set_defaults(run=_info)

    export = commands.add_parser(
        "export",
        help="write the decoded network as ONNX and/or a PyTorch state_dict",
        description="""Decode a .nnc file and write the network as standard files, each atomically: ONNX
(moved into place only once ONNX Runtime agrees with PyTorch on random inputs) and/or a
weights-only PyTorch state_dict (torch.save of tensors only: torch.load(..., weights_only=True)).""",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    export.add_argument("file", type=Path, metavar="FILE.nnc")
    export.add_argument("--onnx", type=Path, metavar="OUT.onnx", help="write an ONNX model here")
    export.add_argument("--pt", type=Path, metavar="OUT.pt", help="write a weights-only state_dict here")
    export.set_defaults(run=_export, parser=export, need_one_of=("onnx", "pt"))

    evaluate = commands.add_parser(
        "eval",
        help="accuracy of a .nnc, .onnx or .pt model on a split",
        description="""Accuracy of a model file on a split written by the split stage (data/split): a .nnc
file, an .onnx file (run with ONNX Runtime) or a weights-only .pt state_dict (loaded with
weights_only=True). A state_dict records no network: with --activation it is an MLP whose
hidden sizes are read from the weights; else the model section of --params (any model.arch)
says which network it is (an mlp's widths are still read from the weights).""",
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    evaluate.add_argument("file", type=Path, metavar="FILE", help="a .nnc, .onnx or .pt model")
    evaluate.add_argument("--split", type=Path, required=True, metavar="DIR", help="a split directory (data/split)")
    evaluate.add_argument("--subset", choices=SPLITS, default="test", help="which split file (default: test)")
    evaluate.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        help="a .pt model is an MLP with this activation (--params is then not read)",
    )
    evaluate.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="read a .pt model's network from this file's model section when --activation is not given "
        "(default: params.yaml, if present)",
    )
    evaluate.set_defaults(run=_eval)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    needed = getattr(args, "need_one_of", ())
    if needed and not any(getattr(args, name) for name in needed):  # exits 2 with the command's usage
        args.parser.error(f"give at least one of {' or '.join('--' + name for name in needed)}")
    import torch

    torch.set_num_threads(1)  # as the stages: results independent of the core count
    try:
        args.run(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an output that cannot be written (a directory, no permission, a full disk)
        print(f"error: {exc.filename or 'output'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
