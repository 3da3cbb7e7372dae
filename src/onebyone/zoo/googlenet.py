"""GoogLeNet / Inception v1 (Szegedy et al. 2015, arXiv:1409.4842), with the paper's true 5 x 5 branches
(torchvision uses 3 x 3 there) and no auxiliary classifiers or LRN. Each inception module runs four
branches side by side: a 1x1 conv; a 1x1 reduction then a 3x3; a 1x1 reduction then a 5x5; a 3x3 max
pool then a 1x1 projection. At 224 x 224 with 1000 classes: 6,998,552 params, 1,582,671,872 MACs (the
paper's Table 1 gives about 6.8M params and 1.5G operations).
"""
from __future__ import annotations

import torch
from torch import nn

from ..torch import Pointwise
from .registry import register_model


def _relu_conv(cin, cout, k, stride=1):
    conv = Pointwise(cin, cout, stride=stride) if k == 1 else nn.Conv2d(cin, cout, k, stride, k // 2)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, in_chs, c1, c3r, c3, c5r, c5, pool_proj):
        super().__init__()
        self.b1 = _relu_conv(in_chs, c1, 1)
        self.b3 = nn.Sequential(_relu_conv(in_chs, c3r, 1), _relu_conv(c3r, c3, 3))
        self.b5 = nn.Sequential(_relu_conv(in_chs, c5r, 1), _relu_conv(c5r, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), _relu_conv(in_chs, pool_proj, 1))

    def forward(self, x):  # (B, in_chs, H, W) -> (B, c1 + c3 + c5 + pool_proj, H, W)
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


CFG = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.4):
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.stem = nn.Sequential(
            _relu_conv(3, 64, 7, 2), pool(), _relu_conv(64, 64, 1), _relu_conv(64, 192, 3), pool()
        )
        self.inception3 = nn.Sequential(Inception(*CFG["3a"]), Inception(*CFG["3b"]), pool())
        self.inception4 = nn.Sequential(*(Inception(*CFG[k]) for k in ("4a", "4b", "4c", "4d", "4e")), pool())
        self.inception5 = nn.Sequential(Inception(*CFG["5a"]), Inception(*CFG["5b"]))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(1024, num_classes)
        )

    def forward(self, x):  # (B, 3, 224, 224) -> (B, num_classes)
        return self.head(self.inception5(self.inception4(self.inception3(self.stem(x)))))


@register_model(input_size=(3, 224, 224), params=6_998_552, macs=1_582_671_872)
def googlenet(num_classes: int = 1000, dropout: float = 0.4) -> GoogLeNet:
    return GoogLeNet(num_classes, dropout)
