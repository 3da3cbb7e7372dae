"""The analyzer's Keras 3 front-end: walk the layers (nested models too), one row per call of each layer,
every number from ``onebyone.cost``."""
from __future__ import annotations

import math

import keras

from .. import cost
from ..errors import OneByOneError
from ..stats import LayerStats, ModelStats, conv_kind, mix_kind

L = keras.layers
NORMS = (L.BatchNormalization, L.LayerNormalization, L.GroupNormalization)
ACTS = (L.Activation, L.ReLU, L.Softmax, L.LeakyReLU, L.PReLU, L.ELU)
POOLS = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
         L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D)
NO_PARAMS_OK = (
    L.InputLayer,
    L.Add,
    L.Concatenate,
    L.Multiply,
    L.ZeroPadding2D,
    L.Reshape,
    L.Flatten,
    L.Dropout,
    L.Rescaling,
)


def _calls(layer):
    """(input shape, output shape) for every call of the layer in the graph."""
    nodes = [n for n in getattr(layer, "_inbound_nodes", []) if n.input_tensors]
    if nodes:
        return [(tuple(n.input_tensors[0].shape), tuple(n.output_tensors[0].shape)) for n in nodes]
    first = lambda t: t[0] if isinstance(t, (list, tuple)) else t  # noqa: E731 - multi-input layers
    return [(tuple(first(layer.input).shape), tuple(first(layer.output).shape))]


def _conv_rows(layer, name, x, y, dtype):
    layout = "NCHW" if getattr(layer, "data_format", "channels_last") == "channels_first" else "NHWC"
    c_in = x[1] if layout == "NCHW" else x[-1]
    kw = dict(stride=layer.strides, padding=layer.padding, dilation=layer.dilation_rate, layout=layout, dtype=dtype)
    if isinstance(layer, L.DepthwiseConv2D):
        c = cost.conv_cost(x, c_in * layer.depth_multiplier, layer.kernel_size, groups=c_in, bias=layer.use_bias, **kw)
        return [(name, "depthwise", c)]
    if isinstance(layer, L.SeparableConv2D):
        dw = cost.conv_cost(x, c_in * layer.depth_multiplier, layer.kernel_size, groups=c_in, bias=False, **kw)
        pw = cost.conv1x1_cost(dw.output_shape, layer.filters, bias=layer.use_bias, layout=layout, dtype=dtype,
                               spatial_dims=len(dw.output_shape) - 2)
        return [(name + ".depthwise", "depthwise", dw), (name + ".pointwise", "pointwise", pw)]
    c = cost.conv_cost(x, layer.filters, layer.kernel_size, groups=layer.groups, bias=layer.use_bias, **kw)
    spatial = c.output_shape[2:] if layout == "NCHW" else c.output_shape[1:-1]
    return [(name, conv_kind(layer.kernel_size, layer.groups, c_in, math.prod(spatial)), c)]


def _walk(model, prefix, batch, dtype, rows, uncounted):
    for layer in model.layers:
        name = prefix + layer.name
        if isinstance(layer, L.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            _walk(layer, name + ".", batch, dtype, rows, uncounted)
            continue
        for i, (x, y) in enumerate(_calls(layer)):
            x, y = tuple(batch if d is None else d for d in x), tuple(batch if d is None else d for d in y)
            first = i == 0
            size = cost.itemsize(dtype)
            if isinstance(
                layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv2D, L.SeparableConv2D)
            ) and not isinstance(layer, L.Conv2DTranspose):
                for row_name, kind, c in _conv_rows(layer, name, x, y, dtype):
                    rows.append(LayerStats.from_cost(row_name, type(layer).__name__, kind, x, c, first))
                continue
            if isinstance(layer, L.Dense):
                c = cost.dense_cost(x, layer.units, bias=layer.use_bias, dtype=dtype)
                rows.append(LayerStats.from_cost(name, "Dense", mix_kind(math.prod(x[1:-1])), x, c, first))
                continue
            n_out = 1
            for d in y:
                n_out *= d
            kind = "norm" if isinstance(layer, NORMS) else "activation" if isinstance(layer, ACTS) else \
                "pool" if isinstance(layer, POOLS) else "other"
            params = layer.count_params() if first and layer.built else 0
            if kind == "other" and params and not isinstance(layer, NO_PARAMS_OK):
                uncounted.append(
                    (name, type(layer).__name__, f"{params:,} params in a layer type the analyzer does not know")
                )
            n_in = 1
            for d in x:
                n_in *= d
            rows.append(LayerStats(name, type(layer).__name__, kind, x, y, params, 0, 0, n_out,
                                   (n_in + params) * size, n_out * size, name.count(".")))


def analyze(model, input_size=None, example=None, batch_size: int = 1, dtype: str = "float32") -> ModelStats:
    """Per-layer params, MACs and memory of a Keras 3 model (built, or built here from ``input_size``)."""
    if not isinstance(model, keras.Model):
        raise OneByOneError(f"expected a keras.Model, got {type(model).__name__}")
    if example is not None:
        input_size = tuple(example.shape[1:])
        batch_size = int(example.shape[0])
    if input_size is not None and model.built and getattr(model, "inputs", None):
        built, given = tuple(model.inputs[0].shape[1:]), tuple(input_size)
        if len(built) != len(given) or any(b is not None and b != g for b, g in zip(built, given)):
            hint = ""
            if len(given) == 3 and given[0] == built[-1] and given[0] != given[-1]:
                hint = f"; Keras takes channels last: input_size=({given[1]}, {given[2]}, {given[0]})"
            raise OneByOneError(f"Keras model `{model.name}` was built for inputs {built} (batch aside), "
                                f"got input_size {given}{hint}")
    if not model.built or not getattr(model, "inputs", None):
        if input_size is None:
            raise OneByOneError(f"Keras model `{model.name}` is not built: pass input_size=(H, W, C)")
        model.build((None, *input_size))
    rows, uncounted = [], []
    try:
        _walk(model, "", batch_size, dtype, rows, uncounted)
    except OneByOneError as e:
        raise OneByOneError(f"Keras model `{model.name}`: {e}") from e
    total = model.count_params()
    rest = total - sum(r.params for r in rows)
    if rest:
        rows.append(LayerStats("(other parameters)", "-", "other", (), (), params=rest))
    return ModelStats(model.name, rows, total, uncounted, batch_size, dtype)
