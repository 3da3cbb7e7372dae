"""How long `onebyone.analyze` takes against plain forward passes, side by side in one run: a ViT-B/16 and a
ResNet-50 (Hugging Face `transformers` configs at their default sizes, random weights, 224 x 224, batch 1)
and our own ResNet-50 written with nn.Sequential. The target: analyze <= 2 plain forward passes.

Run: .venv/bin/python benchmarks/analyze_speed.py   (medians of 5 interleaved rounds; prints the summaries too)
"""
import statistics
import time

import torch
import transformers as T
from torch import nn

import onebyone


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * 4
        self.body = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        down = stride != 1 or cin != out
        self.down = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out)) if down
                     else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.down(x))


def resnet50():
    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000))


def hf(config, cls):
    config._attn_implementation = "eager"
    return cls(config).eval()


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    models = {"ViT-B/16 (transformers)": (hf(T.ViTConfig(), T.ViTForImageClassification), {"pixel_values": x}),
              "ResNet-50 (transformers)": (hf(T.ResNetConfig(), T.ResNetForImageClassification), {"pixel_values": x}),
              "ResNet-50 (nn.Sequential)": (resnet50().eval(), x)}
    for name, (model, example) in models.items():
        run = (lambda: model(**example)) if isinstance(example, dict) else (lambda: model(example))
        times = {"analyze": [], "forward": []}
        with torch.no_grad():
            run()
        for _ in range(5):
            t = time.perf_counter()
            s = onebyone.analyze(model, example=example)
            times["analyze"].append(time.perf_counter() - t)
            with torch.no_grad():
                t = time.perf_counter()
                run()
                times["forward"].append(time.perf_counter() - t)
        a, f = statistics.median(times["analyze"]), statistics.median(times["forward"])
        print(f"{name}: analyze {a:.3f} s, plain forward {f:.3f} s: {a / f:.2f} forward passes "
              f"({s.params:,} params, {s.macs:,} MACs)")
        print("   ", "\n    ".join(s.summary_lines()))
