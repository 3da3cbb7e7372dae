"""fold_batchnorm, merge_pointwise, linear <-> 1x1: exact against the original model."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from onebyone import OneByOneError, analyze
from onebyone.torch import (
    ChannelBatchNorm,
    Pointwise,
    conv1x1_to_linear,
    fold_batchnorm,
    linear_to_conv1x1,
    merge_pointwise,
)


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


def assert_same(a, b, x, tol):
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    assert float((ya - yb).abs().max()) <= tol * max(1.0, float(ya.abs().max()))


class Functional(nn.Module):
    """A model with a forward of its own (traced with torch.fx), functional ops and a BN before a 1x1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pre = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1, groups=2)
        self.head = nn.Linear(16, 5)
        self.bn_head = nn.BatchNorm1d(5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.pw(self.pre(x))
        x = x.mean(dim=(2, 3))
        return self.bn_head(self.head(x))


MODELS = {
    "sequential-2d": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                            nn.Conv2d(8, 8, 3, groups=4), nn.BatchNorm2d(8)), (2, 3, 9, 9)),
    "sequential-1d": (lambda: nn.Sequential(nn.Conv1d(3, 16, 1), nn.BatchNorm1d(16), nn.ReLU(), nn.BatchNorm1d(16),
                                            nn.Conv1d(16, 4, 1)), (2, 3, 20)),
    "linear": (lambda: nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.BatchNorm1d(10),
                                     nn.Linear(10, 3)), (4, 6)),
    "pointwise-last": (lambda: nn.Sequential(Pointwise(3, 8, channel_dim=-1), ChannelBatchNorm(8, channel_dim=-1),
                                             nn.GELU()), (2, 7, 3)),
    "functional": (Functional, (2, 3, 6, 6)),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fold_batchnorm_is_exact_and_removes_every_batchnorm(name, dtype, tol):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = randomize_bn(build()).to(dtype)
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(*shape, dtype=dtype)
    folded, report = fold_batchnorm(model, example=x)
    assert_same(model, folded, x, tol)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules()), report.skipped
    assert report.params_after < report.params_before and report.changed and report.skipped == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is untouched
    assert type(folded) is type(model)


def test_fold_batchnorm_channels_last_input():
    model = randomize_bn(nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU()))
    x = torch.randn(2, 4, 10, 10).contiguous(memory_format=torch.channels_last)
    folded, _ = fold_batchnorm(model, example=x)
    assert_same(model, folded, x, 1e-5)


def test_fold_batchnorm_inplace_changes_the_given_model():
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    ref = copy.deepcopy(model)
    out, _ = fold_batchnorm(model, input_size=(3, 8, 8), inplace=True)
    assert out is model and isinstance(model[1], nn.Identity)
    assert_same(ref, model, torch.randn(2, 3, 8, 8), 1e-5)


def test_fold_batchnorm_refuses_training_mode_and_reports_shared_convs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(OneByOneError, match=r"BatchNorm `1` is in training mode.*call model.eval\(\)"):
        fold_batchnorm(model, input_size=(3, 8, 8))

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x)

    shared = randomize_bn(Shared())
    out, report = fold_batchnorm(shared, input_size=(4, 5, 5))
    assert report.changed == [] and "`conv` is called at 2 places" in report.skipped[0][1]
    assert_same(shared, out, torch.randn(2, 4, 5, 5), 1e-6)


def test_analyze_and_rewrites_leave_each_layers_mode_as_it_was():
    """A frozen BatchNorm in a training model, a dropout left on in an eval model (Monte Carlo dropout):
    ``analyze`` and every rewrite's report read the model in eval mode and give each layer its own mode back
    (once the root's mode was set on every layer: the frozen BatchNorm trained again)."""
    frozen = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.2)).train()
    frozen[1].eval()
    mc = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.2)))
    mc[2].train()
    for model in (frozen, mc):
        modes = [m.training for m in model.modules()]
        analyze(model, input_size=(3, 8, 8))
        assert [m.training for m in model.modules()] == modes
    fold_batchnorm(mc, input_size=(3, 8, 8))
    assert [m.training for m in mc] == [False, False, True]


def test_merge_pointwise_through_batchnorm_and_its_bottleneck_rule():
    model = randomize_bn(
        nn.Sequential(
            nn.Conv2d(8, 16, 1),
            nn.BatchNorm2d(16),
            nn.Conv2d(16, 4, 1, stride=2),
            nn.ReLU(),
            nn.Conv2d(4, 16, 1),
            nn.Conv2d(16, 2, 1),
            nn.Conv2d(2, 16, 1),
        )
    )
    x = torch.randn(2, 8, 9, 9)
    merged, report = merge_pointwise(model, example=x)
    assert_same(model, merged, x, 1e-5)
    assert any("0 + 2: merged" in c for c in report.changed)
    assert any("a bottleneck" in why for _, why in report.skipped)  # (4 -> 2) + (2 -> 16) is kept
    convs = [m for m in merged.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and convs[0].stride == (2, 2)
    forced, report = merge_pointwise(model, force=True, example=x)
    assert_same(model, forced, x, 1e-5)
    assert len([m for m in forced.modules() if isinstance(m, nn.Conv2d)]) == 2


def test_merge_pointwise_linear_float64_and_nonlinearity_kept():
    model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 7), nn.Tanh(), nn.Linear(7, 2)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    merged, report = merge_pointwise(model, example=x, force=True)
    assert_same(model, merged, x, 1e-10)
    assert len([m for m in merged.modules() if isinstance(m, nn.Linear)]) == 2


def test_linear_to_conv1x1_and_back():
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))
    x = torch.randn(2, 5, 6)  # a Linear per point of (B, N, C)
    conv, report = linear_to_conv1x1(model, example=x)
    assert_same(model, conv, x, 1e-6)
    assert [type(m) for m in conv] == [Pointwise, nn.ReLU, Pointwise] and len(report.changed) == 2
    back, report = conv1x1_to_linear(conv, example=x)
    assert_same(model, back, x, 1e-6)
    assert [type(m) for m in back] == [nn.Linear, nn.ReLU, nn.Linear]


def test_linear_to_conv1x1_leaves_the_linears_a_transformer_layer_hands_to_its_own_kernels():
    """In eval mode nn.TransformerEncoderLayer passes its Linears' weights to torch's fused kernel, which takes
    2-d weights only, and nn.MultiheadAttention reads its out_proj's: those Linears are skipped, named; the
    Linear around the layer changes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), nn.Linear(16, 3)).eval()
    x = torch.randn(2, 5, 16)
    conv, report = linear_to_conv1x1(model, example=x)
    assert [n for n, _ in report.skipped] == ["0.self_attn.out_proj", "0.linear1", "0.linear2"]
    assert len(report.changed) == 1
    assert isinstance(conv[1], Pointwise) and type(conv[0].linear1) is nn.Linear
    assert_same(model, conv, x, 1e-6)


def test_conv1x1_to_linear_only_where_the_layout_allows():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 5, 1), nn.Flatten())
    x = torch.randn(2, 3, 6, 6)
    out, report = conv1x1_to_linear(model, example=x)
    assert_same(model, out, x, 1e-6)
    assert report.changed == ["3: Conv2d on a 1x1 map, then flatten -> Flatten + Linear"]
    assert report.skipped[0][0] == "0" and "nn.Linear acts on the last dim" in report.skipped[0][1]
    assert_same(model, out, torch.randn(2, 3, 9, 9), 1e-6)  # the pool keeps the map 1 x 1 at any size


def test_conv1x1_to_linear_on_a_map_one_pixel_only_at_the_example_refuses_larger_inputs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 5, 1), nn.Flatten())  # 3x3 in: a 1x1 map there
    out, report = conv1x1_to_linear(model, example=torch.randn(2, 3, 3, 3))
    assert report.changed == ["1: Conv2d on a 1x1 map, then flatten -> Flatten + Linear"]
    assert isinstance(out[1][1], nn.Linear)
    with pytest.raises(OneByOneError, match=r"replaced a 1x1 conv on a 1 x 1 map .* got \[2, 8, 3, 3\]"):
        out(torch.randn(2, 3, 5, 5))  # the conv gave 5 x 9 features here, which no Linear over 8 channels can
    scripted = torch.jit.script(out)  # as nn.Flatten was, the check is TorchScript and torch.fx
    assert torch.equal(scripted(torch.ones(1, 3, 3, 3)), out(torch.ones(1, 3, 3, 3)))
    assert torch.equal(torch.fx.symbolic_trace(out)(torch.ones(1, 3, 3, 3)), out(torch.ones(1, 3, 3, 3)))
    merged, report = merge_pointwise(out, example=torch.randn(2, 3, 3, 3))  # our own graph reads it too
    assert not any("could not trace" in why for _, why in report.skipped)


def test_rewrites_need_an_input_they_can_guess_or_are_given():
    class NoParams(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(OneByOneError, match="cannot guess an input for NoParams: pass example= or input_size="):
        fold_batchnorm(NoParams())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_linear_swaps_are_exact_in_both_precisions(dtype, tol):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 4)).to(dtype)
    x = torch.randn(3, 7, 6, dtype=dtype)
    conv, _ = linear_to_conv1x1(model, example=x)
    back, _ = conv1x1_to_linear(conv, example=x)
    assert_same(model, conv, x, tol)
    assert_same(model, back, x, tol)


class TracedPointwise(nn.Module):
    """Conv1d k=1 layers in a forward of its own, with an eval BatchNorm between two of them."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b, self.c = (
            nn.Conv1d(3, 16, 1),
            nn.BatchNorm1d(16),
            nn.Conv1d(16, 8, 1),
            nn.Conv1d(8, 5, 1),
        )

    def forward(self, x):
        return torch.tanh(self.c(self.b(self.bn(self.a(x)))))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_merge_pointwise_on_a_traced_conv1d_model(dtype, tol):
    model = randomize_bn(TracedPointwise()).to(dtype)
    x = torch.randn(2, 3, 30, dtype=dtype).contiguous()
    merged, report = merge_pointwise(model, example=x)
    assert_same(model, merged, x, tol)
    assert type(merged) is TracedPointwise and len(report.changed) == 3  # bn folded, then a+b, then (a+b)+c
    assert sum(isinstance(m, nn.Conv1d) for m in merged.modules()) == 1


def test_reports_count_macs_per_sample_as_analyze_does():
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)))
    one = analyze(model, (3, 10, 10))
    for batch in (1, 2, 5):
        _, report = fold_batchnorm(model, example=torch.randn(batch, 3, 10, 10))
        assert report.macs_before == report.macs_after == one.macs  # not the probe batch's


def test_fold_batchnorm_without_fx_reads_the_graph_from_an_eager_run():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Block(nn.Module):  # control flow on a tensor: fx cannot trace it
        def __init__(self):
            super().__init__()
            self.inner, self.shared, self.bn2 = Inner(), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

        def forward(self, x):
            if x.sum() > -1e9:  # (whether inner runs: not what follows what inside it)
                x = self.inner(x)
            y = self.shared(x)
            return self.bn2(y) + y  # the conv's output has a second use: bn2 must not fold into it

    model = randomize_bn(Block())
    x = torch.randn(2, 3, 9, 9)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == ["inner.conv + inner.bn: Conv2d + BatchNorm2d folded"]
    assert [name for name, _ in report.skipped] == ["bn2"]
    assert_same(model, folded, x, 1e-5)
    merged, report = merge_pointwise(model, example=x)
    assert ("(the whole model)" in dict(report.skipped)) and isinstance(merged.inner.bn, nn.Identity)


def test_a_rewrite_whose_target_is_the_model_itself_returns_the_replacement():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 5, 6)
    pw, report = linear_to_conv1x1(lin, example=x)
    assert isinstance(pw, Pointwise) and report.params_after == report.params_before == 28
    back, _ = conv1x1_to_linear(pw, example=x)
    assert isinstance(back, nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(back(x), lin(x))


def test_output_difference_names_who_changed_the_shapes_and_counts_empty_outputs_as_equal():
    from onebyone.torch.rewrite_report import output_difference

    want = [torch.tensor([[1.0, -3.0]]), torch.empty(0, 4)]
    assert output_difference(want, [torch.tensor([[1.5, -3.0]]), torch.empty(0, 4)], "x") == (0.5, 3.0)
    with pytest.raises(OneByOneError, match=r"onnxruntime changed the output shapes: \[\(1, 2\), \(0, 4\)\] -> "
                                            r"\[\(2, 1\), \(0, 4\)\]"):
        output_difference(want, [torch.zeros(2, 1), torch.empty(0, 4)], "onnxruntime")
    with pytest.raises(OneByOneError, match="the rewrite changed the output shapes"):
        output_difference(want, want[:1], "the rewrite")


def test_output_difference_counts_nan_and_inf_as_values_never_as_no_difference():
    """Outputs holding -inf (log-probabilities of a ReLU) or NaN: a form that moves every finite value by 100
    reads 100, not NaN (which every ``diff > tol`` check let through); the same NaN and inf in both count as
    equal, a finite value where the model gives inf (or NaN against inf) as an infinite difference; the scale
    is the largest finite value."""
    from onebyone.torch.rewrite_report import output_difference

    inf, nan = float("inf"), float("nan")
    want = [torch.tensor([1.0, -inf, nan, -2.0])]
    assert output_difference(want, [torch.tensor([101.0, -inf, nan, 98.0])], "x") == (100.0, 2.0)
    assert output_difference(want, [want[0].half()], "x") == (0.0, 2.0)
    for other in ([1.0, 5.0, nan, -2.0], [1.0, inf, nan, -2.0], [1.0, -inf, -inf, -2.0], [1.0, -inf, 0.0, -2.0]):
        assert output_difference(want, [torch.tensor(other)], "x")[0] == inf
    assert output_difference([torch.tensor([True, False])], [torch.tensor([True, True])], "x") == (1.0, 1.0)


def test_each_report_holds_what_its_rewrite_has_and_nothing_else():
    """Every rewrite reports what all share; factorize, convolutionalize and optimize add their own typed rows."""
    from dataclasses import fields

    from onebyone.torch import (
        ConvolutionalizeReport,
        FactorizeReport,
        OptimizeReport,
        RewriteReport,
        factorize,
        optimize,
    )

    shared = {f.name for f in fields(RewriteReport)}
    assert not shared & {"layers", "precision", "passes", "output_relative_error"}
    model, x = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8).eval(), nn.ReLU()).eval(), torch.randn(1, 3, 5, 5)
    assert type(fold_batchnorm(model, example=x)[1]) is RewriteReport
    f = factorize(model, example=x, rank=2)[1]
    assert isinstance(f, FactorizeReport) and f.layers[0]["rank"] == 2 and f.output_relative_error is not None
    o = optimize(model, x, passes=["fold"])[1]
    assert isinstance(o, OptimizeReport) and [p["pass"] for p in o.passes] == ["fold", "check"]
    assert {f.name for f in fields(ConvolutionalizeReport)} - shared == {"layers"}


class Cached(nn.Module):
    """Ties a weight, keeps a cache dict its forward fills (as timm's attention biases do) and a hook."""

    def __init__(self):
        super().__init__()
        self.a, self.rnn = nn.Linear(4, 4), nn.GRU(4, 4, batch_first=True)  # GRU: a __setstate__ of its own
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.cache, self.seen = {}, []
        self.by_layer, self.tags = {self.a: "first"}, {"x"}  # a module as a key; a set read under two names
        self.alias = self.tags
        self.register_forward_hook(lambda m, a, y: m.seen.append(y.shape))

    def forward(self, x):
        self.cache.setdefault(x.dtype, self.a.bias.detach() * 2)
        return self.b(self.a(x)) + self.rnn(x[:, None])[0][:, 0] + self.cache[x.dtype]


@pytest.mark.parametrize("dtype", [None, torch.float64])
def test_a_rewrite_copy_is_a_deep_copy_that_leaves_the_model_alone(dtype):
    from onebyone.torch.tensors import copy_model

    model, x = Cached().eval(), torch.randn(3, 4)
    want = model(x)
    fx_model = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4)))  # a class with __deepcopy__
    for original, new in ((model, copy_model(model, dtype)), (fx_model, copy_model(fx_model, dtype))):
        storage = lambda m: {t.data_ptr() for t in m.state_dict().values()}  # noqa: E731
        assert not storage(new) & storage(original)
        assert all(p.dtype == (dtype or torch.float32) for p in new.parameters())
    new = copy_model(model, dtype)
    assert new.b.weight is new.a.weight and new.rnn is not model.rnn and new.cache is not model.cache
    assert list(new.by_layer) == [new.a] and new.alias is new.tags is not model.tags
    y = new(x.to(dtype or torch.float32))
    torch.testing.assert_close(y.float(), want, rtol=1e-6, atol=1e-6)
    assert len(new.seen) == 2 and len(model.seen) == 1  # the hook runs on the copy's own list
    assert list(model.cache) == [torch.float32]  # the copy's cache is its own
    with torch.no_grad():
        new.a.weight.add_(1.0)
    torch.testing.assert_close(model(x), want)


class Branching(nn.Module):
    """Whether the norm and activation follow the conv depends on the input's values."""

    def __init__(self, norm: bool = True):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 4, 3), nn.ReLU()
        self.bn = nn.BatchNorm2d(4) if norm else nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        if x.amax() > 10:
            return y
        return self.act(self.bn(y))


def test_no_fold_or_fusion_where_python_may_branch_on_values_between_the_layers():
    """A forward that reads a tensor's values between a conv and the norm or activation after it may take
    another path for another input of the same shape: the fold and the ConvAct fusion are skipped there,
    named (the check on the example alone passed, and an input with a 20 in it came out 1.3 off)."""
    from onebyone.torch import optimize

    model = randomize_bn(Branching())
    x, far = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    far[0, 0, 0, 0] = 20.0
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == [] and "`(the model)`'s forward reads a tensor's values" in report.skipped[0][1]
    plain = Branching(norm=False).eval()
    fused, _ = optimize(plain, x, passes=["conv_acts", "check"])
    assert not any(m.act != "identity" for m in fused.modules() if type(m).__name__ == "ConvAct")
    with torch.no_grad():
        assert torch.equal(folded(far), model(far))
        torch.testing.assert_close(fused(far), plain(far))  # the conv's output alone: no ReLU fused into it


def test_conv1x1_to_linear_on_a_training_model_keeps_its_statistics_and_checks_in_eval_mode():
    """The trace that reads shapes runs in eval mode: a BatchNorm in training mode once had its running
    statistics moved in the copy, and the check then reported a change the rewrite did not make."""
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                                       nn.Conv2d(4, 5, 1), nn.Flatten())).train()
    x = torch.randn(2, 3, 6, 6)
    linear, report = conv1x1_to_linear(model, example=x)
    assert report.changed and torch.equal(linear[1].running_mean, model[1].running_mean)
    assert_same(model.eval(), linear.eval(), x, 1e-6)


class ReturnsBoth(nn.Module):
    """The conv's output is returned beside the norm's: the caller reads it too."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y), y


def test_a_tensor_the_model_returns_counts_as_read_and_its_fold_is_skipped_named():
    """Folding the norm into a conv whose output the model also returns would change that output: the fold
    is skipped, named, and the rest of the rewrite goes on (once the whole rewrite failed its check)."""
    model = randomize_bn(ReturnsBoth())
    x = torch.randn(2, 3, 5, 5)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == [] and [n for n, _ in report.skipped] == ["bn"]
    merged, _ = merge_pointwise(model, example=x)
    with torch.no_grad():
        for new in (folded, merged):
            for a, b in zip(new(x), model(x)):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("a,b,x,merged", [
    (lambda: Pointwise(8, 4, channel_dim=-1), lambda: nn.Linear(4, 8), (2, 5, 8), True),
    (lambda: nn.Conv2d(8, 8, 1, stride=2), lambda: Pointwise(8, 8), (2, 8, 8, 8), True),
    (lambda: Pointwise(8, 8, stride=2), lambda: nn.Conv2d(8, 8, 1), (2, 8, 8, 8), True),
    (lambda: Pointwise(8, 8), lambda: nn.Conv2d(8, 8, 1, stride=2), (2, 8, 8, 8), True),
    (lambda: nn.Conv2d(8, 8, 1, stride=(2, 1)), lambda: Pointwise(8, 8, stride=2), (2, 8, 8, 8), True),
    (lambda: Pointwise(8, 8), lambda: nn.Conv2d(8, 8, 1, stride=(2, 1)), (2, 8, 8, 8), False),
])
def test_merge_pointwise_joins_a_pointwise_with_a_conv_or_a_linear_their_strides_multiplied(a, b, x, merged):
    """A Pointwise beside a torch conv or Linear (strides as ints or tuples, or none): merged, strides
    multiplied axis by axis, or skipped, named, where the first layer's kind cannot hold them (a Pointwise
    strides every axis alike); once each of these raised inside the rewrite."""
    torch.manual_seed(0)
    model, x = nn.Sequential(a(), b()).eval(), torch.randn(x)
    out, report = merge_pointwise(model, example=x, force=True)
    assert len(report.changed) == merged and len(report.skipped) == (not merged)
    assert merged or "their strides together" in report.skipped[0][1]
    assert_same(model, out, x, 1e-5)


def test_the_affine_folds_refuse_a_bias_or_affine_of_the_wrong_length_and_take_lists():
    """A bias of one value for four output channels was broadcast to all of them; lists raised inside."""
    from onebyone.algebra import fold_affine_after, fold_affine_before

    w = np.ones((4, 3))
    with pytest.raises(OneByOneError, match=r"b must have shape \(4,\) to match 4 output channels, got \(1,\)"):
        fold_affine_after(w, np.ones(1), np.ones(4), np.zeros(4))
    with pytest.raises(OneByOneError, match=r"one shift per channel \(3\), got shape \(2,\)"):
        fold_affine_before(w, None, np.ones(3), np.zeros(2))
    new_w, new_b = fold_affine_after(w, None, [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0])
    assert new_w[3].tolist() == [4.0] * 3 and new_b.tolist() == [0.0, 0.0, 0.0, 1.0]


def test_a_namedtuple_example_is_cast_and_drawn_as_its_own_type():
    """A namedtuple of positional inputs: cast to float64 for the check and drawn at random like it (its
    constructor takes fields, not one iterable: both raised a TypeError)."""
    from collections import namedtuple

    from onebyone.torch.tensors import cast, random_like

    Pair = namedtuple("Pair", "a b")
    example = Pair(torch.ones(2, 3), torch.zeros(2, 3))
    doubled, drawn = cast(example, torch.float64), random_like(example)
    assert type(doubled) is type(drawn) is Pair and doubled.b.dtype == torch.float64
    assert drawn.a.shape == (2, 3) and drawn.a.std() > 0


class DoubledLinear(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class PlainLinear(nn.Linear):  # a subclass that computes what nn.Linear does
    pass


def test_linear_to_conv1x1_names_a_linear_subclass_with_its_own_forward_and_converts_the_rest():
    """A Linear subclass was passed over without a word (timm's classifier Linear); one with a forward of its
    own is now named, one without is converted."""
    model = nn.Sequential(DoubledLinear(6, 6), nn.ReLU(), PlainLinear(6, 3))
    x = torch.randn(2, 5, 6)
    conv, report = linear_to_conv1x1(model, example=x)
    assert report.skipped == [("0", f"{__name__}.DoubledLinear has a forward of its own")]
    assert type(conv[0]) is DoubledLinear and isinstance(conv[2], Pointwise)
    assert_same(model, conv, x, 1e-6)


def _cancelling():
    """1000 x - 999.99 x, then a BatchNorm: float32 rounds each product by more than the tolerance of the sum."""
    m = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 1, 1, bias=False), nn.BatchNorm2d(1)).eval()
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[1].weight.copy_(torch.tensor([1000.0, -999.99]).view(1, 2, 1, 1))
        m[2].running_var.fill_(3.0), m[2].running_mean.fill_(0.1), m[2].weight.fill_(1.7)
    return m, torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 5


def test_a_fold_within_the_models_own_float32_rounding_is_exact_and_a_wrong_one_still_raises():
    from onebyone.torch.rewrite_report import RewriteReport, finish

    model, x = _cancelling()
    folded, report = fold_batchnorm(model, example=x)  # 1.5e-5 off in float64: past 1e-6, within float32's own
    assert report.changed and "the original model's own error in float32 (against float64)" in report.notes[0]
    exact = copy.deepcopy(model).double()(x.double())
    with torch.no_grad():  # the folded float32 model is as close to the exact outputs as the float32 original
        assert (folded(x).double() - exact).abs().max() <= 2 * (model(x).double() - exact).abs().max()
    for var in (4.0, 3.01):  # folds 13% and 0.17% off: the allowance stops at 1e-4 of the scale
        wrong = copy.deepcopy(model)
        with torch.no_grad():
            wrong[2].running_var.fill_(var)
        with pytest.raises(OneByOneError, match="fold_batchnorm changed the outputs by"):
            finish(RewriteReport("fold_batchnorm", changed=["2"]), model, wrong, x, 1e-6, False)


def test_no_float32_allowance_where_float32_overflows():
    """A softmax written out: exp(150) is inf in float32 (inf / inf: NaN), finite in float64. The model's own
    float32 error is then infinite, which allows nothing: a wrong rewrite of its other output still raises."""
    from onebyone.torch.rewrite_report import RewriteReport, finish

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(4, 3), nn.BatchNorm1d(3)

        def forward(self, x):
            e = torch.exp(100 * x)
            return e / e.sum(1, keepdim=True), self.bn(self.fc(x))

    model, x = randomize_bn(TwoHeads()), torch.rand(2, 4) + 1
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.bn.running_mean.add_(1.0)
    with pytest.raises(OneByOneError, match="fold_batchnorm changed the outputs by"):
        finish(RewriteReport("fold_batchnorm", changed=["bn"]), model, wrong, x, 1e-6, False)


def test_a_norm_left_unfolded_is_named_with_what_it_reads():
    class Pieces(nn.Module):  # timm's LambdaLayer: q, k, v = split(qkv(x)); norm_q(q)
        def __init__(self):
            super().__init__()
            self.bn_in, self.qkv, self.norm_q = nn.BatchNorm2d(3), nn.Conv2d(3, 12, 1), nn.BatchNorm2d(4)
            self.register_buffer("table", torch.randn(1, 4, 2, 2))
            self.bn_table, self.gru, self.bn_seq = nn.BatchNorm2d(4), nn.GRU(4, 4, batch_first=True), nn.BatchNorm1d(4)

        def forward(self, x):
            q, k, v = torch.split(self.qkv(self.bn_in(x).relu()), [4, 4, 4], dim=1)
            seq, _ = self.gru(q.flatten(2).transpose(1, 2))  # (B, 4, 4): a leaf's tuple output
            return (self.norm_q(q).flatten(1) + (k * v).flatten(1) + self.bn_table(self.table).mean()
                    + self.bn_seq(seq).flatten(1))

    model = Pieces().eval()
    _, report = fold_batchnorm(randomize_bn(model), example=torch.randn(2, 3, 2, 2))
    why = dict(report.skipped)
    assert why["bn_in"].startswith("reads the model's input and is read by `relu`")
    assert why["norm_q"].startswith("reads a piece of `split`'s output and is read by `flatten`")
    assert why["bn_table"].startswith("reads a tensor no layer made (a parameter or a buffer, say)")
    assert why["bn_seq"].startswith("reads a piece of `gru`'s output")


class ReadsWeights(nn.Module):
    """timm's EVA attention: the parent runs F.linear on its child's weight (with a bias of its own) rather than
    calling it; likewise a 1x1 conv's weight read by F.conv2d, that conv followed by a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.qkv, self.q_bias = nn.Linear(4, 12, bias=False), nn.Parameter(torch.randn(12))
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Linear(12, 5)

    def forward(self, x):  # (B, 3, H, W) -> (B, H*W, 5)
        y = (self.bn(self.conv(x)) + torch.nn.functional.conv2d(x, self.conv.weight)).flatten(2).transpose(1, 2)
        return self.head(torch.nn.functional.linear(y, self.qkv.weight, self.q_bias))


@pytest.mark.parametrize("rewrite", ["linear_to_conv1x1", "conv1x1_to_linear", "factorize", "fold_batchnorm"])
def test_a_layer_whose_weights_a_forward_reads_itself_is_left_and_named(rewrite):
    from onebyone.torch import factorize

    model, x = randomize_bn(ReadsWeights().eval()), torch.randn(2, 3, 1, 1)
    call = {"factorize": lambda: factorize(model, rank=2, example=x)}.get(
        rewrite, lambda: globals()[rewrite](model, example=x))
    out, report = call()
    why = dict(report.skipped)
    site = {"linear_to_conv1x1": "qkv", "factorize": "qkv", "conv1x1_to_linear": "conv", "fold_batchnorm": "bn"}
    reader = "`conv2d` in `the model`'s forward" if site[rewrite] != "qkv" else "`linear` in `the model`'s forward"
    assert reader in why[site[rewrite]] and "not through a call of the layer" in why[site[rewrite]]
    if rewrite == "factorize":  # rank 2 of the head: not exact; the layer read by its parent is untouched
        assert type(out.qkv) is nn.Linear and torch.equal(out.qkv.weight, model.qkv.weight)
    else:
        assert_same(model, out, x, 1e-5)


@pytest.mark.parametrize("conv,norm,shape", [
    (lambda: nn.ConvTranspose2d(8, 6, 2, stride=2), nn.BatchNorm2d, (2, 8, 4, 4)),  # a decoder's upsampling
    (lambda: nn.ConvTranspose2d(8, 6, 3, stride=2, groups=2, bias=False), nn.BatchNorm2d, (2, 8, 4, 4)),
    (lambda: nn.ConvTranspose1d(4, 6, 3, groups=2), nn.BatchNorm1d, (2, 4, 7)),
    (lambda: nn.ConvTranspose3d(4, 2, 2, stride=2), nn.BatchNorm3d, (1, 4, 2, 3, 3))])
def test_a_norm_after_a_transposed_conv_folds_exactly(conv, norm, shape):
    model = randomize_bn(nn.Sequential(conv(), norm(conv().out_channels), nn.ReLU())).eval()
    x = torch.randn(shape)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == [f"0 + 1: {type(model[0]).__name__} + {type(model[1]).__name__} folded"]
    assert isinstance(folded[1], nn.Identity) and report.skipped == []
    assert_same(model.double(), folded.double(), x.double(), 1e-6)  # (the folded weights rounded to float32)


class MakesFloat32(nn.Module):
    """Builds a float32 tensor of its own (Hugging Face's FastSpeech2Conformer does): it cannot run in float64."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.side = nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.side(torch.ones(x.shape[0], 2, *x.shape[2:]))


def test_a_model_that_cannot_run_in_float64_is_checked_in_its_own_dtype_and_says_so():
    from onebyone.torch.rewrite_report import FLOAT32_TOL, RewriteReport, finish

    model, x = randomize_bn(MakesFloat32()), torch.randn(2, 3, 4, 4)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == ["conv + bn: Conv2d + BatchNorm2d folded"]
    assert "checked in float32 (tolerance at least 0.0001): the model does not run in float64" in report.notes[-1]
    assert_same(model, folded, x, FLOAT32_TOL)
    from onebyone.torch import factorize

    pair, report = factorize(model, rank=1, example=x)  # each layer's error measured in float32 there
    assert [r["name"] for r in report.layers] == ["conv", "side"] and report.output_relative_error > 0

    class FailsIn64(MakesFloat32):  # a rewritten model failing where the original runs: named, not raw
        def forward(self, x):
            return self.bn(self.conv(x)).float() + self.side(x[:, :2].float())

    with pytest.raises(OneByOneError, match="the rewritten model fails in float64 where the original runs"):
        finish(RewriteReport("fold_batchnorm", changed=["x"]), randomize_bn(nn.Sequential(nn.Conv2d(3, 2, 1))),
               FailsIn64(), x, 1e-6, False)


def test_an_original_that_fails_on_the_probe_is_not_blamed_on_the_rewrite():
    class Positive(nn.Module):  # refuses negative inputs: the seeded probe (normal values) has some
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            if bool((x < 0).any()):
                raise ValueError("inputs must be >= 0")
            return self.fc(x)

    from onebyone.torch.rewrite_report import RewriteReport, finish

    model = Positive().eval()
    with pytest.raises(ValueError, match="inputs must be >= 0") as raised:  # the model's own error, as it is
        finish(RewriteReport("fold_batchnorm", changed=["x"]), model, copy.deepcopy(model), torch.rand(2, 3), 1e-6,
               False)
    assert not isinstance(raised.value, OneByOneError)  # (not "the rewritten model fails ... where the original runs")


def test_reading_a_weights_dtype_or_its_own_parametrization_does_not_leave_a_layer():
    """A forward that takes only the weight's dtype (x.type_as(w), x.to(w)), a parametrized Linear computing
    its own weight (torch.nn.utils.parametrizations.weight_norm), and a norm whose fold into the conv before
    it is exact though the layer after it has its weight read elsewhere: each rewritten as before."""

    class DtypeOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.conv, self.bn, self.head = nn.Linear(4, 4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), \
                nn.Linear(4, 3)

        def forward(self, x):  # (B, 4) -> (B, 3)
            h = self.fc(x.type_as(self.fc.weight).to(self.fc.weight))
            h = self.bn(self.conv(h[:, :, None, None])).flatten(1)
            return self.head(h) + self.head.weight.sum()  # the head's weight read: not the conv's fold

    model, x = randomize_bn(DtypeOnly()), torch.randn(2, 4)
    out, report = linear_to_conv1x1(model, example=x)
    assert "fc" not in dict(report.skipped) and isinstance(out.fc, Pointwise)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == ["conv + bn: Conv2d + BatchNorm2d folded"]
    normed = nn.Sequential(torch.nn.utils.parametrizations.weight_norm(nn.Linear(4, 3)))
    out, report = linear_to_conv1x1(normed, example=x)
    assert report.skipped == [] and isinstance(out[0], Pointwise)
    assert_same(normed, out, x, 1e-5)


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")  # (what a user of the old API sees)
@pytest.mark.parametrize("hook", ["weight_norm", "spectral_norm"])
def test_a_layer_whose_weight_an_old_style_norm_hook_recomputes_is_left_and_named_with_the_fix(hook):
    """torch.nn.utils.weight_norm / spectral_norm recompute a conv's weight in a pre-hook at each call: no
    norm is folded into it, and the reason names the hook and the call that removes it (not a reader in the
    model's forward); removed, the fold goes through."""
    torch.manual_seed(0)
    conv = getattr(nn.utils, hook)(nn.Conv2d(3, 8, 1))
    model = randomize_bn(nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU()).eval())
    x = torch.randn(2, 3, 5, 5)
    out, report = fold_batchnorm(model, example=x)
    why = dict(report.skipped)["1"]
    assert f"recomputed before each call by torch.nn.utils.{hook}'s hook" in why
    assert f"torch.nn.utils.remove_{hook}(layer)" in why and "forward" not in why
    assert_same(model, out, x, 1e-6)
    getattr(nn.utils, f"remove_{hook}")(model[0])
    out, report = fold_batchnorm(model, example=x)
    assert not report.skipped and not any(isinstance(m, nn.BatchNorm2d) for m in out.modules())
    assert_same(model, out, x, 1e-5)


class SizeBranch(nn.Module):
    """Large maps skip the norm: a forward whose path depends on its input's size (fx refuses it, so the
    folds read one eager run, at the example's size)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y if x.shape[-1] > 10 else self.bn(y))


def test_a_norm_a_forward_skips_at_another_input_size_is_not_folded():
    """Folded from a run at 8 x 8, the BatchNorm would be baked into the conv that maps past 10 reach without
    it: the folds compare the model's calls on an input of another size, and skip this one, named."""
    from onebyone.torch import optimize, reparameterize

    model, x = randomize_bn(SizeBranch().eval()), torch.randn(2, 3, 8, 8)
    for rewrite in (fold_batchnorm, reparameterize):
        out, report = rewrite(model, example=x)
        assert "another path on an input of shape (1, 3, 13, 13)" in dict(report.skipped)["bn"], report
        assert_same(model, out, torch.randn(2, 3, 32, 32), 1e-6)
    opt, _ = optimize(model, x, passes=["fold", "conv_acts", "check"])
    assert_same(model, opt, torch.randn(2, 3, 32, 32), 1e-5)


class OddPad(nn.Module):
    """Odd maps are padded after the norm: what reads the norm differs by size, what feeds it does not."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.head(nn.functional.pad(y, (0, 1, 0, 1)) if x.shape[-1] % 2 else y)


def test_a_path_that_differs_after_the_norm_alone_still_folds_it_into_the_conv_before():
    model, x = randomize_bn(OddPad().eval()), torch.randn(2, 3, 8, 8)
    out, report = fold_batchnorm(model, example=x)
    assert report.changed == ["conv + bn: Conv2d + BatchNorm2d folded"]
    assert_same(model, out, torch.randn(2, 3, 9, 9), 1e-6)
    shared = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU()).eval())
    shared.append(shared[1])  # the norm called at two places: that is the reason, no other
    shared.insert(3, nn.Conv2d(8, 8, 1))
    out, report = fold_batchnorm(shared, example=x)
    assert "another path" not in str(report.skipped) and "called at 2 places" in str(report.skipped)


@pytest.mark.parametrize("rewrite", ["fold_batchnorm", "merge_pointwise", "linear_to_conv1x1", "factorize"])
def test_a_frozen_layer_stays_frozen_through_a_rewrite(rewrite):
    """Fine-tuning a head on a frozen backbone after a rewrite: the new layers wanted a gradient (a folded bias,
    a merged or converted layer, factorize's pair came back trainable), so the backbone trained unasked. Each
    new parameter now wants one as the parameters it stands for did."""
    import onebyone.torch as obt

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.Linear(8, 8), nn.ReLU(),
                          nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1), model[1].running_var.uniform_(0.5, 2)
    for p in model[:4].parameters():
        p.requires_grad_(False)
    kw = {"rank": 2} if rewrite == "factorize" else {}
    new, report = getattr(obt, rewrite)(model, example=torch.randn(4, 8), **kw)
    assert report.changed
    flags = {n.split(".")[0]: p.requires_grad for n, p in new.named_parameters()}
    assert flags == {k: k == "5" for k in flags} and "5" in flags and "0" in flags  # only the head trains
    assert all(p.requires_grad == (n.startswith("5.")) for n, p in model.named_parameters())  # given: untouched


def test_a_rewrite_that_unties_a_shared_weight_says_so():
    """A weight shared by two layers (a tied embedding and head) comes out of linear_to_conv1x1 as two copies:
    outputs exact, parameters counted twice, and the tie gone for training: said in the report's notes."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Linear(8, 8), nn.Linear(8, 8, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, x):
            return self.head(torch.relu(self.emb(x)))

    new, report = linear_to_conv1x1(Tied().eval(), example=torch.randn(2, 8))
    assert new.head.weight is not new.emb.weight and report.params_after > report.params_before
    assert "emb.weight and head.weight were one shared parameter; the rewritten model holds each as its own copy" in (
        " ".join(report.notes))
    _, report = fold_batchnorm(Tied().eval(), example=torch.randn(2, 8))  # nothing rewritten: nothing said
    assert not any("shared parameter" in n for n in report.notes)


def test_a_norm_over_a_conv_output_reshaped_to_rows_is_skipped_and_the_others_still_fold():
    """``bn1d(conv(x).reshape(-1, C))`` where the map's width happens to equal C looked like a Linear over
    tokens (the last axis kept): the fold was tried, the check refused the whole rewrite, and no other norm
    was folded (a model that runs at one size: no other size to tell the axes apart). That norm is now
    skipped with a reason and the rest fold."""
    class Rows(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm1d(4)
            self.c2, self.bn2, self.head = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Linear(64, 2)

        def forward(self, x):
            y = self.c(x)
            y = self.bn(y.reshape(-1, 4)).reshape(y.shape)
            return self.head(self.bn2(self.c2(y)).flatten(1))

    torch.manual_seed(0)
    model = Rows().eval()
    with torch.no_grad():
        for bn in (model.bn, model.bn2):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 4, 4)
    new, report = fold_batchnorm(model, example=x)
    assert report.changed == ["c2 + bn2: Conv2d + BatchNorm2d folded"]
    assert report.skipped == [("bn", "it reads `c`'s output reshaped to (32, 4): the axis it normalizes is not its "
                                     "channels")]
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-5)


def test_conv1x1_to_linear_takes_a_view_that_reads_the_batch_and_gives_each_skip_its_own_reason():
    """``y.view(y.shape[0], -1)`` after a 1x1 conv on a 1x1 map is a flatten (reading the shape is no second
    use): converted, exact. A strided channels-last Pointwise and an unflattened 1x1 map are skipped for
    what they are, not as "channels on dim 1"."""
    class Viewed(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c(x)
            return y.view(y.shape[0], -1)

    model, x = Viewed().eval(), torch.randn(2, 8, 1, 1)
    new, report = conv1x1_to_linear(model, example=x)
    assert report.changed == ["c: Conv2d on a 1x1 map, then flatten -> Flatten + Linear"]
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-6)
    strided = nn.Sequential(Pointwise(8, 4, channel_dim=-1, stride=2))
    _, report = conv1x1_to_linear(strided, example=torch.randn(2, 5, 8))
    assert report.skipped == [("0", "stride 2: nn.Linear has none")]
    _, report = conv1x1_to_linear(nn.Sequential(nn.Conv2d(8, 4, 1)), example=x)
    assert report.skipped[0][1].startswith("on a 1x1 map, but not then flattened alone")

    class Sized(nn.Module):  # reads sizes past the batch: (B, O, 1, 1) is still wanted there, skipped
        def __init__(self):
            super().__init__()
            self.c, self.d = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.c(x)
            return y.reshape(y.size(0), y.size(1) * y.size(2) * y.size(3)) + self.d(x).flatten(1)

    model = Sized().eval()
    new, report = conv1x1_to_linear(model, example=x)
    assert [n for n, _ in report.skipped] == ["c"] and report.changed[0].startswith("d: Conv2d on a 1x1 map")
    with torch.no_grad():
        assert torch.allclose(new(x), model(x), atol=1e-6)


def test_a_norm_called_at_two_places_is_one_skip():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.c(self.bn(x)))

    _, report = fold_batchnorm(Twice().eval(), example=torch.randn(2, 3, 4, 4))
    assert report.skipped == [("bn", "the BatchNorm itself is called at 2 places")]


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 8, 2, stride=2), nn.Conv2d(4, 8, 3, dilation=2, groups=2),
                                  nn.Conv1d(4, 8, 3)])
def test_a_norm_before_an_unpadded_conv_folds_into_it(conv):
    """timm's inception_next downsamples with BN -> Conv2d(k=2, stride=2): skipped as if the conv's zero padding
    would see the norm's shift, though it has none. Every window of an unpadded conv lies inside its input."""
    bn = nn.BatchNorm2d(4) if isinstance(conv, nn.Conv2d) else nn.BatchNorm1d(4)
    model = randomize_bn(nn.Sequential(bn, conv, nn.ReLU())).eval()
    x = torch.randn(2, 4, 9, 9) if isinstance(conv, nn.Conv2d) else torch.randn(2, 4, 11)
    folded, report = fold_batchnorm(model, example=x)
    assert report.changed == [f"0 + 1: {type(bn).__name__} folded into the {type(conv).__name__} after it"]
    assert_same(model, folded, torch.randn(3, *x.shape[1:]), 1e-5)
    padded = randomize_bn(nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 8, 3, padding=1))).eval()
    _, report = fold_batchnorm(padded, example=torch.randn(2, 4, 9, 9))
    assert not report.changed and "a norm before a padded conv does not fold exactly" in report.skipped[0][1]


def test_a_norm_after_a_conv_with_a_forward_of_its_own_says_so():
    """timm's Conv2dSame (it pads by the input's size in its forward): the norm after it was skipped as if it
    followed no conv."""
    class Padded(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (0, 1, 0, 1)))

    model = randomize_bn(nn.Sequential(Padded(3, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU())).eval()
    _, report = fold_batchnorm(model, example=torch.randn(2, 3, 9, 9))
    assert report.skipped == [("1", "`0` (Padded) computes its own forward (it may pad, or reshape its weight, on "
                                    "each call): its weights are not known to fold exactly")]
