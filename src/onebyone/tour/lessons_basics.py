"""Lessons on what a 1x1 convolution computes (shapes, one channel, many channels, depth, params).
Each ``@lesson`` also names the lesson's figure and its experiment (None where it has none).
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from .. import cost, ops
from ..forms import dense_per_pixel
from ..layout import hwio_to_oihw, oihw_to_hwio, to_channels_first, to_channels_last
from . import blocks, experiments
from . import figures_basics as figures
from .core import lesson

# the three source texts, by title
SEED_QA = "a Q&A on 1x1 convolutions in SqueezeNet (one MNIST digit through sixteen 1x1 filters)"
SEED_ARTICLE = 'the post "1x1 Convolution" (a Keras example, Network in Network and Inception)'
SEED_POST = '"Truly understanding 1x1 convolutions" (a dense layer at every pixel, PointNet)'
SOURCES = (SEED_QA, SEED_ARTICLE, SEED_POST)


def ring_digit(size: int = 28) -> np.ndarray:
    """A smooth '0'-like digit, (1, size, size, 1) NHWC, strictly positive everywhere."""
    r = np.hypot(*np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2))
    img = np.exp(-((r - size / 3.5) ** 2) / 8.0) + 1e-3
    return img[None, :, :, None]  # (H, W) -> (1, H, W, 1)


def relu(x):
    return np.maximum(x, 0)


@lesson("shapes", "Sixteen 1x1 filters on one digit", SEED_QA,
        figure=figures.shapes, experiment=None, claim="""
    A 1x1 conv with 16 filters keeps height and width and sets the channel count to 16: one
    28x28 grey digit, 1x28x28x1 in NHWC, comes out as 1x28x28x16 (1x16x28x28 in NCHW).""")
def shapes(L, rng):
    x = ring_digit()  # (1, 28, 28, 1)
    w, b = rng.standard_normal((1, 1, 1, 16)), rng.standard_normal(16)  # Keras kernel (1, 1, I, O)
    y = ops.conv1x1(x, w, b, layout="NHWC")
    L.equal("NHWC output shape", (1, 28, 28, 16), y.shape)
    yc = ops.conv1x1(to_channels_first(x), hwio_to_oihw(w), b, layout="NCHW")
    L.equal("NCHW output shape", (1, 16, 28, 28), yc.shape)
    L.close("NCHW and NHWC compute the same numbers", y, to_channels_last(yc))
    L.equal(
        "cost.conv1x1_cost predicts the shape",
        (1, 28, 28, 16),
        cost.conv1x1_cost(x.shape, 16, layout="NHWC").output_shape,
    )
    L.close("the general im2col conv2d agrees with the 1x1 fast path", y, ops.conv2d(x, w, b, layout="NHWC"))
    L.keep(x=x[0, :, :, 0], y=y[0])  # (28, 28), (28, 28, 16)


@lesson("one-channel", "One input channel: every output is a rescaled copy", SEED_QA,
        figure=figures.one_channel, experiment=experiments.one_channel, claim="""
    With a single input channel, a 1x1 filter holds one weight alpha_i, so output channel i is
    alpha_i * x + b_i: a scaled (and shifted) copy of the input. The 16 channels carry no more
    information than the input itself; this is the 'pointwise scaling' of signal processing. Which is
    why SqueezeNet never puts a 1x1 conv on a single channel: each of its 1x1 convs reads many.""")
def one_channel(L, rng):
    x = ring_digit()  # (1, 28, 28, 1)
    w, b = rng.standard_normal((1, 1, 1, 16)), rng.standard_normal(16)
    alpha = w.reshape(16)
    y = ops.conv1x1(x, w, b, layout="NHWC")  # (1, 28, 28, 16)
    L.close("output channel i == alpha_i * x + b_i", x * alpha + b, y)
    ratio = (y - b) / x  # (1, 28, 28, 16): one constant per channel if the claim holds
    spread = float(np.max(ratio.max(axis=(0, 1, 2)) - ratio.min(axis=(0, 1, 2))))
    L.holds("(channel_i - b_i) / input is constant over all 784 pixels", spread <= 1e-9, spread, "max spread <= 1e-9")
    L.close("that constant is the filter's single weight alpha_i", alpha, ratio.mean(axis=(0, 1, 2)))
    s = np.linalg.svd((y - b).reshape(784, 16), compute_uv=False)  # (pixels, channels)
    L.holds("the 16 bias-free channels span a single direction (rank 1)", s[1] / s[0] < 1e-12,
            float(s[1] / s[0]), "second / first singular value < 1e-12")
    L.note(f"alpha = {np.array2string(alpha[:4], precision=3)} ...: each output channel is the digit times one number.")
    L.keep(x=x[0, :, :, 0], y=y[0], alpha=alpha, b=b)
    widths = blocks.squeezenet_pointwise_inputs()
    L.holds("SqueezeNet 1.0 (its eight fire modules and classifier as published): no 1x1 conv reads one channel",
            min(widths) > 1, f"{len(widths)} 1x1 convs, the narrowest reads {min(widths)} channels", "> 1 channel")


@lesson("many-channels", "Several channels: a dense layer at every pixel", SEED_QA,
        figure=figures.many_channels, experiment=experiments.many_channels, claim="""
    With C input channels, each output pixel is a weighted sum of that pixel's C channel values,
    so an output channel is in general proportional to no input channel. The same (O x C) weights
    serve every pixel: a 1x1 conv is a dense layer from C to O features applied to each pixel.""")
def many_channels(L, rng):
    x = rng.standard_normal((1, 3, 16, 16))  # (N, C, H, W)
    w = rng.choice([-1.0, 1.0], (8, 3)) * rng.uniform(0.5, 1.5, (8, 3))  # every input weighs in every output
    b = rng.standard_normal(8)
    y = ops.conv1x1(x, w, b)  # (1, 8, 16, 16)
    L.close("conv1x1 == ops.dense applied pixel by pixel (256 separate calls)", dense_per_pixel(x, w, b), y)
    col = x[0, :, 5, 7]
    L.close(
        "output[0, 0, 5, 7] == sum_c W[0, c] * x[c, 5, 7] + b[0]",
        sum(w[0, c] * col[c] for c in range(3)) + b[0],
        y[0, 0, 5, 7],
    )
    centred, inputs = (y - b[:, None, None])[0].reshape(8, -1), x[0].reshape(3, -1)  # (O, P), (C, P)
    k = centred @ inputs.T / np.sum(inputs ** 2, axis=1)  # best scale for each (o, c) pair
    resid = (
        np.linalg.norm(centred[:, None, :] - k[:, :, None] * inputs[None], axis=2)
        / np.linalg.norm(centred, axis=1)[:, None]
    )
    L.holds("no output channel is proportional to any input channel", resid.min() > 0.05, float(resid.min()),
            "smallest relative residual of a best proportional fit > 0.05")
    L.equal(
        "the 8 bias-free outputs span only 3 directions (rank = input channels)", 3, int(np.linalg.matrix_rank(centred))
    )
    L.keep(x=x[0], w=w, b=b, y=y[0], pixel=(5, 7))


@lesson("full-depth", "A filter reads every input channel", SEED_QA,
        figure=figures.full_depth, experiment=None, claim="""
    In an ordinary (ungrouped) conv each filter covers all the input channels. On a 32x32x3 input a 1x1
    filter is a 3-vector,
    and each output value is the dot product of that vector with the pixel's (R, G, B) column;
    the per-channel products are summed, so one filter gives one feature map.""")
def full_depth(L, rng):
    x = rng.random((1, 32, 32, 3))  # (N, H, W, C)
    w = rng.standard_normal((1, 1, 3, 4))  # 4 filters, each three 1x1 kernels
    y = ops.conv1x1(x, w, layout="NHWC")
    dots = np.array([[[np.dot(x[0, i, j], w[0, 0, :, f]) for f in range(4)] for j in range(32)] for i in range(32)])
    L.close("every output value is a 3-D dot product (4,096 explicit np.dot calls)", dots[None], y)
    L.equal("one feature map per filter: output channels", 4, y.shape[-1])
    L.close("summing the three per-channel products gives filter 0's map", (x * w[0, 0, :, 0]).sum(axis=-1), y[..., 0])
    c = cost.conv1x1_cost(x.shape, 4, layout="NHWC")
    L.equal("MACs per output value == input depth", 3, c.macs // c.activations)
    L.keep(x=x[0], w=w[0, 0], y=y[0])  # (32, 32, 3), (3, 4), (32, 32, 4)


@lesson("weight-layout", "Where the channel axes go", SEED_POST,
        figure=figures.weight_layout, experiment=None, claim="""
    A 3x3 conv with 128 filters on an RGB image holds 3x3x3x128 weights: people write "3x3, 128 filters"
    and leave the 3 out, since the image decides it. Keras stores the kernel channels-last as
    (kH, kW, C_in, C_out) and PyTorch channels-first as (C_out, C_in, kH, kW): the same numbers,
    moved, and the same outputs.""")
def weight_layout(L, rng):
    c = cost.conv_cost((1, 3, 10, 10), 128, 3)
    L.equal("weights of a 3x3, 128-filter conv on RGB (3*3*3*128)", 3456, c.weight_params)
    wk = rng.standard_normal((3, 3, 3, 128))  # Keras (kH, kW, C_in, C_out)
    wt = hwio_to_oihw(wk)
    L.equal("PyTorch shape after conversion", (128, 3, 3, 3), wt.shape)
    x = rng.standard_normal((1, 10, 10, 3))
    y_keras = ops.conv2d(x, wk, layout="NHWC")  # (1, 8, 8, 128)
    y_torch = to_channels_last(ops.conv2d(to_channels_first(x), wt, layout="NCHW"))
    L.close("both layouts give the same outputs", y_keras, y_torch)
    L.keep(w_keras=wk[..., 0], w_torch=wt[0], y_keras=y_keras[0, ..., 0], y_torch=y_torch[0, ..., 0])
    L.equal("HWIO -> OIHW -> HWIO round-trips exactly", True, bool(np.array_equal(oihw_to_hwio(wt), wk)))


def _keras():
    """keras if it can be imported (on the torch backend unless one was chosen), else None."""
    if importlib.util.find_spec("keras") is None:
        return None
    if importlib.util.find_spec("torch") is not None:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception:  # noqa: BLE001 - any backend failure just means no cross-check
        return None
    return keras


@lesson("params", "Parameters of 3x3 versus 1x1 on a 6x6x3 image", SEED_ARTICLE,
        figure=figures.params, experiment=None, claim="""
    Two 3x3 filters on a 6x6x3 image give a 4x4x2 output and (3*3*3 + 1) * 2 = 56 parameters; two
    1x1 filters keep 6x6 and need (1*1*3 + 1) * 2 = 8. The ReLU after the layer runs once per output
    value: 16 times per filter after the 3x3, 36 times after the 1x1.""")
def params(L, rng):
    x = rng.random((1, 6, 6, 3))
    w3, b3 = rng.standard_normal((3, 3, 3, 2)), rng.standard_normal(2)
    w1, b1 = rng.standard_normal((1, 1, 3, 2)), rng.standard_normal(2)
    y3, y1 = relu(ops.conv2d(x, w3, b3, layout="NHWC")), relu(ops.conv1x1(x, w1, b1, layout="NHWC"))
    c3, c1 = cost.conv_cost(x.shape, 2, 3, layout="NHWC"), cost.conv1x1_cost(x.shape, 2, layout="NHWC")
    L.equal("3x3 output shape", (1, 4, 4, 2), y3.shape)
    L.equal("3x3 parameters, from cost", 56, c3.params)
    L.equal("3x3 parameters, counted in the arrays", 56, w3.size + b3.size)
    L.equal("1x1 output shape", (1, 6, 6, 2), y1.shape)
    L.equal("1x1 parameters, from cost", 8, c1.params)
    L.equal("1x1 parameters, counted in the arrays", 8, w1.size + b1.size)
    L.equal("ReLU applications per filter after the 3x3", 16, y3[..., 0].size)
    L.equal("ReLU applications per filter after the 1x1", 36, y1[..., 0].size)
    L.note(f"MACs: 3x3 {c3.macs}, 1x1 {c1.macs}; parameters {c3.params / c1.params:.1f}x fewer with 1x1.")
    L.keep(y3=y3[0], y1=y1[0], params=(c3.params, c1.params))
    keras = _keras()
    if keras is None:
        L.skip("the Keras count_params() cross-check", 4, "keras")
        return
    for name, (w, b, y) in {"3x3": (w3, b3, y3), "1x1": (w1, b1, y1)}.items():
        layer = keras.layers.Conv2D(2, w.shape[:2], activation="relu")
        model = keras.Sequential([keras.Input((6, 6, 3)), layer])
        layer.set_weights([w.astype("float32"), b.astype("float32")])
        L.equal(f"Keras count_params() for the {name} model", w.size + b.size, model.count_params())
        L.close(
            f"Keras Conv2D output equals ours ({name}, float32)",
            y,
            keras.ops.convert_to_numpy(model(x.astype("float32"))),
            tol=1e-5,
        )


@lesson("channel-reduction", "Fewer channels, same map", SEED_ARTICLE,
        figure=figures.channel_reduction, experiment=None, claim="""
    A 2x2 pool with stride 2 halves height and width and keeps every channel; a stride-1 1x1 conv does
    the opposite: it changes the number of channels and keeps the height and width.""")
def channel_reduction(L, rng):
    x = rng.standard_normal((1, 64, 14, 14))
    y = ops.conv1x1(x, rng.standard_normal((16, 64)))
    p = ops.pool2d(x, 2, op="max")
    L.equal("1x1 conv 64 -> 16: shape", (1, 16, 14, 14), y.shape)
    L.equal("2x2 max pool: shape", (1, 64, 7, 7), p.shape)
    L.equal("cost predicts the 1x1 shape", y.shape, cost.conv1x1_cost(x.shape, 16).output_shape)
    L.equal("cost predicts the pool shape", p.shape, cost.pool_cost(x.shape, 2).output_shape)
    L.note(f"activations: input {x.size}, after 1x1 {y.size} ({x.size / y.size:.0f}x fewer), after pool {p.size}.")
    L.keep(x=x[0], y=y[0], p=p[0])


@lesson("nonlinearity", "A 1x1 layer adds a nonlinearity per pixel", SEED_ARTICLE,
        figure=figures.nonlinearity, experiment=experiments.nonlinearity, claim="""
    Two stacked 1x1 convs with nothing between them collapse into one 1x1 conv (their matrices
    multiply). Put a ReLU between them and the stack becomes a small per-pixel MLP, which no single
    linear map reproduces: the extra activation is the point. This is the 'mlpconv' of Network in
    Network (Lin, Chen and Yan, 2013), the paper that introduced the 1x1 convolution as a layer of its
    own; the layer is also called a network-in-network or MLP conv layer, and in Inception a bottleneck.""")
def nonlinearity(L, rng):
    x = rng.standard_normal((1, 8, 12, 12))
    w1, b1 = rng.standard_normal((16, 8)), rng.standard_normal(16)
    w2, b2 = rng.standard_normal((4, 16)), rng.standard_normal(4)
    linear = ops.conv1x1(ops.conv1x1(x, w1, b1), w2, b2)
    L.close(
        "without activation: conv(conv(x)) == one conv with W2 @ W1, W2 @ b1 + b2",
        linear,
        ops.conv1x1(x, w2 @ w1, w2 @ b1 + b2),
    )
    mlp = ops.conv1x1(relu(ops.conv1x1(x, w1, b1)), w2, b2)  # (1, 4, 12, 12)
    X = np.concatenate([x[0].reshape(8, -1), np.ones((1, 144))])  # (C+1, P): features and a bias row
    Y = mlp[0].reshape(4, -1)  # (O, P)
    fit, *_ = np.linalg.lstsq(X.T, Y.T, rcond=None)
    rel = float(np.linalg.norm(X.T @ fit - Y.T) / np.linalg.norm(Y))
    L.holds(
        "with a ReLU between: the best single linear map leaves a large residual",
        rel > 0.05,
        rel,
        "relative residual > 0.05",
    )
    L.keep(
        linear=linear.ravel(),
        merged=ops.conv1x1(x, w2 @ w1, w2 @ b1 + b2).ravel(),
        mlp=Y.ravel(),
        fit=(X.T @ fit).T.ravel(),
    )
