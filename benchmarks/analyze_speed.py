"""How long `onebyone.analyze` takes on a ResNet-50-sized torch model (25.6M params, 4.1G MACs at 224).

Run: .venv/bin/python benchmarks/analyze_speed.py   (prints the median of 5 runs, and the plain forward for scale)
"""
import statistics
import time

import torch
from torch import nn

import onebyone


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * 4
        self.body = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        self.down = (
            nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or cin != out
            else nn.Identity()
        )

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


def resnet50():
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


if __name__ == "__main__":
    model = resnet50().eval()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        s = onebyone.analyze(model, (3, 224, 224))
        times.append(time.perf_counter() - t)
    with torch.no_grad():
        t = time.perf_counter()
        model(torch.zeros(1, 3, 224, 224))
        fwd = time.perf_counter() - t
    print(f"resnet50: {s.params:,} params, {s.macs:,} MACs; analyze median {statistics.median(times):.3f} s "
          f"(plain forward {fwd:.3f} s); {s.footer()}")
