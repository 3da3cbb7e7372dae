"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016, arXiv:1602.07360), in the common torchvision layout:
fire modules (1x1 squeeze, then 1x1 and 3x3 expands concatenated), max pools that round up, and a
1x1 conv to the class maps followed by a global average pool (no fully connected layer).

With 1000 classes at 224 x 224: 1,248,424 params and 818,924,576 MACs (1.0), 1,235,496 params and
349,151,936 MACs (1.1); the parameter counts are torchvision's published ones.
"""
from __future__ import annotations

import torch
from torch import nn

from ..torch import Pointwise
from .registry import register_model


class Fire(nn.Module):
    def __init__(self, in_chs: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = Pointwise(in_chs, squeeze)
        self.conv_pw = Pointwise(squeeze, expand1x1)
        self.conv3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):  # (B, in_chs, H, W) -> (B, e1 + e3, H, W)
        s = self.act(self.squeeze(x))
        return torch.cat([self.act(self.conv_pw(s)), self.act(self.conv3x3(s))], dim=1)


def _pool():
    return nn.MaxPool2d(3, 2, ceil_mode=True)


class SqueezeNet(nn.Module):
    def __init__(self, version: str = "1_0", num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        if version == "1_0":
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, 7, 2),
                nn.ReLU(inplace=True),
                _pool(),
                Fire(96, 16, 64, 64),
                Fire(128, 16, 64, 64),
                Fire(128, 32, 128, 128),
                _pool(),
                Fire(256, 32, 128, 128),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                _pool(),
                Fire(512, 64, 256, 256),
            )
        else:
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 3, 2),
                nn.ReLU(inplace=True),
                _pool(),
                Fire(64, 16, 64, 64),
                Fire(128, 16, 64, 64),
                _pool(),
                Fire(128, 32, 128, 128),
                Fire(256, 32, 128, 128),
                _pool(),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                Fire(512, 64, 256, 256),
            )
        self.classifier = nn.Sequential(nn.Dropout(dropout), Pointwise(512, num_classes), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):  # (B, 3, H, W) -> (B, num_classes)
        return self.classifier(self.features(x))


@register_model(input_size=(3, 224, 224), params=1_248_424, macs=818_924_576)
def squeezenet1_0(num_classes: int = 1000, **kw) -> SqueezeNet:
    return SqueezeNet("1_0", num_classes, **kw)


@register_model(input_size=(3, 224, 224), params=1_235_496, macs=349_151_936)
def squeezenet1_1(num_classes: int = 1000, **kw) -> SqueezeNet:
    return SqueezeNet("1_1", num_classes, **kw)
