"""optimize() as a driver over named passes: each pass on its own, a subset on request, and never a slower
model than the one given without a warning."""
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch import ConvAct, FusedPointwiseChain, Pointwise
from onebyone.torch.fast import ChannelsLast, MaxPool, optimize
from onebyone.torch.fast import passes as O


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
    with pytest.raises(OneByOneError, match=r"unknown pass\(es\) \['fuse'\]: optimize's passes are \['fold'"):
        optimize(net(), X, passes=["fuse"])
    with pytest.raises(OneByOneError, match="passes must be a list of pass names"):
        optimize(net(), X, passes="chains")
    _, report = optimize(net(), X, passes=[])
    assert [p["pass"] for p in report.passes] == ["check"]  # the check always runs


def test_optimize_never_returns_a_slower_model_without_a_warning(monkeypatch):
    def given_is_faster(models, x, rounds=7):  # what a slow rewrite would measure
        return {k: (1e-3 if k == "given" else 2e-3) for k in models}

    monkeypatch.setattr(O, "time_models", given_is_faster)
    model = net()
    with pytest.warns(UserWarning, match=r"ran slower on the example \(2 against 1 ms a call\): the model given"):
        opt, report = optimize(model, X, channels_last=False)
    assert opt is not model and kinds(opt) == kinds(model) and report.layers == []
    assert any("the model given is returned unchanged" in n for n in report.notes)
    for p, q in zip(opt.parameters(), model.parameters()):
        assert torch.equal(p, q) and p is not q


def test_optimize_keeps_its_rewrite_when_it_is_faster(monkeypatch):
    monkeypatch.setattr(O, "time_models", lambda models, x, rounds=7: {k: (1e-3 if k == "given" else 0.5e-3)
                                                                       for k in models})
    opt, report = optimize(net(), X, channels_last=False)
    assert "ConvAct" in kinds(opt)
    assert any(n.startswith("on the example: 0.5 ms a call against 1 for the model given") for n in report.notes)
