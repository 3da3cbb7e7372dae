"""optimize(): a driver over named passes (each on its own, a subset on request), exact on every zoo model,
what it fuses and swaps, the kernels it chooses and reports, and never a slower model than the one given
without a warning."""
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch import ConvAct, FusedPointwiseChain, Pointwise
from onebyone.torch.collect import analyze
from onebyone.torch.fast import ChannelsLast, MaxPool, optimize
from onebyone.torch.fast import passes as O
from onebyone.zoo import create_model, list_models, model_info

from .cpus import REWRITES


def net():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(16)
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), bn, nn.ReLU(), nn.MaxPool2d(2), Pointwise(16, 32),
                         nn.ReLU(), nn.Conv2d(32, 8, 1)).eval()


X = torch.randn(2, 3, 12, 12)


def kinds(model):
    return {type(m).__name__ for m in model.modules()}


@pytest.mark.parametrize("name,present,absent", [
    ("fold", set(), {"BatchNorm2d"}),
    ("chains", {"FusedPointwiseChain"}, set()),
    ("conv_acts", {"ConvAct"}, set()),
    ("pools", {"MaxPool"}, {"MaxPool2d"}),
    ("channels_last", set(), set()),  # timed: either layout, the outputs the same
    ("kernels", set(), set()),
    ("keep_faster", set(), set()),
])
@pytest.mark.filterwarnings("ignore:optimize. the rewritten model ran slower")  # keep_faster alone: a tie
def test_each_pass_alone_does_its_part_and_keeps_the_outputs(name, present, absent):
    model = net()
    opt, report = optimize(model, X, passes=[name])
    assert [p["pass"] for p in report.passes] == sorted({name, "check"}, key=list(O.PASSES).index)
    assert present <= kinds(opt) and not absent & kinds(opt)
    others = {"fold": "BatchNorm2d", "chains": "FusedPointwiseChain", "conv_acts": "ConvAct", "pools": "MaxPool"}
    assert not {v for k, v in others.items() if k != name} & kinds(opt) - kinds(model)  # nothing another pass does
    with torch.no_grad():
        torch.testing.assert_close(opt(X), model(X), rtol=1e-5, atol=1e-5)
    assert all(p["seconds"] >= 0 for p in report.passes)
    assert [type(m).__name__ for m in model] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Pointwise", "ReLU",
                                                 "Conv2d"]  # the model given is untouched


def test_the_kernels_pass_records_what_each_fast_layer_runs():
    opt, report = optimize(net(), X, channels_last=True, passes=["conv_acts", "pools", "channels_last", "kernels"])
    assert isinstance(opt, ChannelsLast)
    fast = {n.removeprefix("model."): m for n, m in opt.named_modules() if isinstance(m, (ConvAct, MaxPool))}
    rows = {r["name"].removeprefix("model."): r for r in report.layers}
    assert set(rows) == set(fast)  # every fast layer the example reaches, with the kernel it will run
    for name, m in fast.items():
        assert m.kernels == {(tuple(rows[name]["input_shape"]), "float32"): rows[name]["kernel"]}


def test_the_chains_pass_alone_then_the_kernels_pass_choose_engines_per_layer():
    opt, report = optimize(net(), X, channels_last=False, passes=["chains", "kernels"])
    chain = next(m for m in opt.modules() if isinstance(m, FusedPointwiseChain))
    (row,) = [r for r in report.layers if r["layer"] == "FusedPointwiseChain"]
    assert row["kernel"].split(", ") == list(chain.kernels[(tuple(row["input_shape"]), "float32")])
    assert len(row["kernel"].split(", ")) == 2  # one engine per layer


def test_passes_are_named_and_checked():
    with pytest.raises(OneByOneError, match=r"unknown pass\(es\) \['fuse'\]: optimize's passes are "
                                            r"\['reparameterize', 'fold'"):
        optimize(net(), X, passes=["fuse"])
    with pytest.raises(OneByOneError, match="passes must be a list of pass names"):
        optimize(net(), X, passes="chains")
    _, report = optimize(net(), X, passes=[])
    assert [p["pass"] for p in report.passes] == ["check"]  # the check always runs
    _, report = optimize(net(), X, passes=(p for p in ["fold"]))  # any iterable, read once
    assert [p["pass"] for p in report.passes] == ["fold", "check"]


def test_optimize_never_returns_a_slower_model_without_a_warning(monkeypatch):
    def given_is_faster(models, x, **timer):  # what a slow rewrite would measure
        return {k: (1e-3 if k == O.GIVEN else 2e-3) for k in models}

    monkeypatch.setattr(O, "time_models", given_is_faster)
    model = net()
    with pytest.warns(UserWarning, match=r"ran slower on the example \(2 against 1 ms a call\): the model given"):
        opt, report = optimize(model, X, channels_last=False)
    assert opt is not model and kinds(opt) == kinds(model) and report.layers == []
    assert any("the model given is returned unchanged" in n for n in report.notes)
    assert report.changed == []  # the changes made and timed are in a note, not listed as the model's
    assert any("are not in the model returned" in n for n in report.notes)
    assert report.max_abs_diff == 0.0 and (report.params_after, report.macs_after) == (report.params_before,
                                                                                     report.macs_before)
    for p, q in zip(opt.parameters(), model.parameters()):
        assert torch.equal(p, q) and p is not q


def test_optimize_keeps_its_rewrite_when_it_is_faster(monkeypatch):
    monkeypatch.setattr(O, "time_models", lambda models, x, **timer: {k: (1e-3 if k == O.GIVEN else 0.5e-3)
                                                                       for k in models})
    opt, report = optimize(net(), X, channels_last=False)
    assert "ConvAct" in kinds(opt)
    assert any(n.startswith("on the example: 0.5 ms a call against 1 for the model given") for n in report.notes)


def test_optimize_fuses_conv_activation_pairs_and_leaves_odd_convs():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Dropout(0.1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 4, padding="same"),
        nn.GELU("tanh"),
        nn.Conv2d(8, 4, 3, padding=1, padding_mode="reflect"),
        nn.ReLU6(),
    ).eval()
    x = torch.randn(2, 3, 12, 12)
    opt, report = optimize(model, x, passes=REWRITES)
    seq = opt.model if hasattr(opt, "model") else opt  # (inside ChannelsLast when that was timed faster)
    assert [type(m).__name__ for m in seq] == ["ConvAct", "Dropout", "Identity", "Conv2d", "GELU", "Conv2d", "ReLU6"]
    assert seq[0].act == "relu"
    assert [name for name, _ in report.skipped] == ["3", "5"]  # 'same' with an even kernel; reflect padding
    assert "even kernel" in report.skipped[0][1] and "zero padding" in report.skipped[1][1]
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-5, atol=1e-5)
    assert report.macs_after == report.macs_before == analyze(model, example=x).macs // x.shape[0]  # per sample


def test_optimize_times_kernels_explicitly_and_reports_the_choice():
    torch.manual_seed(0)
    model = nn.Sequential(Pointwise(16, 32), nn.ReLU(), nn.Conv2d(32, 8, 3, padding=1)).eval()
    x = torch.randn(2, 16, 12, 12)
    opt, report = optimize(model, x, channels_last=True, passes=REWRITES)
    chosen = {r["name"]: r for r in report.layers}
    assert set(chosen) == {"model.0", "model.2"} and chosen["model.2"]["kernel"] == "conv"  # 3x3: one kernel
    assert chosen["model.0"]["input_shape"] == [2, 16, 12, 12] and chosen["model.0"]["dtype"] == "float32"
    assert chosen["model.0"]["kernel"] in ("conv", "matmul over rows")
    assert opt.model[0].kernels == {((2, 16, 12, 12), "float32"): chosen["model.0"]["kernel"]}
    assert any("kernels chosen on the example" in n for n in report.notes)


class Basic(nn.Module):
    """torchvision's style: activations called in ``forward``, in place; one ReLU shared by two convs (as in
    SqueezeNet's Fire), one called after a conv and after a sum, and a conv called twice."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        self.conv2, self.conv3, self.shared = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1), nn.ReLU(inplace=True)
        self.conv4, self.mixed = nn.Conv2d(8, 8, 1), nn.ReLU()
        self.twice, self.act5 = nn.Conv2d(8, 8, 1), nn.ReLU()

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))
        z = self.shared(self.conv2(y)) + self.shared(self.conv3(y))
        z = self.mixed(self.conv4(z)) + self.mixed(z - 0.5)
        return self.twice(self.act5(self.twice(z)))


def test_optimize_fuses_activations_called_in_forward():
    torch.manual_seed(0)
    model = Basic().eval()
    model.bn1.running_mean.uniform_(-1, 1), model.bn1.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 10, 10)
    opt, report = optimize(model, x, channels_last=False, passes=REWRITES)
    assert opt.conv1.act == "relu" and isinstance(opt.act1, nn.Identity)  # past the folded BatchNorm
    assert opt.conv2.act == opt.conv3.act == "relu" and isinstance(opt.shared, nn.Identity)  # each call after a conv
    assert opt.conv4.act == "identity" and isinstance(opt.mixed, nn.ReLU)  # one of its calls reads a sum
    assert opt.twice.act == "identity" and isinstance(opt.act5, nn.ReLU)  # its second call has no ReLU after it
    assert any(c.startswith("conv1 + act1: Conv2d + ReLU -> ConvAct") for c in report.changed)
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x), rtol=1e-5, atol=1e-5)


def test_optimize_replaces_a_model_that_is_itself_a_shared_mlp_or_a_conv():
    from onebyone.torch import FusedPointwiseChain, SharedMLP

    mlp = SharedMLP((3, 64, 128), pool="max").eval()
    opt, report = optimize(mlp, torch.randn(2, 3, 100), passes=REWRITES)
    assert isinstance(opt, FusedPointwiseChain) and report.params_after == report.params_before == 8_576
    conv = nn.Conv2d(3, 8, 3).eval()
    opt, report = optimize(conv, torch.randn(2, 3, 9, 9), channels_last=False, passes=REWRITES)
    assert isinstance(opt, ConvAct) and report.params_after == report.params_before


@pytest.mark.parametrize("name", list_models())
def test_optimize_is_exact_on_every_zoo_model(name):
    torch.manual_seed(0)
    x = torch.randn(2, *model_info(name).input_size)
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
    part = create_model("nin_digits").eval()
    part.features[1].train()  # one submodule left in training mode: its BatchNorm updated in the reference runs
    stats = {k: v.clone() for k, v in part.state_dict().items()}
    with pytest.raises(OneByOneError, match=r"but `features.1` are in training mode; call NiN.eval\(\) first"):
        optimize(part, torch.randn(2, 1, 8, 8))
    assert all(torch.equal(stats[k], v) for k, v in part.state_dict().items())


def test_the_optimized_model_accepts_and_refuses_what_the_eager_model_does():
    model = create_model("pointnet_vanilla").eval()
    opt, _ = optimize(model, torch.randn(2, 3, 128), passes=REWRITES)
    with torch.no_grad():
        empty = torch.randn(0, 3, 128)
        assert opt(empty).shape == model(empty).shape == (0, 40)  # an empty batch
        ints = torch.ones(2, 3, 128, dtype=torch.int32)
        with pytest.raises(OneByOneError, match="takes a floating-point tensor, got torch.int32") as eager_error:
            model(ints)
        with pytest.raises(OneByOneError, match="takes a floating-point tensor, got torch.int32") as fused_error:
            opt(ints)
    assert type(fused_error.value) is type(eager_error.value)


def test_optimize_reports_each_pools_kernel_and_the_analyzer_counts_it_as_a_pool():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                          nn.Conv2d(16, 8, 1)).eval()
    x = torch.randn(4, 3, 33, 33)
    fast, report = optimize(model, x, channels_last=True, passes=REWRITES)
    pools = [r for r in report.layers if r["kernel"] in ("max_pool2d", "max of views")]
    assert [(r["input_shape"], r["name"].endswith("2")) for r in pools] == [([4, 16, 31, 31], True)]
    assert any("max pools run as a max of strided views" in n for n in report.notes)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
    before, after = analyze(model, example=x), analyze(fast, example=x)
    assert after.macs == before.macs
    assert [r.kind for r in after.rows if r.type == "MaxPool"] == [r.kind for r in before.rows if r.type == "MaxPool2d"]


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


def test_optimize_checks_float64_on_one_sample_and_its_own_dtype_on_the_whole_example(monkeypatch):
    from onebyone.torch import rewrite_report
    from onebyone.torch.tensors import first_sample

    seen, compared = [], []
    real, real_outputs = rewrite_report.max_difference, O.output_difference

    def spy(before, after, example, reshape=None, dtype=torch.float64):
        seen.append((dtype, tuple(example.shape)))
        return real(before, after, example, reshape, dtype)

    def outputs_spy(want, got, what):  # the outputs compared in the model's own dtype
        compared.append([(t.dtype, t.shape[0]) for t in [*want, *got]])
        return real_outputs(want, got, what)

    monkeypatch.setattr(rewrite_report, "max_difference", spy)
    monkeypatch.setattr(O, "output_difference", outputs_spy)
    _, report = optimize(net(), X, channels_last=False, passes=REWRITES)
    assert set(seen) == {(torch.float64, (1, 3, 12, 12))}  # not on the whole batch: 8x the work at batch 8
    assert compared == [[(torch.float32, 2)] * 2]  # float32 on the whole example, the fast path
    assert any(n.startswith("checked in float32 on the fast path too") for n in report.notes)
    assert first_sample({"a": torch.ones(4, 2), "b": torch.ones(4)})["b"].shape == (1,)
    mixed = (torch.ones(4, 2), torch.ones(3))  # no common batch: the example as given
    one = X[:1]  # a batch of one is its own first sample
    assert first_sample(mixed) is mixed and first_sample(one) is one


def test_a_float16_model_is_checked_on_the_fast_path_within_its_own_rounding():
    """Folded weights stored in float16 move its outputs by about its epsilon: both checks allow that much (the
    float64 check says so in a note), not the float32 tolerance."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1), model[1].running_var.uniform_(0.2, 3.0)
    half, x = model.half(), torch.randn(4, 3, 12, 12).half()
    opt, report = optimize(half, x, passes=["fold", "check"])
    assert any("raised to 0.00390625" in n for n in report.notes)
    with torch.no_grad():
        want, got = half(x).float(), opt(x).float()
    assert 0 < (got - want).abs().max() <= 4e-3 * want.abs().max()


def test_the_optimized_model_runs_its_fast_form_without_no_grad_and_leaves_the_given_weights_alone():
    """Its weights are its own copies and want no gradient: a call without ``torch.no_grad`` runs what was
    timed (an engine's form would otherwise hand the call to the model itself), and the model given still
    trains."""
    model = net()
    opt, _ = optimize(model, X, passes=REWRITES)
    assert all(p.requires_grad for p in model.parameters())  # the model given: untouched
    assert not any(p.requires_grad for p in opt.parameters())
    y = opt(X)  # grad mode on
    assert y.grad_fn is None
    torch.testing.assert_close(y, model(X).detach(), rtol=1e-5, atol=1e-5)
    x = X.clone().requires_grad_()
    opt(x).sum().backward()  # a gradient wanted for the input: it still flows
    want = X.clone().requires_grad_()
    model(want).sum().backward()
    torch.testing.assert_close(x.grad, want.grad, rtol=1e-4, atol=1e-5)


def test_a_fold_that_moved_the_outputs_is_caught_by_the_check_not_returned(monkeypatch):
    """The fold pass leaves its check to the check pass (one float64 comparison for every pass): a fold gone
    wrong must still raise, never come back as the result."""
    real = O.merged_pointwise

    def wrong(model, x, force=False):
        work, report = real(model, x, force)
        with torch.no_grad():
            next(work.parameters()).mul_(1.01)
        return work, report

    monkeypatch.setattr(O, "merged_pointwise", wrong)
    with pytest.raises(OneByOneError, match=r"optimize changed the outputs by .* \(> tolerance"):
        optimize(net(), X, passes=REWRITES)


def test_nan_in_the_inputs_reaches_the_outputs_it_reaches_in_the_model_given(monkeypatch):
    """oneDNN's fused ReLU returns 0 for NaN: an optimized model looks at its inputs once a call (one sum, not
    one per layer) and runs its plain layers where they hold NaN or inf, as the model given would; a call that
    raises leaves nothing behind for the next."""
    from onebyone.torch.fast import private

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 1),
                          nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    x = torch.randn(4, 3, 16, 16)
    opt, _ = optimize(model, x, passes=["fold", "conv_acts", "channels_last", "check"])
    assert sum(isinstance(m, ConvAct) for m in opt.modules()) == 2
    looks = []
    real = private.finite
    monkeypatch.setattr(private, "finite", lambda t: looks.append(t.shape) or real(t))
    bad = x.clone()
    bad[0, 1, 3, 3], bad[2, 0, 0, 0] = float("nan"), float("inf")
    with torch.no_grad():
        want, got = model(bad), opt(bad)
        assert looks == [bad.shape]  # the inputs, once
        assert want[0].isnan().all() and torch.equal(got.isnan(), want.isnan())
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-4, atol=1e-4)
        with pytest.raises(Exception):  # noqa: B017 - any failure inside the call
            opt(torch.randn(4, 5, 16, 16))
        assert private.nan_free(bad) is False  # asked afresh: the failed call's answer is gone
    private.look_at_inputs(None, (x,), {})  # an outer guarded call: finite
    private.look_at_inputs(None, (bad,), {})  # an inner one, inside it: not
    assert private.nan_free(x) is False
    private.forget_inputs(None, (bad,), {}, None)
    assert private.nan_free(bad) is True  # the outer call's answer again
    private.forget_inputs(None, (x,), {}, None)

    class Box:  # an argument it cannot look into: no answer, each fused layer looks at its own input
        def __init__(self, t):
            self.t = t

    assert private.inputs_finite((Box(bad),), {}) is None and private.inputs_finite((bad, 2.0), {}) is False


def test_a_call_ended_by_keyboard_interrupt_leaves_no_answer_behind():
    """torch runs a model's last hook on an Exception, not on a KeyboardInterrupt: the guarded call's answer
    (its inputs were finite) then stays behind. A fused layer called on its own afterwards must not take it:
    NaN in its input reaches its output, as in torch's layers."""
    from onebyone.torch import SharedMLP
    from onebyone.torch.fast import private

    torch.manual_seed(0)
    model = nn.Sequential(SharedMLP((6, 16, 8)), nn.ReLU()).eval()
    x = torch.randn(2, 6, 10)
    opt, _ = optimize(model, x, passes=["fold", "chains", "check"])
    chain = next(m for m in opt.modules() if isinstance(m, FusedPointwiseChain))
    stop = chain.register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(KeyboardInterrupt))
    with torch.no_grad(), pytest.raises(KeyboardInterrupt):
        opt(x)  # finite inputs: the answer is True, and the call never gets to put it back
    stop.remove()
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with torch.no_grad():
        got, want = chain(bad), model[0](bad)
        assert want[1].isnan().any() and torch.equal(got.isnan(), want.isnan())
        assert torch.equal(opt(bad).isnan(), model(bad).isnan())  # the next guarded call looks afresh
        assert private.nan_free(bad) is False


class StdConv2d(nn.Conv2d):
    """timm's weight-standardized conv: its forward normalizes the weight each call."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def test_a_conv_subclass_with_a_forward_of_its_own_is_left_to_it_and_the_rest_rewritten():
    """No rewrite takes a StdConv2d for the plain conv it subclasses (a BatchNorm folded into its weight is
    standardized away; as a ConvAct it would skip the standardization): each rewrite leaves it, and does the
    rest (once optimize failed on the whole model: 'changed the outputs by 10.7')."""
    from onebyone.torch import factorize, fold_batchnorm, merge_pointwise

    torch.manual_seed(0)
    model = nn.Sequential(StdConv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), StdConv2d(8, 8, 1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        for bn in (model[1], model[4], model[7]):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == ["6 + 7: Conv2d + BatchNorm2d folded"]
    merged, _ = merge_pointwise(model, example=x)
    factored, report = factorize(model, rank=2, example=x)
    assert [row["name"] for row in report.layers] == ["6"]
    opt, _ = optimize(model, x, passes=REWRITES)
    assert sum(type(m) is StdConv2d for m in opt.modules()) == 2
    with torch.no_grad():
        for new in (folded, merged, opt):
            torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-5)


def test_channels_last_takes_a_model_holding_a_five_dimensional_parameter():
    """timm's LambdaLayer holds a 5-D relative-position table: ``.to(memory_format=torch.channels_last)``
    refuses such a model; its 4-D weights still move, the table stays as it is."""

    class Table(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.table = nn.Conv2d(3, 8, 3, padding=1), nn.Parameter(torch.randn(1, 8, 1, 1, 2))

        def forward(self, x):
            return self.conv(x) + self.table.sum(-1)

    model, x = Table().eval(), torch.randn(2, 3, 8, 8)
    fast, report = optimize(model, x, channels_last=True, passes=("channels_last", "check"))
    assert "model and input moved to channels_last" in report.changed
    assert fast.model.conv.weight.is_contiguous(memory_format=torch.channels_last)  # the 4-D weight moved
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_model_float32_rounds_past_tol_is_refused_with_the_tol_that_accepts_the_rewrite():
    """Where the fast path's float32 outputs move past ``tol`` and the model given itself moves that far between
    float32 and float64 (1000 x - 999.99 x: float32 rounds each product by more than the difference's 1e-4),
    the refusal says so and names a ``tol`` that accepts it; a well-conditioned model's refusal does not."""
    cancelling = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 1, 1, bias=False)).eval()
    with torch.no_grad():
        cancelling[0].weight.fill_(1.0)
        cancelling[1].weight.copy_(torch.tensor([1000.0, -999.99]).view(1, 2, 1, 1))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 5
    req = O._request(cancelling, x, None, 1e-6, None, None, None, False, None, None, None, 0.5)
    said = O._rounding_said(req, 1e-3, 0.05)  # (outputs under 1: the tolerance is absolute)
    assert said.startswith("; the model itself moves by ") and "past tol" in said and said.endswith(
        "tol=0.002 accepts this rewrite")
    plain = O._request(nn.Sequential(nn.Conv2d(1, 2, 1)).eval(), x, None, 1e-6, None, None, None, False, None,
                       None, None, 0.5)
    assert O._rounding_said(plain, 1e-3, 5.0) == ""


def test_the_lines_set_aside_are_those_of_the_passes_the_form_kept_does_not_hold():
    """Inductor around the fused chains holds the fold, the chains and their layout; an engine's form the fold
    alone: the other passes' lines go to one note, in order."""
    from onebyone.torch.rewrite_report import OptimizeReport

    for kept, left in [(O.COMPILED_CHAINS, ["fold", "chains", "layout"]), ("onnxruntime", ["fold"])]:
        report, race = OptimizeReport("optimize"), O.Race()
        report.changed = ["fold", "chains", "convact 1", "convact 2", "layout"]
        race.spans = {"fold": (0, 1), "chains": (1, 2), "conv_acts": (2, 4), "channels_last": (4, 5)}
        O.set_aside(report, race, kept)
        assert report.changed == left
        moved = [x for x in ["chains", "convact 1", "convact 2", "layout"] if x not in left]
        assert report.notes == [f"{len(moved)} change(s) of the eager rewrite were made and timed, and are not in "
                                f"{kept}, which is made from the exact rewrite: {'; '.join(moved)}"]
