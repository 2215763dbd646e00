"""MNIST: the official files (download, verification, parsing) and the splits the stages use."""

from nncompress.data.split import SPLITS, Split, load_split, load_splits, make_splits, save_splits

__all__ = ["SPLITS", "Split", "load_split", "load_splits", "make_splits", "save_splits"]
