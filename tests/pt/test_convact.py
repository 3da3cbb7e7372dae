"""ConvAct: a conv and its activation as one oneDNN call with packed weights, the same numbers as F.conv2d."""
import copy
import math
import pickle

import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch import ConvAct, Pointwise
from onebyone.torch.fast import convact

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
    for memory_format in (torch.contiguous_format, torch.channels_last):  # only the bias trains (BitFit)
        bitfit = ConvAct(conv, "relu").to(memory_format=memory_format)
        bitfit.weight.requires_grad_(False)
        plain = torch.randn(2, 3, 8, 8).contiguous(memory_format=memory_format)
        bitfit(plain).sum().backward()
        torch.testing.assert_close(bitfit.bias.grad, (conv(plain) > 0).float().sum((0, 2, 3)))
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
    layer = ConvAct(nn.Conv2d(8, 4, 3)).requires_grad_(False)
    for wrong in (torch.randn(2, 5, 9, 9), torch.randn(2, 5, 9, 9).contiguous(memory_format=torch.channels_last)):
        with pytest.raises(RuntimeError, match="expected input.*to have 8 channels, but got 5"):
            layer(wrong)  # torch's own words, in either layout (oneDNN's had no shapes in them)


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


@pytest.mark.parametrize("shape", [(2, 3, 100), (2, 3), (2, 3, 4, 5, 6)])
def test_a_pointwise_on_points_vectors_or_volumes_optimizes_and_is_counted_as_it_runs(shape):
    """A channels-first Pointwise on (B, C, N), the README's point clouds (or (B, C), or a volume), became a
    ConvAct whose cost assumed a 2-D conv: optimize raised "a 2-D conv needs input_shape (N, C, *2 spatial
    sizes)" (blaming the batch axis) in its check, whatever the dtype."""
    import warnings

    from onebyone import analyze
    from onebyone.torch import Pointwise, optimize

    torch.manual_seed(0)
    model, x = nn.Sequential(Pointwise(3, 16), nn.ReLU()).eval(), torch.randn(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a model this small may time no faster: the model given, said)
        fast, report = optimize(model, x, passes=["conv_acts", "check"])
    assert any(isinstance(m, ConvAct) for m in fast.modules())
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-6)
    assert analyze(fast, example=x).macs == analyze(model, example=x).macs == 3 * 16 * math.prod(shape) // 3
