"""One parametrised test over every registered model, plus the registry itself."""
import sys

import numpy as np
import pytest
import torch

from onebyone import OneByOneError, analyze
from onebyone.torch import Pointwise
from onebyone.zoo import create_model, list_models, model_info


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_and_trains(name):
    torch.manual_seed(0)
    info = model_info(name)
    model = create_model(name, num_classes=7)
    x = torch.randn(2, *info.input_size)
    y = model(x)  # train mode: BatchNorm needs the batch of 2
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == [], f"no gradient reached {missing}"
    stats = analyze(model, info.input_size)
    assert stats.params == sum(p.numel() for p in model.parameters()) and stats.uncounted == []
    assert any(isinstance(m, Pointwise) for m in model.modules())
    model.eval()
    graph = torch.fx.symbolic_trace(model)  # what FX quantization and feature extractors start from
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_params_and_macs_are_the_documented_ones(name):
    info = model_info(name)
    model = create_model(name)
    stats = analyze(model, info.input_size)
    assert (stats.params, stats.macs) == (info.params, info.macs)
    family_doc = sys.modules[type(model).__module__].__doc__
    assert f"{info.params:,}" in family_doc and f"{info.macs:,}" in family_doc  # the docstring states them


def test_registry_lookups():
    assert list_models("squeezenet*") == ["squeezenet1_0", "squeezenet1_1"]
    assert {"nin_cifar", "nin_digits", "googlenet", "mobilenet_v1", "pointnet_cls", "pointnet_vanilla"} <= set(
        list_models()
    )
    with pytest.raises(OneByOneError, match="unknown model 'resnet'; the zoo has: googlenet, mobilenet_v1"):
        create_model("resnet")
    half = create_model("mobilenet_v1", alpha=0.5, num_classes=10)
    assert half.fc.in_features == 512


def test_nin_digits_also_takes_28x28():
    assert create_model("nin_digits")(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_pointnet_transforms_every_point_by_its_matrix_and_hands_on_rows():
    """PointNet's transform is t^T x for each cloud (the paper's), computed as x^T t on the points' rows: the
    same numbers as bmm(t^T, x), left points-by-channels in memory for the next fused chain."""
    from onebyone.zoo.pointnet import _transform

    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 64, 100, generator=g), torch.randn(4, 64, 64, generator=g)
    got = _transform(x, t)
    torch.testing.assert_close(got, torch.bmm(t.transpose(1, 2), x), rtol=1e-5, atol=1e-5)
    assert got.shape == (4, 64, 100) and got.stride() == (6400, 1, 64)


def test_a_bad_model_argument_is_named_with_the_call_it_went_into():
    """A layer's own check inside the factory named a parameter the user never passed (out_channels)."""
    with pytest.raises(OneByOneError, match=r"nin_cifar: num_classes must be an integer >= 1, got 'abc'"):
        create_model("nin_cifar", num_classes="abc")
    with pytest.raises(OneByOneError, match=r"nin_cifar\(dropout=2.0\) could not be built: ValueError: dropout"):
        create_model("nin_cifar", dropout=2.0)


def test_timm_style_arguments_are_taken_or_refused_alike_on_every_model():
    """``pretrained=False`` (a timm habit) was refused by every model; ``num_classes=0`` built a head of zero
    outputs on some and blamed ``out_channels`` on others; ``in_chans=0`` or True built and failed at forward."""
    for name in list_models():
        assert create_model(name, pretrained=False, num_classes=3) is not None
        with pytest.raises(OneByOneError, match=f"{name}: num_classes must be an integer >= 1, got 0 \\(timm's"):
            create_model(name, num_classes=0)
        with pytest.raises(OneByOneError, match=f"{name}: the zoo has no pretrained weights"):
            create_model(name, pretrained=True)
    assert create_model("nin_digits", num_classes=np.int64(4))(torch.zeros(1, 1, 8, 8)).shape == (1, 4)
    for bad in (0, True, 2.0):
        with pytest.raises(OneByOneError, match=f"mobilenet_v1: in_chans must be an integer >= 1, got {bad!r}"):
            create_model("mobilenet_v1", in_chans=bad)


def test_the_tours_squeezenet_widths_are_the_zoos():
    """The tour checks that SqueezeNet never puts a 1x1 conv on one channel from its published fire modules;
    the zoo's SqueezeNet 1.0 (torchvision's parameter count) has the same 1x1 convs, in the same order."""
    from torch import nn

    from onebyone.tour.blocks import squeezenet_pointwise_inputs

    zoo = [m.in_channels for m in create_model("squeezenet1_0").modules()
           if isinstance(m, Pointwise) or isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert zoo == squeezenet_pointwise_inputs()
