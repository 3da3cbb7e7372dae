"""torch.fx helpers for the rewrites: trace with shapes, find who calls what, swap modules by name."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.overrides import TorchFunctionMode

from ..activations import REGISTRY
from ..errors import OneByOneError
from .layer_kinds import ELEMENTWISE
from .layers import ChannelBatchNorm, Pointwise
from .tensors import call, tensor_args

# the registered activations called as functions or methods (F.relu, torch.relu, x.relu()), and dropout
ELEMENTWISE_FUNCTIONS = (
    {getattr(torch.nn.functional, a.torch_function) for a in REGISTRY.values() if a.torch_function}
    | {getattr(torch, a.torch_function) for a in REGISTRY.values() if hasattr(torch, a.torch_function or "-")}
    | {torch.nn.functional.dropout}
)
ELEMENTWISE_METHODS = {a.torch_function for a in REGISTRY.values() if hasattr(torch.Tensor, a.torch_function or "-")}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (Pointwise, ChannelBatchNorm)) or super().is_leaf_module(m, qualname)


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
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
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


# --- what feeds what, from one eager run (for models fx cannot trace) ------------------------------

_METADATA = {"dim", "size", "__get__", "stride", "is_contiguous", "numel", "data_ptr", "__len__", "is_floating_point",
             "element_size", "ndimension", "nelement", "__format__", "__repr__", "__bool__"}


@dataclass
class Call:
    name: str  # the module's qualified name
    module: nn.Module
    input: tuple | None  # the key of its first input tensor (see ``Calls``)
    output: tuple | None  # the key of its output tensor
    input_shape: tuple | None = None
    output_shape: tuple | None = None


@dataclass
class Calls:
    """One eager run, module by module: every call of a leaf module (one without children) with its first
    input and its output; which call produced each value; who used each value (leaf calls, or by name the
    torch functions run in a container's own ``forward``, shape queries aside); and how many places call
    each module (calls, and names it is registered under).

    A value is keyed by its tensor's identity and a generation, which a call that returns its own input
    (in place, or Identity) starts anew: the uses after it are uses of that call's output."""

    calls: list = field(default_factory=list)
    producer: dict = field(default_factory=dict)  # value key -> Call
    uses: dict = field(default_factory=lambda: defaultdict(list))  # value key -> [Call or function name]
    counts: dict = field(default_factory=dict)  # id(module) -> places
    generation: dict = field(default_factory=dict)  # id(tensor) -> its current generation
    keep: list = field(default_factory=list)  # the tensors, alive until the record is dropped (ids stay unique)

    def key(self, t: torch.Tensor) -> tuple:
        self.keep.append(t)
        return id(t), self.generation.get(id(t), 0)


class _Uses(TorchFunctionMode):
    def __init__(self, record: Calls, depth: list):
        super().__init__()
        self.record, self.depth = record, depth

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.depth[0] and getattr(func, "__name__", "") not in _METADATA:  # not inside a leaf module
            for t in tensor_args(args, kwargs):
                self.record.uses[self.record.key(t)].append(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


def record_calls(model: nn.Module, example) -> Calls:
    """Run ``model`` once on ``example`` (a tensor, a tuple or a dict of them) and record ``Calls``."""
    record, depth, open_calls, hooks = Calls(), [0], [], []
    names = {id(m): n for n, m in reversed(list(model.named_modules()))}

    def pre(m, args, kwargs):
        depth[0] += 1
        tensors = tensor_args(args, kwargs)
        first = tensors[0] if tensors else None
        c = Call(names.get(id(m), ""), m, record.key(first) if first is not None else None, None,
                 tuple(first.shape) if first is not None else None)
        record.calls.append(c)
        open_calls.append((c, first))
        for t in tensors:
            record.uses[record.key(t)].append(c)

    def post(m, args, kwargs, out):
        depth[0] -= 1
        c, first = open_calls.pop()
        if isinstance(out, torch.Tensor):
            if out is first:  # in place, or handed through: what follows uses a new value
                record.generation[id(out)] = record.generation.get(id(out), 0) + 1
            c.output, c.output_shape = record.key(out), tuple(out.shape)
            record.producer.setdefault(c.output, c)

    leaves = [m for m in model.modules() if not list(m.children())]
    try:
        for m in leaves:
            hooks.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            hooks.append(m.register_forward_hook(post, with_kwargs=True))
        with torch.no_grad(), _Uses(record, depth):
            call(model, example)
    finally:
        for h in hooks:
            h.remove()
    per_module = defaultdict(int)
    for c in record.calls:
        per_module[id(c.module)] += 1
    registered = defaultdict(int)
    for _, m in model.named_modules(remove_duplicate=False):
        registered[id(m)] += 1
    record.counts = {k: max(per_module.get(k, 0), registered.get(k, 0)) for k in set(per_module) | set(registered)}
    return record
