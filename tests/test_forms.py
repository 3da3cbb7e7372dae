"""Every pair of equivalent forms agrees to 1e-10 in float64 over random shapes; converters round-trip exactly."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onebyone import OneByOneError, forms, layout, ops

LAYOUTS = st.sampled_from(["NCHW", "NHWC"])


def image(rng, n, c, h, w, lay):
    x = rng.standard_normal((n, c, h, w))
    return x if lay == "NCHW" else layout.to_channels_last(x)


@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from([1, 2]), st.integers(1, 2), LAYOUTS, st.integers(0, 999))
def test_conv1x1_is_a_dense_layer_at_every_pixel(n, cg, og, h, w, groups, stride, lay, seed):
    rng = np.random.default_rng(seed)
    x = image(rng, n, cg * groups, h, w, lay)
    wc, b = rng.standard_normal((og * groups, cg)), rng.standard_normal(og * groups)
    y = ops.conv1x1(x, wc, b, groups=groups, stride=stride, layout=lay)
    wd = forms.conv1x1_to_dense(wc, groups=groups)  # block-diagonal (O, C)
    xs = x[:, :, ::stride, ::stride] if lay == "NCHW" else x[:, ::stride, ::stride, :]
    np.testing.assert_allclose(forms.dense_per_pixel(xs, wd, b, layout=lay), y, atol=1e-10)
    full = forms.dense_to_conv1x1(wd, layout=lay)
    np.testing.assert_allclose(ops.conv2d(x, full, b, stride=stride, layout=lay), y, atol=1e-10)
    assert np.array_equal(forms.conv1x1_to_dense(full), wd)  # round trip, bit for bit


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 8), st.integers(1, 3), st.integers(0, 999))
def test_shared_mlp_three_ways(b, c, n, depth, seed):
    rng = np.random.default_rng(seed)
    pts = rng.standard_normal((b, n, c))
    widths = [c] + list(rng.integers(1, 7, size=depth))
    layers = [(rng.standard_normal((o, i)), rng.standard_normal(o)) for i, o in zip(widths, widths[1:])]
    per_point = forms.shared_mlp_per_point(pts, layers, final_activation=False)
    conv = forms.shared_mlp_conv1d(pts.transpose(0, 2, 1), layers, final_activation=False)
    np.testing.assert_allclose(conv.transpose(0, 2, 1), per_point, atol=1e-10)
    h = pts
    for i, (w, bias) in enumerate(layers):
        h = ops.conv1x1(h, w, bias, layout="NHWC")
        h = np.maximum(h, 0) if i < len(layers) - 1 else h
    np.testing.assert_allclose(h, per_point, atol=1e-10)


@given(
    st.integers(1, 2),
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 6),
    LAYOUTS,
    st.integers(0, 999),
)
def test_dense_on_flatten_is_a_full_kernel_conv_and_a_reshaped_1x1(n, c, h, w, units, lay, seed):
    rng = np.random.default_rng(seed)
    x = image(rng, n, c, h, w, lay)
    wd, b = rng.standard_normal((units, c * h * w)), rng.standard_normal(units)
    ref = ops.dense(forms.flatten(x, layout=lay), wd, b)  # (N, U)
    wk = forms.dense_to_full_kernel(wd, x.shape[1:], layout=lay)
    np.testing.assert_allclose(ops.conv2d(x, wk, b, layout=lay).reshape(n, units), ref, atol=1e-10)
    w1 = forms.dense_to_conv1x1(wd, layout=lay)
    got = ops.conv1x1(forms.flatten_to_pixel(x, layout=lay), w1, b, layout=lay)
    np.testing.assert_allclose(got.reshape(n, units), ref, atol=1e-10)
    assert np.array_equal(forms.full_kernel_to_dense(wk, layout=lay), wd)
    assert np.array_equal(forms.conv1x1_to_dense(w1), wd)


@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from(["sum", "mean"]), LAYOUTS, st.integers(0, 999))
def test_pooled_class_maps_are_a_dense_layer_on_pooled_features(n, c, h, w, k, pool, lay, seed):
    rng = np.random.default_rng(seed)
    x = image(rng, n, c, h, w, lay)
    wc, b = rng.standard_normal((k, c)), rng.standard_normal(k)
    np.testing.assert_allclose(forms.class_map_scores(x, wc, b, pool=pool, layout=lay),
                               forms.pooled_dense_scores(x, wc, b, pool=pool, layout=lay), atol=1e-10)


@st.composite
def sliding_case(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dil = draw(st.integers(1, 2))
    pad = draw(st.sampled_from([0, 1, "same", "valid"]))
    return dict(k=(kh, kw), stride=draw(st.integers(1, 2)), dil=dil, pad=pad,
                h=draw(st.integers(dil * (kh - 1) + 1, 7)), w=draw(st.integers(dil * (kw - 1) + 1, 7)),
                groups=draw(st.sampled_from([1, 2])), seed=draw(st.integers(0, 999)))


@given(sliding_case(), LAYOUTS)
def test_kxk_conv_is_a_sliding_dense_layer(case, lay):
    rng = np.random.default_rng(case["seed"])
    g = case["groups"]
    x = image(rng, 2, 2 * g, case["h"], case["w"], lay)
    w = rng.standard_normal((3 * g, 2, *case["k"]))  # OIHW
    w = w if lay == "NCHW" else layout.oihw_to_hwio(w)
    b = rng.standard_normal(3 * g)
    kw = dict(stride=case["stride"], padding=case["pad"], dilation=case["dil"], layout=lay)
    ref = ops.conv2d(x, w, b, groups=g, **kw)
    wd = forms.conv_to_patch_dense(w, layout=lay, groups=g)
    np.testing.assert_allclose(forms.sliding_dense(x, wd, b, case["k"], **kw), ref, atol=1e-10)
    cols = forms.im2col(x, case["k"], **kw)  # (N, Ho, Wo, kH*kW*C)
    y = ops.dense(cols, wd, b)
    np.testing.assert_allclose(y if lay == "NHWC" else layout.to_channels_first(y), ref, atol=1e-10)
    if g == 1:
        assert np.array_equal(forms.patch_dense_to_conv(wd, case["k"], 2, layout=lay), w)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_converters_refuse_nan_and_inf(bad):
    w = np.ones((3, 4))
    w[1, 2] = bad
    for convert in (forms.dense_to_conv1x1, forms.conv1x1_to_dense, lambda a: forms.dense_to_full_kernel(a, (1, 2, 2)),
                    lambda a: layout.linear_to_keras(a)):
        with pytest.raises(OneByOneError, match=r"must be finite, got 1 NaN/Inf value\(s\) in shape \(3, 4\)"):
            convert(w)


@pytest.mark.parametrize("scale", [1e-170, 1.0, 1e160])
def test_truncated_svd_keeps_the_same_directions_whatever_the_weights_magnitude(scale):
    """The Gram matrix of W squares its entries: at 1e-170 it underflowed (21% off, 'kept' 1.0), at 1e160 it
    overflowed (LinAlgError), and diag(1e155, 1) kept the small direction. Against NumPy's full SVD."""
    from onebyone.algebra import truncated_svd

    w = np.random.default_rng(0).standard_normal((3, 5)) * scale
    a, b, r, kept = truncated_svd(w, rank=2)
    u, s, vt = np.linalg.svd(w / scale)
    best = (u[:, :2] * s[:2]) @ vt[:2]  # the rank-2 truncation, of W / scale
    assert np.allclose(b @ a / scale, best, atol=1e-10) and abs(kept - (s[:2] ** 2).sum() / (s**2).sum()) < 1e-12
    a, b, _, _ = truncated_svd(np.diag([1e155, 1.0]), rank=1)
    assert np.array_equal(b @ a, np.diag([1e155, 0.0]))


def test_arrays_keep_one_dtype_through_the_gradients_and_the_merge():
    """float32 operands with a float64 weight gave a float64 grad_x beside float32 grad_w; a merge of float32
    layers without biases gave a float64 bias; dense_per_pixel disagreed with conv1x1 on the result dtype."""
    from onebyone import algebra

    x32, g32, w64 = np.ones((2, 3), np.float32), np.ones((2, 4), np.float32), np.ones((4, 3))
    assert {a.dtype for a in ops.dense_backward(x32, w64, g32)} == {np.dtype(np.float64)}
    x4 = np.ones((1, 3, 2, 2), np.float32)
    assert {a.dtype for a in ops.conv1x1_backward(x4, w64, np.ones((1, 4, 2, 2), np.float32))} == {np.dtype("f8")}
    w, b = algebra.merge_linear(np.ones((4, 3), np.float32), None, np.ones((2, 4), np.float32), None)
    assert w.dtype == b.dtype == np.float32
    w16 = np.ones((4, 3), np.float16)
    assert forms.dense_per_pixel(x4, w16).dtype == ops.conv1x1(x4, w16).dtype


def test_conv1x1_takes_a_stride_per_spatial_axis():
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 7))
    w = np.random.default_rng(1).standard_normal((2, 3))
    assert np.allclose(ops.conv1x1(x, w, stride=(2, 3)), ops.conv1x1(x[:, :, ::2, ::3], w))
    gx, _, _ = ops.conv1x1_backward(x, w, np.ones((1, 2, 3, 3)), stride=(2, 3))
    assert np.count_nonzero(gx.any(axis=1)) == 9
