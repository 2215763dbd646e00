"""Stage download: the four official MNIST files into data/mnist, each verified by MD5.

Sources in order: $MNIST_MIRROR (a local folder or a base URL) if set, then download.mirrors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nncompress import mnist
from nncompress.cli import run_stage
from nncompress.params import DownloadParams, load_params, section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/mnist"))
    args = parser.parse_args()
    params = section(load_params(args.params), DownloadParams, "download")
    for path in mnist.download(args.out, params.mirrors, params.timeout):
        print(f"{path}: MD5 verified")


if __name__ == "__main__":
    run_stage(main)
