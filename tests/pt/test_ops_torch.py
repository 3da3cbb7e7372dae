"""NumPy ops against torch.nn.functional (float32, relative error <= 1e-5) and autograd."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from onebyone import ops
from onebyone.layout import oihw_to_hwio, to_channels_first, to_channels_last


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.sampled_from([0, 1, (2, 1), "valid", "same"]))
    if padding == "same":
        stride = (1, 1)  # torch allows 'same' only with stride 1
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 9))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 9))
    return dict(
        n=draw(st.integers(1, 2)),
        cin=cin,
        cout=cout,
        k=(kh, kw),
        h=h,
        w=w,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=draw(st.booleans()),
        seed=draw(st.integers(0, 99)),
    )


@given(conv_case(), st.sampled_from(["NCHW", "NHWC"]))
def test_conv2d_matches_torch(case, layout):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["cin"], case["h"], case["w"])).astype(np.float32)
    w = rng.standard_normal((case["cout"], case["cin"] // case["groups"], *case["k"])).astype(np.float32)
    b = rng.standard_normal(case["cout"]).astype(np.float32) if case["bias"] else None
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])
    ref = F.conv2d(t(x), t(w), None if b is None else t(b), **kw).numpy()
    if layout == "NCHW":
        got = ops.conv2d(x, w, b, **kw)
    else:
        got = to_channels_first(ops.conv2d(to_channels_last(x), oihw_to_hwio(w), b, layout="NHWC", **kw))
    assert got.dtype == np.float32
    assert got.shape == ref.shape
    assert rel_err(got, ref) <= 1e-5


@pytest.mark.parametrize("groups,stride", [(1, 1), (2, 1), (4, 2), (1, 3)])
def test_conv1x1_matches_conv2d_and_conv1d(groups, stride, rng):
    x = rng.standard_normal((2, 8, 7, 5)).astype(np.float32)
    w = rng.standard_normal((12, 8 // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    ref = F.conv2d(t(x), t(w), t(b), stride=stride, groups=groups).numpy()
    assert rel_err(ops.conv1x1(x, w, b, stride=stride, groups=groups), ref) <= 1e-5
    got_nhwc = ops.conv1x1(to_channels_last(x), oihw_to_hwio(w), b, stride=stride, groups=groups, layout="NHWC")
    assert rel_err(to_channels_first(got_nhwc), ref) <= 1e-5
    pts = rng.standard_normal((2, 8, 33)).astype(np.float32)  # (B, C, L) point set
    ref1 = F.conv1d(t(pts), t(w[..., 0]), t(b), stride=stride, groups=groups).numpy()
    assert rel_err(ops.conv1x1(pts, w[..., 0], b, stride=stride, groups=groups), ref1) <= 1e-5


def test_conv1x1_channel_last_any_rank_matches_linear(rng):
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)  # (..., C)
    w, b = rng.standard_normal((7, 6)).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    assert rel_err(ops.conv1x1(x, w, b, layout="NHWC"), F.linear(t(x), t(w), t(b)).numpy()) <= 1e-5


@pytest.mark.parametrize("shape", [(5,), (3, 5), (2, 4, 5)])
def test_dense_matches_linear(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    got = ops.dense(x, w, b)
    assert got.dtype == np.float32 and rel_err(got, F.linear(t(x), t(w), t(b)).numpy()) <= 1e-5


def test_float64_stays_float64(rng):
    x, w = rng.standard_normal((1, 3, 4, 4)), rng.standard_normal((2, 3, 1, 1))
    assert ops.conv1x1(x, w).dtype == np.float64 and ops.conv2d(x, w).dtype == np.float64


def _autograd(fn, x, w, b, gy):
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    (fn(xt, wt, bt) * torch.tensor(gy)).sum().backward()
    return xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("groups,stride,layout", [(1, 1, "NCHW"), (2, 2, "NCHW"), (1, 1, "NHWC"), (3, 2, "NHWC")])
def test_conv1x1_backward_matches_autograd(groups, stride, layout, rng):
    x = rng.standard_normal((2, 6, 5, 4))
    w, b = rng.standard_normal((12, 6 // groups, 1, 1)), rng.standard_normal(12)
    ref_y = F.conv2d(t(x), t(w), t(b), stride=stride, groups=groups)
    gy = rng.standard_normal(tuple(ref_y.shape))
    gx, gw, gb = _autograd(lambda a, c, d: F.conv2d(a, c, d, stride=stride, groups=groups), x, w, b, gy)
    if layout == "NCHW":
        got = ops.conv1x1_backward(x, w, gy, stride=stride, groups=groups)
        np.testing.assert_allclose(got[0], gx, atol=1e-10)
        np.testing.assert_allclose(got[1], gw, atol=1e-10)
    else:
        got = ops.conv1x1_backward(to_channels_last(x), oihw_to_hwio(w), to_channels_last(gy), stride=stride,
                                   groups=groups, layout="NHWC")
        np.testing.assert_allclose(to_channels_first(got[0]), gx, atol=1e-10)
        np.testing.assert_allclose(got[1], oihw_to_hwio(gw), atol=1e-10)  # gradient in Keras kernel shape
    np.testing.assert_allclose(got[2], gb, atol=1e-10)


def test_conv1x1_backward_on_point_sets(rng):
    x, w, b = rng.standard_normal((2, 4, 10)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    gy = rng.standard_normal((2, 3, 10))
    ref = _autograd(lambda a, c, d: F.conv1d(a, c[..., None], d), x, w, b, gy)
    for got, want in zip(ops.conv1x1_backward(x, w, gy), ref):
        np.testing.assert_allclose(got, want, atol=1e-10)


def test_dense_backward_matches_autograd(rng):
    x, w, b = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    gy = rng.standard_normal((2, 3, 4))
    for got, want in zip(ops.dense_backward(x, w, gy), _autograd(F.linear, x, w, b, gy)):
        np.testing.assert_allclose(got, want, atol=1e-10)


@pytest.mark.parametrize(
    "op,kw", [("max", {}), ("avg", {}), ("max", {"stride": 1, "padding": 1}), ("avg", {"stride": 2, "padding": 1})]
)
def test_pool2d_matches_torch(op, kw, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    fn = F.max_pool2d if op == "max" else F.avg_pool2d
    ref = fn(t(x), 3, **kw).numpy()
    np.testing.assert_allclose(ops.pool2d(x, 3, op=op, **kw), ref, atol=1e-12)
