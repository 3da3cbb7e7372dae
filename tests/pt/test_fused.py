"""FusedPointwiseChain and optimize(): the same numbers as the plain layers, on every layout, pool and tile."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from onebyone import OneByOneError
from onebyone import chain_plan as fuse
from onebyone.cli import main
from onebyone.torch import ChannelBatchNorm, FusedPointwiseChain, Pointwise, SharedMLP, optimize
from onebyone.torch.fast import capabilities
from onebyone.torch.fast import chain as FU
from onebyone.torch.fast.packed import input_key
from onebyone.zoo import create_model, list_models, model_info

from .cpus import REWRITES

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "identity": nn.Identity}


def chain_layers(widths, acts, norm, seed):
    torch.manual_seed(seed)
    layers = []
    for i, o, a in zip(widths, widths[1:], acts):
        layers.append(Pointwise(i, o))
        if norm:
            bn = ChannelBatchNorm(o)
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.normal_()
            layers.append(bn)
        layers.append(ACTS[a]())
    return nn.Sequential(*layers).eval()


def plain(seq, x, pool):
    y = seq(x)  # (B, O, *S)
    if pool is None:
        return y
    y = y.flatten(2)
    return y.amax(2) if pool == "max" else y.mean(2)


@given(
    widths=st.lists(st.integers(1, 40), min_size=2, max_size=5),
    acts=st.data(),
    pool=st.sampled_from([None, "max", "mean"]),
    tile=st.sampled_from([1, 7, 64, 4096]),
    spatial=st.sampled_from([(13,), (5, 6), (1,)]),
    norm=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 99),
)
def test_fused_equals_plain(widths, acts, pool, tile, spatial, norm, dtype, seed):
    n = len(widths) - 1
    engines = acts.draw(st.lists(st.sampled_from(list(FU.ENGINES)), min_size=n, max_size=n))  # forced per layer
    acts = acts.draw(st.lists(st.sampled_from(list(ACTS)), min_size=n, max_size=n))
    seq = chain_layers(widths, acts, norm, seed).to(dtype)
    x = torch.randn(3, widths[0], *spatial, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    fused = FusedPointwiseChain.from_layers(list(seq), pool=pool, tile=tile)
    fused.kernels[input_key(x)] = tuple(engines)  # oneDNN's fall back to the default where they cannot run
    with torch.no_grad():
        want, got = plain(seq, x, pool), fused(x)
    assert got.shape == want.shape
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(1.0, float(want.abs().max())))


def test_fused_reference_plan_and_channels_last_and_autograd():
    seq = chain_layers((5, 16, 8), ("relu", "gelu"), True, 0)
    fused = FusedPointwiseChain.from_layers(list(seq), pool="max", tile=32)
    x = torch.randn(2, 5, 9, 7)
    rows = x.movedim(1, -1).reshape(2, -1, 5).double().numpy()  # (B, P, C)
    ws = [w.detach().double().flatten(1).numpy() for w in fused.weights]
    bs = [b.detach().double().numpy() for b in fused.biases]
    with torch.no_grad():
        ref = fuse.run_chain(rows, ws, bs, fused.plan)  # the NumPy executor of the same plan
        np.testing.assert_allclose(fused(x).numpy(), ref, rtol=1e-5, atol=1e-5)
        cl = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fused(cl), fused(x))
    xg = x.clone().requires_grad_(True)
    y = fused(xg)  # autograd: the plain path, differentiable
    y.sum().backward()
    assert xg.grad is not None and fused.weights[0].grad is not None
    torch.testing.assert_close(y.detach(), plain(seq, x, "max"), rtol=1e-5, atol=1e-5)


def test_fused_repacks_after_a_weight_edit_and_copies_and_pickles():
    import copy
    import pickle

    seq = chain_layers((5, 16, 8), ("relu", "identity"), False, 0)
    chain = FusedPointwiseChain.from_layers(list(seq), pool="max", tile=32)
    x = torch.randn(2, 5, 50)
    rows = x.movedim(1, -1).reshape(-1, 5)
    with torch.no_grad():
        chain(x)  # packs the float32 weights for oneDNN
        chain.weights[0].mul_(2)  # in place: the packed copies are stale now
        seq[0].weight.mul_(2)
        torch.testing.assert_close(chain(x), plain(seq, x, "max"), rtol=1e-5, atol=1e-5)
        w, b = chain.weights[0], chain.biases[0]
        packed = FU._pack(list(chain.weights), chain.plan.tile)[0]
        want = torch.relu(rows @ seq[0].weight.flatten(1).t() + b)
        for name in FU.engines_for(rows, w):  # every engine the tile loop may run here, on the edited weights
            got = FU.ENGINES[name](rows.clone(), w, b, "relu", packed)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        chain.kernels[input_key(x)] = ("conv", "addmm")
        for other in (copy.deepcopy(chain), pickle.loads(pickle.dumps(chain))):
            torch.testing.assert_close(other(x), chain(x))
            assert other.kernels == chain.kernels  # the choice travels with the chain; the packed copies do not
            assert len(other._packed) == 0
    assert all(not k.startswith("_packed") for k in chain.state_dict())


def test_shared_mlp_channel_last_and_linear_chains():
    torch.manual_seed(0)
    mlp = SharedMLP((3, 32, 64), norm="batch", pool="avg", channel_dim=-1).eval()
    x = torch.randn(4, 100, 3)
    with torch.no_grad():
        torch.testing.assert_close(FusedPointwiseChain.from_shared_mlp(mlp, tile=16)(x), mlp(x), rtol=1e-5, atol=1e-5)
        lin = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3)).eval()
        z = torch.randn(2, 5, 6)
        torch.testing.assert_close(FusedPointwiseChain.from_layers(list(lin), tile=4)(z), lin(z), rtol=1e-5, atol=1e-5)


def test_bad_chains_are_named():
    with pytest.raises(OneByOneError, match=r"cannot fuse layer 1 \(MaxPool2d\)"):
        FusedPointwiseChain.from_layers([Pointwise(3, 4), nn.MaxPool2d(2)])
    with pytest.raises(OneByOneError, match="training mode"):
        FusedPointwiseChain.from_layers([Pointwise(3, 4), nn.BatchNorm2d(4)])
    with pytest.raises(
        OneByOneError, match=r"cannot fuse layer 1 \(GELU\).*GELU \(erf\)"
    ):  # oneDNN's gelu is the erf one
        FusedPointwiseChain.from_layers([Pointwise(3, 4), nn.GELU(approximate="tanh")])
    with pytest.raises(OneByOneError, match="must start with a pointwise layer"):
        FusedPointwiseChain.from_layers([nn.ReLU(), Pointwise(3, 4)])
    with pytest.raises(OneByOneError, match=r"start with a pointwise layer; layer 0 \(Conv2d\) comes first"):
        FusedPointwiseChain.from_layers([nn.Conv2d(3, 4, 3)])
    chain = FusedPointwiseChain.from_layers([Pointwise(3, 4)])
    with pytest.raises(OneByOneError, match=r"expects 3 channels on dim 1, got input of shape \(2, 5, 8\)"):
        with torch.no_grad():
            chain(torch.zeros(2, 5, 8))


def lively(model: nn.Module, x) -> nn.Module:
    """The model with weights and BatchNorm statistics under which its output really depends on its input:
    freshly initialised deep nets shrink the signal layer by layer until every input gives the same output,
    and a check on them would pass whatever a rewrite did in the middle."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, Pointwise)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: the statistics of the calibration batch
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("name", list_models())
def test_optimize_is_exact_on_every_zoo_model(name):
    torch.manual_seed(0)
    x = torch.randn(4, *model_info(name).input_size)
    model = lively(create_model(name), torch.randn(8, *model_info(name).input_size))
    with torch.no_grad():
        want = model(x)
    spread, atol = float((want - want.mean(0)).abs().max()), 1e-4 * max(1.0, float(want.abs().max()))
    assert spread > 10 * atol, (
        f"{name}: outputs barely depend on the input ({spread:.3g}): the check below would be empty"
    )
    for channels_last in (True, False):
        opt, report = optimize(model, x, channels_last=channels_last, passes=REWRITES)
        with torch.no_grad():
            got = opt(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=atol)
        assert report.max_abs_diff <= report.tolerance and report.changed
        assert report.macs_after == report.macs_before  # the analyzer sees through ConvAct and fused chains


def test_optimize_fuses_pointnet_and_refuses_training_models():
    model = create_model("pointnet_vanilla").eval()
    opt, report = optimize(model, torch.randn(2, 3, 256), passes=REWRITES)
    assert sum(isinstance(m, FusedPointwiseChain) for m in opt.modules()) == 2
    assert any("SharedMLP" in c for c in report.changed)
    with pytest.raises(OneByOneError, match=r"eval-mode model .*\.eval\(\)"):
        optimize(create_model("nin_digits"), torch.randn(1, 1, 8, 8))


def test_cli_bench_writes_json_and_roofline(tmp_path, capsys):
    import json

    args = ["bench", "--quick", "--sections", "a", "--no-compile", "--runs", "2"]
    assert main(args + ["--json", str(tmp_path / "a.json"), "--png", str(tmp_path / "a.png")]) == 0
    result = json.loads((tmp_path / "a.json").read_text())
    assert [r["c_in"] for r in result["pointwise_op"]] == [3, 64, 256, 1024] and result["peak_gflops"] > 0
    assert result["malloc"] in ("freed memory held (bench.hold_freed_memory)", "as the platform runs it")
    caps = capabilities()  # the machine named by what matters for speed: the ISA, oneDNN, bfloat16 products, AMX
    assert result["cpu"] == {"isa": caps.isa, "onednn": caps.onednn, "bf16": caps.bf16, "avx512": caps.avx512,
                             "amx": caps.amx, "describe": caps.describe()}
    assert len(result["runs"]) == 2 and set(result["headlines"]) == set(result["spread"]) == set(result["runs"][0])
    for name, (lo, hi) in result["spread"].items():  # the median of two runs lies between them
        assert [r[name] for r in result["runs"]] in ([lo, hi], [hi, lo]) and lo <= result["headlines"][name] <= hi
    out = capsys.readouterr().out
    assert "over 2 runs, median (min - max): a 3 nchw" in out and "Pointwise vs the best" in out
    assert f"machine: {result['machine']} ({caps.describe()}); peak" in out
    assert all(r["pointwise_cl"] > 0 and 0 < r["roofline"][1]["fraction_of_peak"] for r in result["pointwise_op"])
    controls = [v for r in result["pointwise_op"] for v in r["control_vs_best"].values()]  # F.conv2d against itself
    assert len(controls) == 8 and all(v > 0 for v in controls) and result["runs"][-1]["a control"] == min(controls)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "--quick", "--sections", "d", "--no-compile", "--json", str(tmp_path / "b.json"),
                 "--png", str(tmp_path / "r.png")]) == 2  # (d) alone has no roofline points: refused before it runs
    assert "--png draws the roofline of sections a and b" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
    assert main(["bench", "--quick", "--sections", "b", "--no-compile", "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    s = b["shared_mlp"]  # the ceiling: eager's time over its FLOPs' time at the run's peak
    assert s["ceiling_vs_eager"] == pytest.approx(b["peak_gflops"] / s["gflops"]["eager"]) and s["ceiling_vs_eager"] > 1
    assert b["headlines"]["b ceiling vs eager"] == s["ceiling_vs_eager"] and s["max_abs_diff"]["fused"] < 1e-3
    out = capsys.readouterr().out
    assert f"(ceiling {s['ceiling_vs_eager']:.2f}x eager)" in out
    if "fused_bf16" in s["ms"]:  # the bfloat16 chain against the bfloat16 peak, measured the same way
        assert s["bf16_ceiling_vs_eager"] == pytest.approx(b["peak_gflops_bf16"] / s["gflops"]["eager"])
        assert s["bf16_fraction_of_peak"] == pytest.approx(s["gflops"]["fused_bf16"] / b["peak_gflops_bf16"])
        assert b["headlines"]["b bf16 ceiling vs eager"] == s["bf16_ceiling_vs_eager"]
        assert f"of the bfloat16 peak (ceiling {s['bf16_ceiling_vs_eager']:.2f}x eager)" in out
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--quick", "--sections", "a", "--runs", "0"])
    assert stop.value.code == 2 and "expected an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["bench", "--quick", "--sections", "x"]) == 2
    assert "--sections takes letters from 'abcde'" in capsys.readouterr().err


def test_tiles_cover_every_row_once():
    for n_samples, n_points, tile in [(3, 10, 4), (5, 3, 7), (1, 1, 1), (4, 8, 8)]:
        seen = []
        for r0, n, s0, k in fuse.tiles(n_samples, n_points, tile):
            assert n <= max(tile, n_points) and (k == 1 or n == k * n_points)
            seen += list(range(r0, r0 + n))
        assert seen == list(range(n_samples * n_points))


def test_the_optimized_model_accepts_and_refuses_what_the_eager_model_does():
    model = create_model("pointnet_vanilla").eval()
    opt, _ = optimize(model, torch.randn(2, 3, 128), passes=REWRITES)
    with torch.no_grad():
        empty = torch.randn(0, 3, 128)
        assert opt(empty).shape == model(empty).shape == (0, 40)  # an empty batch
        ints = torch.ones(2, 3, 128, dtype=torch.int32)
        with pytest.raises(RuntimeError) as eager_error:
            model(ints)
        with pytest.raises(RuntimeError) as fused_error:
            opt(ints)
    assert type(fused_error.value) is type(eager_error.value)


def test_bench_flags_a_run_whose_rounds_were_busy():
    """A contender whose median round took over 1.5x its best ran on a busy machine: the run says so."""
    from onebyone.bench import reliability

    quiet = {"shared_mlp": {"round_spread": {"eager": 1.02, "fused": 1.04}},
             "optimize": [{"model": "nin_cifar", "round_spread": {"eager": 1.03, "compile": 1.38}}]}
    assert reliability(quiet) == []
    busy = {"shared_mlp": {"round_spread": {"eager": 1.02, "fused": 1.9}},
            "optimize": [{"model": "nin_cifar", "round_spread": {"onnxruntime": 2.5}}]}
    said = "its median round took {:.2f}x its best (the machine was busy)"
    assert reliability(busy) == [f"(b) fused: {said.format(1.9)}", f"(e) nin_cifar onnxruntime: {said.format(2.5)}"]
    above = {"peak_gflops": 200.0, "peak_gflops_bf16": 400.0, "shared_mlp": {
        "gflops": {"eager": 50.0, "fused": 150.0, "fused_bf16": 600.0}, "fused_vs_eager": 3.0,
        "ceiling_vs_eager": 4.0, "bf16_fraction_of_peak": 1.5}}
    assert reliability(above) == ["(b) fused_bf16 ran at 150% of the run's measured bfloat16 peak 400 GFLOP/s"]
