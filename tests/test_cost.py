"""cost against torch modules (shapes, params), closed forms, and published numbers."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from onebyone import OneByOneError, cost


@st.composite
def conv_case(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 4]))
    k = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    size = tuple(draw(st.integers(d * (kk - 1) + 1, 8)) for kk, d in zip(k, dil))
    return dict(dims=dims, groups=groups, cin=groups * draw(st.integers(1, 3)), cout=groups * draw(st.integers(1, 3)),
                k=k, dil=dil, size=size, stride=tuple(draw(st.integers(1, 3)) for _ in range(dims)),
                pad=draw(st.integers(0, 2)), bias=draw(st.booleans()), n=draw(st.integers(1, 3)))


@given(conv_case())
def test_conv_cost_matches_torch_modules_and_the_closed_form(c):
    cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[c["dims"]]
    m = cls(c["cin"], c["cout"], c["k"], stride=c["stride"], padding=c["pad"], dilation=c["dil"],
            groups=c["groups"], bias=c["bias"])
    shape = (c["n"], c["cin"], *c["size"])
    got = cost.conv_cost(shape, c["cout"], c["k"], stride=c["stride"], padding=c["pad"], dilation=c["dil"],
                         groups=c["groups"], bias=c["bias"])
    with torch.no_grad():
        out = m(torch.zeros(shape))
    assert got.output_shape == tuple(out.shape)
    assert got.params == sum(p.numel() for p in m.parameters())
    assert got.macs == out.numel() * (c["cin"] // c["groups"]) * math.prod(c["k"])  # bias excluded
    assert got.flops == 2 * got.macs
    assert got.bytes_read == 4 * (math.prod(shape) + got.params) and got.bytes_written == 4 * out.numel()


def test_the_seed_numbers():
    c3, c1 = cost.conv_cost((1, 6, 6, 3), 2, 3, layout="NHWC"), cost.conv1x1_cost((1, 6, 6, 3), 2, layout="NHWC")
    assert (c3.output_shape, c3.params, c1.output_shape, c1.params) == ((1, 4, 4, 2), 56, (1, 6, 6, 2), 8)
    direct = cost.conv_cost((1, 192, 28, 28), 32, 5, padding="same")
    reduce = cost.conv1x1_cost((1, 192, 28, 28), 16)
    after = cost.conv_cost(reduce.output_shape, 32, 5, padding="same")
    assert (direct.macs, reduce.macs, after.macs) == (120_422_400, 2_408_448, 10_035_200)
    assert round(direct.macs / (reduce.macs + after.macs), 2) == 9.68
    fc = cost.dense_cost((1, 784), 784)
    full = cost.conv_cost((1, 1, 28, 28), 784, 28)
    assert fc.weight_params == full.weight_params == 614_656 and fc.bias_params == 784 and fc.macs == full.macs


def mobilenet_v1_rows():
    shape, rows = (1, 3, 224, 224), []
    rows.append(("conv", cost.conv_cost(shape, 32, 3, stride=2, padding=1, bias=False)))
    for out, stride in (
        [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    ):
        c = rows[-1][1].output_shape[1]
        rows.append(
            ("dw", cost.conv_cost(rows[-1][1].output_shape, c, 3, stride=stride, padding=1, groups=c, bias=False))
        )
        rows.append(("pw", cost.conv1x1_cost(rows[-1][1].output_shape, out, bias=False)))
    rows.append(("fc", cost.dense_cost((1, 1024), 1000)))
    return rows


def test_mobilenet_v1_table_2():
    """Howard et al. 2017, Table 2: shares of mult-adds and of weights by layer type."""
    rows = mobilenet_v1_rows()
    macs = sum(c.macs for _, c in rows)
    weights = sum(c.weight_params for _, c in rows)
    assert macs == 568_740_352
    share = {
        k: (
            round(100 * sum(c.macs for n, c in rows if n == k) / macs, 2),
            round(100 * sum(c.weight_params for n, c in rows if n == k) / weights, 2),
        )
        for k in ("conv", "dw", "pw", "fc")
    }
    assert share["pw"] == (94.86, 74.59)
    assert share["dw"] == (3.06, 1.06)
    assert share["fc"] == (0.18, 24.33)
    assert share["conv"] == (1.91, 0.02)  # the paper prints 1.19% for mult-adds: a typo, 1.91% is what the layer costs


def test_dense_per_pixel_costs_what_the_1x1_conv_costs():
    d = cost.dense_cost((2, 14, 14, 64), 32)
    c = cost.conv1x1_cost((2, 14, 14, 64), 32, layout="NHWC")
    assert (d.macs, d.params, d.output_shape) == (c.macs, c.params, c.output_shape)


def test_grouped_and_depthwise_divide_by_groups_once():
    full = cost.conv_cost((1, 64, 10, 10), 128, 3, padding=1)
    for g in (2, 4, 64):
        grouped = cost.conv_cost((1, 64, 10, 10), 128, 3, padding=1, groups=g)
        assert grouped.macs * g == full.macs and grouped.weight_params * g == full.weight_params


@pytest.mark.parametrize("k,stride,pad", [(2, None, 0), (3, 1, 1), (3, 2, 1), ("global", None, 0)])
def test_pool_cost_shapes_match_torch(k, stride, pad):
    x = torch.zeros(1, 8, 9, 7)
    kk = (9, 7) if k == "global" else k
    out = torch.nn.functional.max_pool2d(x, kk, stride=stride, padding=pad)
    c = cost.pool_cost(tuple(x.shape), k, stride=stride, padding=pad)
    assert c.output_shape == tuple(out.shape) and c.macs == 0 and c.params == 0
    assert c.other_ops == out.numel() * math.prod(kk if isinstance(kk, tuple) else (kk, kk))


def test_same_padding_matches_keras_rule():
    for size in range(1, 12):
        for k in (1, 2, 3, 4, 5):
            for s in (1, 2, 3):
                assert cost.conv_output_size(size, k, s, "same") == math.ceil(size / s)


@pytest.mark.parametrize("dtype,size", [("float32", 4), ("float16", 2), ("float64", 8), (np.int8, 1)])
def test_bytes_follow_the_dtype(dtype, size):
    c = cost.conv1x1_cost((1, 4, 5, 5), 3, dtype=dtype)
    assert c.bytes_written == 75 * size and c.bytes_read == (100 + 15) * size


def test_add_costs_sums_every_field_and_to_dict():
    a, b = cost.conv1x1_cost((1, 4, 5, 5), 3), cost.pool_cost((1, 3, 5, 5), 5)
    s = cost.add_costs([a, b])
    assert s.macs == a.macs and s.params == a.params and s.other_ops == b.other_ops and s.output_shape == (1, 3, 1, 1)
    d = s.to_dict()
    assert d["params"] == s.params and d["flops"] == 2 * d["macs"]


def test_cost_errors_name_what_was_expected():
    with pytest.raises(OneByOneError, match="kernel 5 .* larger than the padded input 4"):
        cost.conv_cost((1, 3, 4, 4), 8, 5)
    with pytest.raises(OneByOneError, match="groups=3 must divide both in_channels=4 and out_channels=6"):
        cost.conv_cost((1, 4, 8, 8), 6, 3, groups=3)
    with pytest.raises(OneByOneError, match="dtype must be a numeric NumPy dtype or its name"):
        cost.conv1x1_cost((1, 4, 5, 5), 3, dtype="floaty")


def test_a_transposed_conv_in_either_layout_and_shapes_that_do_not_fit_are_refused():
    """Keras's (N, H, W, C) once read its width as the channels (232 params for 520); an output shape of
    another batch, channel count or rank was accepted."""
    nchw = cost.conv_transpose_cost((1, 16, 7, 7), 8, 2, (1, 8, 14, 14))
    nhwc = cost.conv_transpose_cost((1, 7, 7, 16), 8, 2, (1, 14, 14, 8), layout="NHWC")
    assert nchw.params == nhwc.params == 16 * 8 * 4 + 8 and nchw.macs == nhwc.macs
    for x, y in (((1, 16, 7, 7), (1, 99, 3, 3)), ((1, 16), (1, 8)), ((1, 16, 7, 7), (2, 8, 14, 14))):
        with pytest.raises(OneByOneError, match="a transposed conv takes"):
            cost.conv_transpose_cost(x, 8, 3, y)
