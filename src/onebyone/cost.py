"""Exact costs of conv, 1x1 conv, dense and pooling layers: pure integer functions of shapes.

Counting convention (the same in every table, the analyzer and the README):

* ``macs``: multiply-accumulates of weights with inputs. The bias add is NOT a MAC.
* ``flops``: ``2 * macs``, its own field, never mixed up with ``macs``.
* ``weight_params`` and ``bias_params`` are reported separately; ``params`` is their sum.
* ``activations``: number of output elements.
* ``bytes_read``: input elements + parameters, ``bytes_written``: output elements, each at the
  dtype's item size. This is the minimum traffic of a layer that reads its operands once.
* Pooling multiplies no weights: ``macs == 0``; its comparisons or additions (one per window
  element per output) go to ``other_ops``.

Shapes include the batch axis: ``(N, C, *spatial)`` for ``layout="NCHW"``,
``(N, *spatial, C)`` for ``layout="NHWC"``; dense inputs are ``(..., in_features)``.

>>> c = conv_cost((1, 192, 28, 28), 32, 5, padding="same")
>>> c.output_shape, c.macs, c.flops
((1, 32, 28, 28), 120422400, 240844800)
>>> conv_cost((1, 6, 6, 3), 2, 3, layout="NHWC").params
56
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .checks import check_choice, check_int, check_layout
from .errors import OneByOneError

CONVENTION = "MACs = multiply-accumulates, bias excluded; FLOPs = 2 x MACs"


@dataclass(frozen=True)
class Cost:
    """What one layer costs. See the module docstring for the convention."""

    output_shape: tuple
    weight_params: int
    bias_params: int
    macs: int
    flops: int
    activations: int
    bytes_read: int
    bytes_written: int
    other_ops: int = 0

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape)
        d["params"] = self.params
        return d


def itemsize(dtype) -> int:
    """Bytes per element of a numeric ``dtype`` (a NumPy dtype or its name; None is refused, not float64);
    ``bfloat16`` and the ``float8_*`` types are known by name, with or without ``ml_dtypes`` imported."""
    try:
        d = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        d = None
    name = dtype if isinstance(dtype, str) else getattr(d, "name", "")
    if name == "bfloat16" or name.startswith("float8"):
        return 2 if name == "bfloat16" else 1
    if d is None or d.kind not in "biufc":
        raise OneByOneError(f"dtype must be a numeric NumPy dtype or its name such as 'float32', got {dtype!r}")
    return d.itemsize


def _has_bias(bias) -> bool:
    if not isinstance(bias, (bool, np.bool_)):
        raise OneByOneError(f"bias must be True or False, got {bias!r} ({type(bias).__name__})")
    return bool(bias)


def _shape(shape, name: str = "input_shape") -> tuple:
    """A shape as a tuple of ints >= 1, or a OneByOneError (a bare int is not a shape: (1, 784) is)."""
    if isinstance(shape, np.ndarray) and shape.ndim == 1:
        shape = shape.tolist()
    if not isinstance(shape, (tuple, list)):
        raise OneByOneError(f"{name} must be a tuple of ints such as (1, 784), got {shape!r} ({type(shape).__name__})")
    return tuple(check_int(v, f"{name} entries") for v in shape)


def pad_amounts(size: int, kernel: int, stride: int = 1, padding=0, dilation: int = 1) -> tuple[int, int]:
    """Padding before and after one spatial axis.

    ``padding`` is an int, an explicit ``(before, after)`` pair, ``"valid"`` (none) or ``"same"``
    (output = ceil(size / stride), the extra pixel going after, as Keras and PyTorch do).

    >>> pad_amounts(28, 5, padding="same"), pad_amounts(7, 2, stride=2, padding="same")
    ((2, 2), (0, 1))
    """
    size, kernel = check_int(size, "size"), check_int(kernel, "kernel")
    stride, dilation = check_int(stride, "stride"), check_int(dilation, "dilation")
    if isinstance(padding, np.ndarray):
        padding = padding.tolist()
    if padding == "valid":
        return 0, 0
    if padding == "same":
        effective = dilation * (kernel - 1) + 1
        total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
        return total // 2, total - total // 2
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        return check_int(padding[0], "padding", 0), check_int(padding[1], "padding", 0)
    if isinstance(padding, (str, tuple, list)):
        raise OneByOneError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    p = check_int(padding, "padding", minimum=0)
    return p, p


def conv_output_size(size: int, kernel: int, stride: int = 1, padding=0, dilation: int = 1) -> int:
    """Output length of one spatial axis; raises when the kernel does not fit.

    >>> conv_output_size(6, 3), conv_output_size(28, 5, padding="same"), conv_output_size(7, 3, stride=2)
    (4, 28, 3)
    """
    lo, hi = pad_amounts(size, kernel, stride, padding, dilation)  # (checks each argument)
    effective = dilation * (kernel - 1) + 1
    if effective > size + lo + hi:
        raise OneByOneError(
            f"kernel {kernel} (dilation {dilation}, effective extent {effective}) is larger than the "
            f"padded input {size + lo + hi} (input {size}, padding {lo}+{hi})"
        )
    return (size + lo + hi - effective) // stride + 1


def _per_axis(value, n: int, name: str, minimum: int = 1) -> tuple:
    """One setting per spatial axis from an int or n of them; padding's may also be "same" / "valid" or, per
    axis, a (before, after) pair (a causal conv's), checked by ``pad_amounts``."""
    padding = name == "padding"
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise OneByOneError(f"{name} must be an int or {n} ints, got {value!r}")
        return tuple(v if padding and isinstance(v, (str, tuple, list)) else check_int(v, name, minimum)
                     for v in value)
    if isinstance(value, str) and padding:
        return (value,) * n
    return (check_int(value, name, minimum),) * n


def _split(shape, layout: str) -> tuple[int, int, tuple]:
    """(N, C, spatial) from a batched shape in the given layout."""
    check_layout(layout)
    shape = _shape(shape)
    if len(shape) < 3:
        raise OneByOneError(f"input_shape must be (N, C, *spatial) or (N, *spatial, C), got {shape}")
    if layout == "NCHW":
        return shape[0], shape[1], shape[2:]
    return shape[0], shape[-1], shape[1:-1]


def _join(n: int, c: int, spatial: tuple, layout: str) -> tuple:
    return (n, c, *spatial) if layout == "NCHW" else (n, *spatial, c)


def spatial_axes(input_shape, spatial_dims=None, *per_axis) -> int:
    """How many spatial axes a conv over ``input_shape`` has, from what the caller said: ``spatial_dims``,
    else the length of a tuple among ``per_axis`` (kernel, stride, padding, dilation), else 2 for a 4-D
    shape (a batch of images). Anything else is ambiguous and refused: (3, 224, 224) could be a batch of
    three 1-D signals or one image without its batch axis.

    >>> spatial_axes((8, 3, 32, 32)), spatial_axes((8, 3, 100), None, (3,)), spatial_axes((8, 3, 100), 1)
    (2, 1, 1)
    """
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) or isinstance(input_shape, np.ndarray) \
        and input_shape.ndim == 1 else input_shape
    if not isinstance(shape, tuple):
        raise OneByOneError(f"input_shape must be a tuple of ints (N, C, *spatial), got {input_shape!r}")
    if len(shape) < 3:
        raise OneByOneError(f"a conv or pool needs input_shape (N, C, *spatial) with one or more spatial axes, got "
                            f"{shape}" + (": one vector per sample is a dense layer's input (dense_cost)"
                                          if len(shape) == 2 else ""))
    lengths = {len(v) for v in per_axis if isinstance(v, (tuple, list))}
    if len(lengths) > 1:
        raise OneByOneError(f"kernel_size, stride, padding and dilation disagree on the number of spatial axes: "
                            f"{[v for v in per_axis if isinstance(v, (tuple, list))]}")
    d = check_int(spatial_dims, "spatial_dims") if spatial_dims is not None else lengths.pop() if lengths else (
        2 if len(shape) == 4 else None)
    if d is None:
        raise OneByOneError(f"input_shape {shape} is ambiguous with an int kernel_size: it could be a batch of "
                            f"{len(shape) - 2}-D inputs or one sample without its batch axis. Give the batch axis "
                            "(N, C, *spatial), or say the number of spatial axes: spatial_dims=..., or a kernel_size "
                            "tuple such as (3,) or (3, 3)")
    if len(shape) != d + 2:
        raise OneByOneError(f"a {d}-D conv needs input_shape (N, C, *{d} spatial sizes) or (N, *spatial, C), "
                            f"got {shape} ({len(shape)} axes); did you leave out the batch axis?")
    return d


def conv_cost(input_shape, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1,
              groups: int = 1, bias: bool = True, layout: str = "NCHW", dtype="float32", spatial_dims=None) -> Cost:
    """Cost of a convolution with any number of spatial axes (Conv1d, Conv2d, Conv3d).

    Each output element needs ``(C_in / groups) * prod(kernel)`` MACs. The number of spatial axes comes
    from ``spatial_dims``, a tuple argument's length, or a 4-D shape (see ``spatial_axes``).
    """
    d = spatial_axes(input_shape, spatial_dims, kernel_size, stride, padding, dilation)
    n, c, spatial = _split(input_shape, layout)
    out_channels = check_int(out_channels, "out_channels")
    groups = check_int(groups, "groups")
    if c % groups or out_channels % groups:
        raise OneByOneError(
            f"groups={groups} must divide both in_channels={c} and out_channels={out_channels}"
        )
    k, s, dl = (
        _per_axis(kernel_size, d, "kernel_size"),
        _per_axis(stride, d, "stride"),
        _per_axis(dilation, d, "dilation"),
    )
    p = _per_axis(padding, d, "padding", minimum=0)
    out_spatial = tuple(conv_output_size(*args) for args in zip(spatial, k, s, p, dl))
    out_shape = _join(n, out_channels, out_spatial, layout)
    weight_params = out_channels * (c // groups) * math.prod(k)
    bias_params = out_channels if _has_bias(bias) else 0
    activations = math.prod(out_shape)
    macs = activations * (c // groups) * math.prod(k)
    size = itemsize(dtype)
    return Cost(out_shape, weight_params, bias_params, macs, 2 * macs, activations,
                (math.prod(input_shape) + weight_params + bias_params) * size, activations * size)


def conv_transpose_cost(input_shape, out_channels: int, kernel_size, output_shape, *, groups: int = 1,
                        bias: bool = True, layout: str = "NCHW", dtype="float32") -> Cost:
    """Cost of a transposed convolution (ConvTranspose1d/2d/3d) of an (N, C_in, *spatial) input (``layout``
    "NHWC": (N, *spatial, C_in), as Keras's Conv2DTranspose takes it).

    Each input element is scattered through ``(C_out / groups) * prod(kernel)`` weights, one MAC each;
    ``output_shape`` is the layer's (it depends on stride, padding and output padding).

    >>> conv_transpose_cost((1, 16, 7, 7), 8, 2, (1, 8, 14, 14)).macs == 16 * 49 * 8 * 4
    True
    """
    check_choice(layout, ("NCHW", "NHWC"), "layout")
    input_shape, output_shape = _shape(input_shape), _shape(output_shape, "output_shape")
    last = layout == "NHWC"
    if len(input_shape) < 3 or len(output_shape) != len(input_shape) or output_shape[0] != input_shape[0] or \
            output_shape[-1 if last else 1] != out_channels:
        raise OneByOneError(f"a transposed conv takes (N, {'*spatial, C' if last else 'C, *spatial'}) with one "
                            f"or more spatial axes and gives the same N and {out_channels} channels; got "
                            f"{input_shape} -> {output_shape}")
    c = input_shape[-1 if last else 1]
    out_channels, groups = check_int(out_channels, "out_channels"), check_int(groups, "groups")
    if c % groups or out_channels % groups:
        raise OneByOneError(f"groups={groups} must divide both in_channels={c} and out_channels={out_channels}")
    k = _per_axis(kernel_size, len(input_shape) - 2, "kernel_size")
    weight_params, bias_params = c * (out_channels // groups) * math.prod(k), (out_channels if _has_bias(bias) else 0)
    macs = math.prod(input_shape) * (out_channels // groups) * math.prod(k)
    activations, size = math.prod(output_shape), itemsize(dtype)
    return Cost(tuple(output_shape), weight_params, bias_params, macs, 2 * macs, activations,
                (math.prod(input_shape) + weight_params + bias_params) * size, activations * size)


def product_macs(output_shape, terms: int) -> int:
    """MACs of a tensor product whose every output element is a sum of ``terms`` products (a matmul's
    reduction length; a conv's C_in / groups x kernel size): one multiply-accumulate per term.

    >>> product_macs((8, 196, 3072), 768) == 8 * 196 * 3072 * 768  # a Linear 768 -> 3072 over 196 tokens
    True
    """
    return math.prod(check_int(v, "output_shape entries", minimum=0) for v in output_shape) * check_int(
        terms, "terms", minimum=0)


def attention_cost(query_shape, key_shape, value_shape, dtype="float32") -> Cost:
    """Cost of attention's two products, ``Q K^T`` and ``A V``, over every key position (as computed,
    whatever the mask): queries (..., L_q, d), keys (..., L_k, d), values (..., L_k, d_v).

    MACs = prod(...) * L_q * L_k * (d + d_v); no parameters (the projections are dense layers).

    >>> attention_cost((2, 12, 197, 64), (2, 12, 197, 64), (2, 12, 197, 64)).macs == 2 * 2 * 12 * 197**2 * 64
    True
    """
    q, k, v = (tuple(check_int(d, "shape entries") for d in s) for s in (query_shape, key_shape, value_shape))
    if min(len(q), len(k), len(v)) < 2:
        raise OneByOneError(f"attention needs shapes of rank >= 2: queries (..., L_q, d), keys (..., L_k, d), values "
                            f"(..., L_k, d_v); got {q}, {k}, {v}")
    if q[-1] != k[-1] or k[-2] != v[-2]:
        raise OneByOneError(f"attention needs queries (..., L_q, d), keys (..., L_k, d) and values (..., L_k, d_v); "
                            f"got {q}, {k}, {v}")
    rows = math.prod(q[:-1])  # (..., L_q)
    macs = rows * k[-2] * (q[-1] + v[-1])
    out, size = (*q[:-1], v[-1]), itemsize(dtype)
    return Cost(out, 0, 0, macs, 2 * macs, math.prod(out), (math.prod(q) + math.prod(k) + math.prod(v)) * size,
                math.prod(out) * size)


def conv1x1_cost(input_shape, out_channels: int, *, stride=1, groups: int = 1, bias: bool = True,
                 layout: str = "NCHW", dtype="float32", spatial_dims=None) -> Cost:
    """Cost of a 1x1 (pointwise) convolution: a (C_out x C_in/groups) matrix at every output pixel.

    >>> c = conv1x1_cost((1, 192, 28, 28), 16)
    >>> c.macs == 28 * 28 * 16 * 192, c.params
    (True, 3088)
    """
    return conv_cost(input_shape, out_channels, 1, stride=stride, groups=groups, bias=bias,
                     layout=layout, dtype=dtype, spatial_dims=spatial_dims)


def dense_cost(input_shape, out_features: int, *, bias: bool = True, dtype="float32") -> Cost:
    """Cost of a dense (Linear) layer applied over the last axis of ``(..., in_features)``.

    A dense layer applied at every pixel of (N, H, W, C) costs exactly what a 1x1 conv costs.

    >>> per_pixel = conv1x1_cost((2, 7, 7, 32), 10, layout="NHWC").macs
    >>> dense_cost((1, 784), 784).params, dense_cost((2, 7, 7, 32), 10).macs == per_pixel
    (615440, True)
    """
    input_shape = _shape(input_shape)
    if not input_shape:
        raise OneByOneError("input_shape must be (..., in_features), got ()")
    out_features = check_int(out_features, "out_features")
    in_features = input_shape[-1]
    out_shape = (*input_shape[:-1], out_features)
    weight_params, bias_params = out_features * in_features, (out_features if _has_bias(bias) else 0)
    activations = math.prod(out_shape)
    macs = activations * in_features
    size = itemsize(dtype)
    return Cost(out_shape, weight_params, bias_params, macs, 2 * macs, activations,
                (math.prod(input_shape) + weight_params + bias_params) * size, activations * size)


def pool_cost(input_shape, kernel_size, *, stride=None, padding=0, op: str = "max",
              layout: str = "NCHW", dtype="float32", spatial_dims=None) -> Cost:
    """Cost of a max or average pool (``stride`` defaults to the kernel size, as in PyTorch; integer padding
    at most half the kernel, as PyTorch requires). The number of spatial axes comes as for ``conv_cost``.

    ``kernel_size="global"`` pools every spatial position into one.

    >>> pool_cost((1, 8, 4, 4), 2).output_shape, pool_cost((1, 8, 4, 4), "global", op="avg").other_ops
    ((1, 8, 2, 2), 128)
    """
    check_choice(op, ("max", "avg"), "op")
    d = spatial_axes(input_shape, spatial_dims, kernel_size, stride, padding)
    n, c, spatial = _split(input_shape, layout)
    if isinstance(kernel_size, str) and kernel_size == "global":
        kernel_size, stride, padding = tuple(spatial), 1, 0
    k = _per_axis(kernel_size, d, "kernel_size")
    s = k if stride is None else _per_axis(stride, d, "stride")
    p = _per_axis(padding, d, "padding", minimum=0)
    if any(max(pp if isinstance(pp, (tuple, list)) else (pp,)) > kk // 2 for pp, kk in zip(p, k)
           if not isinstance(pp, str)):
        raise OneByOneError(f"padding must be at most half the kernel (as in PyTorch: a window of padding alone has "
                            f"no input), got padding {p} for kernel {k}")
    out_spatial = tuple(conv_output_size(sz, kk, ss, pp) for sz, kk, ss, pp in zip(spatial, k, s, p))
    out_shape = _join(n, c, out_spatial, layout)
    activations = math.prod(out_shape)
    size = itemsize(dtype)
    return Cost(out_shape, 0, 0, 0, 0, activations, math.prod(input_shape) * size, activations * size,
                other_ops=activations * math.prod(k))


def add_costs(costs, output_shape=None) -> Cost:
    """Sum of several layers' costs (a block); ``output_shape`` is the block's output."""
    costs = list(costs)
    if not costs or not all(isinstance(c, Cost) for c in costs):
        got = [type(c).__name__ for c in costs] or "none"
        raise OneByOneError(f"add_costs sums one or more Cost objects, got {got}")
    fields = ("weight_params", "bias_params", "macs", "flops", "activations", "bytes_read",
              "bytes_written", "other_ops")
    sums = {f: sum(getattr(c, f) for c in costs) for f in fields}
    return Cost(tuple(output_shape if output_shape is not None else costs[-1].output_shape), **sums)
