"""``FusedPointwiseChain``: a run of 1x1 convs (and an optional pool) executed tile by tile.

The plan (widths, activations, pool, tile size, the tile walk) is ``onebyone.chain_plan``'s; this
module only holds the weights and runs each tile's matrix products on one of four kernels per layer:
oneDNN's matmul with the bias and the activation fused into it (what inductor emits on CPUs) on weights
reordered once into its blocked layout ("packed") or as they are ("mkldnn"); oneDNN's conv over a
(1, C, T, 1) view of the tile's rows ("conv"); or ``addmm``. Which kernel each layer runs is the
chain's ``kernels`` entry for the input's shape and dtype, set by ``optimize()`` (which times them) or by
hand; without one it runs "packed" where oneDNN runs the dtype, else "addmm". Under autograd (or while
tracing, exporting, compiling) it runs the plain layer-by-layer path instead, which autograd can
differentiate.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ... import algebra, chain_plan, cost
from ...activations import FUSABLE
from ...errors import OneByOneError
from ...stats import mix_kind
from ..activations import function as act_function
from ..activations import name_of as act_name
from ..functional import pointwise
from ..layer_kinds import CHANNEL_BATCHNORMS, is_plain_pointwise
from ..layers import SharedMLP
from ..tensors import numpy64, tensor
from . import private
from .packed import Kernels, Packed, input_key

# --- kernels: each computes act(rows @ W.T + b) for rows (T, C), W (O, C, 1, 1) ---------------------


def _conv(h, w4, b, act, packed=None):  # rows (T, C) viewed as a channels_last (1, C, T, 1) image -> rows (T, O)
    return act_function(act, inplace=True)(F.conv2d(h.t()[None, :, :, None], w4, b)[0, :, :, 0].t())


def _addmm(h, w4, b, act, packed=None):  # rows (T, C) @ (C, O)
    wt = w4.flatten(1).t()
    return act_function(act, inplace=True)(torch.mm(h, wt) if b is None else torch.addmm(b, h, wt))


def _mkldnn(h, w4, b, act, packed=None):  # oneDNN's matmul, the bias and activation fused into it
    return private.linear_pointwise(h, w4.flatten(1), b, act)


def _packed(h, w4, b, act, packed):  # the same on the weight reordered once into oneDNN's blocked layout
    return private.linear_pointwise(h, packed, b, act)


KERNELS = {"packed": _packed, "mkldnn": _mkldnn, "conv": _conv, "addmm": _addmm}


def kernels_for(rows, weight) -> tuple:
    """The kernels that run on ``rows`` here, the default first: oneDNN's only where it runs their dtype."""
    return tuple(KERNELS) if private.onednn_runs(rows, weight) else ("addmm", "conv")


def chain_cost(plan, channel_dim: int, x, dtype: str, weight_dtype: str | None = None) -> tuple[str, cost.Cost]:
    """(kind, cost) of one call of a chain of 1x1 layers (``plan``) on x: every layer at every point, the input
    read once, the (pooled) output written once; the weights and biases at ``weight_dtype`` (default ``dtype``)."""
    widths = plan.widths
    points = x.numel() // widths[0]
    per_sample = points // max(1, x.shape[0]) if channel_dim == 1 or plan.pool else points
    out = (x.shape[0], widths[-1]) if plan.pool else (points, widths[-1])
    w, b = plan.macs_per_point(), sum(widths[1:])  # weights (one per MAC of a point), biases
    size, held = cost.itemsize(dtype), cost.itemsize(weight_dtype or dtype)
    return mix_kind(per_sample), cost.Cost(out, w, b, points * w, 2 * points * w, math.prod(out),
                                  x.numel() * size + (w + b) * held, math.prod(out) * size)


UNBATCHED = {nn.Conv1d: 2, nn.Conv2d: 3, nn.Conv3d: 4}  # the rank of a sample a torch conv takes unbatched


class FusedPointwiseChain(nn.Module):
    """Pointwise layers with activations, optionally ending in a max / mean pool, run tile by tile.

    Input (B, C, *S) with ``channel_dim=1`` (any memory format) or (..., C) with ``channel_dim=-1``;
    output the same layout with C_out channels, or (B, C_out) with a pool over all points / pixels.
    Build it with ``from_shared_mlp`` or ``from_layers``.

    >>> chain = FusedPointwiseChain.from_shared_mlp(SharedMLP((3, 64, 128), pool="max"))
    >>> chain
    FusedPointwiseChain((3, 64, 128), acts=('relu', 'relu'), pool='max', tile=4096)
    >>> with torch.no_grad():
    ...     chain(torch.randn(2, 3, 500)).shape
    torch.Size([2, 128])
    """

    unbatched = None  # the rank of one sample without its batch axis, where the layers were torch convs
    rows_out = False  # (B, O, *S) out as its rows lie (channels innermost) where every reader takes any strides

    def __init__(self, weights, biases, acts, pool=None, channel_dim: int = 1, tile=None):
        super().__init__()
        widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        for i, (w, w_next) in enumerate(zip(weights, weights[1:])):
            if w_next.shape[1] != w.shape[0]:
                raise OneByOneError(
                    f"layer {i + 1} of the chain reads {w_next.shape[1]} channels but layer {i} writes {w.shape[0]}"
                )
        self.plan = chain_plan.make_plan(widths, acts, pool, tile, itemsize=weights[0].element_size())
        if channel_dim not in (1, -1):
            raise OneByOneError(f"channel_dim must be 1 or -1, got {channel_dim!r}")
        self.channel_dim = channel_dim
        self.weights = nn.ParameterList(
            nn.Parameter(w.detach().reshape(w.shape[0], w.shape[1], 1, 1).clone()) for w in weights
        )
        self.biases = nn.ParameterList(
            nn.Parameter(
                b.detach().clone() if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
            )
            for w, b in zip(weights, biases)
        )
        self.kernels = Kernels()  # input key -> one kernel name per layer (see tune); else the defaults
        self._packed = Packed(2)  # the weights as oneDNN's matmul wants them, per (tile, dtype)

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_shared_mlp(cls, mlp: SharedMLP, tile=None) -> "FusedPointwiseChain":
        pool = {"avg": "mean"}.get(mlp.pool, mlp.pool)
        chain = cls.from_layers(list(mlp.layers), pool=pool, tile=tile)
        chain.unbatched = None  # a SharedMLP takes batches alone, whatever layers it holds
        return chain

    @classmethod
    def from_layers(cls, layers, pool=None, tile=None) -> "FusedPointwiseChain":
        """From Pointwise / Conv1d / Conv2d (1x1) / Linear layers, each optionally followed by an
        eval-mode BatchNorm (folded in) and one of ReLU, ReLU6, GELU, Identity, Dropout (eval)."""
        weights, acts, dims = [], [], set()  # weights: [w (O, C) float64, b, the torch weight]
        for i, m in enumerate(layers):
            where = f"layer {i} ({type(m).__name__})"
            if is_plain_pointwise(m):
                w, b = numpy64(m.weight).reshape(m.weight.shape[0], -1), numpy64(m.bias)
                weights.append([w, b, m.weight])
                acts.append("identity")
                dims.add(-1 if isinstance(m, nn.Linear) else getattr(m, "channel_dim", 1))
            elif not weights:
                raise OneByOneError(f"a chain must start with a pointwise layer; {where} comes first")
            elif isinstance(m, CHANNEL_BATCHNORMS):
                if m.training or not m.track_running_stats:
                    raise OneByOneError(
                        f"{where} is in training mode (or keeps no running stats): call .eval() before fusing"
                    )
                if acts[-1] != "identity":
                    raise OneByOneError(
                        f"{where} follows an activation; only BatchNorm right after a pointwise layer folds"
                    )
                scale, shift = algebra.batchnorm_affine(numpy64(m.running_mean), numpy64(m.running_var),
                                                        numpy64(m.weight), numpy64(m.bias), m.eps)
                weights[-1][0], weights[-1][1] = algebra.fold_affine_after(weights[-1][0], weights[-1][1], scale, shift)
            elif isinstance(m, nn.Dropout) and m.training:
                raise OneByOneError(f"{where} is in training mode: call .eval() before fusing")
            elif act_name(m) in FUSABLE:
                name = act_name(m)
                if name != "identity" and acts[-1] != "identity":
                    raise OneByOneError(f"{where}: two activations in a row cannot be fused")
                acts[-1] = name if name != "identity" else acts[-1]
            else:
                raise OneByOneError(f"cannot fuse {where}: a chain holds Pointwise / Conv(k=1) / Linear layers, eval "
                                    f"BatchNorm, and ReLU / ReLU6 / GELU (erf) / Identity / Dropout between them")
        if not weights:
            raise OneByOneError("a chain needs at least one pointwise layer, got none")
        if len(dims) > 1:
            raise OneByOneError(
                "the layers read channels on different axes (Linear: last; convs: dim 1); convert them first"
            )
        ws = [tensor(w, like) for w, _, like in weights]
        bs = [None if b is None else tensor(b, like) for _, b, like in weights]
        chain = cls(ws, bs, acts, pool, dims.pop(), tile)
        ranks = {UNBATCHED.get(type(m)) for m in layers if is_plain_pointwise(m)}
        chain.unbatched = ranks.pop() if len(ranks) == 1 else None  # torch convs alone: (C, L) / (C, H, W)
        return chain

    def cost_of_call(self, x, dtype: str) -> tuple[str, cost.Cost]:
        """("pointwise", or "dense" on one point per sample; the cost of one call on x): every layer at every
        point; the input read once, the (pooled) output written once."""
        return chain_cost(self.plan, self.channel_dim, x, dtype)

    def __repr__(self) -> str:
        p = self.plan
        return f"FusedPointwiseChain({p.widths}, acts={p.acts}, pool={p.pool!r}, tile={p.tile}" + (
            ", channel_dim=-1)" if self.channel_dim == -1 else ")")

    # --- execution ---------------------------------------------------------------------------

    def layer_outputs(self, x):
        """Each layer's activated output on ``x`` in turn (before any pool), layer by layer."""
        for w, b, act in zip(self.weights, self.biases, self.plan.acts):
            x = act_function(act)(pointwise(x, w, b, 1, 1, self.channel_dim))
            yield x

    def plain(self, x):
        """Layer by layer, through ``functional.pointwise``: what autograd runs."""
        for x in self.layer_outputs(x):  # noqa: B007 - the last layer's output is what is pooled
            pass
        if self.plan.pool is None:
            return x
        rows = x.movedim(1, -1).flatten(1, -2) if self.channel_dim == 1 else x.flatten(1, -2)  # (B, P, O)
        return rows.amax(1) if self.plan.pool == "max" else rows.mean(1)

    def forward(self, x):
        if self.unbatched is not None and x.dim() == self.unbatched:  # one sample, as the torch conv takes it
            return self(x.unsqueeze(0)).squeeze(0)
        c = self.plan.widths[0]
        if not x.is_floating_point():
            raise OneByOneError(f"{self!r} takes a floating-point tensor, got {x.dtype}")
        if x.dim() < 2 or x.shape[self.channel_dim] != c:
            raise OneByOneError(
                f"{self!r} expects {c} channels on dim {self.channel_dim}, got input of shape {tuple(x.shape)}"
            )
        autograd = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if autograd or x.numel() == 0 or not x.is_floating_point():
            return self.plain(x)  # differentiable; and an empty or integer input as the plain layers take it
        if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
            p = self.plan  # torch.compile: one opaque node, run by fused() (an export keeps the plain ops)
            return pointwise_chain(x, list(self.weights), list(self.biases), ",".join(p.acts), p.pool or "",
                                   self.channel_dim, p.tile, ",".join(self.kernels.get(input_key(x), ())))
        if private.tracing() or private.loses_nan(self.plan.acts, x):
            return self.plain(x)  # the plain layers carry NaN and inf as torch does
        return self.fused(x)

    def fused(self, x):
        """Tile by tile (see ``onebyone.chain_plan``); only the output (or the pooled output) is written. It
        computes no gradient: under autograd (an input or a weight that wants one) it refuses; the chain's own
        call runs the plain layers then."""
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            raise OneByOneError(f"{self!r}.fused() computes no gradients, and here the input or a weight wants one: "
                                "call the chain itself (it runs the plain layers under autograd), or use "
                                "torch.no_grad()")
        ws, tile = list(self.weights), self.plan.tile
        return _fused(x, ws, list(self.biases), self.plan, self.channel_dim, self.kernels.get(input_key(x)),
                      lambda rows: self._packed.get(ws, (tile, rows.dtype), lambda: _pack(ws, tile)), self.rows_out)

    def tune(self, x, pick) -> None:
        """Choose each layer's kernel for inputs like ``x`` (its shape and dtype): ``pick({name: call})``
        returns the name of the one to keep (``optimize`` passes a timer); the choice goes to ``kernels``."""
        if x.numel() == 0 or not x.is_floating_point():
            return  # such inputs run the plain layers
        rows = _rows(x, self.plan.widths[0], self.channel_dim, self.plan.pool is not None)  # (B, P, C)
        first = next(chain_plan.tiles(rows.shape[0], rows.shape[1], self.plan.tile))[1]
        h = rows.reshape(-1, rows.shape[-1])[:first].contiguous()  # (T, C): the first tile's rows
        ws = list(self.weights)
        packed = _pack(ws, self.plan.tile) if private.onednn_runs(h, ws[0]) else None
        names = []
        for w, b, act, pw in _layers(self.plan, ws, list(self.biases), packed):
            cands = {e: functools.partial(KERNELS[e], h, w, b, act, pw) for e in kernels_for(h, w)}
            names.append(pick(cands))
            h = cands[names[-1]]()  # (T, C_i) -> (T, C_i+1)
        self.kernels[input_key(x)] = tuple(names)

    def kernel_names(self) -> dict:
        """{input key: "kernel, kernel, ..."}: the kernel each layer runs on inputs of that shape and dtype."""
        return {k: ", ".join(v) for k, v in self.kernels.items()}


def _rows(x, c: int, channel_dim: int, pooled: bool):
    """(B, C, *S) or (..., C) -> rows (B, P, C), row-major (a view where the layout allows)."""
    if channel_dim == -1:
        return x.reshape(x.shape[0] if pooled else 1, -1, c)
    return x.movedim(1, -1).reshape(x.shape[0], -1, c)  # (B, C, *S) -> (B, *S, C) -> (B, P, C)


def _shape_back(out, x, channel_dim: int, rows: bool = False):
    """Rows (B*P, O) -> the input's layout, in the memory format a torch conv gives for ``x``: channels_last
    for a channels_last (B, C, H, W) or (B, C, D, H, W) input, else contiguous (code may ``view`` it) unless
    ``rows`` (its readers take any strides): then as the rows lie."""
    o = out.shape[-1]
    if channel_dim == -1:
        return out.view(*x.shape[:-1], o)
    y = out.view(x.shape[0], *x.shape[2:], o).movedim(-1, 1)  # (B, *S, O) -> (B, O, *S): channels_last
    return y if rows or _channels_last(x) else y.contiguous()


def _channels_last(x) -> bool:
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return x.dim() in formats and not x.is_contiguous() and x.is_contiguous(memory_format=formats[x.dim()])


def _pack(ws, tile: int) -> list:
    """Each weight (O, C, 1, 1) reordered for oneDNN's matmul on ``tile`` rows."""
    return [private.reorder_linear_weight(w.detach().flatten(1), tile) for w in ws]


def _layers(plan, weights, biases, packed) -> list:
    """(weight, bias, activation, packed weight or None) per layer; with ``pool_first`` the last layer's
    bias and activation wait until after the pool."""
    layers = list(zip(weights, biases, plan.acts, packed or [None] * len(weights)))
    if plan.pool_first:
        layers[-1] = (layers[-1][0], None, "identity", layers[-1][3])
    return layers


def _kernels(rows, weights, chosen) -> list:
    """The kernel of each layer: the chosen ones where they run on ``rows`` here, else the default."""
    names = []
    for i, w in enumerate(weights):
        here = kernels_for(rows, w)
        names.append(chosen[i] if chosen and i < len(chosen) and chosen[i] in here else here[0])
    return names


def _fused(x, weights, biases, plan, channel_dim: int, chosen, pack, rows_out: bool = False):
    """The chain on ``x`` tile by tile, each layer on its kernel (``chosen`` names or the defaults);
    ``pack(rows)`` returns the weights packed for oneDNN's matmul; ``rows_out``: see ``_shape_back``."""
    rows3 = _rows(x, plan.widths[0], channel_dim, plan.pool is not None)  # (B, P, C)
    nb, npts, _ = rows3.shape
    rows = rows3.reshape(-1, rows3.shape[-1]).contiguous()  # (B*P, C)
    names = _kernels(rows, weights, chosen)
    layers = _layers(plan, weights, biases, pack(rows) if "packed" in names else None)  # once, not per tile
    layers = [(KERNELS[e], *layer) for e, layer in zip(names, layers)]
    o = plan.widths[-1]
    if plan.pool is None:
        out = torch.empty(rows.shape[0], o, dtype=rows.dtype, device=rows.device)
    else:
        out = torch.full((nb, o), -torch.inf if plan.pool == "max" else 0.0, dtype=rows.dtype, device=rows.device)
    for r0, n, s0, k in chain_plan.tiles(nb, npts, plan.tile):
        h = rows[r0:r0 + n]  # (T, C)
        for run, w, b, act, packed in layers:
            h = run(h, w, b, act, packed)  # (T, C_i) -> (T, C_i+1)
        if plan.pool is None:
            out[r0:r0 + n] = h
        elif plan.pool == "max":
            torch.maximum(out[s0:s0 + k], h.reshape(k, -1, o).amax(1), out=out[s0:s0 + k])
        else:
            out[s0:s0 + k] += h.reshape(k, -1, o).sum(1) / npts
    if plan.pool_first:
        out = act_function(plan.acts[-1])(out + biases[-1])
    return out if plan.pool else _shape_back(out, x, channel_dim, rows_out)


@torch.library.custom_op("onebyone::pointwise_chain", mutates_args=())
def pointwise_chain(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], acts: str,
                    pool: str, channel_dim: int, tile: int, kernels: str = "") -> torch.Tensor:
    """A ``FusedPointwiseChain``'s fused run as one operator (``acts`` and ``kernels`` comma-separated,
    ``pool`` and ``kernels`` "" for none / the defaults): what ``torch.compile`` sees of a chain, one node
    it leaves to us while it compiles the rest. It keeps nothing between calls: packed weights are made
    for each call from the weights it is given."""
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    plan = chain_plan.make_plan(widths, acts.split(","), pool or None, tile, itemsize=x.element_size())
    chosen = tuple(kernels.split(",")) if kernels else None
    if private.loses_nan(plan.acts, x):  # oneDNN's fused ReLU would turn NaN into 0: torch's products and
        chosen = ("addmm",) * len(weights)  # activations carry it
    return _fused(x, weights, biases, plan, channel_dim, chosen, lambda rows: _pack(weights, tile))


@pointwise_chain.register_fake
def _(x, weights, biases, acts, pool, channel_dim, tile, kernels=""):  # the output's shape and strides, as _fused's
    o = weights[-1].shape[0]
    if pool:
        return x.new_empty((x.shape[0], o))
    if channel_dim == -1:
        return x.new_empty((*x.shape[:-1], o))
    y = x.new_empty((x.shape[0], *x.shape[2:], o)).movedim(-1, 1)
    return y if _channels_last(x) else y.contiguous()
