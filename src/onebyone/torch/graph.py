"""torch.fx helpers for the rewrites: trace with shapes, find who calls what, swap modules by name."""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..activations import REGISTRY
from ..errors import OneByOneError
from .layer_kinds import ELEMENTWISE
from .layers import ChannelBatchNorm, Pointwise

# the registered activations called as functions or methods (F.relu, torch.relu, x.relu()), and dropout
ELEMENTWISE_FUNCTIONS = (
    {getattr(torch.nn.functional, a.torch_function) for a in REGISTRY.values() if a.torch_function}
    | {getattr(torch, a.torch_function) for a in REGISTRY.values() if hasattr(torch, a.torch_function or "-")}
    | {torch.nn.functional.dropout}
)
ELEMENTWISE_METHODS = {a.torch_function for a in REGISTRY.values() if hasattr(torch.Tensor, a.torch_function or "-")}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return (isinstance(m, (Pointwise, ChannelBatchNorm)) or getattr(m, "fx_leaf", False)
                or super().is_leaf_module(m, qualname))


def trace(model: nn.Module, example=None) -> fx.GraphModule:
    """Trace ``model`` (its submodules kept by reference) and record each node's output shape
    when an ``example`` is given (a tensor, a tuple of them, or a dict keyed by ``forward``'s argument names)."""
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise OneByOneError(f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}") from e
    if example is not None:
        args = example if isinstance(example, (tuple, list)) else (example,)
        if isinstance(example, dict):
            names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
            if set(names) - set(example):
                raise OneByOneError(f"the traced graph of {type(model).__name__} takes {names}; "
                                    f"example has {sorted(example)}")
            args = [example[n] for n in names]
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(*args)
        except Exception as e:  # noqa: BLE001 - a graph that runs differently from the model (fx's limits)
            raise OneByOneError(f"torch.fx traced {type(model).__name__}, but its graph does not run on the example "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    return gm


def shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def module(gm, node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_gap(gm, node) -> bool:
    """A global average pool: AdaptiveAvgPool2d or F.adaptive_avg_pool2d to 1 x 1."""
    m = module(gm, node)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return m.output_size in (1, (1, 1))
    return (
        node.op == "call_function"
        and getattr(node.target, "__name__", "") == "adaptive_avg_pool2d"
        and node.args[1] in (1, (1, 1))
    )


def is_elementwise(gm, node) -> bool:
    if node.op == "call_module":
        return isinstance(module(gm, node), ELEMENTWISE)
    if node.op == "call_function":
        return node.target in ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in ELEMENTWISE_METHODS


def call_counts(root: nn.Module, gm) -> dict:
    """id(module) -> number of places that call it (graph call sites, and names it is registered under)."""
    calls = defaultdict(int)
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[id(gm.get_submodule(n.target))] += 1
    names = defaultdict(set)
    for name, m in root.named_modules(remove_duplicate=False):
        names[id(m)].add(name)
    return {k: max(calls.get(k, 0), len(names.get(k, ()))) for k in set(calls) | set(names)}


def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at the qualified ``name`` in ``root``; returns the root, which is ``new`` itself when
    ``name`` is "" (the model is the module replaced)."""
    if not name:
        return new
    parent, _, last = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, last, new)
    return root


def only_user(node):
    users = list(node.users)
    return users[0] if len(users) == 1 else None
