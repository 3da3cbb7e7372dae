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
    with pytest.raises(OneByOneError, match="energy must be in"):
        factorize(nn.Linear(10, 8), energy=1.5)
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
