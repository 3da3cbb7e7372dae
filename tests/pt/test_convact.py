"""ConvAct: a conv and its activation as one oneDNN call with packed weights, the same numbers as F.conv2d."""
import copy
import pickle

import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch import ConvAct, Pointwise, optimize
from onebyone.torch.collect import analyze
from onebyone.torch.fast import convact

from .cpus import REWRITES

ACTS = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "gelu": nn.GELU(), "identity": nn.Identity()}
CONVS = [  # (conv, input channels, input size)
    (lambda: nn.Conv2d(6, 12, 3, padding=1), 6, 11),
    (lambda: nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), 8, 13),  # depthwise, strided
    (lambda: nn.Conv2d(12, 6, 5, padding="same", dilation=2, groups=3), 12, 9),
    (lambda: nn.Conv2d(4, 10, (1, 3), stride=(2, 1), padding="valid"), 4, 10),
    (lambda: Pointwise(16, 24), 16, 7),
    (lambda: Pointwise(16, 8, stride=2, bias=False), 16, 7),
]


@pytest.mark.parametrize("make,cin,size", CONVS)
@pytest.mark.parametrize("act", list(ACTS))
def test_convact_equals_conv_then_activation(make, cin, size, act, cpu):
    torch.manual_seed(0)
    conv = make().eval()
    fused = ConvAct(conv, act).eval()
    x = torch.randn(3, cin, size, size)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        with torch.no_grad():
            want = ACTS[act](conv(xl))
            for kernel in convact.KERNELS if fused.timed else ["conv"]:
                fused.kernels[((3, cin, size, size), "float32")] = kernel
                for _ in range(2):  # the first call packs, the second reuses
                    got = fused(xl)
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_convact_repacks_after_a_weight_change_and_copies_and_pickles():
    conv = nn.Conv2d(4, 8, 3, padding=1).eval()
    fused = ConvAct(conv, "relu")
    x = torch.randn(2, 4, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fused(x)
        fused.weight.mul_(2)  # in place: the packed copy is stale now
        conv.weight.mul_(2)
        torch.testing.assert_close(fused(x), torch.relu(conv(x)), rtol=1e-5, atol=1e-5)
        for other in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
            torch.testing.assert_close(other(x), fused(x))
    assert set(fused.state_dict()) == {"weight", "bias"}  # the packed weights are not state


def test_convact_autograd_and_float64_take_the_plain_path():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3)
    fused = ConvAct(conv, "relu6")
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    fused(x).square().sum().backward()
    gx, gw = x.grad.clone(), fused.weight.grad.clone()
    x.grad = None
    torch.nn.functional.relu6(conv(x)).square().sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, conv.weight.grad)
    with torch.no_grad():
        torch.testing.assert_close(
            ConvAct(conv.double(), "relu6")(x.double()), torch.nn.functional.relu6(conv(x.double()))
        )


def test_convact_refuses_what_it_cannot_run_alike():
    with pytest.raises(OneByOneError, match="even kernel"):
        ConvAct(nn.Conv2d(3, 4, 4, padding="same"))
    with pytest.raises(OneByOneError, match="zero padding"):
        ConvAct(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(OneByOneError, match="act must be one of"):
        ConvAct(nn.Conv2d(3, 4, 3), "swish")


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


@pytest.mark.parametrize("act", list(ACTS))
def test_both_kernels_of_a_1x1_convact_agree(act):
    torch.manual_seed(0)
    layer = Pointwise(24, 40).eval()
    x = torch.randn(2, 24, 6, 5).contiguous(memory_format=torch.channels_last)
    m = ConvAct(layer, act)
    geom = m._geom
    packed_conv = torch.ops.mkldnn._reorder_convolution_weight(m.weight.detach(), *geom, list(x.shape))
    packed_lin = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().flatten(1), 60)
    with torch.no_grad():
        want = ACTS[act](layer(x))
        for fn, w in (
            (convact._packed_conv, packed_conv),
            (convact._rows_linear, packed_lin),
            (convact._rows_linear, m.weight),
        ):
            torch.testing.assert_close(fn(x, w, m.bias, geom, act), want, rtol=1e-5, atol=1e-5)


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
