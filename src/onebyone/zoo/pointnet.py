"""PointNet classification (Qi et al. 2017, arXiv:1612.00593) on (B, 3, N) point clouds.

Every per-point layer is a ``SharedMLP`` (1x1 convs over the points). ``pointnet_cls`` has the input
transform net (a 3 x 3 matrix predicted from the cloud, applied to every point) and the 64 x 64 feature
transform; ``pointnet_vanilla`` has neither: shared MLP 3-64-64-64-128-1024, max pool over points, and
a 512-256-K head. With 40 classes and 1024 points: 3,473,969 params and 448,025,856 MACs (cls; the paper
says 3.5M params), 817,512 params and 151,857,152 MACs (vanilla).
"""
from __future__ import annotations

import torch
from torch import nn

from ..torch import SharedMLP
from .registry import register_model


def _head(widths, num_out: int, dropout: float = 0.0) -> nn.Sequential:
    layers = []
    for cin, cout in zip(widths, widths[1:]):
        layers += [nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], num_out))
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a k x k matrix from the cloud; starts at the identity (zero last layer)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.mlp = SharedMLP((k, 64, 128, 1024), norm="batch", pool="max")
        self.head = _head((1024, 512, 256), k * k)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x):  # (B, k, N) -> (B, k, k)
        m = self.head(self.mlp(x)).view(-1, self.k, self.k)
        return m + torch.eye(self.k, device=x.device, dtype=x.dtype)


def _transform(x, t):  # (B, k, N), (B, k, k) -> t^T x (B, k, N), computed on the points' rows
    """Each point's k features times ``t``: ``x^T t`` (B, N, k) seen as (B, k, N). The same numbers as
    ``bmm(t^T, x)``, but left in points-by-channels memory: a fused chain reads those rows without moving them."""
    return torch.bmm(x.transpose(1, 2), t).transpose(1, 2)


class PointNet(nn.Module):
    def __init__(self, num_classes: int = 40, transforms: bool = True, dropout: float = 0.3):
        super().__init__()
        self.input_tnet = TNet(3) if transforms else None
        self.mlp1 = SharedMLP((3, 64, 64), norm="batch")
        self.feature_tnet = TNet(64) if transforms else None
        self.mlp2 = SharedMLP((64, 64, 128, 1024), norm="batch", pool="max")
        self.head = _head((1024, 512, 256), num_classes, dropout)

    def forward(self, x):  # (B, 3, N) -> (B, num_classes)
        if self.input_tnet is not None:
            x = _transform(x, self.input_tnet(x))  # every point rotated
        x = self.mlp1(x)  # (B, 64, N)
        if self.feature_tnet is not None:
            x = _transform(x, self.feature_tnet(x))
        return self.head(self.mlp2(x))  # max over points: (B, 1024) -> (B, num_classes)


@register_model(input_size=(3, 1024), params=3_473_969, macs=448_025_856)
def pointnet_cls(num_classes: int = 40, dropout: float = 0.3) -> PointNet:
    return PointNet(num_classes, True, dropout)


@register_model(input_size=(3, 1024), params=817_512, macs=151_857_152)
def pointnet_vanilla(num_classes: int = 40, dropout: float = 0.3) -> PointNet:
    return PointNet(num_classes, False, dropout)
