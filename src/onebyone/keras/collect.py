"""The analyzer's Keras 3 front-end: walk the layers (nested models too), one row per call of each layer,
every number from ``onebyone.cost``."""
from __future__ import annotations

import contextlib
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


def _run(model, inputs, watch=contextlib.nullcontext) -> list:
    """[(path, layer, input shape, output shape)] for each call of a layer that calls no other layer, in the
    order they ran, from one eager run of ``model`` on ``inputs`` under ``watch()``: nested models (each call
    of a shared one), subclassed ones, and every axis the graph left open (None) as it ran. The path names the
    enclosing layers below the model. ``Layer.__call__`` is wrapped for that run only: one analysis at a time."""
    calls, stack, original = [], [], keras.layers.Layer.__call__

    def spy(layer, *args, **kwargs):
        stack.append([layer, False])  # (layer, called another layer)
        try:
            out = original(layer, *args, **kwargs)
        finally:
            _, outer = stack.pop()
        if stack:
            stack[-1][1] = True
        first = args[0] if args else next(iter(kwargs.values()), None)
        if not outer and not isinstance(layer, keras.Model) and stack and not _symbolic(first):
            path = ".".join([entry[0].name for entry in stack[1:]] + [layer.name])
            calls.append((path, layer, _shape(first), _shape(out)))
        return out

    if not model.built:  # (building runs a subclassed model's call once more)
        model(inputs, training=False)
    keras.layers.Layer.__call__ = spy
    try:
        with watch():
            model(inputs, training=False)
    finally:
        keras.layers.Layer.__call__ = original
    return calls


def _first(t):
    """A tensor, or the first tensor of a list or dict (an Add's, a Concatenate's inputs); None for none."""
    while isinstance(t, (list, tuple, dict)):
        t = next(iter(t.values() if isinstance(t, dict) else t), None)
    return t


def _symbolic(t) -> bool:
    """A call on Keras's symbolic tensors (a model building itself traces its ``call`` once): not a run."""
    return isinstance(_first(t), keras.KerasTensor)


def _shape(t) -> tuple:
    """The shape of a tensor, or of the first tensor of a list (an Add's, a Concatenate's inputs)."""
    t = _first(t)
    return tuple(int(d) for d in keras.ops.shape(t)) if t is not None else ()


def _conv_rows(layer, name, x, y, dtype):
    layout = "NCHW" if getattr(layer, "data_format", "channels_last") == "channels_first" else "NHWC"
    c_in = x[1] if layout == "NCHW" else x[-1]
    padding = layer.padding
    if padding == "causal":  # (Conv1D) everything on the left: (dilation * (kernel - 1), 0)
        padding = tuple((d * (k - 1), 0) for d, k in zip(layer.dilation_rate, layer.kernel_size))
    kw = dict(stride=layer.strides, padding=padding, dilation=layer.dilation_rate, layout=layout, dtype=dtype)
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        c = cost.conv_cost(x, c_in * layer.depth_multiplier, layer.kernel_size, groups=c_in, bias=layer.use_bias, **kw)
        return [(name, "depthwise", c)]
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        dw = cost.conv_cost(x, c_in * layer.depth_multiplier, layer.kernel_size, groups=c_in, bias=False, **kw)
        pw = cost.conv1x1_cost(dw.output_shape, layer.filters, bias=layer.use_bias, layout=layout, dtype=dtype,
                               spatial_dims=len(dw.output_shape) - 2)
        return [(name + ".depthwise", "depthwise", dw), (name + ".pointwise", "pointwise", pw)]
    c = cost.conv_cost(x, layer.filters, layer.kernel_size, groups=layer.groups, bias=layer.use_bias, **kw)
    spatial = c.output_shape[2:] if layout == "NCHW" else c.output_shape[1:-1]
    return [(name, conv_kind(layer.kernel_size, layer.groups, c_in, math.prod(spatial)), c)]


CONVS = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D)
TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)


def _rows(calls, dtype) -> tuple[list, list]:
    """(a row for each call, [(name, type, why)] of the layers with parameters the analyzer cannot count);
    a layer's parameters count on its first call."""
    rows, uncounted, seen, size = [], [], set(), cost.itemsize(dtype)
    for name, layer, x, y in calls:
        first = id(layer) not in seen
        seen.add(id(layer))
        if isinstance(layer, CONVS):
            for row_name, kind, c in _conv_rows(layer, name, x, y, dtype):
                rows.append(LayerStats.from_cost(row_name, type(layer).__name__, kind, x, c, first))
            continue
        if isinstance(layer, TRANSPOSED):
            layout = "NCHW" if getattr(layer, "data_format", "channels_last") == "channels_first" else "NHWC"
            c = cost.conv_transpose_cost(x, layer.filters, layer.kernel_size, y, bias=layer.use_bias, layout=layout,
                                         dtype=dtype)
            rows.append(LayerStats.from_cost(name, type(layer).__name__, "conv", x, c, first))
            continue
        if isinstance(layer, L.Dense):
            c = cost.dense_cost(x, layer.units, bias=layer.use_bias, dtype=dtype)
            rows.append(LayerStats.from_cost(name, "Dense", mix_kind(math.prod(x[1:-1])), x, c, first))
            continue
        kind = "norm" if isinstance(layer, NORMS) else "activation" if isinstance(layer, ACTS) else \
            "pool" if isinstance(layer, POOLS) else "other"
        params = layer.count_params() if first and layer.built else 0
        if kind == "other" and params and not isinstance(layer, NO_PARAMS_OK):
            why = f"{params:,} params in a layer type the analyzer does not know"
            uncounted.append((name, type(layer).__name__, why))
        rows.append(LayerStats(name, type(layer).__name__, kind, x, y, params, 0, 0, math.prod(y),
                               (math.prod(x) + params) * size, math.prod(y) * size, name.count(".")))
    return rows, uncounted


def analyze(model, input_size=None, example=None, batch_size: int = 1, dtype: str = "float32") -> ModelStats:
    """Per-layer params, MACs and memory of a Keras 3 model, from one run of it on ``example`` or on zeros of
    ``input_size`` (default: the size its inputs were built for): every shape as it ran, each call of a
    layer or a nested model its own row, a layer's parameters counted once."""
    if not isinstance(model, keras.Model):
        raise OneByOneError(f"expected a keras.Model, got {type(model).__name__}")
    if example is not None:
        inputs, shape = example, _shape(example)
        batch_size = shape[0]
    else:
        inputs = keras.ops.zeros((batch_size, *_input_size(model, input_size)), dtype=_input_dtype(model))
        shape = tuple(inputs.shape)
    try:
        calls, seen = _run_counted(model, inputs)
    except OneByOneError as e:
        raise OneByOneError(f"Keras model `{model.name}`: {e}") from e
    except Exception as e:  # noqa: BLE001 - name the model and the input it did not run on
        raise OneByOneError(f"Keras model `{model.name}` did not run on inputs of shape {shape}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    rows, uncounted = _rows(calls, dtype)
    uncounted += _unseen_products(seen, sum(r.macs for r in rows), type(model).__name__)
    total = model.count_params()
    rest = total - sum(r.params for r in rows)
    if rest:
        rows.append(LayerStats("(other parameters)", "-", "other", (), (), params=rest))
    return ModelStats(model.name, rows, total, uncounted, batch_size, dtype)


def _run_counted(model, inputs) -> tuple[list, int | None]:
    """``_run``'s calls and, where Keras runs on torch, the MACs torch's ``FlopCounterMode`` saw in that same
    run (None on another backend, or where the counter cannot watch the run: then it runs once more alone)."""
    if keras.backend.backend() != "torch":
        return _run(model, inputs), None
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    try:
        return _run(model, inputs, lambda: counter), counter.get_total_flops() // 2
    except Exception:  # noqa: BLE001 - a run the counter cannot watch: the layers' count stands, unchecked
        return _run(model, inputs), None


def _unseen_products(seen: int | None, counted: int, model_type: str) -> list:
    """The MACs torch saw (``seen``) beyond the ``counted`` ones (a subclassed model's ``call`` running
    ``ops.matmul`` outside any layer, a layer type not counted), as one entry of ``uncounted``; [] where it
    saw no more, or nothing was seen."""
    if seen is None or seen <= counted:
        return []
    return [("(the model's own call)", model_type, f"{seen - counted:,} MACs of products torch's "
             "FlopCounterMode saw beyond the layers counted (ops.matmul or einsum in a call, a layer type not "
             "counted)")]


def _input_size(model, input_size) -> tuple:
    """One sample's shape to run ``model`` on: ``input_size``, checked against what its input was built for,
    or that (where it leaves no axis open)."""
    inputs = getattr(model, "inputs", None) if model.built else None
    built = tuple(inputs[0].shape[1:]) if inputs else None
    if inputs and len(inputs) > 1:
        raise OneByOneError(f"Keras model `{model.name}` takes {len(inputs)} inputs: pass example=[one batch each]")
    if input_size is None:
        if built is None or None in built:
            raise OneByOneError(f"Keras model `{model.name}` " + ("is not built" if built is None else
                                f"leaves axes of its input open {built}") + ": pass input_size=(H, W, C)")
        return built
    given = tuple(input_size)
    if built is not None and (len(built) != len(given) or any(b is not None and b != g for b, g in zip(built, given))):
        hint = ""
        if len(given) == 3 and given[0] == built[-1] and given[0] != given[-1]:
            hint = f"; Keras takes channels last: input_size=({given[1]}, {given[2]}, {given[0]})"
        raise OneByOneError(f"Keras model `{model.name}` was built for inputs {built} (batch aside), "
                            f"got input_size {given}{hint}")
    return given


def _input_dtype(model) -> str:
    inputs = getattr(model, "inputs", None) if model.built else None
    return str(inputs[0].dtype) if inputs else "float32"
