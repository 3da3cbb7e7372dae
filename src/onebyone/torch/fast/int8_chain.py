"""``Int8PointwiseChain``: a ``FusedPointwiseChain`` run in int8, tile by tile, the intermediates kept in 8 bits.

Each layer is one oneDNN int8 product (``onednn.qlinear_pointwise``, what torch's x86 Inductor flow emits):
uint8 rows in, int8 weights per output channel, the bias and activation fused, and the output requantized
in the same call to the next layer's 8-bit input over the range it was observed to take. So between layers
a tile's rows are a quarter of float32's bytes and nothing is quantized or dequantized in Python; only the
chain's input is quantized (once) and its output dequantized (once, after a max pool: on the pooled
(B, O) values, as a max commutes with the increasing dequantization).

Without VNNI (AVX2), int8 products go through 16-bit pair sums that saturate when both factors use their
8 bits: the weights then keep to 7 bits (-63..63, onnxruntime's ``reduce_range``), the activations, quantized
per tensor and so the coarser, keep their 8.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ... import chain_plan
from ...errors import OneByOneError
from .. import graph as G
from ..capture import Listener, watch
from . import private
from .chain import FusedPointwiseChain, _rows, _shape_back, chain_cost
from .packed import Packed


def affine(low: float, high: float, levels: int) -> tuple:
    """(scale, zero point) mapping [low, high] (which holds 0) onto 0..levels.

    >>> affine(-1.0, 3.0, 255)
    (0.01568627450980392, 64)
    """
    scale = max(high - low, 1e-12) / levels
    return scale, int(min(levels, max(0, round(-low / scale))))


def _range(r, i: int) -> tuple:
    """(low, high) of ``r`` as floats, widened to hold 0 (int8's ranges do); refused unless finite and ordered."""
    low, high = (float(v) for v in r)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise OneByOneError(f"range {i} of an int8 chain must be finite (low, high) with low <= high, got {tuple(r)}")
    return min(low, 0.0), max(high, 0.0)


def rounded(x: torch.Tensor, scale: float, zero: int, levels: int) -> torch.Tensor:
    """``x`` as its uint8 codes over 0..``levels`` stand for it: ``torch.fake_quantize_per_tensor_affine``'s
    values, through torch's quantize / dequantize kernels (many times quicker than its mask-keeping kernel)."""
    private.deprecation_seen()
    x = x.float().clamp(-zero * scale, (levels - zero) * scale)
    return torch.quantize_per_tensor(x, scale, zero, torch.quint8).dequantize()


def weight_scales(w: torch.Tensor, top: int = 127) -> torch.Tensor:
    """Symmetric int8 scales of a weight, one per output channel (its first axis): its largest magnitude / ``top``
    (the largest code: 127, or 63 for 7-bit weights)."""
    return w.reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-12) / top


TILE_ROWS = 16384  # the most rows a tile of int8 rows takes: fewer, longer oneDNN calls (see Int8PointwiseChain)


class ChainRanges(Listener):
    """For each watched ``FusedPointwiseChain``: the range its input and each layer's (activated) output took
    over every run it watches, each holding 0 (``ranges[id(chain)]``: [(low, high), ...], input first)."""

    def __init__(self):
        self.ranges = {}

    def pre(self, m, args, kwargs):
        if not isinstance(m, FusedPointwiseChain) or not args or not isinstance(args[0], torch.Tensor):
            return
        seen = [args[0]] + list(m.layer_outputs(args[0]))
        old = self.ranges.get(id(m), [(0.0, 0.0)] * len(seen))
        self.ranges[id(m)] = [(min(lo, float(t.min())), max(hi, float(t.max()))) for (lo, hi), t in zip(old, seen)]


def chain_ranges(model: nn.Module, observe: list) -> dict:
    """{id(chain): [(low, high) of its input, then of each layer's output]} over the ``observe`` batches."""
    listener = ChainRanges()
    chains = [m for m in model.modules() if isinstance(m, FusedPointwiseChain)]
    for b in observe:
        watch(model, b, listener, modules=chains)
    return listener.ranges


class Int8PointwiseChain(nn.Module):
    """``chain`` in int8: its input quantized per tensor over ``ranges[0]``, layer i's output requantized over
    ``ranges[i + 1]`` (the ranges a ``ChainRanges`` observed, each widened to hold 0; 8 bits), weights per
    output channel. ``vnni``: whether the weights may use all 8 bits (default: what this CPU has; else 7).
    Inference only; a float input, the output in its dtype and the chain's layout. Rows run in tiles of up to
    ``TILE_ROWS``, as many as keep a layer's 8-bit input and output rows within ``chain_plan.CACHE_BYTES`` (8
    clouds of 1,024 points through PointNet's widest pair, 128 -> 1024: one tile, one oneDNN call a layer);
    an input whose points' channels already lie together (a chain's output, ``channel_dim=-1``) is read in place.

    Its state (``state_dict``, pickling) is whole: buffers ``weight{i}``, ``scale{i}``, ``bias{i}``, the ranges
    (``bounds``, (layers + 1, 2)) and the largest weight code (``top``); a chain with 8-bit weights refuses to
    run where oneDNN's int8 products would saturate them (a CPU without VNNI).
    """

    unbatched = None  # as the float chain's
    rows_out = False  # as the float chain's

    def __init__(self, chain: FusedPointwiseChain, ranges: list, vnni: bool | None = None):
        super().__init__()
        p = chain.plan
        if len(ranges) != len(p.widths):
            raise OneByOneError(f"an int8 chain of {len(p.widths) - 1} layers needs {len(p.widths)} ranges (its input "
                                f"and each layer's output), got {len(ranges)}")
        vnni = private.capabilities().vnni if vnni is None else vnni
        if vnni and self._saturates():
            raise OneByOneError("vnni=True asks for 8-bit weights, whose int8 products saturate on this CPU (no "
                                "VNNI): leave vnni unset")
        top = 127 if vnni else 63
        self.register_buffer("top", torch.tensor(top))  # the largest weight code
        self.register_buffer("bounds", torch.tensor([_range(r, i) for i, r in enumerate(ranges)]))
        self.plan = chain_plan.make_plan(p.widths, p.acts, p.pool, chain_plan.choose_tile(p.widths, 1, hi=TILE_ROWS))
        self.channel_dim, self.unbatched, self.rows_out = chain.channel_dim, chain.unbatched, chain.rows_out
        for i, (w, b) in enumerate(zip(chain.weights, chain.biases)):
            w = w.detach().float().flatten(1)  # (O, C)
            s = weight_scales(w, top)
            self.register_buffer(f"weight{i}", torch.round(w / s[:, None]).clamp(-top, top).to(torch.int8))
            self.register_buffer(f"scale{i}", s)
            self.register_buffer(f"bias{i}", None if b is None else b.detach().float().clone())
        self._packed = Packed(2)  # the int8 weights packed by oneDNN, per tile rows

    def _apply(self, fn, recurse=True):
        """``.half()``, ``.to(dtype)`` and the like leave the scales, biases and ranges float32 (its arithmetic
        is int8 and float32, as torch's quantized layers keep theirs): the input's dtype is still the output's."""
        kept = {n: b for n, b in self._buffers.items() if b is not None and b.dtype == torch.float32}
        super()._apply(fn, recurse)
        for n, b in kept.items():
            self._buffers[n] = b.to(self._buffers[n].device)
        return self

    @staticmethod
    def _saturates() -> bool:
        """Would 8-bit weights saturate the int8 products here (oneDNN's, on a CPU without VNNI)?"""
        return private.onednn_int8() and not private.capabilities().vnni

    @property
    def ranges(self) -> list:
        """(low, high) of the input and of each layer's output, each holding 0."""
        return [tuple(r) for r in self.bounds.tolist()]

    @property
    def layers(self) -> list:
        """(int8 weight (O, C), its scales (O,), bias float32 or None) per layer."""
        n = len(self.plan.acts)
        return [(getattr(self, f"weight{i}"), getattr(self, f"scale{i}"), getattr(self, f"bias{i}")) for i in range(n)]

    def cost_of_call(self, x, dtype: str):
        """(kind, cost) as the float chain's: every layer at every point; its weights int8 bytes."""
        return chain_cost(self.plan, self.channel_dim, x, dtype, weight_dtype="int8")

    def __repr__(self) -> str:
        p = self.plan
        bits = 8 if int(self.top) > 63 else 7
        return f"Int8PointwiseChain({p.widths}, acts={p.acts}, pool={p.pool!r}, tile={p.tile}, weight_bits={bits})"

    def forward(self, x):  # (B, C, *S) or (..., C) float -> the chain's output
        if self.unbatched is not None and x.dim() == self.unbatched:  # one sample, as the torch conv takes it
            return self(x.unsqueeze(0)).squeeze(0)
        c = self.plan.widths[0]
        if not x.is_floating_point() or x.dim() < 2 or x.shape[self.channel_dim] != c:
            raise OneByOneError(f"{self!r} takes a float tensor with {c} channels on dim {self.channel_dim}, got "
                                f"{tuple(x.shape)} {x.dtype}")
        if torch.is_grad_enabled() and x.requires_grad:
            raise OneByOneError(f"{self!r} runs inference only (int8 codes carry no gradient); the input wants one: "
                                "train the float model, or call it under torch.no_grad()")
        qp, layers, eight_bit = self._constants()
        if eight_bit and self._saturates():
            raise OneByOneError(f"{self!r} holds 8-bit weights (made on a CPU with VNNI); this CPU has none and its "
                                "int8 products would saturate them: make the int8 chain again here")
        if not private.nan_free(x):  # NaN and inf carried as the float chain carries them
            with torch.no_grad():
                return self.dequantized()(x.float()).to(x.dtype)
        o, pool = self.plan.widths[-1], self.plan.pool
        if x.numel() == 0:  # no samples, or no points
            if pool and x.shape[0]:
                raise OneByOneError(f"{self!r} pools over the points of each sample; got {tuple(x.shape)}: none")
            shape = list(x.shape)
            shape[self.channel_dim] = o
            return x.new_zeros((x.shape[0], o) if pool else shape)
        s, z = qp[0]
        xf, pooled = x.float(), self.plan.pool is not None
        if self.channel_dim == -1 or xf.movedim(1, -1).is_contiguous():  # rows already: quantized as they lie
            rows3 = private.quantize_rows(_rows(xf, c, self.channel_dim, pooled), s, z, 255)  # (B, P, C) uint8
        else:  # quantized first, then moved: a quarter the bytes
            rows3 = _rows(private.quantize_rows(xf, s, z, 255), c, self.channel_dim, pooled)
        out = self._run(rows3, layers, qp)
        if pool == "max":
            s, z = qp[-1]
            out = (out.float() - z) * s
        return out.to(x.dtype) if pool else _shape_back(out, x, self.channel_dim, self.rows_out).to(x.dtype)

    def _run(self, rows3, layers, qp):
        """Rows (B, P, C) uint8 through the chain tile by tile: (B*P, O) float32, or pooled (B, O) (uint8 codes
        for a max pool: the dequantization is increasing, so it waits until after the max)."""
        nb, npts, c = rows3.shape
        o, pool = self.plan.widths[-1], self.plan.pool
        rows = rows3.reshape(-1, c).contiguous()  # (B*P, C)
        packed = self._weights(layers, self.plan.tile)
        spans = list(chain_plan.tiles(nb, npts, self.plan.tile))
        if len(spans) == 1:  # the whole batch one tile: nothing to gather
            h = self._tile(rows, layers, packed, qp)
            return h if pool is None else h.view(nb, npts, o).amax(1) if pool == "max" else h.view(nb, npts, o).mean(1)
        out = (torch.empty(rows.shape[0], o) if pool is None
               else torch.zeros(nb, o, dtype=torch.uint8) if pool == "max" else torch.zeros(nb, o))
        for r0, n, s0, k in spans:
            h = self._tile(rows[r0:r0 + n], layers, packed, qp)  # (T, C) uint8 -> (T, O)
            if pool is None:
                out[r0:r0 + n] = h
            elif pool == "max":
                torch.maximum(out[s0:s0 + k], h.reshape(k, -1, o).amax(1), out=out[s0:s0 + k])
            else:
                out[s0:s0 + k] += h.reshape(k, -1, o).sum(1) / npts
        return out

    def dequantized(self) -> FusedPointwiseChain:
        """The float32 chain of this chain's int8 weights (what a non-finite input runs: NaN and inf carried
        as torch carries them, where int8 codes have none)."""
        p, layers = self.plan, self.layers
        return FusedPointwiseChain([q.float() * s[:, None] for q, s, _ in layers], [b for _, _, b in layers], p.acts,
                                   p.pool, self.channel_dim).eval()

    def _tile(self, h, layers, packed, qp):
        """One tile's rows (T, C) uint8 through every layer (``qp``: (scale, zero) of the input and of each
        layer's output): uint8 between layers; the last layer gives uint8 codes before a max pool, else float32."""
        last = len(self.plan.acts) - 1
        for i, ((q, s, b), pw, act) in enumerate(zip(layers, packed, self.plan.acts)):
            out = qp[i + 1] if i < last or self.plan.pool == "max" else None
            h = private.qlinear_pointwise(h, *qp[i], pw, q, s, b, out, act)
        return h

    def _constants(self) -> tuple:
        """((scale, zero) of the input and of each layer's output, ``layers``, 8-bit weights?), read from the
        buffers once a call (about 25 us: a cache keyed on them cost nearly as much to check)."""
        return [affine(*r, 255) for r in self.ranges], self.layers, int(self.top) > 63

    def _weights(self, layers, rows: int) -> list:
        qs = [q for q, _, _ in layers]
        return self._packed.get(qs, rows, lambda: [private.qlinear_prepack(q, rows) for q in qs])


def int8_chains(model: nn.Module, observe: list, vnni: bool | None = None) -> nn.Module:
    """``model`` with each ``FusedPointwiseChain`` replaced (in place; the new root where the model is a chain)
    by its ``Int8PointwiseChain`` over the ranges observed on ``observe``. A chain the ``observe`` batches do not
    call has no ranges: refused, naming it."""
    ranges, made = chain_ranges(model, observe), {}
    for name, m in list(model.named_modules(remove_duplicate=False)):
        if not isinstance(m, FusedPointwiseChain):
            continue
        if id(m) not in ranges:
            raise OneByOneError(f"the chain {name or '(the model)'} was not called on the calibration data: its "
                                "ranges are unknown; give calibration inputs that reach it")
        if id(m) not in made:
            made[id(m)] = Int8PointwiseChain(m, ranges[id(m)], vnni)
        model = G.replace_module(model, name, made[id(m)])
    if not made:
        raise OneByOneError("no chain of 1x1 convs to run in int8 (a SharedMLP, or two or more 1x1 convs in a row "
                            "in an nn.Sequential)")
    return model
