"""Lessons on the equivalent forms (sliding dense, FC as conv, class maps, shared MLP) and on cost.
Each ``@lesson`` also names the lesson's figure and its experiment (None where it has none).
"""
from __future__ import annotations

import importlib.util

import numpy as np

from .. import cost, forms, ops, quant, reparam
from ..data.shapes3d import SHAPES
from . import blocks, digits, experiments
from . import figures_forms as figures
from .core import lesson
from .lessons_basics import SEED_ARTICLE, SEED_POST, SEED_QA, relu


@lesson("kxk-sliding", "A k x k conv is a small dense layer that slides", SEED_POST,
        figure=figures.kxk_sliding, experiment=None, claim="""
    On a grey image, a 3x3 filter is one dense unit with 9 inputs, applied to each 3x3 window in turn.
    Written as an explicit loop (slice the window, flatten it, apply a dense layer) it gives the
    convolution's numbers (to rounding), with 9 weights where a fully connected layer on a 28x28 image
    needs 784 x 784.""")
def kxk_sliding(L, rng):
    x, w, b = rng.standard_normal((1, 1, 28, 28)), rng.standard_normal((1, 1, 3, 3)), rng.standard_normal(1)
    wd = forms.conv_to_patch_dense(w)  # (1, 9)
    L.close(
        "sliding a 9-input dense unit == conv2d with a 3x3 kernel",
        ops.conv2d(x, w, b),
        forms.sliding_dense(x, wd, b, 3),
    )
    L.equal("weights of the sliding unit, from cost", wd.size, cost.conv_cost(x.shape, 1, 3, bias=False).weight_params)
    L.equal("weights of a fully connected 784 -> 784 layer", 614_656, cost.dense_cost((1, 784), 784).weight_params)
    x4, w4 = rng.standard_normal((2, 4, 9, 9)), rng.standard_normal((5, 4, 3, 3))
    got = forms.sliding_dense(x4, forms.conv_to_patch_dense(w4), None, 3, stride=2, padding=1)
    L.close("also with 4 channels, 5 filters, stride 2 and padding 1", ops.conv2d(x4, w4, stride=2, padding=1), got)
    L.keep(x=x[0, 0], w=w[0, 0], y=ops.conv2d(x, w, b)[0, 0], b=float(b[0]))  # (28, 28), (3, 3), (26, 26)


@lesson("fc-as-conv", "A fully connected layer written as a convolution", SEED_POST,
        figure=figures.fc_as_conv, experiment=experiments.fc_as_conv, claim="""
    A dense layer of 784 units on a 28x28 image (y = sum_i w_i x_i + b per unit) can be written as
    (a) 784 filters, each one 28x28 kernel covering the whole image, or (b) a reshape of the image
    to 1x1x784 followed by 784 filters of 784 1x1 kernels. All three produce the same 784 outputs
    from the same 614,656 weights (plus 784 biases) and cost the same 614,656 MACs. Replacing the
    dense layer with a 1x1 conv on the un-reshaped image does not work: the reshape is required.""")
def fc_as_conv(L, rng):
    x = rng.random((1, 1, 28, 28))  # (N, C, H, W)
    wd, b = rng.standard_normal((784, 784)) / 28, rng.standard_normal(784)
    y_dense = ops.dense(forms.flatten(x), wd, b)  # (1, 784)
    L.close("unit 0 == sum_i w_i x_i + b", float(np.dot(wd[0], x.ravel()) + b[0]), y_dense[0, 0])
    wk = forms.dense_to_full_kernel(wd, (1, 28, 28))  # (784, 1, 28, 28)
    y_full = ops.conv2d(x, wk, b)  # (1, 784, 1, 1)
    w1 = forms.dense_to_conv1x1(wd)  # (784, 784, 1, 1)
    y_1x1 = ops.conv1x1(forms.flatten_to_pixel(x), w1, b)  # (1, 784, 1, 1)
    L.close("(a) 784 full 28x28 kernels == dense", y_dense, y_full.reshape(1, 784))
    L.close("(b) reshape to 1x1x784, then 784 1x1 filters == dense", y_dense, y_1x1.reshape(1, 784))
    costs = {"dense": cost.dense_cost((1, 784), 784), "(a) full kernel": cost.conv_cost(x.shape, 784, 28),
             "(b) reshape + 1x1": cost.conv1x1_cost((1, 784, 1, 1), 784)}
    for (name, c), arr in zip(costs.items(), (wd, wk, w1)):
        L.equal(f"{name}: weights, from cost", 614_656, c.weight_params)
        L.equal(f"{name}: weights, counted in the array", c.weight_params, arr.size)
        L.equal(f"{name}: biases and MACs", (784, 614_656), (c.bias_params, c.macs))
    L.keep(x=x[0, 0], dense=y_dense[0], full=y_full.ravel(), pointwise=y_1x1.ravel())
    nudged = x.copy()
    nudged[0, 0, 5, 7] += 1.0  # one pixel changed
    naive = ops.conv1x1(nudged, wd[:, :1], b) - ops.conv1x1(x, wd[:, :1], b)  # 784 1x1 filters, no reshape
    moved = ops.dense(forms.flatten(nudged), wd, b) - y_dense
    L.equal("a 1x1 conv on the un-reshaped image mixes no pixels: one pixel moves only its own position",
            [(5, 7)], sorted({(int(i), int(j)) for i, j in zip(*np.nonzero(naive[0].any(axis=0)))}))
    L.equal("while it moves every unit of the dense layer", 784, int(np.count_nonzero(moved)))


@lesson("class-maps", "Class maps from 1x1 filters", SEED_POST,
        figure=figures.class_maps, experiment=experiments.class_maps, claim="""
    Ten 1x1 filters over a feature map give ten maps, one per class: at each pixel, that class's
    score for the features there. Pooling each map over space (a sum or a mean) gives the scores a
    dense layer gives on the pooled features, the bias counted once per pixel in the sum. So a
    classifier head can also be built from a 1x1 conv and a pool.""")
def class_maps(L, rng):
    x = rng.standard_normal((2, 32, 7, 7))  # features after a conv trunk
    w, b = rng.standard_normal((10, 32)), rng.standard_normal(10)
    maps = ops.conv1x1(x, w, b)
    L.equal("one map per class", (2, 10, 7, 7), maps.shape)
    for pool in ("sum", "mean"):
        L.close(f"{pool} of each class map == dense on the {pool} of the features",
                forms.pooled_dense_scores(x, w, b, pool=pool), forms.class_map_scores(x, w, b, pool=pool))
    dense = forms.pooled_dense_scores(x, w, b, pool="mean")
    L.equal(
        "the predicted class is the same either way",
        dense.argmax(1).tolist(),
        maps.mean(axis=(2, 3)).argmax(1).tolist(),
    )
    if importlib.util.find_spec("sklearn") is None:
        L.skip("the trained digits model", 2, "data")
        return
    model, p_test, x_test, y_test = digits.train(rng)  # a 5x5 conv, a 1x1 conv and a 1x1 class-map head
    model, p_test = digits.DigitsModel([a.astype(np.float64) for a in model.params]), p_test.astype(np.float64)
    feats = model.features(p_test)[1].transpose(0, 3, 1, 2)  # (N, 8, 8, 32) -> (N, 32, 8, 8)
    trained = ops.conv1x1(feats, *model.params[4:])  # (N, 10, 8, 8): the head run as a 1x1 conv
    logits = model.logits(p_test)
    pooled = ops.dense(feats.mean(axis=(2, 3)), *model.params[4:])  # (N, 10): pool the features first, then dense
    L.close("trained digits model: the mean of each class map == dense on the mean features", pooled,
            trained.mean(axis=(2, 3)))
    accuracy = float(np.mean(logits.argmax(1) == y_test))
    L.holds("the trained model reads held-out digits", accuracy > 0.9, round(accuracy, 4), "test accuracy > 0.9")
    i = int(np.flatnonzero(logits.argmax(1) == y_test)[0])  # the first test digit it gets right
    L.keep(image=x_test[i], maps=trained[i], probs=digits.softmax(logits[i]), label=int(y_test[i]), accuracy=accuracy,
           params=model.params)


@lesson("shared-mlp", "PointNet's shared MLP is a 1x1 convolution", SEED_POST,
        figure=figures.shared_mlp, experiment=experiments.shared_mlp, claim="""
    PointNet runs one small MLP on every point of a cloud with the same weights (a 'shared MLP').
    That is a dense layer over the last axis of (B, N, C), and also a Conv1d with kernel size 1 over
    (B, C, N): three writings of one computation. Sharing the weights makes the per-point features
    follow any reordering of the points, and a max over points is then order-independent.""")
def shared_mlp(L, rng):
    pts = np.stack([SHAPES[s](rng, 256) for s in ("torus", "helix")])  # (B, N, xyz): two point clouds
    layers = [
        (rng.standard_normal((64, 3)), rng.standard_normal(64)),
        (rng.standard_normal((128, 64)) / 8, rng.standard_normal(128)),
    ]
    per_point = forms.shared_mlp_per_point(pts, layers)  # (B, N, 128), one point at a time
    conv = forms.shared_mlp_conv1d(pts.transpose(0, 2, 1), layers).transpose(0, 2, 1)  # (B, C, N) -> (B, N, C)
    dense = relu(ops.dense(relu(ops.dense(pts, *layers[0])), *layers[1]))
    L.close("per-point MLP == Conv1d(k=1) stack on (B, C, N)", per_point, conv)
    L.close("per-point MLP == dense layers over the last axis of (B, N, C)", per_point, dense)
    perm = rng.permutation(256)
    shuffled = forms.shared_mlp_conv1d(pts[:, perm].transpose(0, 2, 1), layers).transpose(0, 2, 1)
    L.close("reordering the points reorders the features the same way", conv[:, perm], shuffled)
    L.close("the max over points does not depend on their order", conv.max(axis=1), shuffled.max(axis=1))
    L.keep(points=pts[0], features=conv[0], pooled=conv[0].max(axis=0), pooled_shuffled=shuffled[0].max(axis=0),
           layers=layers)


@lesson("bottleneck", "The 1x1 bottleneck in front of a 5x5 conv", SEED_ARTICLE,
        figure=figures.bottleneck, experiment=experiments.bottleneck, claim="""
    On a 28x28x192 map, a 5x5 'same' conv with 32 filters costs 28*28*32*5*5*192 = 120,422,400 MACs.
    Reducing to 16 channels with a 1x1 conv first costs 2,408,448, and the 5x5 conv on 16 channels
    10,035,200: 12,443,648 in all, about 9.68x fewer, for the same output shape.""")
def bottleneck(L, rng):
    shape = (1, 192, 28, 28)
    direct = cost.conv_cost(shape, 32, 5, padding="same")
    reduce = cost.conv1x1_cost(shape, 16)
    after = cost.conv_cost(reduce.output_shape, 32, 5, padding="same")
    L.equal("5x5 conv, 32 filters: MACs", 120_422_400, direct.macs)
    L.equal("1x1 reduction to 16: MACs", 2_408_448, reduce.macs)
    L.equal("5x5 conv 16 -> 32: MACs", 10_035_200, after.macs)
    L.equal("bottleneck total", 12_443_648, reduce.macs + after.macs)
    L.equal("ratio, to two decimals", 9.68, round(direct.macs / (reduce.macs + after.macs), 2))
    x = rng.standard_normal(shape)
    plain, narrow = blocks.Runner(rng), blocks.Runner(rng)
    y1 = plain.conv(x, 32, 5, padding=2, relu=False)
    y2 = narrow.conv(narrow.conv(x, 16, 1), 32, 5, padding=2, relu=False)
    L.equal("both paths give a 28x28x32 map", [[1, 32, 28, 28]] * 2, [list(y1.shape), list(y2.shape)])
    L.equal("MACs counted while running the 5x5 conv", direct.macs, plain.counted_macs)
    L.equal("MACs counted while running the bottleneck", reduce.macs + after.macs, narrow.counted_macs)
    L.note(f"parameters: {direct.params:,} direct vs {reduce.params + after.params:,} with the bottleneck.")
    L.keep(direct=plain.counted_macs, reduce=reduce.macs, after=after.macs)


@lesson("blocks", "The blocks built on 1x1 convolutions", SEED_ARTICLE + "; " + SEED_QA,
        figure=figures.blocks, experiment=None, claim="""
    Network in Network put small MLPs (1x1 convs) after each conv; SqueezeNet's fire module
    squeezes with 1x1 before expanding with 1x1 and 3x3; GoogLeNet's Inception module reduces with
    1x1 before its 3x3 and 5x5 branches; and, beyond the texts, MobileNet splits a conv into a
    depthwise 3x3 and a 1x1.
    Each block is run here on real arrays, and its parameters and MACs from onebyone.cost match the
    ones counted from the arrays it used.""")
def blocks_lesson(L, rng):
    cases = {  # name: (block, input shape, the plain alternative, what that alternative is)
        "NiN mlpconv (32x32x3)": (blocks.mlpconv, (1, 3, 32, 32), lambda r, x: r.conv(x, 96, 5, padding=2),
                                  "the 5x5 conv alone, no per-pixel MLP"),
        "SqueezeNet fire2 (55x55x96)": (blocks.fire, (1, 96, 55, 55), lambda r, x: r.conv(x, 128, 3, padding=1),
                                        "one 3x3 conv 96 -> 128"),
        "Inception 3a (28x28x192)": (blocks.inception, (1, 192, 28, 28), blocks.inception_naive,
                                     "the same branches without 1x1 reductions"),
        "depthwise-separable (56x56x64)": (blocks.separable, (1, 64, 56, 56), lambda r, x: r.conv(x, 64, 3, padding=1),
                                           "a standard 3x3 conv 64 -> 64"),
    }
    bars = []  # (block, its MACs, the plain alternative's MACs, what that is)
    for name, (block, shape, plain, plain_name) in cases.items():
        r = blocks.Runner(rng)
        y = block(r, rng.standard_normal(shape))
        total = r.total(y.shape)
        L.equal(f"{name}: output shape, cost == run", list(total.output_shape), list(y.shape))
        L.equal(f"{name}: params, cost == counted", total.params, r.counted_params)
        L.equal(f"{name}: MACs, cost == counted", total.macs, r.counted_macs)
        base = blocks.Runner(rng)
        base_macs = base.total(plain(base, rng.standard_normal(shape)).shape).macs
        L.note(f"{name}: {total.params:,} params, {total.macs:,} MACs; {plain_name}: {base_macs:,} MACs "
               f"(the block costs {total.macs / base_macs:.2f}x the MACs of the alternative).")
        bars.append((name, total.macs, base_macs, plain_name))
    L.keep(bars=bars)
    sep, std = (
        cost.add_costs(
            [cost.conv_cost((1, 64, 56, 56), 64, 3, padding=1, groups=64), cost.conv1x1_cost((1, 64, 56, 56), 128)]
        ),
        cost.conv_cost((1, 64, 56, 56), 128, 3, padding=1),
    )
    L.close(
        "separable / standard MACs == 1/C_out + 1/k^2 (closed form)", 1 / 128 + 1 / 9, sep.macs / std.macs, tol=1e-12
    )


@lesson("branches", "Parallel branches are one convolution", "onebyone's own (RepVGG's re-parameterization)",
        figure=figures.branches, experiment=experiments.branches, claim="""
    A 1x1 convolution is a 3x3 convolution with padding 1 whose kernel is zero outside its centre, and the
    identity is a
    1x1 convolution with the identity matrix. Convolution is linear in its kernel, so a 3x3 branch, a 1x1
    branch and the input itself, summed, are one 3x3 convolution whose kernel is the sum of the three:
    trained as branches, run as one (the re-parameterization of RepVGG).""")
def branches(L, rng):
    x = rng.standard_normal((1, 4, 10, 10))
    w3, w1, b3, b1 = rng.standard_normal((4, 4, 3, 3)), rng.standard_normal((4, 4, 1, 1)), rng.standard_normal(4), \
        rng.standard_normal(4)
    L.close("a 1x1 conv == a 3x3 conv whose kernel is zero outside its centre (padding 1)",
            ops.conv2d(x, w1), ops.conv2d(x, reparam.center_pad(w1, (3, 3)), padding=1))
    L.close("the identity == a 1x1 conv with the identity matrix", x, ops.conv2d(x, reparam.identity_kernel(4)))
    branches_sum = ops.conv2d(x, w3, b3, padding=1) + ops.conv2d(x, w1, b1) + x
    w, b = reparam.merge([w3, w1, reparam.identity_kernel(4)], [b3, b1, np.zeros(4)], (3, 3))
    L.close("3x3 + 1x1 + identity branches == one 3x3 conv with the summed kernel", branches_sum,
            ops.conv2d(x, w, b, padding=1))
    three = [cost.conv_cost(x.shape, 4, 3, padding=1), cost.conv_cost(x.shape, 4, 1)]
    L.equal("MACs: the 3x3 and 1x1 branches", 14_400 + 1_600, sum(c.macs for c in three))
    L.equal("MACs: the one merged conv", 14_400, cost.conv_cost(x.shape, w.shape[0], w.shape[2:], padding=1).macs)
    one = rng.standard_normal((12, 12))
    k3, k1 = rng.standard_normal((3, 3)), float(rng.standard_normal())
    L.keep(x=one, k3=k3, k1=k1)  # one channel, for the figure and the experiment


@lesson("int8", "A 1x1 convolution in int8 is an integer matrix product", "onebyone's own (int8 inference)",
        figure=figures.int8, experiment=experiments.int8, claim="""
    Quantize the input with one scale and the weights with one scale per output channel: both scales are
    constant over the sum over input channels, so they come out of it. What is left is a sum of products of
    small integers, exact in int32 accumulators (as long as C x 127 x 127 stays below 2^31), rescaled once per
    output. On this layer, with 8 bits, the output moves by about 1% of its scale, never past the rounding
    bound (half an input step times the weights' magnitudes, plus half a weight step times the inputs');
    one scale for the whole weight costs the channels of small weights their precision.""")
def int8(L, rng):
    x = rng.standard_normal((1, 16, 6, 6))
    w = rng.standard_normal((8, 16)) * np.logspace(-2, 0, 8)[:, None]  # output channels 100x apart in scale
    b = rng.standard_normal(8)
    exact = ops.conv1x1(x, w[:, :, None, None], b)
    r = quant.pointwise_int(x, w, b)
    acc32 = np.zeros(r["acc"].shape, np.int32)  # (N, O, H, W), summed channel by channel in int32
    for c in range(x.shape[1]):
        acc32 += r["q_w"][:, c].astype(np.int32)[None, :, None, None] * r["q_x"][:, c:c + 1].astype(np.int32)
    L.equal("the integer sum, channel by channel in int32, is the product's accumulator (exact)", True,
            bool(np.array_equal(acc32, r["acc"])) and int(np.abs(r["acc"]).max()) < 2 ** 31)
    L.close("s_x * s_w[o] * sum_c q_w[o, c] q_x[c] + b == the conv of the dequantized operands", r["y"],
            ops.conv1x1(r["q_x"] * r["s_x"], (r["q_w"] * r["s_w"])[:, :, None, None], b))
    scale = float(np.abs(exact).max())
    err = {(bits, rule): float(np.abs(quant.pointwise_int(x, w, b, bits, rule == "per channel")["y"] - exact).max())
           / scale for bits in (8, 6, 4) for rule in ("per channel", "per tensor")}
    s_x, s_w = float(r["s_x"]), np.broadcast_to(r["s_w"], w.shape)[:, 0]
    bound = (s_x / 2 * np.abs(w).sum(1)[None, :, None, None]  # (N, O, H, W): the rounding bound
             + s_w[None, :, None, None] / 2 * np.abs(r["q_x"] * s_x).sum(1, keepdims=True))
    L.holds("8 bits, scales per channel: every output within the rounding bound", bool(
        (np.abs(r["y"] - exact) <= bound * (1 + 1e-9)).all()), f"{float((np.abs(r['y'] - exact) / bound).max()):.2f}",
        "<= 1 of the bound")
    L.holds("8 bits, scales per channel: output error about 1% of its scale (under 3%)", err[8, "per channel"] < 0.03,
            f"{err[8, 'per channel']:.2%}", "< 3%")
    L.holds("fewer bits, more error: 8 < 6 < 4", err[8, "per channel"] < err[6, "per channel"] < err[4, "per channel"],
            [f"{err[k, 'per channel']:.2%}" for k in (8, 6, 4)], "increasing")
    small = slice(0, 2)
    per = np.abs(r["y"] - exact)[:, small].max()
    one = np.abs(quant.pointwise_int(x, w, b, per_channel=False)["y"] - exact)[:, small].max()
    L.holds("on the channels of small weights, one scale per channel is over 10x closer than one per tensor",
            per < one / 10, f"{one / per:.1f}x", "> 10x")
    L.keep(x=x[0], w=w, b=b, exact=exact[0], errors={f"{k[0]} {k[1]}": v for k, v in err.items()})
