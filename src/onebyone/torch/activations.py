"""The activation registry (``onebyone.activations``) on the torch side: names to modules and functions,
and a module back to its name."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..activations import REGISTRY, get

MODULES = tuple(getattr(nn, a.torch_module) for a in REGISTRY.values())  # every registered activation's class
_NAMES = {getattr(nn, a.torch_module): name for name, a in REGISTRY.items()}


def module(name) -> nn.Module:
    """A new module of the activation ``name`` (None: identity)."""
    return getattr(nn, get(name).torch_module)()


def function(name, inplace: bool = False):
    """The function ``h -> act(h)`` of ``name``; ``inplace=True`` overwrites h where torch can."""
    a = get(name)
    if a.name == "identity":
        return lambda h: h
    fn = getattr(F, a.torch_function)
    if inplace and a.name in ("relu", "relu6", "leaky_relu", "elu", "silu", "hardswish", "hardsigmoid"):
        return lambda h: fn(h, inplace=True)
    return fn


def name_of(m: nn.Module) -> str | None:
    """The registry name of an activation module with its default settings, "identity" for Identity and
    an eval-mode Dropout, else None (a GELU with ``approximate='tanh'``, a LeakyReLU of another slope or an
    ELU of another alpha is not the registered function)."""
    if isinstance(m, nn.Dropout):
        return None if m.training and m.p > 0 else "identity"
    name = _NAMES.get(type(m))
    if name is not None and _settings(m) != _settings(type(m)()):
        return None
    return name


def _settings(m: nn.Module) -> dict:
    """A module's own numbers and choices (alpha, negative_slope, approximate...), mode and inplace aside."""
    return {k: v for k, v in vars(m).items()
            if not k.startswith("_") and k not in ("training", "inplace") and isinstance(v, (int, float, str))}
