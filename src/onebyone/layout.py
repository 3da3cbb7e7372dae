"""Layout conventions: tensors NCHW <-> NHWC, conv weights OIHW (PyTorch) <-> HWIO (Keras),
Linear (out, in) <-> Dense (in, out), and the flatten order that differs between the two.

PyTorch flattens a (C, H, W) map channel-major; Keras flattens (H, W, C) channel-minor. A dense
layer that follows a flatten therefore needs its input columns permuted when a model moves
between the two, not just a transpose.

>>> flatten_permutation((3, 1, 2), "NCHW", "NHWC")  # NHWC flatten position j holds NCHW position p[j]
array([0, 2, 4, 1, 3, 5])
"""
from __future__ import annotations

import numpy as np

from .checks import as_float_array, check_finite, check_int, check_layout
from .errors import OneByOneError


def to_channels_last(x) -> np.ndarray:
    """(N, C, *spatial) -> (N, *spatial, C), e.g. NCHW -> NHWC or (B, C, L) -> (B, L, C)."""
    x = as_float_array(x, "x")
    if x.ndim < 3:
        raise OneByOneError(f"x must be (N, C, *spatial) with rank >= 3, got shape {x.shape}")
    return np.moveaxis(x, 1, -1)  # (N, C, H, W) -> (N, H, W, C)


def to_channels_first(x) -> np.ndarray:
    """(N, *spatial, C) -> (N, C, *spatial), e.g. NHWC -> NCHW."""
    x = as_float_array(x, "x")
    if x.ndim < 3:
        raise OneByOneError(f"x must be (N, *spatial, C) with rank >= 3, got shape {x.shape}")
    return np.moveaxis(x, -1, 1)  # (N, H, W, C) -> (N, C, H, W)


def convert(x, src: str, dst: str) -> np.ndarray:
    """An activation tensor from layout ``src`` to layout ``dst`` ("NCHW" or "NHWC")."""
    check_layout(src), check_layout(dst)
    if src == dst:
        return as_float_array(x, "x")
    return to_channels_last(x) if dst == "NHWC" else to_channels_first(x)


def oihw_to_hwio(w) -> np.ndarray:
    """PyTorch conv weight (O, I/g, kH, kW) -> Keras kernel (kH, kW, I/g, O)."""
    w = as_float_array(w, "w", ndim=4)
    return w.transpose(2, 3, 1, 0)  # (O, I, kH, kW) -> (kH, kW, I, O)


def hwio_to_oihw(w) -> np.ndarray:
    """Keras kernel (kH, kW, I/g, O) -> PyTorch conv weight (O, I/g, kH, kW)."""
    w = as_float_array(w, "w", ndim=4)
    return w.transpose(3, 2, 0, 1)  # (kH, kW, I, O) -> (O, I, kH, kW)


def conv_weight(w, src: str, dst: str) -> np.ndarray:
    """A conv weight from the convention of layout ``src`` to that of ``dst`` (NCHW: OIHW, NHWC: HWIO)."""
    check_layout(src), check_layout(dst)
    if src == dst:
        return as_float_array(w, "w", ndim=4)
    return oihw_to_hwio(w) if dst == "NHWC" else hwio_to_oihw(w)


def linear_to_dense(w) -> np.ndarray:
    """PyTorch Linear weight (out, in) -> Keras Dense kernel (in, out)."""
    return as_float_array(w, "w", ndim=2).T


def dense_to_linear(kernel) -> np.ndarray:
    """Keras Dense kernel (in, out) -> PyTorch Linear weight (out, in)."""
    return as_float_array(kernel, "kernel", ndim=2).T


def pointwise_matrix(w) -> np.ndarray:
    """Any 1x1 weight as the (O, I/g) matrix it multiplies every pixel by.

    Accepts (O, I/g), Conv1d (O, I/g, 1), PyTorch (O, I/g, 1, 1) and Keras (1, 1, I/g, O).

    >>> pointwise_matrix(np.zeros((1, 1, 3, 16))).shape, pointwise_matrix(np.zeros((16, 3, 1, 1))).shape
    ((16, 3), (16, 3))
    """
    w = as_float_array(w, "w", ndim=(2, 3, 4))
    if w.ndim == 2:
        return w
    if w.ndim == 3 and w.shape[2] == 1:
        return w[:, :, 0]  # (O, I, 1) -> (O, I)
    if w.ndim == 4 and w.shape[2:] == (1, 1):
        return w[:, :, 0, 0]  # (O, I, 1, 1) -> (O, I)
    if w.ndim == 4 and w.shape[:2] == (1, 1):
        return w[0, 0].T  # (1, 1, I, O) -> (O, I)
    raise OneByOneError(
        "w must be a 1x1 weight: (O, I), (O, I, 1), (O, I, 1, 1) or Keras (1, 1, I, O), "
        f"got shape {w.shape}"
    )


def flatten_permutation(chw, src: str, dst: str) -> np.ndarray:
    """Index p with ``flatten_dst(x) == flatten_src(x)[p]`` for one feature map of (C, H, W).

    ``chw`` is always given as (C, H, W), whatever the layouts.
    """
    check_layout(src), check_layout(dst)
    chw = chw.tolist() if isinstance(chw, np.ndarray) else chw
    if not isinstance(chw, (tuple, list)) or len(chw) != 3:
        raise OneByOneError(f"chw must be one feature map's (C, H, W), got {chw!r}")
    c, h, w = (check_int(v, "chw entries") for v in chw)
    index = np.arange(c * h * w).reshape(c, h, w)  # positions in a channels-first flatten
    as_src = index if src == "NCHW" else index.transpose(1, 2, 0)
    as_dst = index if dst == "NCHW" else index.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    # rank of each channels-first position inside the src flatten
    src_pos = np.empty(c * h * w, dtype=np.int64)
    src_pos[as_src.reshape(-1)] = np.arange(c * h * w)
    return src_pos[as_dst.reshape(-1)]


def flattened_linear_weight(w, chw, src: str, dst: str) -> np.ndarray:
    """Permute the input columns of a (out, C*H*W) weight that follows a flatten in ``src`` layout,
    so the same map applies after a flatten in ``dst`` layout. Exact (a permutation).
    """
    w = check_finite(as_float_array(w, "w", ndim=2), "w")
    p = flatten_permutation(chw, src, dst)
    if w.shape[1] != p.size:
        raise OneByOneError(f"w must have C*H*W={p.size} input columns for chw={tuple(chw)}, got shape {w.shape}")
    return w[:, p]


def linear_to_keras(w, *, flatten_chw=None) -> np.ndarray:
    """PyTorch Linear weight (out, in) -> Keras Dense kernel (in, out).

    With ``flatten_chw=(C, H, W)``, the Linear followed a channels-first flatten and the kernel is
    re-ordered for Keras's channels-last flatten.
    """
    w = check_finite(w, "w")
    if flatten_chw is not None:
        w = flattened_linear_weight(w, flatten_chw, "NCHW", "NHWC")
    return linear_to_dense(w)


def keras_to_linear(kernel, *, flatten_chw=None) -> np.ndarray:
    """Keras Dense kernel (in, out) -> PyTorch Linear weight (out, in); the inverse of linear_to_keras."""
    w = dense_to_linear(check_finite(kernel, "kernel"))
    if flatten_chw is not None:
        w = flattened_linear_weight(w, flatten_chw, "NHWC", "NCHW")
    return w
