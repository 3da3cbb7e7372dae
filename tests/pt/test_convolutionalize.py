"""convolutionalize: identical logits at the base size, and every grid cell == the original on its crop."""
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.torch import Pointwise, convolutionalize


def digits_classifier():
    """A digits-sized (1x8x8) classifier with an unpadded feature extractor and a two-layer head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)).eval()


def test_base_size_logits_are_identical():
    model = digits_classifier()
    conv, report = convolutionalize(model, (1, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        ref, got = model(x), conv(x)
    assert got.shape == (5, 10, 1, 1)
    assert torch.allclose(got.flatten(1), ref, atol=1e-6)
    assert not any(isinstance(m, nn.Linear) for m in conv.modules())
    assert any("each cell equals the original model run on its crop" in n for n in report.notes)
    assert any("total stride (2, 2)" in n for n in report.notes)


def test_every_cell_equals_the_original_on_its_crop():
    model = digits_classifier()
    conv, _ = convolutionalize(model, (1, 8, 8))
    img = torch.randn(1, 1, 16, 20)
    with torch.no_grad():
        grid = conv(img)
        assert grid.shape == (1, 10, (16 - 8) // 2 + 1, (20 - 8) // 2 + 1)
        for i in range(grid.shape[2]):
            for j in range(grid.shape[3]):
                crop = img[:, :, 2 * i:2 * i + 8, 2 * j:2 * j + 8]
                assert torch.allclose(grid[0, :, i, j], model(crop)[0], atol=1e-5), (i, j)


def test_vgg_like_multi_fc_non_square_and_padded():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 3 * 5, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 7)).eval()
    conv, report = convolutionalize(model, (3, 6, 10))
    x = torch.randn(2, 3, 6, 10)
    with torch.no_grad():
        assert torch.allclose(conv(x).flatten(1), model(x), atol=1e-6)
        assert conv(torch.randn(1, 3, 12, 14)).shape == (1, 7, 4, 3)
    assert sum(isinstance(m, Pointwise) for m in conv.modules()) == 2
    assert any("the feature extractor pads" in n for n in report.notes)


def test_global_average_pool_head_becomes_class_maps_and_a_pool():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)
    ).eval()
    conv, report = convolutionalize(model, (3, 8, 8))
    for size in (8, 13):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(conv(x), model(x), atol=1e-6)
    assert isinstance(conv[2][0], Pointwise) and "class maps" in report.changed[0]


class FunctionalHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.fc1, self.fc2 = nn.Linear(4 * 4 * 4, 8), nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.c(x))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def test_general_modules_are_traced_with_fx():
    model = FunctionalHead().eval()
    conv, _ = convolutionalize(model, (1, 6, 6))
    x = torch.randn(1, 1, 9, 6)
    with torch.no_grad():
        grid = conv(x)
        assert grid.shape == (1, 3, 4, 1)
        for i in range(4):
            assert torch.allclose(grid[0, :, i, 0], model(x[:, :, i:i + 6])[0], atol=1e-5)


def test_heads_it_cannot_convert_and_bad_input():
    with pytest.raises(OneByOneError, match="no convertible Flatten -> Linear head"):
        convolutionalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 8, 8))
    with pytest.raises(OneByOneError, match=r"cannot run on an input of shape \(2, 1, 6, 6\): RuntimeError"):
        convolutionalize(digits_classifier(), (1, 6, 6))
    with pytest.raises(OneByOneError, match=r"input_size must be one sample.s shape \(C, H, W\)"):
        convolutionalize(digits_classifier(), (8, 8))
    softmax_head = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3), nn.BatchNorm1d(3)).eval()
    with pytest.raises(OneByOneError, match="would receive a .B, K, h, w. grid"):
        convolutionalize(softmax_head, (1, 8, 8))


def test_float64_and_channels_last_are_exact():
    model = digits_classifier().double()
    conv, report = convolutionalize(model, (1, 8, 8))
    assert report.max_abs_diff <= 1e-10
    img = torch.randn(1, 1, 12, 12, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        grid = conv(img)
        for i in range(grid.shape[2]):
            for j in range(grid.shape[3]):
                assert torch.allclose(
                    grid[0, :, i, j], model(img[:, :, 2 * i : 2 * i + 8, 2 * j : 2 * j + 8])[0], atol=1e-10
                )


def vgg_like(pool, side=2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), pool, nn.Flatten(), nn.Linear(8 * side * side, 16), nn.ReLU(),
                         nn.Dropout(), nn.Linear(16, 5)).eval()


@pytest.mark.parametrize("pool,size", [(nn.AdaptiveAvgPool2d((2, 2)), 8),  # the identity at 8 x 8: VGG at 224
                                       (nn.AdaptiveAvgPool2d(2), 16),  # 4x4 -> 2x2: a fixed 2x2 average pool
                                       (nn.AdaptiveMaxPool2d((2, 2)), 16)])
def test_an_adaptive_pool_before_the_head_slides_as_the_fixed_pool_it_equals(pool, size):
    from onebyone.torch.convolutionalize import predicted_grid

    model = vgg_like(pool)
    conv, report = convolutionalize(model, (3, size, size))
    assert any("AdaptiveAvgPool2d" in c or "AdaptiveMaxPool2d" in c for c in report.changed)
    for h, w in ((size, size), (size + 24, size + 40), (3 * size, 2 * size)):
        with torch.no_grad():
            out = conv(torch.randn(1, 3, h, w))
        assert tuple(out.shape[2:]) == predicted_grid(report.layers[0], (h, w)) == (
            (h - size) // report.layers[0]["stride"][0] + 1, (w - size) // report.layers[0]["stride"][1] + 1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(conv(x).flatten(1), model(x), rtol=1e-5, atol=1e-5)


def test_an_adaptive_pool_with_uneven_windows_is_refused_with_the_reason():
    with pytest.raises(OneByOneError, match="uneven windows"):
        convolutionalize(vgg_like(nn.AdaptiveAvgPool2d((3, 3)), 3), (3, 16, 16))  # a 4x4 map into 3x3


def alexnet_like():
    """AlexNet's shape, small: a padded trunk, an adaptive pool to 6x6, a three-Linear head with dropout."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(16, 32, 5, padding=2),
        nn.ReLU(), nn.MaxPool2d(3, 2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(), nn.Dropout(), nn.Linear(32 * 6 * 6, 64), nn.ReLU(), nn.Dropout(),
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def test_what_a_cell_equals_when_the_trunk_pads_is_said_exactly_and_measured():
    model = alexnet_like()
    dense, report = convolutionalize(model, (3, 224, 224))
    (head,) = report.layers
    assert head["padded"] and head["stride"] == (32, 32) and head["crop_difference"] > 1e-3  # the pads matter
    assert any("each cell equals the head applied to the matching window" in n for n in report.notes)
    x = torch.randn(1, 3, 256, 288, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        grid = dense(x)  # (1, 10, 2, 3)
        fmap = model[:9](x)  # the trunk on the large input: (1, 32, 7, 8)
        for i in range(grid.shape[2]):
            for j in range(grid.shape[3]):
                window = fmap[..., i:i + 6, j:j + 6]  # 6x6 window of the big map = the 224 window at this cell
                torch.testing.assert_close(grid[0, :, i, j], model[10:](window)[0], rtol=1e-5, atol=1e-5)
        crop = model(x[..., :224, :224])  # the lone crop: padded borders, so not equal
        assert float((grid[0, :, 0, 0] - crop[0]).abs().max()) > 1e-4


def test_an_optimized_convolutionalized_model_exports_with_dynamic_height_and_width():
    from onebyone.torch import optimize

    from .cpus import REWRITES

    dense, _ = convolutionalize(alexnet_like(), (3, 224, 224))
    x = torch.randn(2, 3, 288, 320)
    h, w = torch.export.Dim("h", min=256, max=1024), torch.export.Dim("w", min=256, max=1024)
    for channels_last in (True, False):
        opt, _ = optimize(dense, x, channels_last=channels_last, passes=REWRITES)
        program = torch.export.export(opt, (x,), dynamic_shapes={"args": ({2: h, 3: w},)} if channels_last
                                      else ({2: h, 3: w},))
        for size in ((256, 352), (320, 288)):
            xs = torch.randn(2, 3, *size)
            with torch.no_grad():
                torch.testing.assert_close(program.module()(xs), dense(xs), rtol=1e-4, atol=1e-4)


class FunctionalPool(nn.Module):
    """A functional max pool in the trunk: no module holds its stride."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.nn.functional.max_pool2d(self.conv(x), 2), 1))


@pytest.mark.parametrize("trunk,stride,padded", [
    (lambda: nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)), (1, 1), True),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.LPPool2d(2, 2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)), (2, 2),
     False),
    (FunctionalPool, (2, 2), False),
], ids=["zero pad", "lp pool", "functional max pool"])
def test_the_geometry_is_measured_from_what_runs(trunk, stride, padded):
    """Padding and strides that no Conv or Pool module holds: the report's stride is the one the model slides
    by, its grid formula holds on a larger input, and 'each cell equals the model on its crop' is said only
    where the cells were measured to."""
    torch.manual_seed(0)
    model = trunk().eval()
    dense, report = convolutionalize(model, (1, 8, 8))
    (head,) = report.layers
    assert head["stride"] == stride and head["padded"] is padded
    assert dense(torch.randn(1, 1, 8 + 4 * stride[0], 8 + 2 * stride[1])).shape[2:] == (5, 3)
    says_crop = any("equals the original model run on its crop" in n for n in report.notes)
    assert says_crop is (not padded) and (head["crop_difference"] > 1e-3) is padded


@pytest.mark.parametrize("size", [8, None, (1, 8), (1, 8.0, 8)])
def test_an_input_size_that_is_not_one_samples_shape_is_refused(size):
    with pytest.raises(OneByOneError, match="input_size must be one sample's shape"):
        convolutionalize(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), size)


def test_a_training_model_is_measured_and_checked_in_eval_mode_and_keeps_its_statistics():
    """A model in training mode (dropout on, BatchNorms on batch statistics): the trace, the check and the
    crop measurement run it in eval mode, so an unpadded trunk is not reported as padding (dropout once made
    its cells differ from their crops by 0.97), and no running statistic of the model returned moves."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5)).train()
    model[1].running_mean.uniform_(-1, 1)
    conv, report = convolutionalize(model, (3, 8, 8))
    assert report.layers[0]["padded"] is False and report.layers[0]["crop_difference"] < 1e-5
    assert torch.equal(conv[1].running_mean, model[1].running_mean) and model.training and conv.training
