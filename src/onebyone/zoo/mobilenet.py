"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861): a 3x3 conv, then 13 depthwise-separable blocks
(3x3 depthwise conv + 1x1 pointwise conv, each with BatchNorm and ReLU), average pool, one Linear.

At alpha = 1, 224 x 224, 1000 classes: 568,740,352 MACs (bias excluded), 4,231,976 parameters with
BatchNorm; 1x1 convs hold 94.86% of the MACs and 74.59% of the weights (the paper's Table 2).
"""
from __future__ import annotations

from torch import nn

from ..errors import OneByOneError
from ..torch import Pointwise
from .registry import register_model

# (output channels, stride) of the 13 depthwise-separable blocks
CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def separable(in_chs: int, out_chs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False),
        nn.BatchNorm2d(in_chs),
        nn.ReLU(inplace=True),
        Pointwise(in_chs, out_chs, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, alpha: float = 1.0, in_chans: int = 3):
        super().__init__()
        ch = lambda c: max(8, int(c * alpha))  # noqa: E731 - the width multiplier
        layers = [nn.Conv2d(in_chans, ch(32), 3, 2, 1, bias=False), nn.BatchNorm2d(ch(32)), nn.ReLU(inplace=True)]
        c = ch(32)
        for out, stride in CFG:
            layers.append(separable(c, ch(out), stride))
            c = ch(out)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):  # (B, 3, H, W) -> (B, num_classes)
        return self.fc(self.flatten(self.pool(self.features(x))))


@register_model(input_size=(3, 224, 224), params=4_231_976, macs=568_740_352)
def mobilenet_v1(num_classes: int = 1000, alpha: float = 1.0, resolution: int = 224, **kw) -> MobileNetV1:
    """MobileNet v1 with width multiplier ``alpha``; ``resolution`` only sets the default input size."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
        raise OneByOneError(f"resolution must be an integer >= 32 (five stride-2 layers), got {resolution!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 4:
        raise OneByOneError(f"alpha, the width multiplier, must be a number in (0, 4], got {alpha!r}")
    model = MobileNetV1(num_classes, alpha, **kw)
    model.default_input_size = (kw.get("in_chans", 3), resolution, resolution)
    return model
