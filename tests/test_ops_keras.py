"""NumPy ops against Keras 3 layers (KERAS_BACKEND=torch) on the same weights, float32."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from onebyone import layout, ops  # noqa: E402


def run(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("k,strides,padding,groups,dilation", [
    (3, 1, "valid", 1, 1), (3, 2, "same", 1, 1), (1, 1, "valid", 1, 1), (1, 2, "valid", 2, 1),
    ((2, 3), (2, 1), "same", 1, 1), (3, 1, "same", 2, 2), (5, 1, "same", 1, 1),
])
def test_conv2d_matches_keras(k, strides, padding, groups, dilation, rng):
    x = rng.standard_normal((2, 9, 8, 4)).astype(np.float32)  # NHWC
    layer = keras.layers.Conv2D(6, k, strides=strides, padding=padding, groups=groups, dilation_rate=dilation)
    ref = run(layer, x)
    kernel, bias = (np.asarray(v) for v in layer.get_weights())  # Keras kernel (kH, kW, I/g, O)
    got = ops.conv2d(x, kernel, bias, stride=strides, padding=padding, groups=groups, dilation=dilation, layout="NHWC")
    assert got.shape == ref.shape and rel_err(got, ref) <= 1e-5
    if kernel.shape[:2] == (1, 1):
        assert rel_err(ops.conv1x1(x, kernel, bias, stride=strides, groups=groups, layout="NHWC"), ref) <= 1e-5


def test_dense_matches_keras(rng):
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    layer = keras.layers.Dense(4)
    ref = run(layer, x)
    kernel, bias = layer.get_weights()  # (in, out)
    assert rel_err(ops.dense(x, layout.dense_to_linear(kernel), bias), ref) <= 1e-5
    # Keras Dense on (B, H, W, C) is a 1x1 conv over channels-last pixels
    img = rng.standard_normal((2, 6, 6, 7)).astype(np.float32)
    assert rel_err(ops.conv1x1(img, layout.dense_to_linear(kernel), bias, layout="NHWC"), run(layer, img)) <= 1e-5


def test_conv1d_kernel1_matches_keras(rng):
    pts = rng.standard_normal((2, 50, 3)).astype(np.float32)  # (B, N, C), Keras is channels-last
    layer = keras.layers.Conv1D(16, 1)
    ref = run(layer, pts)
    kernel, bias = layer.get_weights()  # (1, C, O)
    assert rel_err(ops.conv1x1(pts, kernel[0].T, bias, layout="NHWC"), ref) <= 1e-5


def test_flatten_dense_moves_between_torch_and_keras(rng):
    """A torch Flatten -> Linear head, moved to Keras Flatten -> Dense, gives the same logits."""
    c, h, w = 3, 4, 5
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    lin = torch.nn.Linear(c * h * w, 6)
    with torch.no_grad():
        ref = lin(torch.from_numpy(x).flatten(1)).numpy()
    kernel = layout.linear_to_keras(lin.weight.detach().numpy(), flatten_chw=(c, h, w))
    model = keras.Sequential([keras.Input((h, w, c)), keras.layers.Flatten(), keras.layers.Dense(6)])
    model.layers[-1].set_weights([kernel, lin.bias.detach().numpy()])
    got = run(model, layout.to_channels_last(x))
    assert rel_err(got, ref) <= 1e-5
    naive = layout.linear_to_dense(lin.weight.detach().numpy())  # a transpose alone reads the wrong order
    model.layers[-1].set_weights([naive, lin.bias.detach().numpy()])
    assert rel_err(run(model, layout.to_channels_last(x)), ref) > 1e-2
    back = layout.keras_to_linear(kernel, flatten_chw=(c, h, w))
    assert np.array_equal(back, lin.weight.detach().numpy())
