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
