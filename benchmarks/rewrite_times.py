"""Seconds that the rewrites take on real-sized models: transformers' ResNet-50 and MobileNetV2, built from
their configs with random weights (nothing downloaded), one sample at 224 x 224. Random weights have a flat
spectrum, so ``energy=0.99`` keeps nearly every rank and factorizes little; ``rank=16`` factorizes every layer.

    python benchmarks/rewrite_times.py        # prints one line per (model, rewrite)
"""
import sys
import time

import torch
from transformers import MobileNetV2Config, MobileNetV2Model, ResNetConfig, ResNetModel

from onebyone.torch import factorize, fold_batchnorm


class Pixels(torch.nn.Module):
    """A transformers vision model called on a tensor, returning its last hidden state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).last_hidden_state


def models():
    torch.manual_seed(0)
    yield "transformers ResNet-50", Pixels(ResNetModel(ResNetConfig())).eval()
    yield "transformers MobileNetV2", Pixels(MobileNetV2Model(MobileNetV2Config())).eval()


def main() -> int:
    x = torch.randn(1, 3, 224, 224)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, model in models():
        for rewrite, run in (("fold_batchnorm", lambda m: fold_batchnorm(m, example=x)),
                             ("factorize(energy=0.99)", lambda m: factorize(m, energy=0.99, example=x)),
                             ("factorize(rank=16)", lambda m: factorize(m, rank=16, example=x))):
            t0 = time.perf_counter()
            _, report = run(model)
            print(f"{name}: {rewrite} {time.perf_counter() - t0:.1f} s ({len(report.changed)} changes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
