"""The zoo's registry: ``register_model``, ``create_model``, ``list_models``, ``model_info``, and
``from_spec``, which also resolves ``package.module:factory``."""
from __future__ import annotations

import fnmatch
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Callable

from ..checks import check_int
from ..errors import OneByOneError, too_large
from .ecosystem import LIBRARIES, from_library


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
    """The names of the registered models matching the shell-style ``pattern`` ("*", "mobilenet*")."""
    if not isinstance(pattern, str):
        raise OneByOneError(f"pattern must be a string such as '*' or 'mobilenet*', got {pattern!r}")
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise OneByOneError(f"unknown model {name!r}; the zoo has: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, **kwargs):
    """Build a registered model, e.g. ``create_model("mobilenet_v1", num_classes=10, alpha=0.5)``, with random
    weights: ``pretrained=False`` is taken (as timm's), ``pretrained=True`` refused (the zoo has no weights to
    download: ``onebyone train`` makes them)."""
    fn = model_info(name).fn
    if kwargs.pop("pretrained", False):
        raise OneByOneError(f"{name}: the zoo has no pretrained weights (nothing is downloaded); train them with "
                            f"`onebyone train {name} --data ...` and load the run's checkpoint")
    for key in ("num_classes", "in_chans"):
        if key in kwargs:
            try:
                kwargs[key] = check_int(kwargs[key], f"{name}: {key}")
            except OneByOneError as e:
                zero = " (timm's num_classes=0, a model without its classifier, has no zoo form)" if \
                    kwargs[key] == 0 and key == "num_classes" else ""
                raise OneByOneError(f"{e}{zero}") from None
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError:
        takes = list(inspect.signature(fn).parameters)
        raise OneByOneError(f"{name}() does not take {sorted(set(kwargs) - set(takes)) or kwargs}; it takes {takes}") \
            from None
    call = f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    try:
        return fn(**kwargs)
    except OneByOneError as e:  # a layer's own check, in its words (out_channels...): the call named first
        raise OneByOneError(f"{call} could not be built: {e}") from None
    except (TypeError, ValueError, RuntimeError, MemoryError) as e:  # a value the layers refuse (dropout=2.0...)
        big = too_large(e, call)
        if big is not None:
            raise big from None
        raise OneByOneError(f"{call} could not be built: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None


def from_spec(spec: str, **kwargs):
    """A zoo name, ``timm:NAME``, ``torchvision:NAME`` or ``package.module:factory`` -> (model, default input
    size or None); ``kwargs`` go to the factory (``num_classes=10``). timm and torchvision models are built
    with random weights, at the input size their library publishes.

    The current directory is searched for the module, as ``python -m`` does. A factory's model may
    carry a ``default_input_size`` attribute.
    """
    if ":" not in spec:  # an unknown name lists the zoo; a factory may set its own size (resolution=160)
        model = create_model(spec, **kwargs)
        return model, tuple(getattr(model, "default_input_size", None) or model_info(spec).input_size)
    mod_name, _, attr = spec.partition(":")
    if mod_name in LIBRARIES:
        return from_library(spec, **kwargs)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001
        raise OneByOneError(f"could not import module {mod_name!r} (from {spec!r}): {type(e).__name__}: {e}") from e
    if not hasattr(module, attr):
        raise OneByOneError(f"module {mod_name!r} has no attribute {attr!r} (from {spec!r})")
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        model = getattr(module, attr)(**kwargs)
    except Exception as e:  # noqa: BLE001
        raise OneByOneError(f"calling {spec}({args}) failed: {type(e).__name__}: {e}") from e
    return model, getattr(model, "default_input_size", None)
