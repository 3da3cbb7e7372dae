"""The model zoo: a decorator registry, ``create_model(name, **kwargs)`` and ``list_models(pattern)``.

Every model is built from ``onebyone.torch.Pointwise`` where its architecture has a 1x1 conv.
Importing this module imports torch.

>>> "mobilenet_v1" in list_models("mobilenet*")
True
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable

from ..errors import OneByOneError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable
    input_size: tuple  # one sample's (C, H, W) or (C, N)
    params: int  # with the default arguments, as stated in the family's docstring
    macs: int  # at input_size, batch 1 (multiply-accumulates, bias excluded)


_REGISTRY: dict = {}


def register_model(input_size, params: int, macs: int):
    """Register ``fn(**kwargs) -> nn.Module`` under its function name, with its default input size and
    the params and MACs its docstring states (the zoo test checks them with the analyzer)."""
    def wrap(fn):
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, fn, tuple(input_size), params, macs)
        return fn
    return wrap


def list_models(pattern: str = "*") -> list:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise OneByOneError(f"unknown model {name!r}; the zoo has: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs):
    """Build a registered model, e.g. ``create_model("mobilenet_v1", num_classes=10, alpha=0.5)``."""
    return model_info(name).fn(**kwargs)


from . import googlenet, mobilenet, nin, pointnet, squeezenet  # noqa: E402,F401  (register the families)

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
