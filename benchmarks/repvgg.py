"""A RepVGG-A0-sized network built from RepVGG's training block (3x3 conv + BN, 1x1 conv + BN, BN identity,
summed, ReLU): its training form against the same network after ``merge_branches``, eager and through
``optimize()``, batch 8 at 224 x 224, timed side by side in interleaved rounds (``timing.medians``).

    python benchmarks/repvgg.py
"""
import sys

import torch
from torch import nn

from onebyone.torch import merge_branches, optimize
from onebyone.torch.fast.timing import medians

WIDTHS, DEPTHS = (48, 48, 96, 192, 1280), (1, 2, 4, 14, 1)  # RepVGG-A0's stages


def bn(c):
    return nn.BatchNorm2d(c)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout))
        self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))
        self.identity = bn(cin) if cin == cout and stride == 1 else None

    def forward(self, x):
        y = self.dense(x) + self.pw(x)
        return torch.relu(y + self.identity(x) if self.identity is not None else y)


def repvgg_a0(num_classes: int = 1000) -> nn.Module:
    layers, cin = [], 3
    for width, depth in zip(WIDTHS, DEPTHS):
        for i in range(depth):
            layers.append(Block(cin, width, 2 if i == 0 else 1))
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


def main() -> int:
    torch.manual_seed(0)
    model, x = repvgg_a0().eval(), torch.randn(8, 3, 224, 224)
    merged, report = merge_branches(model, x)
    print(f"{len(report.changed)} blocks merged, {len(report.skipped)} skipped; params {report.params_before:,} -> "
          f"{report.params_after:,}; max abs diff {report.max_abs_diff:.3g}")
    fast, _ = optimize(merged, x)
    with torch.no_grad():
        t = medians({"training form": lambda: model(x), "merged": lambda: merged(x), "merged, optimize()d":
                     lambda: fast(x)}, rounds=7, settle=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, ms a call: "
          + ", ".join(f"{k} {v * 1e3:.1f} ({t['training form'] / v:.2f}x)" for k, v in t.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
