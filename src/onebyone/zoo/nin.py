"""Network in Network (Lin, Chen, Yan 2013, arXiv:1312.4400): each block is a k x k conv followed by a
small per-pixel MLP (two 1x1 convs, the "mlpconv"), and the classifier is a 1x1 conv to one map per
class plus a global average pool: no fully connected layer.

``nin_cifar``: the three-block CIFAR-10 model (3 x 32 x 32; 192/160/96, 192/192/192, 192/192/10),
Caffe's max / average pools that round up, dropout 0.5 between blocks: 966,986 params, 222,486,528 MACs.
``nin_digits``: a small NiN for 1 x 8 x 8 (or 1 x 28 x 28) digits, with BatchNorm after each conv and
no ReLU on the class maps (so every class can score below zero): 26,186 params, 520,192 MACs at 8 x 8.
"""
from __future__ import annotations

from torch import nn

from ..torch import Pointwise
from .registry import register_model


def mlpconv(in_chs: int, widths, kernel: int, padding: int, norm: bool = False, last_relu: bool = True) -> list:
    """A k x k conv, then 1x1 convs (the per-pixel MLP), each followed by (BatchNorm and) ReLU."""
    convs = [nn.Conv2d(in_chs, widths[0], kernel, padding=padding)] + [
        Pointwise(i, o) for i, o in zip(widths, widths[1:])
    ]
    layers = []
    for i, (conv, width) in enumerate(zip(convs, widths)):
        last = i == len(convs) - 1
        layers.append(conv)
        if norm and not (last and not last_relu):
            layers.append(nn.BatchNorm2d(width))
        if last_relu or not last:
            layers.append(nn.ReLU(inplace=True))
    return layers


class NiN(nn.Module):
    def __init__(self, blocks, in_chans: int, num_classes: int, pools, dropout: float, norm: bool = False,
                 relu_on_maps: bool = True):
        super().__init__()
        layers, c = [], in_chans
        for i, (widths, kernel, padding) in enumerate(blocks):
            widths = list(widths[:-1]) + [num_classes] if i == len(blocks) - 1 else list(widths)
            final = i == len(blocks) - 1
            layers += mlpconv(c, widths, kernel, padding, norm, last_relu=relu_on_maps or not final)
            c = widths[-1]
            if i < len(blocks) - 1:
                layers += [pools[i], nn.Dropout(dropout)] if dropout else [pools[i]]
        self.features = nn.Sequential(*layers)  # the last 1x1 conv writes one map per class
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x):  # (B, C, H, W) -> (B, num_classes)
        return self.flatten(self.pool(self.features(x)))


@register_model(input_size=(3, 32, 32), params=966_986, macs=222_486_528)
def nin_cifar(num_classes: int = 10, dropout: float = 0.5) -> NiN:
    blocks = [((192, 160, 96), 5, 2), ((192, 192, 192), 5, 2), ((192, 192, 10), 3, 1)]
    pools = [nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(3, 2, ceil_mode=True)]
    return NiN(blocks, 3, num_classes, pools, dropout)


@register_model(input_size=(1, 8, 8), params=26_186, macs=520_192)
def nin_digits(num_classes: int = 10, dropout: float = 0.0) -> NiN:
    blocks = [((32, 32, 32), 3, 1), ((64, 64, 10), 3, 1)]
    return NiN(blocks, 1, num_classes, [nn.MaxPool2d(2)], dropout, norm=True, relu_on_maps=False)
