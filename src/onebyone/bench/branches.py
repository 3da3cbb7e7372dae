"""Section (f) of ``onebyone bench``: a RepVGG-A0-sized network of RepVGG's training block (3x3 conv + BN,
1x1 conv + BN, BN identity, summed, ReLU) against the same network after ``merge_branches``, eager and
through ``optimize()``, at 224 x 224."""
from __future__ import annotations

import torch
from torch import nn

from ..torch import merge_branches, optimize

WIDTHS, DEPTHS = (48, 48, 96, 192, 1280), (1, 2, 4, 14, 1)  # RepVGG-A0's stages


class RepVGGBlock(nn.Module):
    """RepVGG's training block; the identity branch where channels and stride allow it."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None

    def forward(self, x):
        y = self.dense(x) + self.pw(x)
        return torch.relu(y + self.identity(x) if self.identity is not None else y)


def repvgg_a0(num_classes: int = 1000) -> nn.Module:
    layers, cin = [], 3
    for width, depth in zip(WIDTHS, DEPTHS):
        for i in range(depth):
            layers.append(RepVGGBlock(cin, width, 2 if i == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def merged_branches(quick: bool, repeat: int, timeit) -> dict:
    """Times of the training form, the merged network and the merged network ``optimize()``d, side by side."""
    torch.manual_seed(0)
    model, x = repvgg_a0().eval(), torch.randn(2 if quick else 8, 3, 224, 224)
    merged, report = merge_branches(model, x)
    fast, _ = optimize(merged, x)
    with torch.no_grad():
        t = timeit({"training": lambda: model(x), "merged": lambda: merged(x), "merged_optimized": lambda: fast(x)},
                   repeat)
    return {"batch": x.shape[0], "blocks_merged": len(report.changed), "max_abs_diff": report.max_abs_diff,
            "params": [report.params_before, report.params_after], "ms": {k: v * 1e3 for k, v in t.items()},
            "merged_vs_training": t["training"] / t["merged"],
            "optimized_vs_training": t["training"] / t["merged_optimized"]}
