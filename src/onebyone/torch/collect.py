"""The analyzer's PyTorch front-end: every module call and torch function of one forward pass.

Collect (a ``capture.watch`` listener writes one row per call) -> aggregate (``ModelStats``) ->
render (``ModelStats.table`` / ``to_dict``). Every number comes from ``onebyone.cost``. The train/eval
mode is restored when the run ends.

What is counted: every product of a tensor with a tensor. Layers (Conv, ConvTranspose, Linear,
Pointwise, MultiheadAttention and the fast path's modules) are counted as a whole; outside them the
functional products (``F.linear``, ``F.conv*``, ``matmul`` / ``mm`` / ``bmm`` / ``addmm`` /
``baddbmm`` / ``einsum`` ..., ``F.scaled_dot_product_attention``) are counted where they are called.
A product the analyzer cannot count is listed by name in ``ModelStats.uncounted``, never dropped.
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost
from ..errors import OneByOneError
from ..stats import LayerStats, ModelStats, conv_kind, mix_kind
from .capture import Listener, gc_paused, watch
from .layer_cost import counts_products, layer_cost, multihead_attention_costs
from .layer_kinds import ACTIVATION_LIKE as ACTS
from .layer_kinds import CONV_TRANSPOSES, NORMS, POOLS
from .layers import Pointwise
from .tensors import batch_size as batch_of
from .tensors import describe, evaluating, input_kw, tensor_args

SILENT = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)
# tensor products, by the name each row is given; each sums over the last axis of its first matrix operand
MATMULS = {torch.matmul: "matmul", torch.linalg.matmul: "matmul", torch.Tensor.matmul: "matmul",
           torch.Tensor.__matmul__: "matmul",
           torch.mm: "mm", torch.Tensor.mm: "mm", torch.bmm: "bmm",
           torch.Tensor.bmm: "bmm", torch.mv: "mv", torch.Tensor.mv: "mv", torch.dot: "dot", torch.Tensor.dot: "dot",
           torch.addmm: "addmm", torch.Tensor.addmm: "addmm", torch.baddbmm: "baddbmm",
           torch.Tensor.baddbmm: "baddbmm", torch.addmv: "addmv", torch.Tensor.addmv: "addmv"}
FUNCTIONS = {F.linear: "linear", F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d",
             F.conv_transpose1d: "conv_transpose1d", F.conv_transpose2d: "conv_transpose2d",
             F.conv_transpose3d: "conv_transpose3d", torch.einsum: "einsum",
             F.scaled_dot_product_attention: "scaled_dot_product_attention", **MATMULS}


def _aten(names) -> dict:
    """{aten packet, and each of its overloads: name} for the aten ops of these names this torch has: what the
    module of a ``torch.export`` program calls, each taking the arguments of the function it is named after."""
    found = {}
    for name in names:
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            found[packet] = name
            found |= {getattr(packet, o): name for o in packet.overloads()}
    return found


AT_FUNCTIONS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                "matmul", "mm", "bmm", "mv", "dot", "addmm", "baddbmm", "addmv", "scaled_dot_product_attention")
FUNCTIONS |= _aten(AT_FUNCTIONS)
# products the analyzer sees but cannot count: listed by name (an aten overload's without its ".overload")
UNCOUNTED_PRODUCTS = {"tensordot", "bilinear", "kron", "chain_matmul", "multi_dot", "linalg_multi_dot", "cdist",
                      "inner", "outer", "ger", "vdot", "linalg_vecdot", "__rmatmul__", "addbmm", "conv_tbc",
                      "convolution", "_convolution", "einsum", "lstm", "gru", "rnn_tanh", "rnn_relu", "lstm_cell",
                      "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_native_multi_head_attention"}


def _parameters(tensors) -> list:
    return [t for t in tensors if isinstance(t, nn.Parameter)]


def _per_output(m: nn.Module, x: torch.Tensor) -> str:
    """How one output value of a conv / Linear / Pointwise is made, as ``cost`` counts it ("" for others)."""
    if isinstance(m, CONV_TRANSPOSES):
        return ""  # counted per input value: each is scattered through (C_out / groups) x kernel weights
    if isinstance(m, Pointwise):
        return f"{m.in_channels}/{m.groups} input channels (1x1) = {m.in_channels // m.groups:,} MACs"
    if hasattr(m, "kernel_size") and hasattr(m, "groups") and x.dim() >= 3:
        c, k = x.shape[1], tuple(m.kernel_size)
        return (f"{c}/{m.groups} input channels x a {'x'.join(map(str, k))} kernel = "
                f"{c // m.groups * math.prod(k):,} MACs")
    if isinstance(m, nn.Linear):
        return f"{m.in_features:,} inputs = {m.in_features:,} MACs"
    return ""


def _functional_cost(name, args, kwargs, out, dtype, mixes_channels=True) -> tuple[str, int, torch.Tensor | None]:
    """(kind, MACs, the weight operand or None) of a functional product from its operands' shapes, the MACs
    from ``onebyone.cost``."""
    if name == "linear":
        x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
        kind = mix_kind(math.prod(x.shape[1:-1]), mixes_channels)
        return kind, cost.dense_cost(tuple(x.shape), w.shape[0], dtype=dtype).macs, w
    if name.startswith("conv_transpose"):
        x, w = args[0], args[1]
        groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
        macs = cost.conv_transpose_cost(tuple(x.shape), w.shape[1] * groups, tuple(w.shape[2:]), tuple(out.shape),
                                        groups=groups, dtype=dtype).macs
        return "conv", macs, w
    if name.startswith("conv"):
        x, w = args[0], args[1]
        groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
        kind = conv_kind(tuple(w.shape[2:]), groups, x.shape[1], math.prod(out.shape[2:]))
        return kind, cost.product_macs(out.shape, math.prod(w.shape[1:])), w  # C_in/groups x kernel per output
    if name == "scaled_dot_product_attention":
        q, k, v = (args + tuple(kwargs.get(n) for n in ("query", "key", "value")[len(args):]))[:3]
        return "attention", cost.attention_cost(q.shape, k.shape, v.shape).macs, None
    if name == "einsum":  # every index combination is one multiply-accumulate
        spec = args[0].replace(" ", "")
        ops = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
        sizes = {}
        for letters, t in zip(spec.split("->")[0].split(","), ops):
            letters = letters.replace("...", "")
            sizes.update(zip(letters, t.shape[t.dim() - len(letters):]))
        lhs = spec.split("->")[0].replace("...", "").replace(",", "")
        out_letters = (spec.split("->")[1].replace("...", "") if "->" in spec  # implied: the letters seen once
                       else "".join(c for c in set(lhs) if lhs.count(c) == 1))
        batch = math.prod(out.shape[:out.dim() - len(out_letters)]) if "..." in spec else 1
        weights = _parameters(ops)
        macs = cost.product_macs((batch, *sizes.values()), 1)
        return _product_kind(ops, weights), macs, (weights[0] if weights else None)
    mats = args[1:3] if name in ("addmm", "baddbmm", "addmv") else args[:2]  # (input, mat1, mat2) for the add* forms
    weights = _parameters(mats)
    macs = cost.product_macs(out.shape, mats[0].shape[-1])  # each output sums over mat1's last axis
    return _product_kind(mats, weights), macs, (weights[0] if weights else None)


def _product_kind(operands, weights) -> str:
    """A product with a weight: dense on (B, C), pointwise where the activation has positions
    (``stats.mix_kind``); a product of two activations (attention scores, attention times values): attention."""
    if not weights:
        return "attention"
    x = next((t for t in operands if not isinstance(t, nn.Parameter)), None)
    return mix_kind(math.prod(x.shape[1:-1]) if x is not None and x.dim() >= 3 else 1)


class _Axes:
    """Where the channels are in the tensors of one forward pass, where the ops that made them tell.

    A Linear mixes the last axis of its input: a 1x1 convolution when that axis holds channels, a mix of
    positions when it does not (MLP-Mixer's token mixing: (B, N, C) -> (B, C, N), then a Linear over N).
    Channels are last after a Linear, a LayerNorm or an embedding, on dim 1 after a conv or a BatchNorm;
    a transpose or permute moves them with their axis, a Linear over positions leaves them where they were,
    ops that keep the shape keep them, and a reshape that keeps their axis keeps them. Where nothing tells
    (the model's inputs, say), the last axis is taken to hold channels. Kept for one pass only.
    """

    VIEWS = {"transpose", "swapaxes", "swapdims", "permute", "movedim", "moveaxis", "t"}
    LAST = {"layer_norm", "embedding", "rms_norm"}
    FIRST = {"conv1d", "conv2d", "conv3d", "batch_norm", "group_norm", "instance_norm"}
    RESHAPES = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "contiguous"}

    def __init__(self):
        self._axis = {}  # id -> (weakref of the tensor, the axis holding its channels)

    def channel_axis(self, t) -> int | None:
        entry = self._axis.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def mixes_channels(self, x) -> bool:
        """Does a Linear on ``x`` mix channels (its last axis holds them, or nothing says otherwise)?"""
        a = self.channel_axis(x)
        return a is None or a == x.dim() - 1

    def follow(self, name: str, src: torch.Tensor, out: torch.Tensor) -> None:
        a, axis = self.channel_axis(src), None
        if name == "linear":
            axis = a if a is not None and a != src.dim() - 1 else out.dim() - 1
        elif name in self.LAST:
            axis = out.dim() - 1
        elif name in self.FIRST and out.dim() >= 2:
            axis = 1
        elif a is None:
            return
        elif name in self.VIEWS and src.shape[a] > 1:  # the channels' axis is where their size and stride went
            axis = next((j for j in range(out.dim()) if (out.shape[j], out.stride(j)) == (src.shape[a], src.stride(a))),
                        None)
        elif out.shape == src.shape:
            axis = a
        elif name in self.RESHAPES:
            last, first = a == src.dim() - 1, a == 1 and out.dim() >= 2
            axis = out.dim() - 1 if last and out.shape[-1] == src.shape[-1] else 1 if first and out.shape[:2] == \
                src.shape[:2] else None
        if axis is not None:
            self._axis[id(out)] = (weakref.ref(out), axis)


class _Collector(Listener):
    """The analyzer's listener (``capture.watch``): a row per counted module call and per functional product."""

    def __init__(self, model, dtype):
        self.model, self.dtype = model, dtype
        self.names = {}
        for name, m in model.named_modules():
            self.names.setdefault(id(m), name or type(model).__name__)
        self.stack, self.shapes, self.rows, self.inside_counted = [], [], [], 0
        self.claimed, self.seen, self.called = set(), set(), set()
        self.ops = {}  # uncountable product -> (calls, [where, ...], params it took)
        self.held = {}  # id of a counted layer whose weights are no parameters (int8: packed) -> their count
        self.axes = _Axes()

    def _claim(self, tensors) -> int:
        n = 0
        for p in _parameters(tensors):
            if id(p) not in self.claimed:
                self.claimed.add(id(p))
                n += p.numel()
        return n

    def _counted(self, m) -> bool:
        return counts_products(m) or isinstance(m, NORMS + ACTS + POOLS)

    def pre(self, m, args, kwargs):
        self.called.add(id(m))
        self.stack.append(self.names.get(id(m), type(m).__name__))
        first = args[0] if args else next(iter(kwargs.values()), None)
        self.shapes.append((type(m).__name__, tuple(first.shape) if isinstance(first, torch.Tensor) else None))
        if self._counted(m):
            self.inside_counted += 1

    def post(self, m, args, kwargs, output):
        name = self.stack.pop()
        self.shapes.pop()
        if self._counted(m):
            self.inside_counted -= 1
        elif not isinstance(m, SILENT):
            return
        if isinstance(m, nn.MultiheadAttention):
            self._attention_rows(m, name, args, kwargs)
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        y = output[0] if isinstance(output, tuple) and output else output
        if x is None or not isinstance(y, torch.Tensor):
            return
        row = LayerStats(name, type(m).__name__, "other", tuple(x.shape), tuple(y.shape), depth=name.count("."))
        row.params = self._claim(m.parameters())
        size = cost.itemsize(self.dtype)
        row.activations, row.bytes_written = y.numel(), y.numel() * size
        row.bytes_read = (x.numel() + row.params) * size
        if counts_products(m):
            row.kind, c = layer_cost(m, x, self.dtype, output=y, mixes_channels=self.axes.mixes_channels(x))
            if next(m.parameters(), None) is None and id(m) not in self.held:  # weights packed or in buffers
                self.held[id(m)] = row.params = c.weight_params + c.bias_params  # (int8 layers): counted once
            row.weights, row.macs, row.bytes_read = c.weight_params if row.params else 0, c.macs, c.bytes_read
            row.bytes_written = c.bytes_written
            row.per_output = _per_output(m, x)
        elif isinstance(m, NORMS):
            row.kind = "norm"  # no weight-input MACs: an eval norm is a per-channel affine that folds into a conv
        elif isinstance(m, ACTS):
            row.kind = "activation"
        elif isinstance(m, POOLS):
            row.kind = "pool"
        else:
            return  # Identity / Dropout / Flatten: no cost, no row
        self.rows.append(row)

    def _attention_rows(self, m, name, args, kwargs):
        """Two rows for a MultiheadAttention call: its projections (a Linear at every token) and its products."""
        names = ("query", "key", "value")
        q, k, v = (args + tuple(kwargs[n] for n in names[len(args):]))[:3]
        proj, attn = multihead_attention_costs(m, q.shape, k.shape, v.shape, self.dtype)
        params = self._claim(m.parameters())
        for suffix, kind, c, p in (("projections", "pointwise", proj, params), ("attention", "attention", attn, 0)):
            self.rows.append(LayerStats.from_cost(f"{name}.{suffix}", type(m).__name__, kind, q.shape, c))
            self.rows[-1].params, self.rows[-1].weights = p, (c.weight_params if p else 0)

    def functional(self, name, args, kwargs, tensors, out):
        mixes = name != "linear" or self.axes.mixes_channels(tensors[0])
        kind, macs, weight = _functional_cost(name, args, kwargs, out, self.dtype, mixes_channels=mixes)
        where = self.stack[-1] if self.stack else type(self.model).__name__
        row = LayerStats(f"{where}.{name}", f"F.{name}", kind, tuple(tensors[0].shape) if tensors else (),
                         tuple(out.shape), depth=where.count(".") + 1)
        row.params = self._claim(tensors)
        row.weights = weight.numel() if row.params and weight is not None else 0
        size = cost.itemsize(self.dtype)
        row.macs, row.activations = macs, out.numel()
        row.bytes_read, row.bytes_written = sum(t.numel() for t in tensors) * size, out.numel() * size
        self.rows.append(row)

    def after(self, func, args, kwargs, out):
        tensors = tensor_args(args, kwargs)
        self.seen.update(id(p) for p in _parameters(tensors))
        name = getattr(func, "__name__", "").partition(".")[0]  # an aten overload's: "conv2d.default" -> "conv2d"
        if tensors and isinstance(out, torch.Tensor):
            self.axes.follow(name, tensors[0], out)
        if self.inside_counted == 0:
            if func in FUNCTIONS and isinstance(out, torch.Tensor):
                self.functional(FUNCTIONS[func], args, kwargs, tensors, out)
            elif name in UNCOUNTED_PRODUCTS:
                self.uncounted_op(name, tensors)

    def uncounted_op(self, name, tensors):
        calls, where, params = self.ops.get(name, (0, [], set()))
        here = self.stack[-1] if self.stack else ""
        where = where + [here] * (here not in where)
        self.ops[name] = (calls + 1, where, params | {id(p) for p in _parameters(tensors)})


@gc_paused
def analyze(model: nn.Module, input_size=None, example=None, batch_size: int = 1, dtype: str = "float32") -> ModelStats:
    """Per-layer params, MACs and memory of a torch model over one forward pass. An int8 model (torch's
    quantized layers, ``optimize(dtype=torch.int8)``'s forms) counts as the float model it stands for, its
    weights (packed, not parameters) among the params and read as int8 bytes.

    Args:
        input_size: one sample's shape, e.g. (3, 224, 224); or give ``example``.
        example: a tensor, a tuple of positional tensors, or a dict of keyword tensors
            (``{"pixel_values": x}`` for a Hugging Face model).
        dtype: the dtype the byte counts assume.
    """
    if example is None:
        if input_size is None:
            raise OneByOneError(f"{type(model).__name__} needs an input to be analyzed: pass input_size=(C, H, W) "
                                "or example=")
        example = torch.zeros((batch_size, *input_size), **input_kw(model))
    model = _eager(model)
    if isinstance(model, torch.jit.ScriptModule):
        raise OneByOneError(f"analyze needs the eager module, got a TorchScript {type(model).__name__}: hooks do not "
                            "run in scripted or traced code; analyze the model before torch.jit.script / trace")
    batch = batch_of(example)
    c = _Collector(model, dtype)
    try:
        with evaluating(model):  # each layer's own mode back after: a frozen BatchNorm in a training model
            watch(model, example, c)
    except OneByOneError:
        raise
    except Exception as e:  # noqa: BLE001 - name the layer that failed
        where = c.stack[-1] if c.stack else type(model).__name__
        layer = f"; `{where}` ({c.shapes[-1][0]}) received {c.shapes[-1][1]}" if c.shapes else ""
        raise OneByOneError(f"{type(model).__name__} failed at `{where}` on input {describe(example)}: "
                            f"{type(e).__name__}: {e}{layer}") from e
    never_called, outside, uncounted = _leftovers(model, c)
    total = sum(p.numel() for p in model.parameters()) + sum(c.held.values())
    rest = total - sum(r.params for r in c.rows)
    if rest:
        c.rows.append(LayerStats("(other parameters)", "-", "other", (), (), params=rest))
    return ModelStats(type(model).__name__, c.rows, total, uncounted, batch, dtype, never_called=never_called,
                      outside_layers=outside)


def _eager(model):
    """The module ``torch.compile`` wrapped, where ``model`` is its wrapper: its layers are what is counted (the
    compiled code would trace the analyzer's own hooks, recompiling at each)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module) else model


def _leftovers(model, c) -> tuple[list, list, list]:
    """The parameters no row claimed, sorted into layers never used (not called, and no op read their
    parameters), parameters used outside any layer's call (in elementwise ops, lookups, concatenations:
    no MACs by nature; a table another module reads, as timm's RelPosBias through ``get_bias()``), and the
    one warning: products the analyzer could not count (ops by name, and called leaf layers none of whose
    parameters an op it saw took). A parameter that no operation read on this input, of a layer with
    children or with other parameters read (a mask token when no mask is given), is listed among the never
    called, by its own path."""
    in_uncounted = set().union(*(p for _, _, p in c.ops.values())) if c.ops else set()
    never_called, outside, uncounted = [], [], []
    for name, m in model.named_modules():
        own = {k: p for k, p in m.named_parameters(recurse=False) if id(p) not in c.claimed}
        if not own:
            continue
        seen = [p for p in own.values() if id(p) in c.seen]
        if id(m) not in c.called and not seen:  # read by no op either
            never_called.append((name, type(m).__name__, sum(p.numel() for p in own.values())))
        elif any(id(p) in in_uncounted for p in own.values()):
            continue  # listed with the op that took them
        elif not seen and not list(m.children()):  # a leaf computing with its weights unseen (TorchScript, C++)
            uncounted.append((name, type(m).__name__, f"{sum(p.numel() for p in own.values()):,} params that no "
                                                      "operation the analyzer saw took (a layer type it cannot count)"))
        else:  # a called layer's parameters: those ops read (no MACs by nature), those nothing read on this input
            outside += [(name, type(m).__name__, sum(p.numel() for p in seen))] if seen else []
            never_called += [(f"{name}.{k}" if name else k, "parameter not read", p.numel())
                             for k, p in own.items() if id(p) not in c.seen]  # (a mask token, no mask given)
    for op, (calls, where, params) in c.ops.items():
        places = f" in {len(where)} places (the first named)" if len(where) > 1 else ""
        uncounted.append((where[0], op, f"{calls} call(s) of `{op}`{places}, a product the analyzer cannot count"))
    return never_called, outside, uncounted
