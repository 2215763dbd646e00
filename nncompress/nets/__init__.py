"""The networks `model.arch` chooses from; importing this package registers every network module in it."""

import importlib
import pkgutil

from nncompress.nets.registry import IMAGE_SHAPE, IN_FEATURES, NETS, NUM_CLASSES, NetConfig, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["IMAGE_SHAPE", "IN_FEATURES", "NETS", "NUM_CLASSES", "NetConfig", "register"]
