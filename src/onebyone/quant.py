"""A 1x1 convolution in int8 is an integer matrix product, in NumPy.

Quantize the input with one scale ``s_x`` and the weights with a scale per output channel ``s_w[o]``
(symmetric: ``q = round(a / s)``, ``s = max|a| / (2^(bits-1) - 1)``). Then

    y[n, o, h, w] = sum_c W[o, c] x[n, c, h, w]  ~  s_x * s_w[o] * sum_c q_w[o, c] * q_x[n, c, h, w]

because both scales are constant over the sum's index ``c``: they factor out of it. The sum itself is
exact in integers (what int8 dot-product instructions compute, into int32), and the output is rescaled
once per output channel. With one scale for the whole weight (``per_channel=False``) a channel of small
weights shares the grid of the largest one and loses its precision.
"""
from __future__ import annotations

import numbers

import numpy as np

from .checks import as_float_array, check_bias, check_finite, check_int
from .errors import OneByOneError


def quantize(a, bits: int = 8, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(q, scale): ``a`` on a symmetric grid of ``bits`` bits, ``q`` integers in [-(2^(bits-1)-1), 2^(bits-1)-1]
    (int64), ``a ~ q * scale``; one scale for the whole array, or one per index of ``axis`` (shaped to
    broadcast against ``a``). A slice of zeros gets scale 1."""
    a = check_finite(a, "a").astype(np.float64)  # (NaN has no code, and would set the scale)
    bits = check_int(bits, "bits", 2)
    if bits > 16:
        raise OneByOneError(f"bits must be from 2 to 16, got {bits}")
    top = 2 ** (bits - 1) - 1
    if axis is None:
        m = np.abs(a).max() if a.size else 0.0
    else:
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -a.ndim <= axis < a.ndim:
            raise OneByOneError(f"axis must be in [-{a.ndim}, {a.ndim}) for a {a.shape} array, got {axis}")
        m = np.abs(a).max(axis=tuple(i for i in range(a.ndim) if i != axis % a.ndim), keepdims=True)
    scale = np.where(m > 0, m / top, 1.0)
    return np.clip(np.rint(a / scale), -top, top).astype(np.int64), np.asarray(scale, dtype=np.float64)


def pointwise_int(x, w, b=None, bits: int = 8, per_channel: bool = True) -> dict:
    """The 1x1 convolution of ``x`` (N, C, H, W) by ``w`` (O, C) (+ ``b`` (O,)) run as an integer product:
    returns {"y": the output, "acc": the integer sums (N, O, H, W), "q_x", "s_x", "q_w", "s_w"}, with
    ``y = s_x * s_w[o] * acc + b``."""
    x = as_float_array(x, "x", ndim=4).astype(np.float64)
    w = as_float_array(w, "w", ndim=2).astype(np.float64)
    if not isinstance(per_channel, (bool, np.bool_)):
        raise OneByOneError(f"per_channel must be True or False, got {per_channel!r}")
    if w.shape[1] != x.shape[1]:
        raise OneByOneError(f"w is (O, C) = {w.shape} but x has C = {x.shape[1]} channels ({x.shape})")
    q_x, s_x = quantize(x, bits)
    q_w, s_w = quantize(w, bits, axis=0 if per_channel else None)
    acc = np.einsum("oc,nchw->nohw", q_w, q_x)  # int64: exact, as the CPU's int32 accumulators are
    y = float(s_x) * np.broadcast_to(s_w, w.shape)[:, 0][None, :, None, None] * acc
    if b is not None:
        y = y + check_bias(b, w.shape[0], np.float64)[None, :, None, None]
    return {"y": y, "acc": acc, "q_x": q_x, "s_x": s_x, "q_w": q_w, "s_w": s_w}
