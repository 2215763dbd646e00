"""Stage download: the four official MNIST files into data/mnist, each verified by MD5.

Sources in order: $MNIST_MIRROR (a local folder or a base URL) if set, then download.mirrors.
"""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

from nncompress import config
from nncompress.data import mnist
from nncompress.runner import arguments, run_stage


def main() -> None:
    args = arguments(__doc__, checkpoint=False, out="data/mnist").parse_args()
    params = config.load(args.params).download
    for path in mnist.download(args.out, params.mirrors, params.timeout):
        print(f"{path}: MD5 verified")


if __name__ == "__main__":
    run_stage(main)
