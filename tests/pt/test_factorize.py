import numpy as np
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch import Pointwise, factorize


def low_rank_linear(o, i, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(i, o)
    lin.weight.data = torch.randn(o, r, generator=g) @ torch.randn(r, i, generator=g)
    return lin


def test_full_rank_pair_reproduces_a_conv_exactly():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, padding=1).double()
    pair, report = factorize(conv, rank=10, example=torch.randn(2, 6, 7, 7, dtype=torch.float64))
    assert isinstance(pair, nn.Sequential) and pair[0].kernel_size == (3, 3) and isinstance(pair[1], Pointwise)
    x = torch.randn(2, 6, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(pair(x), conv(x), atol=1e-10)
    assert report.layers[0]["relative_error"] < 1e-12


def test_energy_picks_the_smallest_rank_and_recovers_a_low_rank_layer():
    lin = low_rank_linear(40, 60, 5)
    pair, report = factorize(lin, energy=0.999)
    info = report.layers[0]
    assert info["rank"] == 5 and info["energy_kept"] >= 0.999 and info["relative_error"] < 1e-5
    assert info["params_after"] == 5 * 60 + 5 * 40 + 40 and info["macs_saved"] > 0
    s = np.linalg.svd(lin.weight.detach().double().numpy(), compute_uv=False)
    assert np.sum(s[:4] ** 2) / np.sum(s ** 2) < 0.999  # rank 4 would not have been enough


def test_energy_bound_on_the_weight_error_and_kinds():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 8, 6, 6))
    out, report = factorize(model, energy=0.5, kinds=("pointwise",), example=torch.randn(2, 8, 6, 6))
    assert [d["name"] for d in report.layers] == ["0"]
    first, second = out[0]
    w_r = (second.weight.flatten(1) @ first.weight.flatten(1)).detach()
    w = model[0].weight.flatten(1).detach()
    assert float((w - w_r).norm() / w.norm()) <= (1 - 0.5) ** 0.5 + 1e-6


def test_rank_too_large_and_bad_arguments():
    with pytest.raises(
        OneByOneError, match=r"layer `0` \(Linear, weight \(8, 10\)\): rank must be <= min\(out, in\) = 8 .* got 9"
    ):
        factorize(nn.Linear(10, 8), rank=9)
    with pytest.raises(OneByOneError, match="give exactly one of rank / energy"):
        factorize(nn.Linear(10, 8))
    for bad, said in [({"energy": 1.5}, r"^energy must be a number in \(0, 1\], got 1.5$"),
                      ({"rank": 0}, r"^rank must be an integer >= 1, got 0"),
                      ({"energy": "0.9"}, r"^energy must be a number in \(0, 1\], got '0.9'$")]:
        with pytest.raises(OneByOneError, match=said):  # the argument named, not the first layer
            factorize(nn.Sequential(nn.Linear(10, 8), nn.Linear(8, 4)), **bad)
    with pytest.raises(OneByOneError, match="kinds entries must be one of"):
        factorize(nn.Linear(10, 8), rank=2, kinds=("attention",))


def test_each_layer_reports_its_own_error_and_the_model_its_total():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 32, 1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(), nn.Conv2d(32, 16, 1))
    model = model.double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    _, report = factorize(model, rank=4, example=x)
    with torch.no_grad():  # each layer alone, factorized, on the input the original model gives it
        for info in report.layers:
            i = int(info["name"])
            xin = model[:i](x)
            alone, _ = factorize(model[i], rank=4, example=xin)
            want = float((alone(xin) - model[i](xin)).norm() / model[i](xin).norm())
            assert info["relative_error"] == pytest.approx(want, rel=1e-9)
    errors = [info["relative_error"] for info in report.layers]
    assert report.output_relative_error > 0 and report.output_relative_error != errors[-1]
    assert "whole model's output" in " ".join(report.notes)


class SharedHead(nn.Module):
    """One Linear used twice (weights shared), and a conv trunk: the rows must sum to the report's totals."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.shared, self.out = nn.Conv2d(6, 32, 1), nn.Linear(32, 32), nn.Linear(32, 5)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return self.out(self.shared(torch.relu(self.shared(h))))


@pytest.mark.parametrize("batch", [1, 4])
def test_every_row_is_per_sample_and_the_rows_sum_to_the_totals(batch):
    model = SharedHead().eval()
    x = torch.randn(batch, 6, 9, 9)
    new, report = factorize(model, rank=4, example=x)
    assert sum(r["macs_saved"] for r in report.layers) == report.macs_before - report.macs_after > 0
    shared = next(r for r in report.layers if r["name"] == "shared")
    assert shared["macs_saved"] == 2 * (32 * 32 - 4 * (32 + 32))  # both calls, one sample
    assert any(n.startswith("shared is shared (2 calls on the example)") for n in report.notes)
    assert isinstance(new.shared, nn.Sequential)


def test_a_layer_registered_under_two_names_changes_under_both():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
    model.add_module("again", model[0])  # the same layer, a second name (nn.Sequential calls it again)
    new, report = factorize(model, rank=2, example=torch.randn(3, 16))
    assert new[0] is new.again and isinstance(new[0], nn.Sequential)
    assert any("also registered as again" in n for n in report.notes)
    assert sum(r["macs_saved"] for r in report.layers) == report.macs_before - report.macs_after


@pytest.mark.parametrize("shape", [(40, 60), (60, 40), (32, 32), (7, 200)])
@pytest.mark.parametrize("energy", [0.5, 0.9, 0.99, 1.0])
def test_the_truncation_equals_the_full_svds(shape, energy):
    from onebyone.algebra import truncated_svd

    rng = np.random.default_rng(sum(shape))
    w = rng.standard_normal(shape) * np.logspace(0, -3, shape[1])  # a spread of singular values
    a, b, r, kept = truncated_svd(w, energy=energy)
    u, s, vt = np.linalg.svd(w, full_matrices=False)  # the reference: the full SVD, truncated
    e = np.cumsum(s ** 2) / np.sum(s ** 2)
    assert r == int(np.searchsorted(e, energy - 1e-12) + 1) and kept == pytest.approx(e[r - 1], abs=1e-12)
    best = (u[:, :r] * s[:r]) @ vt[:r]
    np.testing.assert_allclose(b @ a, best, atol=1e-8 * s[0])  # the same rank-r product
    assert a.shape == (r, shape[1]) and b.shape == (shape[0], r)


def test_nan_weights_are_named_not_an_svd_error():
    lin = nn.Linear(8, 8)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(OneByOneError, match=r"layer `0` \(Linear, weight \(8, 8\)\): .* holds 1 NaN or infinite"):
        factorize(lin, rank=2)


class SamePadding(nn.Module):
    """TensorFlow-style 'same' padding, as transformers' MobileNets do it: read from the conv it calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(8, 16, 3, stride=2)

    def forward(self, x):
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        pad = max(k - s, 0) if x.shape[-1] % s == 0 else max(k - x.shape[-1] % s, 0)
        return self.conv(nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)))


def test_a_factorized_layer_keeps_the_attributes_code_reads_from_it():
    model = SamePadding().eval()
    new, report = factorize(model, rank=8, example=torch.randn(2, 8, 12, 12))
    assert new.conv.stride == (2, 2) and new.conv.kernel_size == (3, 3) and new.conv.out_channels == 16
    assert new.conv[0].stride == (2, 2) and isinstance(new.conv[1], Pointwise)  # the pair itself: kxk, then 1x1
    assert report.output_relative_error < 1.0


def test_factorize_takes_the_examples_every_rewrite_takes():
    """A tuple of tensors, and int64 token ids (which stay integers while the check runs in float64)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    new, report = factorize(model, rank=2, example=(torch.randn(2, 8),))
    assert len(report.changed) == 2 and report.output_relative_error > 0
    tokens = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8))
    new, report = factorize(tokens, rank=2, example=torch.randint(0, 10, (2, 5)))
    assert [r["name"] for r in report.layers] == ["1"] and report.output_relative_error < 1


def test_the_linears_a_torch_transformer_layer_hands_to_its_own_kernels_are_named_and_left():
    """nn.MultiheadAttention reads its out_proj weight without calling it, and nn.TransformerEncoderLayer hands
    its Linears' weights to torch's fused kernel in eval mode: each is skipped, named, and the model still runs
    (it once raised a bare KeyError, then an AttributeError inside torch)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    out, report = factorize(layer, rank=4, example=x)
    assert [n for n, _ in report.skipped] == ["self_attn.out_proj", "linear1", "linear2"]
    assert all("hands its weight to torch's own kernels" in why for _, why in report.skipped)
    with torch.no_grad():
        assert report.layers == [] and torch.equal(out(x), layer(x))


def test_the_truncation_of_a_float32_weight_is_as_good_as_the_full_svds():
    """A float32 weight whose singular values fall 0.8 a step, kept to rank 50: the error is the full SVD's
    (the Gram matrix once formed in float32 gave 8x it), and the factors come back in float32."""
    from onebyone.algebra import truncated_svd

    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    v, _ = np.linalg.qr(rng.standard_normal((256, 64)))
    w = ((u * 0.8 ** np.arange(64)) @ v.T).astype(np.float32)
    a, b, r, _ = truncated_svd(w, rank=50)
    w64 = w.astype(np.float64)
    uu, s, vt = np.linalg.svd(w64, full_matrices=False)
    best = np.linalg.norm(w64 - (uu[:, :r] * s[:r]) @ vt[:r])
    got = np.linalg.norm(w64 - b.astype(np.float64) @ a.astype(np.float64))
    assert a.dtype == b.dtype == np.float32 and got <= 1.01 * best


def test_inplace_on_a_single_layer_says_the_pair_is_new():
    layer = nn.Linear(10, 8)
    with pytest.warns(UserWarning, match="inplace=True: a single layer comes back as a new pair .* model given is "
                      "unchanged: use the model returned"):
        pair, report = factorize(layer, rank=2, inplace=True)
    assert pair is not layer and isinstance(pair, nn.Sequential) and layer.weight.shape == (8, 10)
    assert any(n.startswith("inplace=True: a single layer comes back as a new pair") for n in report.notes)


def test_an_all_zero_layer_factorizes_at_rank_one_under_energy():
    """A zero-initialised head (common for adapters) made factorize(energy=...) abort the whole model."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    with torch.no_grad():
        model[2].weight.zero_()
    out, report = factorize(model, energy=0.9)
    x = torch.randn(3, 8)
    assert torch.allclose(out(x), model(x)) and report.params_after <= report.params_before
