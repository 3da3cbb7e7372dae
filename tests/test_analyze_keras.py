"""The analyzer on Keras 3 models (KERAS_BACKEND=torch): totals equal Keras's own count_params()."""
import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from onebyone import OneByOneError, analyze, cost  # noqa: E402

APPS = {"MobileNet": keras.applications.MobileNet, "ResNet50": keras.applications.ResNet50,
        "InceptionV3": keras.applications.InceptionV3}


@pytest.mark.parametrize("name", APPS)
def test_params_equal_count_params(name):
    model = APPS[name](weights=None)
    s = analyze(model)
    assert s.params == model.count_params()
    assert not any(r.name == "(other parameters)" for r in s.rows) and s.uncounted == []
    by_layer = {layer.name: layer.count_params() for layer in model.layers}
    for r in s.rows:  # conv / dense params come from cost's formulas: they must match each layer's own count
        if r.kind in ("conv", "pointwise", "depthwise", "dense"):
            assert r.params == by_layer[r.name], r.name


@pytest.mark.parametrize("name", ["MobileNetV2", "EfficientNetV2B0", "DenseNet121", "ConvNeXtTiny", "Xception"])
def test_macs_equal_torch_flop_counter_running_the_keras_model(name):
    """An independent count: on the torch backend a Keras model's call is torch ops, which FlopCounterMode
    counts (2 flops a MAC). Depthwise and separable convs, SE blocks, dense growth and layer-scaled blocks."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if keras.backend.backend() != "torch":
        pytest.skip("the reference counts torch operations: KERAS_BACKEND=torch")
    model = getattr(keras.applications, name)(weights=None)
    x = np.random.default_rng(0).random((1, *model.input_shape[1:]), dtype=np.float32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, training=False)
    assert analyze(model).macs == counter.get_total_flops() // 2


def test_keras_mobilenet_macs_and_the_1x1_head():
    s = analyze(keras.applications.MobileNet(weights=None))
    # Keras writes the classifier as a 1x1 conv: the torch MobileNet's 568,740,352 MACs with that head
    assert s.macs == 568_740_352
    from onebyone.zoo import create_model

    ours = analyze(create_model("mobilenet_v1"), (3, 224, 224)).share()  # the head as a Linear
    assert s.share()["pointwise"]["macs"] == ours["pointwise"]["macs"] == 94.86  # one kind for the head in either
    assert s.share()["dense"]["macs"] == ours["dense"]["macs"] > 0  # form: a 1x1 conv on one pixel is dense


def test_shared_layer_counts_per_call_and_per_pixel_dense():
    inp = keras.Input((6, 6, 8))
    dense = keras.layers.Dense(4)
    out = keras.layers.Add()([dense(inp), dense(inp)])
    s = analyze(keras.Model(inp, out), batch_size=3)
    dense_rows = [r for r in s.rows if r.type == "Dense"]
    assert [r.macs for r in dense_rows] == [3 * 36 * 4 * 8] * 2
    assert [r.params for r in dense_rows] == [36, 0] and s.params == 36
    conv = analyze(keras.Sequential([keras.Input((6, 6, 8)), keras.layers.Conv2D(4, 1)]), batch_size=3)
    assert conv.macs == dense_rows[0].macs == cost.conv1x1_cost((3, 6, 6, 8), 4, layout="NHWC").macs


def test_unbuilt_model_needs_an_input_size():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(OneByOneError, match="is not built: pass input_size"):
        analyze(model)
    assert analyze(model, input_size=(5,)).params == 18


def test_a_channels_first_input_size_for_a_channels_last_model_is_refused():
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3)])
    with pytest.raises(OneByOneError, match=r"built for inputs \(32, 32, 3\).*got input_size \(3, 32, 32\); "
                                            r"Keras takes channels last: input_size=\(32, 32, 3\)"):
        analyze(model, input_size=(3, 32, 32))
    assert analyze(model, input_size=(32, 32, 3)).macs == analyze(model).macs == 30 * 30 * 8 * 27


L = keras.layers


def test_every_shape_is_the_one_that_ran():
    """Axes the graph leaves open (a fully convolutional model) take input_size's sizes, not the batch's; a
    nested model called twice counts both calls; a subclassed model is run as any other (each was wrong or
    raised: 3,072 MACs for 196,608; one call of two; an AttributeError)."""
    import numpy as np

    fcn = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(16, 1), L.Conv2D(4, 3)])
    s = analyze(fcn, input_size=(32, 32, 3), batch_size=4)
    assert [r.macs for r in s.rows] == [4 * 32 * 32 * 16 * 3, 4 * 30 * 30 * 4 * 16 * 9]
    with pytest.raises(OneByOneError, match=r"leaves axes of its input open \(None, None, 3\): pass input_size"):
        analyze(fcn)
    inner = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(16, 1, name="conv")], name="inner")
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    twice = keras.Model([a, b], L.Add()([inner(a), inner(b)]))
    s = analyze(twice, example=[np.zeros((1, 8, 8, 3), "float32")] * 2)
    convs = [r for r in s.rows if r.type == "Conv2D"]
    assert [r.name for r in convs] == ["inner.conv", "inner.conv"] and [r.params for r in convs] == [64, 0]
    assert s.macs == 2 * 64 * 16 * 3 and s.params == twice.count_params()

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(16, 1)

        def call(self, x):
            return self.conv(x)

    assert analyze(Sub(), input_size=(8, 8, 3)).macs == 64 * 16 * 3


def test_causal_transposed_and_one_dimensional_depthwise_convs_are_counted():
    """Conv1D with causal padding (it raised), transposed convs and 1-D depthwise / separable convs (read as
    layers the analyzer does not know): counted, their parameters equal to Keras's."""
    causal = keras.Sequential([keras.Input((10, 4)), L.Conv1D(8, 3, padding="causal", dilation_rate=2)])
    assert analyze(causal).macs == 10 * 8 * 3 * 4
    up = keras.Sequential([keras.Input((7, 7, 16)), L.Conv2DTranspose(8, 2, strides=2)])
    s = analyze(up)
    assert s.macs == 49 * 16 * 8 * 4 == cost.conv_transpose_cost((1, 16, 7, 7), 8, 2, (1, 8, 14, 14)).macs
    assert s.params == up.count_params() and s.uncounted == []
    dw = keras.Sequential([keras.Input((10, 4)), L.DepthwiseConv1D(3), L.SeparableConv1D(6, 3)])
    s = analyze(dw)
    assert s.macs == 8 * 4 * 3 + 6 * 4 * 3 + 6 * 4 * 6 and s.params == dw.count_params() and s.uncounted == []


def test_products_a_subclassed_models_call_runs_outside_layers_are_named_with_their_macs():
    """Attention written with ``ops.matmul`` in a subclassed model's ``call``: the analyzer saw its Dense alone
    (2,560 of 14,080 MACs) and said nothing. torch's FlopCounterMode, run beside it, names the 11,520 MACs
    it could not place, in ``uncounted`` and a warning; a model of layers alone gets no such entry."""
    import numpy as np

    class Attention(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(16)
            self.w = self.add_weight(shape=(16, 16))

        def call(self, x):
            h = self.d(x)  # (2, 10, 16)
            a = keras.ops.softmax(keras.ops.matmul(h, keras.ops.transpose(h, (0, 2, 1))))  # 2*10*10*16 MACs
            return keras.ops.matmul(a, h) @ self.w  # 2*10*10*16 + 2*10*16*16

    x = np.random.default_rng(0).random((2, 10, 8)).astype("float32")
    outside = 2 * (2 * 10 * 10 * 16) + 2 * 10 * 16 * 16  # the two attention products, then @ w
    with pytest.warns(UserWarning, match=f"{outside:,} MACs of products torch's FlopCounterMode saw beyond the"):
        s = analyze(Attention(), example=x)
    assert s.macs == 2 * 10 * 8 * 16 and [u[0] for u in s.uncounted] == ["(the model's own call)"]
    plain = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(5)])
    assert analyze(plain).uncounted == []


def test_a_built_model_runs_once_per_analysis():
    """The count and torch's check of it come from one run: a model whose ``call`` costs seconds (or counts
    its calls) is not run a second time for the check."""
    import numpy as np

    class Counting(keras.Model):
        def __init__(self):
            super().__init__()
            self.d, self.runs = keras.layers.Dense(4), 0

        def call(self, x):
            self.runs += 1
            return self.d(x)

    m, x = Counting(), np.zeros((2, 8), "float32")
    m(x)
    before = m.runs
    assert analyze(m, example=x).macs == 2 * 8 * 4
    assert m.runs - before == 1


def test_bfloat16_counts_two_bytes_an_element():
    """Keras imports ml_dtypes, which makes NumPy's bfloat16 a 'V' kind: dtype='bfloat16' was refused."""
    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    half, full = analyze(m, dtype="bfloat16"), analyze(m)
    assert half.macs == full.macs and 2 * half.rows[0].bytes_written == full.rows[0].bytes_written
