"""A 1x1 convolution in int8 is an integer matrix product: the scales factor out of the sum, the sum is
exact in integers, and torch's own quantizer rounds the same way."""
import numpy as np
import pytest

from onebyone import OneByOneError, ops
from onebyone.quant import pointwise_int, quantize

rng = np.random.default_rng(0)
X = rng.standard_normal((2, 16, 5, 6))
W = rng.standard_normal((8, 16)) * np.logspace(-2, 0, 8)[:, None]  # output channels 100x apart in scale
B = rng.standard_normal(8)


def test_the_scales_factor_out_and_the_integer_sum_is_exact():
    r = pointwise_int(X, W, B)
    assert r["acc"].dtype == np.int64 and np.array_equal(r["acc"], np.einsum("oc,nchw->nohw", r["q_w"], r["q_x"]))
    dequantized = ops.conv1x1(r["q_x"] * r["s_x"], (r["q_w"] * r["s_w"])[:, :, None, None], B)
    np.testing.assert_allclose(r["y"], dequantized, rtol=1e-12, atol=1e-12)  # y = s_x s_w[o] acc + b, exactly
    assert np.abs(r["q_x"]).max() == 127 and np.abs(r["q_w"]).max() == 127


def test_error_shrinks_with_bits_and_per_channel_scales_beat_one_scale():
    exact = ops.conv1x1(X, W[:, :, None, None], B)
    err = {bits: np.abs(pointwise_int(X, W, B, bits)["y"] - exact).max() for bits in (4, 6, 8)}
    assert err[8] < err[6] < err[4] and err[8] < 0.01 * np.abs(exact).max()
    small = slice(0, 2)  # the channels of small weights: one scale puts them on the largest channel's grid
    per = np.abs(pointwise_int(X, W, B)["y"] - exact)[:, small].max()
    one = np.abs(pointwise_int(X, W, B, per_channel=False)["y"] - exact)[:, small].max()
    assert per < one / 10


def test_the_rounding_is_torchs_own():
    torch = pytest.importorskip("torch")
    q_w, s_w = quantize(W, axis=0)
    q_x, s_x = quantize(X)
    tw = torch.fake_quantize_per_channel_affine(torch.tensor(W, dtype=torch.float32),
                                                torch.tensor(s_w.ravel(), dtype=torch.float32),
                                                torch.zeros(8, dtype=torch.int32), 0, -127, 127)
    tx = torch.fake_quantize_per_tensor_affine(torch.tensor(X, dtype=torch.float32), float(s_x), 0, -127, 127)
    for got, q, s in ((tw, q_w, s_w), (tx, q_x, s_x)):  # torch's grid in float32: a tie may round apart
        theirs = np.rint(got.numpy().astype(np.float64) / s.astype(np.float32))
        assert np.abs(theirs - q).max() <= 1 and np.mean(theirs == q) > 0.999


def test_bad_inputs_are_named():
    with pytest.raises(OneByOneError, match="bits must be from 2 to 16, got 32"):
        quantize(W, bits=32)
    with pytest.raises(OneByOneError, match=r"w is \(O, C\) = \(8, 16\) but x has C = 3"):
        pointwise_int(X[:, :3], W)
    with pytest.raises(OneByOneError, match="axis must be in"):
        quantize(W, axis=2)
    for bad in (np.nan, np.inf):  # no code stands for them (NaN once became -2**63 and set every scale to 1)
        with pytest.raises(OneByOneError, match=r"a must be finite, got 1 NaN/Inf"):
            quantize(np.array([0.5, bad, -1.0]))
    with pytest.raises(OneByOneError, match=r"b must have shape \(8,\) to match 8 output channels, got \(1,\)"):
        pointwise_int(X, W, b=np.array([5.0]))  # once added to every output channel
