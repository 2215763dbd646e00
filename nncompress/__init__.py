"""Shared code for the MNIST pruning pipeline: data, model, training, pruning, reporting."""

__version__ = "0.1.0"
