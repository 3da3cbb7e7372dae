"""Int8PointwiseChain: a chain of 1x1 convs run in int8 with 8-bit intermediates computes the quantized
arithmetic the int8 formula states (written out here in float64), stays close to the float chain, and is
the form optimize(dtype=torch.int8) races on PointNet. Nothing here is timed."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.activations import REGISTRY
from onebyone.torch import SharedMLP, optimize
from onebyone.torch.fast import private
from onebyone.torch.fast.chain import FusedPointwiseChain
from onebyone.torch.fast.int8_chain import Int8PointwiseChain, affine, chain_ranges


def chain_of(widths=(6, 16, 24, 32), act="relu", pool="max"):
    torch.manual_seed(0)
    mlp = SharedMLP(widths, activation=act, norm="batch", pool=pool).eval()
    with torch.no_grad():
        for m in mlp.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    return FusedPointwiseChain.from_shared_mlp(mlp)


def inputs(n=3, shape=(4, 6, 40)):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def reference(chain: FusedPointwiseChain, ranges, top: int, x) -> np.ndarray:
    """The int8 chain's arithmetic in float64: input codes over ranges[0] (0..255), weights per output channel
    as codes -top..top, each product exact, then bias, activation and the output rounded to the next range's
    codes."""
    p = chain.plan
    h = x.double().movedim(1, -1).reshape(x.shape[0], -1, p.widths[0]).numpy()  # (B, P, C)
    s, z = affine(*ranges[0], 255)
    codes = np.clip(np.round(h / s) + z, 0, 255)
    for i, (w, b, act) in enumerate(zip(chain.weights, chain.biases, p.acts)):
        w = w.detach().double().flatten(1).numpy()  # (O, C)
        ws = np.maximum(np.abs(w).max(1), 1e-12) / top
        qw = np.clip(np.round(w / ws[:, None]), -top, top)
        y = REGISTRY[act].numpy(((codes - z) * s) @ (qw * ws[:, None]).T + b.detach().double().numpy())
        if i == len(p.acts) - 1 and p.pool != "max":
            break
        s, z = affine(*ranges[i + 1], 255)
        codes = np.clip(np.round(y / s) + z, 0, 255)
    if p.pool == "max":
        return (codes.max(1) - z) * s
    return y.mean(1) if p.pool == "mean" else np.moveaxis(y.reshape(x.shape[0], *x.shape[2:], -1), -1, 1)


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("vnni", [True, False])
@pytest.mark.parametrize("act,pool", [("relu", "max"), ("relu", None), ("gelu", "avg"), ("relu6", "max")])
def test_the_int8_chain_computes_the_quantized_arithmetic(monkeypatch, act, pool, vnni, onednn):
    if vnni and onednn and not private.capabilities().vnni:
        pytest.skip("8-bit inputs and weights saturate oneDNN's int8 products without VNNI: this CPU has none")
    if onednn and not private.onednn_int8():
        pytest.skip("this torch has no oneDNN int8 products (onednn.qlinear_pointwise)")
    if not onednn:
        monkeypatch.setattr(private, "onednn_int8", lambda: False)  # torch's public ops compute the same codes
    chain, cal = chain_of(act=act, pool=pool), inputs()
    ranges = chain_ranges(chain, cal)[id(chain)]
    q = Int8PointwiseChain(chain, ranges, vnni=vnni)
    x = inputs(1, (2, 6, 50))[0]  # not calibrated on
    with torch.no_grad():
        got, want = q(x), chain(x)
    ref = torch.from_numpy(reference(chain, ranges, 127 if vnni else 63, x)).float()
    assert got.shape == want.shape and got.dtype == torch.float32
    step = (ranges[-1][1] - ranges[-1][0]) / 255  # one output level
    close = ((got - ref).abs() <= step * 1.01).float().mean()
    assert close >= 0.98 and (got - ref).abs().max() <= 4 * step  # codes off by one only where rounding ties
    assert 0 < (got - want).abs().max() <= 0.05 * want.abs().max()  # quantized for real, and near float32


def test_a_model_that_is_a_chain_becomes_its_int8_chain_and_keeps_its_weights_in_its_state():
    """A bare SharedMLP is the chain itself: the int8 form is the new root (quantized for real), and its int8
    weights are buffers a state_dict carries. A chain the calibration never reaches has no ranges: refused."""
    from onebyone.torch.fast.int8 import chains_int8

    torch.manual_seed(0)
    mlp, cal = SharedMLP((6, 16, 8), pool="max").eval(), inputs()
    q, floats = chains_int8(mlp, cal[0], cal)
    assert isinstance(q, Int8PointwiseChain) and floats == ()
    with torch.no_grad():
        assert 0 < (q(cal[0]) - mlp(cal[0])).abs().max() <= 0.05 * mlp(cal[0]).abs().max()
    state = q.state_dict()
    assert state["weight0"].dtype == torch.int8 and state["weight0"].shape == (16, 6) and state["scale1"].shape == (8,)

    class OneOfTwo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = SharedMLP((6, 8, 8)), SharedMLP((6, 8, 8))

        def forward(self, x):
            return self.used(x)

    with pytest.raises(OneByOneError, match="chain unused was not called on the calibration data"):
        chains_int8(OneOfTwo().eval(), cal[0], cal)


def test_an_int8_chains_state_is_whole_and_8_bit_weights_never_run_where_they_saturate(monkeypatch):
    """The ranges and the weights' bits travel in the state_dict: a chain calibrated elsewhere that loads it
    computes the same; a chain with 8-bit weights (made on a VNNI CPU) refuses to run on oneDNN without VNNI."""
    import dataclasses

    chain = chain_of()
    q = Int8PointwiseChain(chain, chain_ranges(chain, inputs())[id(chain)])
    other = Int8PointwiseChain(chain, chain_ranges(chain, [3 * t for t in inputs()])[id(chain)])
    x = inputs(1, (2, 6, 30))[0]
    with torch.no_grad():
        assert not torch.equal(other(x), q(x))
        other.load_state_dict(q.state_dict())
        assert torch.equal(other(x), q(x)) and other.ranges == q.ranges
    caps = private.capabilities()
    monkeypatch.setattr(private, "capabilities", lambda: dataclasses.replace(caps, vnni=True))
    wide = Int8PointwiseChain(chain, q.ranges)  # 8-bit weights, as a VNNI CPU makes them
    monkeypatch.undo()
    assert "weight_bits=8" in repr(wide) and int(wide.weight0.abs().max()) > 63
    for form in (wide, q):  # a pickled chain, or a state_dict loaded into one made here
        form = copy.deepcopy(form)
        form.load_state_dict(wide.state_dict())
        if private.onednn_int8() and not caps.vnni:
            with pytest.raises(OneByOneError, match="8-bit weights.*make the int8 chain again here"):
                form(x)
        else:  # VNNI, or torch's public ops: 8 bits compute as they should
            with torch.no_grad():
                assert (form(x) - chain(x)).abs().max() <= 0.05 * chain(x).abs().max()


@pytest.mark.parametrize("pool", ["max", None, "avg"])
def test_nan_and_inf_go_through_the_fused_chains_as_through_the_layers(pool):
    """oneDNN's fused ReLU returns 0 for NaN and int8 codes have no NaN: a non-finite input runs the plain float
    layers instead, so a NaN reaches the outputs it reaches in the model (that point's, or its sample's pool)."""
    torch.manual_seed(0)
    mlp = SharedMLP((6, 16, 8), pool=pool).eval()
    chain = FusedPointwiseChain.from_shared_mlp(mlp)
    q = Int8PointwiseChain(chain, chain_ranges(chain, inputs())[id(chain)])
    x = inputs(1, (3, 6, 20))[0]
    x[0, 1, 2], x[2, 0, 7] = float("nan"), float("inf")
    with torch.no_grad():
        want, got, got8 = mlp(x), chain(x), q(x)
    assert want.isnan().any() and torch.equal(got.isnan(), want.isnan()) and torch.equal(got8.isnan(), want.isnan())
    torch.testing.assert_close(got, want, equal_nan=True)
    fine = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got8), fine) and (got8 - want)[fine].abs().max() <= 0.05 * want[fine].abs().max()


def test_the_int8_chain_runs_channels_last_rows_and_copies():
    torch.manual_seed(0)
    from onebyone.torch import Pointwise

    layers = [Pointwise(8, 16, channel_dim=-1), torch.nn.ReLU(), Pointwise(16, 4, channel_dim=-1)]
    chain = FusedPointwiseChain.from_layers(layers)
    cal = [torch.randn(16, 7, 8) for _ in range(4)]  # wide enough a sample that new inputs fall in its ranges
    q = Int8PointwiseChain(chain, chain_ranges(chain, cal)[id(chain)])
    x = torch.randn(3, 7, 8)
    with torch.no_grad():
        got, want = q(x), chain(x)
        again = copy.deepcopy(q)(x)  # a copy packs its own weights and computes the same
        half = torch.nn.Sequential(copy.deepcopy(q)).half()[0]  # a model cast to half: its int8 layer still runs
        back = copy.deepcopy(half).float()(x)
        low = half(x.half())
        bad = x.half()
        bad[0, 0, 0] = float("nan")
        carried = half(bad)  # NaN as the float chain carries it, in the input's dtype
    assert got.shape == want.shape == (3, 7, 4) and torch.equal(got, again)
    assert (got - want).abs().max() <= 0.05 * want.abs().max()
    assert half.scale0.dtype == half.bounds.dtype == torch.float32 and torch.equal(back, got)  # nothing was rounded
    assert low.dtype == torch.float16 and (low.float() - want).abs().max() <= 0.05 * want.abs().max()
    assert carried.dtype == torch.float16 and carried[0, 0].isnan().all() and not carried[1:].isnan().any()


def test_bad_input_to_an_int8_chain_is_refused():
    chain = chain_of()
    with pytest.raises(OneByOneError, match="needs 4 ranges"):
        Int8PointwiseChain(chain, [(0.0, 1.0)])
    for bad in [(1.0, -1.0), (0.0, float("nan"))]:
        with pytest.raises(OneByOneError, match="range 2 of an int8 chain must be finite"):
            Int8PointwiseChain(chain, [(0.0, 1.0), (0.0, 1.0), bad, (0.0, 1.0)])
    if private.onednn_int8() and not private.capabilities().vnni:
        with pytest.raises(OneByOneError, match="vnni=True asks for 8-bit weights"):
            Int8PointwiseChain(chain, [(0.0, 1.0)] * 4, vnni=True)  # would saturate silently
    q = Int8PointwiseChain(chain, chain_ranges(chain, inputs(1))[id(chain)])
    with pytest.raises(OneByOneError, match="6 channels on dim 1, got \\(2, 5, 9\\)"):
        q(torch.randn(2, 5, 9))
    with pytest.raises(OneByOneError, match="inference only"):
        q(torch.randn(2, 6, 9, requires_grad=True))  # no silent loss of the gradient
    with pytest.raises(OneByOneError, match="points of each sample.*none"):
        q(torch.randn(2, 6, 0))
    assert q(torch.randn(0, 6, 9)).shape == (0, 32)  # an empty batch: an empty answer


def test_optimize_races_the_fused_int8_chains_on_pointnet_and_keeps_the_rest_float32():
    from onebyone.zoo import create_model

    model = create_model("pointnet_vanilla", num_classes=5).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
    cal = inputs(4, (4, 3, 64))
    _, report = optimize(model, cal[0], dtype=torch.int8, calibration=cal, passes=["fold", "check", "int8"])
    form = report.precision["forms"]["onebyone int8 (fused chains)"]
    assert form["float32_layers"] == ["head.0", "head.3", "head.7"]  # the head's Linears: not in a chain
    assert 0 < form["relative_error"] < 0.05
    both = report.precision["forms"]["onebyone int8 (fused chains and Linear runs)"]  # the head's run in int8 too
    assert both["float32_layers"] == [] and 0 < both["relative_error"] < 0.05


def test_a_linear_run_becomes_an_int8_chain_only_when_asked_and_a_model_without_one_gets_one_chain_form():
    from onebyone.torch.fast.int8 import chains_int8

    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 8), nn.ReLU(),
                         nn.Linear(8, 4)).eval()
    model = nn.Sequential(SharedMLP([3, 16, 16], pool="max"), head).eval()
    cal = inputs(3, (4, 3, 32))
    q, floats = chains_int8(model, cal[0], cal, linear=True)
    assert isinstance(q[1][0], Int8PointwiseChain) and floats == () and q[1][0].plan.widths == (16, 32, 8, 4)
    with torch.no_grad():
        want = model(cal[2])
        assert (q(cal[2]) - want).abs().max() <= 0.05 * want.abs().max()
    _, floats = chains_int8(model, cal[0], cal)
    assert floats == ("1.0", "1.3", "1.5")  # without: the Linears stay float32
    plain = nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 8, 1)).eval()
    _, report = optimize(plain, cal[0], dtype=torch.int8, calibration=cal, passes=["fold", "check", "int8"])
    assert "onebyone int8 (fused chains)" in report.precision["forms"]  # no Linear run: no second, same form
    assert "onebyone int8 (fused chains and Linear runs)" not in report.precision["forms"]


@pytest.mark.parametrize("pool", ["max", None, "avg"])
def test_the_codes_do_not_depend_on_the_layout_or_the_tiles(pool):
    """A chain's input as (B, C, N) in memory or as a view of points-by-channels rows (what a chain or
    PointNet's transforms hand on), and the batch in one tile or in many: the same output, to the bit (a mean
    pool sums its tiles in another order: to float32's rounding)."""
    import dataclasses

    chain = chain_of(pool=pool)
    q = Int8PointwiseChain(chain, chain_ranges(chain, inputs())[id(chain)])
    x = inputs(1, (3, 6, 50))[0]
    rows = x.transpose(1, 2).contiguous().transpose(1, 2)  # the same values, each point's channels together
    assert not rows.is_contiguous() and torch.equal(rows, x)
    with torch.no_grad():
        one = q(x)
        assert q.plan.tile >= 150 and torch.equal(q(rows), one)  # all 150 rows in one tile
        same = torch.equal if pool != "avg" else lambda a, b: torch.allclose(a, b, rtol=1e-6, atol=1e-7)
        q.plan = dataclasses.replace(q.plan, tile=32)  # a sample split over tiles
        assert same(q(x), one) and same(q(rows), one)
        q.plan = dataclasses.replace(q.plan, tile=100)  # two whole samples, then one
        assert same(q(x), one)


def test_the_codes_are_torchs_quantization_and_the_arithmetic_up_to_ties():
    """``quantize_rows``: over 0..255, torch's quantize kernel's codes exactly; the written-out rounding of
    x / scale agrees but where x / scale lies within a float's rounding of a half (a handful in a million)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 1024, generator=g) * 2
    for scale, zero in [(0.01, 3), (0.0137, 100), (0.5, 255), (1e-3, 0)]:
        got = private.quantize_rows(x, scale, zero, 255)
        with private.quantized_tensors():
            want = torch.quantize_per_tensor(x, scale, zero, torch.quint8).int_repr()
        assert got.dtype == torch.uint8 and got.shape == x.shape and torch.equal(got, want)
        written = torch.clamp(torch.round(x.double() / scale) + zero, 0, 255).to(torch.uint8)
        off = (got.int() - written.int()).abs()
        assert off.max() <= 1 and int((off > 0).sum()) <= 10
    seven = private.quantize_rows(x, 0.01, 3, 127)  # not all 8 bits: the arithmetic, clamped to 0..127
    assert int(seven.max()) == 127
    assert torch.equal(seven, torch.clamp(torch.round(x / 0.01) + 3, 0, 127).to(torch.uint8))


def test_a_range_written_in_place_is_seen_and_the_callers_warnings_are_left_alone():
    """The scales a call uses follow the ranges however they were written (through ``.data`` too); and after
    their first call an int8 chain or layer enters no warnings filter, which would reset a caller's once-only
    warnings."""
    import warnings

    from onebyone.torch.fast.int8_torch import Int8Layer

    chain = chain_of()
    q = Int8PointwiseChain(chain, chain_ranges(chain, inputs())[id(chain)])
    layer = Int8Layer(nn.Conv1d(6, 4, 3).eval(), (-3.0, 3.0), (-2.0, 2.0), private.capabilities().vnni)  # torch's
    x = inputs(1, (2, 6, 30))[0]
    with torch.no_grad():
        before = q(x)
        q.bounds.data.mul_(4)  # no version bump
        assert not torch.equal(q(x), before) and torch.equal(q(x), copy.deepcopy(q)(x))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            for _ in range(3):
                warnings.warn("shown once", UserWarning)  # one location: the default filter shows it once
                q(x), layer(x[..., :8])
    assert sum("shown once" in str(w.message) for w in seen) == 1
