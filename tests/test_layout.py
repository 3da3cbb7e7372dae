import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onebyone import OneByOneError, layout


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_flatten_permutation_maps_one_flatten_onto_the_other(c, h, w):
    x = np.random.default_rng(c * 100 + h * 10 + w).standard_normal((c, h, w))
    p = layout.flatten_permutation((c, h, w), "NCHW", "NHWC")
    np.testing.assert_array_equal(x.transpose(1, 2, 0).reshape(-1), x.reshape(-1)[p])
    q = layout.flatten_permutation((c, h, w), "NHWC", "NCHW")
    np.testing.assert_array_equal(p[q], np.arange(c * h * w))  # the two permutations are inverses


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 5))
def test_flattened_linear_weight_keeps_the_map(c, h, w, out):
    rng = np.random.default_rng(c + h + w + out)
    x, wt = rng.standard_normal((c, h, w)), rng.standard_normal((out, c * h * w))
    wk = layout.flattened_linear_weight(wt, (c, h, w), "NCHW", "NHWC")
    np.testing.assert_allclose(wk @ x.transpose(1, 2, 0).reshape(-1), wt @ x.reshape(-1), atol=1e-12)
    assert np.array_equal(layout.flattened_linear_weight(wk, (c, h, w), "NHWC", "NCHW"), wt)


def test_round_trips_are_exact(rng):
    x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((6, 3, 2, 2))
    assert np.array_equal(layout.to_channels_first(layout.to_channels_last(x)), x)
    assert np.array_equal(layout.convert(layout.convert(x, "NCHW", "NHWC"), "NHWC", "NCHW"), x)
    assert np.array_equal(layout.hwio_to_oihw(layout.oihw_to_hwio(w)), w)
    assert np.array_equal(layout.conv_weight(layout.conv_weight(w, "NCHW", "NHWC"), "NHWC", "NCHW"), w)
    lin = rng.standard_normal((4, 7))
    assert np.array_equal(layout.dense_to_linear(layout.linear_to_dense(lin)), lin)


def test_pointwise_matrix_reads_every_1x1_shape(rng):
    m = rng.standard_normal((5, 3))
    for w in (m, m[:, :, None], m[:, :, None, None], m.T[None, None]):
        assert np.array_equal(layout.pointwise_matrix(w), m)
    with pytest.raises(OneByOneError, match=r"1x1 weight.*got shape \(5, 3, 3, 3\)"):
        layout.pointwise_matrix(np.zeros((5, 3, 3, 3)))
