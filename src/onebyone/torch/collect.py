"""The analyzer's PyTorch front-end: module hooks plus the functional ops seen during one forward pass.

Collect (hooks and a TorchFunctionMode record one row per call) -> aggregate (``ModelStats``) ->
render (``ModelStats.table`` / ``to_dict``). Every number comes from ``onebyone.cost``. Hooks are
removed and the train/eval mode restored in ``finally``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import cost
from ..errors import OneByOneError
from ..stats import LayerStats, ModelStats, conv_kind
from .layer_cost import counts_products, layer_cost
from .layer_kinds import ACTIVATION_LIKE as ACTS
from .layer_kinds import NORMS, POOLS
from .tensors import input_kw

SILENT = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)
FUNCTIONS = {F.linear: "linear", F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d", torch.matmul: "matmul",
             torch.Tensor.matmul: "matmul", torch.Tensor.__matmul__: "matmul", torch.mm: "mm", torch.bmm: "bmm",
             torch.einsum: "einsum"}


def _numel(shape) -> int:
    return math.prod(shape)


def _functional_cost(func, args, kwargs, out, dtype) -> tuple[str, int, int]:
    """(kind, macs, weights) of a functional op from its operands' shapes."""
    name = FUNCTIONS[func]
    if name == "linear":
        w = args[1]
        return "dense", cost.dense_cost(tuple(args[0].shape), w.shape[0], bias=False).macs, w.numel()
    if name.startswith("conv"):
        w = args[1]
        groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
        return conv_kind(tuple(w.shape[2:]), groups, args[0].shape[1]), out.numel() * _numel(w.shape[1:]), w.numel()
    if name == "einsum":  # every index combination is one multiply-accumulate
        spec = args[0].replace(" ", "")
        ops = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        sizes = {}
        for letters, t in zip(spec.split("->")[0].split(","), ops):
            letters = letters.replace("...", "")
            sizes.update(zip(letters, t.shape[t.dim() - len(letters):]))
        out_letters = spec.split("->")[1].replace("...", "") if "->" in spec else ""
        batch = _numel(out.shape[:out.dim() - len(out_letters)]) if "..." in spec else 1
        return "dense", _numel(sizes.values()) * batch, 0
    a = args[0]
    return "dense", out.numel() * a.shape[-1], 0  # matmul family: each output sums over a's last axis


class _Spy(TorchFunctionMode):
    def __init__(self, collector):
        super().__init__()
        self.c = collector

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in FUNCTIONS and self.c.inside_counted == 0 and isinstance(out, torch.Tensor):
            self.c.functional(func, args, kwargs, out)
        return out


class _Collector:
    def __init__(self, model, dtype):
        self.model, self.dtype = model, dtype
        self.names = {}
        for name, m in model.named_modules():
            self.names.setdefault(id(m), name or type(model).__name__)
        self.stack, self.shapes, self.rows, self.inside_counted = [], [], [], 0
        self.claimed, self.functional_in = set(), set()

    def _params(self, tensors) -> int:
        n = 0
        for p in tensors:
            if isinstance(p, nn.Parameter) and id(p) not in self.claimed:
                self.claimed.add(id(p))
                n += p.numel()
        return n

    def pre(self, m, inputs):
        self.stack.append(self.names.get(id(m), type(m).__name__))
        self.shapes.append(
            (type(m).__name__, tuple(inputs[0].shape) if inputs and isinstance(inputs[0], torch.Tensor) else None)
        )
        if counts_products(m) or isinstance(m, NORMS + ACTS + POOLS):
            self.inside_counted += 1

    def post(self, m, inputs, output):
        name = self.stack.pop()
        self.shapes.pop()
        if not (counts_products(m) or isinstance(m, NORMS + ACTS + POOLS + SILENT)):
            return
        if counts_products(m) or isinstance(m, NORMS + ACTS + POOLS):
            self.inside_counted -= 1
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if x is None or not isinstance(output, torch.Tensor):
            return
        row = LayerStats(name, type(m).__name__, "other", tuple(x.shape), tuple(output.shape), depth=name.count("."))
        row.params = self._params(m.parameters())
        size = cost.itemsize(self.dtype)
        row.activations, row.bytes_read, row.bytes_written = (
            output.numel(),
            (x.numel() + row.params) * size,
            output.numel() * size,
        )
        if counts_products(m):
            row.kind, c = layer_cost(m, x, self.dtype)
            row.weights, row.macs, row.bytes_read = c.weight_params if row.params else 0, c.macs, c.bytes_read
        elif isinstance(m, NORMS):
            row.kind = "norm"  # no weight-input MACs: an eval norm is a per-channel affine that folds into a conv
        elif isinstance(m, ACTS):
            row.kind = "activation"
        elif isinstance(m, POOLS):
            row.kind = "pool"
        else:
            return  # Identity / Dropout / Flatten: no cost, no row
        self.rows.append(row)

    def functional(self, func, args, kwargs, out):
        kind, macs, weights = _functional_cost(func, args, kwargs, out, self.dtype)
        where = self.stack[-1] if self.stack else type(self.model).__name__
        self.functional_in.add(where)
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        row = LayerStats(
            f"{where}.{FUNCTIONS[func]}",
            f"F.{FUNCTIONS[func]}",
            kind,
            tuple(tensors[0].shape) if tensors else (),
            tuple(out.shape),
            depth=where.count(".") + 1,
        )
        row.params = self._params(tensors)
        row.weights = weights if row.params else 0
        size = cost.itemsize(self.dtype)
        row.macs, row.activations = macs, out.numel()
        row.bytes_read, row.bytes_written = sum(t.numel() for t in tensors) * size, out.numel() * size
        self.rows.append(row)


def analyze(model: nn.Module, input_size=None, example=None, batch_size: int = 1, dtype: str = "float32") -> ModelStats:
    """Per-layer params, MACs and memory of a torch model over one forward pass.

    Args:
        input_size: one sample's shape, e.g. (3, 224, 224); or give ``example`` (a tensor).
        dtype: the dtype the byte counts assume.
    """
    if example is None:
        if input_size is None:
            raise OneByOneError(
                f"{type(model).__name__} needs an input to be analyzed: pass input_size=(C, H, W) or example="
            )
        example = torch.zeros((batch_size, *input_size), **input_kw(model))
    c = _Collector(model, dtype)
    hooks = []
    was_training = model.training
    try:
        for m in model.modules():
            hooks.append(m.register_forward_pre_hook(c.pre))
            hooks.append(m.register_forward_hook(c.post))
        model.eval()
        with torch.no_grad(), _Spy(c):
            try:
                model(example)
            except OneByOneError:
                raise
            except Exception as e:  # noqa: BLE001 - name the layer that failed
                where = c.stack[-1] if c.stack else type(model).__name__
                layer = f"; `{where}` ({c.shapes[-1][0]}) received {c.shapes[-1][1]}" if c.shapes else ""
                raise OneByOneError(
                    f"{type(model).__name__} failed at `{where}` on input of shape {tuple(example.shape)}: "
                    f"{type(e).__name__}: {e}{layer}"
                ) from e
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    uncounted = []
    for name, m in model.named_modules():
        own = [p for p in m.parameters(recurse=False) if id(p) not in c.claimed]
        if own and name not in c.functional_in:
            uncounted.append(
                (
                    name,
                    type(m).__name__,
                    f"{sum(p.numel() for p in own):,} params in a layer type the analyzer does not know",
                )
            )
    rest = total - sum(r.params for r in c.rows)
    if rest:
        c.rows.append(LayerStats("(other parameters)", "-", "other", (), (), params=rest))
    return ModelStats(type(model).__name__, c.rows, total, uncounted, int(example.shape[0]), dtype)
