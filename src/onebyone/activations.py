"""The one registry of activations: a name -> its NumPy function, its torch module and function, and
the oneDNN post-op that fuses it into a product.

Everything that names an activation (``SharedMLP(activation=...)``, a fused chain's plan, ``ConvAct``,
the analyzer, the rewrites that look for "nothing nonlinear between two layers") reads this table;
``onebyone.torch.activations`` resolves the torch names. NumPy only: torch names are strings here.

>>> REGISTRY["relu6"].numpy(np.array([-1.0, 3.0, 9.0]))
array([0., 3., 6.])
>>> sorted(name for name, a in REGISTRY.items() if a.onednn is not None)  # what a oneDNN product can fuse
['gelu', 'identity', 'relu', 'relu6']
"""
from __future__ import annotations

from dataclasses import dataclass
from math import erf
from typing import Callable

import numpy as np

from .errors import OneByOneError


@dataclass(frozen=True)
class Activation:
    """One elementwise activation under all the names the project uses for it.

    Attributes:
        numpy: the reference function on arrays.
        torch_module: the class name in ``torch.nn`` (built with no arguments).
        torch_function: the function name in ``torch.nn.functional``.
        onednn: ``(attr, scalars, algorithm)`` of oneDNN's fused post-op, or None where oneDNN has none.
        monotone: non-decreasing, so it commutes with a max pool.
    """

    name: str
    numpy: Callable
    torch_module: str
    torch_function: str
    onednn: tuple | None = None
    monotone: bool = False


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _gelu(z):  # the exact (erf) GELU, as torch's nn.GELU() and oneDNN's "gelu" with algorithm "none"
    return 0.5 * z * (1 + np.vectorize(erf, otypes=[float])(np.asarray(z) / np.sqrt(2)))


REGISTRY = {a.name: a for a in (
    Activation("identity", lambda z: z, "Identity", "", ("none", [], ""), monotone=True),
    Activation("relu", lambda z: np.maximum(z, 0), "ReLU", "relu", ("relu", [], ""), monotone=True),
    Activation("relu6", lambda z: np.clip(z, 0, 6), "ReLU6", "relu6", ("hardtanh", [0.0, 6.0], ""), monotone=True),
    Activation("gelu", _gelu, "GELU", "gelu", ("gelu", [], "none")),
    Activation("leaky_relu", lambda z: np.where(z > 0, z, 0.01 * z), "LeakyReLU", "leaky_relu", monotone=True),
    Activation("tanh", np.tanh, "Tanh", "tanh", monotone=True),
    Activation("sigmoid", _sigmoid, "Sigmoid", "sigmoid", monotone=True),
    Activation("silu", lambda z: z * _sigmoid(z), "SiLU", "silu"),
    Activation("elu", lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))), "ELU", "elu", monotone=True),
    Activation("hardswish", lambda z: z * np.clip(z + 3, 0, 6) / 6, "Hardswish", "hardswish"),
    Activation("hardsigmoid", lambda z: np.clip(z + 3, 0, 6) / 6, "Hardsigmoid", "hardsigmoid", monotone=True),
)}
FUSABLE = tuple(name for name, a in REGISTRY.items() if a.onednn is not None)  # fused into a oneDNN product


def get(name) -> Activation:
    """The registry entry of ``name`` (None means identity), or a clear error listing the names."""
    name = "identity" if name is None else name
    if name not in REGISTRY:
        raise OneByOneError(f"activation must be one of {tuple(REGISTRY)}, got {name!r}")
    return REGISTRY[name]
