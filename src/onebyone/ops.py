"""NumPy reference ops. The one idea: a 1x1 convolution is a matrix product over the channels,
applied at every pixel::

    y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]

``conv1x1`` computes exactly that line (one matrix product per group, no im2col copy).
``conv2d`` handles any kernel by gathering each k x k neighbourhood into a column (im2col)
and doing the same matrix product; ``dense`` is the line with no pixels at all.

Layouts: ``layout="NCHW"`` takes x (N, C, H, W) and PyTorch weights (O, I/groups, kH, kW);
``layout="NHWC"`` takes x (N, H, W, C) and Keras weights (kH, kW, I/groups, O).

>>> x = np.ones((1, 3, 2, 2)); w = np.array([[1.0, 2.0, 3.0]])
>>> conv1x1(x, w)[0, 0]
array([[6., 6.],
       [6., 6.]])
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import cost
from .checks import as_float_array, check_bias, check_choice, check_int, check_layout, check_pair, result_dtype
from .errors import OneByOneError, check_size
from .layout import conv_weight, convert, pointwise_matrix


def _check_groups(c: int, o: int, cg: int, groups: int, x_shape, w_shape, layout: str) -> None:
    groups = check_int(groups, "groups")
    if c % groups:
        raise OneByOneError(
            f"channels not divisible by groups: x has {c} channels ({layout} shape {x_shape}), groups={groups}"
        )
    if o % groups:
        raise OneByOneError(
            f"output channels not divisible by groups: w has {o} output channels (shape {w_shape}), groups={groups}"
        )
    if cg * groups != c:
        raise OneByOneError(
            f"channel mismatch: x has {c} channels ({layout} shape {x_shape}) but w expects "
            f"{cg} per group x {groups} group(s) = {cg * groups} (w shape {w_shape})"
        )


def padding_pairs(padding, hw, kernel, stride, dilation) -> tuple:
    if isinstance(padding, str):
        return tuple(cost.pad_amounts(s, k, st, padding, d) for s, k, st, d in zip(hw, kernel, stride, dilation))
    if isinstance(padding, (tuple, list)) and any(isinstance(p, (tuple, list, str)) for p in padding):
        raise OneByOneError(f"padding must be an int, a pair (pH, pW), 'valid' or 'same', got {padding!r}: the NumPy "
                            "ops pad both sides of an axis alike (for (before, after) amounts, np.pad the input)")
    ph, pw = check_pair(padding, "padding", minimum=0)
    return (ph, ph), (pw, pw)


def windows(x_nhwc, kernel, stride=1, padding=0, dilation=1, pad_value=0.0) -> np.ndarray:
    """Every k x k neighbourhood of an (N, H, W, C) array, as a strided view (N, Ho, Wo, kH, kW, C)."""
    x = as_float_array(x_nhwc, "x", ndim=4)
    kernel, stride, dilation = (
        check_pair(kernel, "kernel_size"),
        check_pair(stride, "stride"),
        check_pair(dilation, "dilation"),
    )
    pads = padding_pairs(padding, x.shape[1:3], kernel, stride, dilation)
    out_hw = [cost.conv_output_size(size, k, st, lohi, d)
              for size, k, st, d, lohi in zip(x.shape[1:3], kernel, stride, dilation, pads)]
    padded = x.shape[0] * (x.shape[1] + sum(pads[0])) * (x.shape[2] + sum(pads[1])) * x.shape[3] * x.itemsize
    check_size(padded, f"padding a {x.shape} input by {pads}")
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=pad_value)  # (N, H+ph, W+pw, C)
    sn, sh, sw, sc = xp.strides
    shape = (xp.shape[0], out_hw[0], out_hw[1], kernel[0], kernel[1], xp.shape[3])
    strides = (sn, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc)
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


def conv2d(x, w, b=None, *, stride=1, padding=0, dilation=1, groups=1, layout="NCHW") -> np.ndarray:
    """2-D convolution (cross-correlation, as in PyTorch and Keras) with any kernel.

    Args:
        x: (N, C, H, W) for NCHW, (N, H, W, C) for NHWC.
        w: (O, C/groups, kH, kW) for NCHW, (kH, kW, C/groups, O) for NHWC.
        b: (O,) or None.
        padding: an int, a pair (pH, pW), "valid" or "same".

    >>> conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), padding=1)[0, 0]
    array([[4., 6., 6., 4.],
           [6., 9., 9., 6.],
           [6., 9., 9., 6.],
           [4., 6., 6., 4.]])
    """
    layout = check_layout(layout)
    x = as_float_array(x, "x", ndim=4)
    w = as_float_array(w, "w", ndim=4)
    dtype = result_dtype(x, w)
    x_nhwc = convert(x, layout, "NHWC")  # (N, C, H, W) -> (N, H, W, C)
    w_hwio = conv_weight(w, layout, "NHWC")  # (kH, kW, C/g, O)
    kh, kw, cg, o = w_hwio.shape
    _check_groups(x_nhwc.shape[3], o, cg, groups, x.shape, w.shape, layout)
    b = check_bias(b, o, dtype)
    cols = windows(x_nhwc.astype(dtype, copy=False), (kh, kw), stride, padding, dilation)  # (N, Ho, Wo, kH, kW, C)
    n, ho, wo = cols.shape[:3]
    check_size(n * ho * wo * kh * kw * cg * cols.itemsize, f"the im2col copy of a {x.shape} input, {kh}x{kw} kernel")
    og = o // groups
    y = np.empty((n, ho, wo, o), dtype=dtype)
    for g in range(groups):
        patch = cols[..., g * cg:(g + 1) * cg].reshape(n * ho * wo, kh * kw * cg)  # im2col: (N*Ho*Wo, kH*kW*C/g)
        kernel = w_hwio[..., g * og:(g + 1) * og].astype(dtype, copy=False).reshape(kh * kw * cg, og)
        y[..., g * og:(g + 1) * og] = (patch @ kernel).reshape(n, ho, wo, og)
    if b is not None:
        y += b
    return convert(y, "NHWC", layout)  # (N, Ho, Wo, O) -> (N, O, Ho, Wo)


def _pointwise_operands(x, w, stride, groups, layout):
    """Validate a 1x1 conv call; return x strided and moved to (M, C), W as (g, O/g, C/g), and the output shape."""
    layout = check_layout(layout)
    x = as_float_array(x, "x")
    wm = pointwise_matrix(w)  # (O, C/g)
    if layout == "NCHW" and x.ndim < 2:
        raise OneByOneError(f"x must be channels-first (N, C, ...) with rank >= 2 for layout NCHW, got shape {x.shape}")
    c_axis = 1 if layout == "NCHW" else x.ndim - 1
    o, cg = wm.shape
    _check_groups(x.shape[c_axis], o, cg, groups, x.shape, np.shape(w), layout)
    spatial = list(range(2, x.ndim) if layout == "NCHW" else range(1, x.ndim - 1))
    return x[_every(_strides(stride, len(spatial), x.shape), spatial, x.ndim)], wm, c_axis


def _strides(stride, n: int, shape) -> tuple:
    """A 1x1 conv's stride, one per spatial axis (an int is every axis's); refused where there is no axis to step."""
    if isinstance(stride, (tuple, list)):
        if len(stride) != n:
            raise OneByOneError(f"stride must be an int or {n} ints (one per spatial axis of x {shape}), "
                                f"got {stride!r}")
        strides = tuple(check_int(s, "stride") for s in stride)
    else:
        strides = (check_int(stride, "stride"),) * n
    if not n and stride != 1:
        raise OneByOneError(f"x of shape {shape} has no spatial axis to stride over; got stride={stride!r}")
    return strides


def _every(strides, spatial, ndim: int) -> tuple:
    """The index that keeps every strides[i]-th position along spatial axis spatial[i]."""
    step = dict(zip(spatial, strides))
    return tuple(slice(None, None, step.get(a, 1)) for a in range(ndim))


def conv1x1(x, w, b=None, *, stride=1, groups=1, layout="NCHW") -> np.ndarray:
    """The 1x1 convolution: ``y[:, o, ...] = W[o, :] @ x[:, :, ...] + b[o]`` at every position.

    Args:
        x: channels-first (N, C, *spatial) for "NCHW" -- (N, C, H, W), point sets (B, C, L), (N, C) --
           or channels-last (..., C) for "NHWC".
        w: (O, C/g), (O, C/g, 1), (O, C/g, 1, 1) or Keras (1, 1, C/g, O).
        stride: keeps every stride-th position along each spatial axis: an int, or one int per spatial axis.

    >>> conv1x1(np.ones((2, 5, 3)), np.ones((4, 3)), layout="NHWC").shape
    (2, 5, 4)
    """
    x, wm, c_axis = _pointwise_operands(x, w, stride, groups, layout)
    dtype = result_dtype(x, wm)
    o, cg = wm.shape
    b = check_bias(b, o, dtype)
    og = o // groups
    wg = wm.astype(dtype, copy=False).reshape(groups, og, cg)  # (O, C/g) -> (g, O/g, C/g)
    if c_axis == 1:
        n, rest = x.shape[0], x.shape[2:]
        xg = x.astype(dtype, copy=False).reshape(n, groups, cg, -1)  # (N, C, *S) -> (N, g, C/g, P)
        y = np.matmul(wg, xg).reshape(n, o, *rest)  # (N, g, O/g, P) -> (N, O, *S)
        return y if b is None else y + b.reshape(o, *([1] * len(rest)))
    lead = x.shape[:-1]
    xg = x.astype(dtype, copy=False).reshape(-1, groups, cg).transpose(1, 0, 2)  # (..., C) -> (g, M, C/g)
    y = np.matmul(xg, wg.transpose(0, 2, 1))  # (g, M, O/g)
    y = y.transpose(1, 0, 2).reshape(*lead, o)  # (g, M, O/g) -> (..., O)
    return y if b is None else y + b


def conv1x1_backward(x, w, grad_y, *, stride=1, groups=1, layout="NCHW"):
    """Gradients of ``sum(grad_y * conv1x1(x, w, b))`` with respect to x, w (in w's own shape) and b, in the
    operands' dtype."""
    xs, wm, c_axis = _pointwise_operands(x, w, stride, groups, layout)
    x = as_float_array(x, "x")
    grad_y = as_float_array(grad_y, "grad_y")
    dtype = result_dtype(x, wm, grad_y)
    xs, wm, grad_y = (a.astype(dtype, copy=False) for a in (xs, wm, grad_y))
    o, cg = wm.shape
    expected = xs.shape[:c_axis] + (o,) + xs.shape[c_axis + 1:]
    if grad_y.shape != expected:
        raise OneByOneError(f"grad_y must have the output shape {expected}, got {grad_y.shape}")
    og = o // groups
    xm = np.moveaxis(xs, c_axis, -1).reshape(-1, groups, cg).transpose(1, 0, 2)  # (g, M, C/g)
    gm = np.moveaxis(grad_y, c_axis, -1).reshape(-1, groups, og).transpose(1, 0, 2)  # (g, M, O/g)
    wg = wm.reshape(groups, og, cg)
    gx_m = np.matmul(gm, wg)  # (g, M, C/g)
    gw = np.matmul(gm.transpose(0, 2, 1), xm).reshape(o, cg)  # (g, O/g, C/g) -> (O, C/g)
    gb = gm.sum(axis=1).reshape(o)
    moved = np.moveaxis(xs, c_axis, -1).shape  # (..., C) shape of the strided input
    gx_s = np.moveaxis(gx_m.transpose(1, 0, 2).reshape(moved), -1, c_axis)
    gx = np.zeros_like(x, dtype=gx_s.dtype)
    spatial = list(range(2, x.ndim) if c_axis == 1 else range(1, x.ndim - 1))
    gx[_every(_strides(stride, len(spatial), x.shape), spatial, x.ndim)] = gx_s
    w_shape = np.shape(w)
    if len(w_shape) == 4 and w_shape[:2] == (1, 1) and w_shape[2:] != (1, 1):
        gw = gw.T.reshape(w_shape)  # (O, C/g) -> Keras (1, 1, C/g, O)
    else:
        gw = gw.reshape(w_shape)
    return gx, gw, gb


def dense(x, w, b=None) -> np.ndarray:
    """A dense (fully connected) layer over the last axis: ``x @ w.T + b`` with PyTorch (out, in) weights.

    >>> dense(np.ones((2, 3)), np.ones((4, 3)), np.arange(4.0))
    array([[3., 4., 5., 6.],
           [3., 4., 5., 6.]])
    """
    x = as_float_array(x, "x")
    w = as_float_array(w, "w", ndim=2)
    if x.shape[-1] != w.shape[1]:
        raise OneByOneError(
            f"channel mismatch: x has {x.shape[-1]} features (shape {x.shape}) "
            f"but w (out, in) expects {w.shape[1]} (w shape {w.shape})"
        )
    dtype = result_dtype(x, w)
    b = check_bias(b, w.shape[0], dtype)
    y = x.astype(dtype, copy=False) @ w.astype(dtype, copy=False).T  # (..., in) @ (in, out) -> (..., out)
    return y if b is None else y + b


def dense_backward(x, w, grad_y):
    """Gradients of ``sum(grad_y * dense(x, w, b))`` with respect to x, w and b, in the operands' dtype."""
    x = as_float_array(x, "x")
    w = as_float_array(w, "w", ndim=2)
    grad_y = as_float_array(grad_y, "grad_y")
    if x.shape[-1] != w.shape[1]:
        raise OneByOneError(f"channel mismatch: x has {x.shape[-1]} features (shape {x.shape}) but w (out, in) expects "
                            f"{w.shape[1]} (w shape {w.shape})")
    dtype = result_dtype(x, w, grad_y)
    x, w, grad_y = (a.astype(dtype, copy=False) for a in (x, w, grad_y))
    if grad_y.shape != x.shape[:-1] + (w.shape[0],):
        raise OneByOneError(f"grad_y must have the output shape {x.shape[:-1] + (w.shape[0],)}, got {grad_y.shape}")
    g2 = grad_y.reshape(-1, w.shape[0])  # (..., out) -> (M, out)
    return grad_y @ w, g2.T @ x.reshape(-1, w.shape[1]), g2.sum(axis=0)


def pool2d(x, kernel_size, *, stride=None, padding=0, op="max", layout="NCHW") -> np.ndarray:
    """Max or average pooling (stride defaults to the kernel; average counts padded zeros, as PyTorch does;
    padding at most half the kernel, as PyTorch requires)."""
    layout = check_layout(layout)
    check_choice(op, ("max", "avg"), "op")
    x = as_float_array(x, "x", ndim=4)
    x_nhwc = convert(x, layout, "NHWC")  # (N, C, H, W) -> (N, H, W, C)
    kernel = check_pair(kernel_size, "kernel_size")
    pad = check_pair(padding, "padding", minimum=0)
    if any(p > k // 2 for p, k in zip(pad, kernel)):
        raise OneByOneError(f"padding must be at most half the kernel (as in PyTorch: a window of padding alone has "
                            f"no input), got padding {pad} for kernel {kernel}")
    cols = windows(x_nhwc, kernel, kernel if stride is None else stride, padding,
                   pad_value=-np.inf if op == "max" else 0.0)  # (N, Ho, Wo, kH, kW, C)
    y = cols.max(axis=(3, 4)) if op == "max" else cols.mean(axis=(3, 4))
    return convert(y, "NHWC", layout)  # (N, Ho, Wo, C) -> (N, C, Ho, Wo)
