"""The equivalent forms of one linear map, each a function, with exact weight converters.

Every form here rewrites the same line, ``y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]``:

1. a 1x1 conv is a dense layer applied at every pixel with shared weights (also PointNet's
   "shared MLP", and a Conv1d with kernel 1 on (B, C, N));
2. a dense layer on a flattened H x W x C input is a conv with one H x W kernel per unit (the
   "full-kernel" form), and also a reshape to 1 x 1 x (H*W*C) followed by a 1x1 conv;
3. a 1x1 conv to K class maps, summed (or averaged) over space, is a dense layer on the summed
   (averaged) features;
4. a k x k conv is a dense layer sliding over k x k neighbourhoods (the im2col view).

The ``*_per_pixel`` / ``sliding_*`` forms loop explicitly over positions: they are independent
computations, not calls into the fast kernels, so that agreement between forms means something.
Converters are pure reshapes/transposes/permutations: they round-trip bit for bit, and refuse NaN/Inf.
"""
from __future__ import annotations

import numpy as np

from . import ops
from .checks import as_float_array, check_choice, check_finite, check_int, check_layout, check_pair, result_dtype
from .errors import OneByOneError, check_size
from .layout import convert, pointwise_matrix

# --- 1. a 1x1 conv is a dense layer at every pixel ---------------------------------------------


def dense_per_pixel(x, w, b=None, *, layout="NCHW") -> np.ndarray:
    """Apply ``ops.dense`` to the channel column of each position, one position at a time.

    Same result as ``ops.conv1x1(x, w, b, layout=layout)`` for w of shape (O, C).
    """
    layout = check_layout(layout)
    x, w = as_float_array(x, "x"), as_float_array(w, "w", ndim=2)
    if layout == "NCHW" and x.ndim < 2:
        raise OneByOneError(f"x must be channels-first (N, C, ...) with rank >= 2 for layout NCHW, got shape {x.shape}")
    c_axis = 1 if layout == "NCHW" else x.ndim - 1
    cols = np.moveaxis(x, c_axis, -1)  # (N, C, *S) -> (N, *S, C)
    out = np.empty(cols.shape[:-1] + (w.shape[0],), dtype=result_dtype(x, w))
    for pos in np.ndindex(*cols.shape[:-1]):
        out[pos] = ops.dense(cols[pos], w, b)  # one pixel: (C,) -> (O,)
    return np.moveaxis(out, -1, c_axis)  # (N, *S, O) -> (N, O, *S)


def conv1x1_to_dense(w, groups: int = 1) -> np.ndarray:
    """A 1x1 conv weight (any accepted shape) -> the (O, C) dense weight it applies at every pixel.

    With groups > 1 the dense weight is block-diagonal (zeros between groups).
    """
    wm = pointwise_matrix(check_finite(w, "w"))  # (O, C/g)
    groups = check_int(groups, "groups")
    o, cg = wm.shape
    if o % groups:
        raise OneByOneError(f"output channels not divisible by groups: w has {o} output channels, groups={groups}")
    og = o // groups
    dense = np.zeros((o, cg * groups), dtype=wm.dtype)
    for g in range(groups):
        dense[g * og:(g + 1) * og, g * cg:(g + 1) * cg] = wm[g * og:(g + 1) * og]
    return dense


def dense_to_conv1x1(w, *, layout="NCHW", spatial_dims: int = 2) -> np.ndarray:
    """A dense (O, C) weight -> the weight of an equivalent 1x1 conv.

    NCHW: (O, C, 1, 1) (PyTorch Conv2d) or (O, C, 1) with ``spatial_dims=1`` (Conv1d);
    NHWC: (1, 1, C, O) (Keras Conv2D) or (1, C, O) (Keras Conv1D).
    """
    layout = check_layout(layout)
    w = check_finite(as_float_array(w, "w", ndim=2), "w")
    spatial_dims = check_int(spatial_dims, "spatial_dims")
    ones = (1,) * spatial_dims
    if layout == "NCHW":
        return w.reshape(w.shape + ones)  # (O, C) -> (O, C, 1, 1)
    return w.T.reshape(ones + w.T.shape)  # (O, C) -> (1, 1, C, O)


def shared_mlp_per_point(points, layers, *, final_activation=True) -> np.ndarray:
    """PointNet's shared MLP, written literally: the same small MLP run on every point of (B, N, C).

    Args:
        layers: a list of (w, b) with w in (out, in) form; ReLU after each layer
            (after the last too unless ``final_activation=False``).
    """
    points = as_float_array(points, "points", ndim=3)
    layers = _layer_pairs(layers)
    out = []
    for cloud in points:  # (N, C)
        rows = []
        for p in cloud:  # one point: (C,)
            h = p
            for i, (w, b) in enumerate(layers):
                h = ops.dense(h, w, b)
                if final_activation or i < len(layers) - 1:
                    h = np.maximum(h, 0)
            rows.append(h)
        out.append(np.stack(rows))
    return np.stack(out)  # (B, N, C_out)


def shared_mlp_conv1d(points_bcn, layers, *, final_activation=True) -> np.ndarray:
    """The same shared MLP as a stack of Conv1d(kernel_size=1) on (B, C, N) point sets."""
    h = as_float_array(points_bcn, "points", ndim=3)
    layers = _layer_pairs(layers)
    for i, (w, b) in enumerate(layers):
        h = ops.conv1x1(h, dense_to_conv1x1(w, spatial_dims=1), b)  # (B, C_in, N) -> (B, C_out, N)
        if final_activation or i < len(layers) - 1:
            h = np.maximum(h, 0)
    return h


def _layer_pairs(layers) -> list:
    """An MLP's layers as a list of (w, b) pairs, or a OneByOneError naming the first that is not one."""
    try:
        layers = list(layers)
    except TypeError:
        raise OneByOneError(f"layers must be a list of (w, b) pairs, got {type(layers).__name__}") from None
    for i, pair in enumerate(layers):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            got = f"{type(pair).__name__}" + (f" of shape {np.shape(pair)}" if hasattr(pair, "shape") else "")
            raise OneByOneError(f"layers must be a list of (w, b) pairs (w (out, in), b (out,) or None); layer {i} "
                                f"is {got}")
    return layers


# --- 2. a dense layer on a flattened map is a conv ---------------------------------------------


def _map_shape(input_shape, layout):
    if len(input_shape) != 3:
        raise OneByOneError(
            f"input_shape must be one sample's (C, H, W) for NCHW or (H, W, C) for NHWC, got {tuple(input_shape)}"
        )
    c, h, w = input_shape if layout == "NCHW" else (input_shape[2], input_shape[0], input_shape[1])
    return check_int(c, "C"), check_int(h, "H"), check_int(w, "W")


def dense_to_full_kernel(w, input_shape, *, layout="NCHW") -> np.ndarray:
    """Dense weight (U, H*W*C), reading a flatten in ``layout`` order -> conv weight with one
    H x W kernel per unit: (U, C, H, W) for NCHW, (H, W, C, U) for NHWC.

    The conv, run with no padding on the H x W map, gives a 1 x 1 x U output equal to the dense layer.
    """
    layout = check_layout(layout)
    w = check_finite(as_float_array(w, "w", ndim=2), "w")
    c, h, wd = _map_shape(input_shape, layout)
    if w.shape[1] != c * h * wd:
        raise OneByOneError(
            f"w must have C*H*W={c * h * wd} input columns for a {tuple(input_shape)} map, got shape {w.shape}"
        )
    if layout == "NCHW":
        return w.reshape(w.shape[0], c, h, wd)  # (U, C*H*W) -> (U, C, H, W)
    return w.reshape(w.shape[0], h, wd, c).transpose(1, 2, 3, 0)  # (U, H*W*C) -> (H, W, C, U)


def full_kernel_to_dense(wk, *, layout="NCHW") -> np.ndarray:
    """The inverse of ``dense_to_full_kernel``: conv weight -> (U, H*W*C) in ``layout``'s flatten order."""
    layout = check_layout(layout)
    wk = check_finite(as_float_array(wk, "w", ndim=4), "w")
    if layout == "NCHW":
        return wk.reshape(wk.shape[0], -1)  # (U, C, H, W) -> (U, C*H*W)
    return wk.transpose(3, 0, 1, 2).reshape(wk.shape[3], -1)  # (H, W, C, U) -> (U, H*W*C)


def flatten(x, *, layout="NCHW") -> np.ndarray:
    """(N, C, H, W) or (N, H, W, C) -> (N, features), in the layout's own order (PyTorch / Keras Flatten)."""
    check_layout(layout)  # (either layout flattens its own memory order: one reshape)
    x = as_float_array(x, "x", ndim=4)
    return x.reshape(x.shape[0], -1)  # (N, C, H, W) -> (N, C*H*W)


def flatten_to_pixel(x, *, layout="NCHW") -> np.ndarray:
    """Reshape each sample into a single pixel with H*W*C channels: (N, C*H*W, 1, 1) or (N, 1, 1, H*W*C)."""
    layout = check_layout(layout)
    f = flatten(x, layout=layout)
    return f.reshape(f.shape[0], -1, 1, 1) if layout == "NCHW" else f.reshape(f.shape[0], 1, 1, -1)


# --- 3. class maps, pooled, are a dense layer on pooled features -------------------------------


def pool_spatial(x, pool="mean", *, layout="NCHW") -> np.ndarray:
    """Sum or mean over every spatial axis: (N, C, *S) -> (N, C)."""
    layout = check_layout(layout)
    check_choice(pool, ("sum", "mean"), "pool")
    x = as_float_array(x, "x")
    if x.ndim < 3:
        raise OneByOneError(f"x must have at least one spatial axis, got shape {x.shape}")
    axes = tuple(range(2, x.ndim)) if layout == "NCHW" else tuple(range(1, x.ndim - 1))
    return x.sum(axis=axes) if pool == "sum" else x.mean(axis=axes)


def class_map_scores(x, w, b=None, *, pool="mean", layout="NCHW") -> np.ndarray:
    """K class maps from a 1x1 conv, then each map pooled over space: (N, K)."""
    return pool_spatial(ops.conv1x1(x, w, b, layout=layout), pool, layout=layout)


def class_map_bias_to_dense(b, num_positions: int, pool="mean") -> np.ndarray:
    """The dense bias that matches pooled class maps: a sum over P positions adds the bias P times."""
    check_choice(pool, ("sum", "mean"), "pool")
    b = check_finite(as_float_array(b, "b", ndim=1), "b")
    return b * check_int(num_positions, "num_positions") if pool == "sum" else b.copy()


def pooled_dense_scores(x, w, b=None, *, pool="mean", layout="NCHW") -> np.ndarray:
    """Pool the features over space first, then one dense layer: equal to ``class_map_scores``."""
    pooled = pool_spatial(x, pool, layout=layout)  # (N, C)
    x = np.asarray(x)
    positions = int(np.prod(x.shape[2:] if layout == "NCHW" else x.shape[1:-1]))
    bd = None if b is None else class_map_bias_to_dense(b, positions, pool)
    return ops.dense(pooled, pointwise_matrix(w), bd)


# --- 4. a k x k conv is a dense layer sliding over neighbourhoods ------------------------------


def conv_to_patch_dense(w, *, layout="NCHW", groups: int = 1) -> np.ndarray:
    """Conv weight -> the (O, kH*kW*C) dense weight applied to each neighbourhood flattened as (kH, kW, C).

    With groups > 1 each output reads only its group's channels; the other columns are zero.
    """
    layout = check_layout(layout)
    w = check_finite(as_float_array(w, "w", ndim=4), "w")
    w_hwio = w if layout == "NHWC" else w.transpose(2, 3, 1, 0)  # (O, C/g, kH, kW) -> (kH, kW, C/g, O)
    kh, kw, cg, o = w_hwio.shape
    groups = check_int(groups, "groups")
    if o % groups:
        raise OneByOneError(f"output channels not divisible by groups: w has {o} output channels, groups={groups}")
    og = o // groups
    full = np.zeros((kh, kw, cg * groups, o), dtype=w.dtype)
    for g in range(groups):
        full[:, :, g * cg:(g + 1) * cg, g * og:(g + 1) * og] = w_hwio[..., g * og:(g + 1) * og]
    return full.reshape(kh * kw * cg * groups, o).T  # (kH*kW*C, O) -> (O, kH*kW*C)


def patch_dense_to_conv(wd, kernel_size, in_channels: int, *, layout="NCHW") -> np.ndarray:
    """The inverse of ``conv_to_patch_dense`` for groups=1: (O, kH*kW*C) -> conv weight."""
    layout = check_layout(layout)
    wd = check_finite(as_float_array(wd, "w", ndim=2), "w")
    kh, kw = check_pair(kernel_size, "kernel_size")
    c = check_int(in_channels, "in_channels")
    if wd.shape[1] != kh * kw * c:
        raise OneByOneError(f"w must have kH*kW*C={kh * kw * c} columns, got shape {wd.shape}")
    w_hwio = wd.T.reshape(kh, kw, c, wd.shape[0])  # (O, kH*kW*C) -> (kH, kW, C, O)
    return w_hwio if layout == "NHWC" else w_hwio.transpose(3, 2, 0, 1)  # -> (O, C, kH, kW)


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, layout="NCHW") -> np.ndarray:
    """Every neighbourhood as a row: (N, Ho, Wo, kH*kW*C), flattened in (kH, kW, C) order."""
    layout = check_layout(layout)
    x = as_float_array(x, "x", ndim=4)
    x_nhwc = convert(x, layout, "NHWC")  # (N, C, H, W) -> (N, H, W, C)
    cols = ops.windows(x_nhwc, kernel_size, stride, padding, dilation)  # (N, Ho, Wo, kH, kW, C)
    return cols.reshape(cols.shape[:3] + (-1,))  # copy: (N, Ho, Wo, kH*kW*C)


def sliding_dense(x, wd, b=None, kernel_size=3, *, stride=1, padding=0, dilation=1, layout="NCHW") -> np.ndarray:
    """A dense layer slid over the image: at each output position, slice the neighbourhood,
    flatten it as (kH, kW, C) and apply ``ops.dense``. An explicit loop, independent of ``ops.conv2d``.
    """
    layout = check_layout(layout)
    x, wd = as_float_array(x, "x", ndim=4), as_float_array(wd, "w", ndim=2)
    x_nhwc = convert(x, layout, "NHWC")  # (N, C, H, W) -> (N, H, W, C)
    (kh, kw), (sh, sw), (dh, dw) = (check_pair(v, n) for v, n in
                                    ((kernel_size, "kernel_size"), (stride, "stride"), (dilation, "dilation")))
    pads = ops.padding_pairs(padding, x_nhwc.shape[1:3], (kh, kw), (sh, sw), (dh, dw))
    n, h, w, c = x_nhwc.shape
    check_size(n * (h + sum(pads[0])) * (w + sum(pads[1])) * c * x.itemsize, f"padding a {x.shape} input by {pads}")
    xp = np.pad(x_nhwc, ((0, 0), pads[0], pads[1], (0, 0)))  # (N, H+pH, W+pW, C)
    ho = (xp.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[2] - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise OneByOneError(f"kernel {kh}x{kw} is larger than the padded input {xp.shape[1]}x{xp.shape[2]}")
    y = np.empty((x.shape[0], ho, wo, wd.shape[0]), dtype=result_dtype(x, wd))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw, :]
            y[:, i, j] = ops.dense(patch.reshape(x.shape[0], -1), wd, b)  # (N, kH*kW*C) -> (N, O)
    return convert(y, "NHWC", layout)  # (N, Ho, Wo, O) -> (N, O, Ho, Wo)
