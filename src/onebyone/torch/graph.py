"""torch.fx helpers for the rewrites (the graph itself comes from ``capture.trace``): find who calls what,
swap modules by name."""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..activations import REGISTRY
from .layer_kinds import ELEMENTWISE

# the registered activations called as functions or methods (F.relu, torch.relu, x.relu()), and dropout
ELEMENTWISE_FUNCTIONS = (
    {getattr(torch.nn.functional, a.torch_function) for a in REGISTRY.values() if a.torch_function}
    | {getattr(torch, a.torch_function) for a in REGISTRY.values() if hasattr(torch, a.torch_function or "-")}
    | {torch.nn.functional.dropout}
)
ELEMENTWISE_METHODS = {a.torch_function for a in REGISTRY.values() if hasattr(torch.Tensor, a.torch_function or "-")}


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
    names = names_by_module(root)
    return {k: max(calls.get(k, 0), len(names.get(k, ()))) for k in set(calls) | set(names)}


def names_by_module(root: nn.Module) -> dict:
    """id(module) -> every qualified name it has in ``root`` (a module shared by several places has several)."""
    names = defaultdict(list)
    for name, m in root.named_modules(remove_duplicate=False):
        names[id(m)].append(name)
    return dict(names)


def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at the qualified ``name`` in ``root``; returns the root, which is ``new`` itself when
    ``name`` is "" (the model is the module replaced)."""
    if not name:
        return new
    parent, _, last = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, last, new)
    return root


def only_user(node, batch_aside: bool = False):
    """The one node that uses ``node``'s value, or None; with ``batch_aside``, reads of its batch size alone
    (``x.shape[0]``, ``x.size(0)``: what a flatten to (B, -1) reads) are not uses."""
    users = [u for u in node.users if not (batch_aside and _reads_batch(u))]
    return users[0] if len(users) == 1 else None


def _reads_batch(node) -> bool:
    if node.op == "call_method" and node.target == "size":
        return node.args[1:] == (0,) or node.kwargs.get("dim") == 0
    return (node.op == "call_function" and getattr(node.target, "__name__", "") == "getattr"
            and node.args[1:2] == ("shape",) and bool(node.users)
            and all(getattr(u.target, "__name__", "") == "getitem" and u.args[1:] == (0,) for u in node.users))


def where(node) -> str:
    """A node's name for a report: the path of the module whose ``forward`` computes it and the node
    (``stages.0.blocks.1 (add_3)``) where fx kept that path; an eager record's names carry it already."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else ""
    return f"{path} ({node.name})" if path else node.name
