"""What limits the bench targets that are not met (README, Speed): the measurements behind each reason.

Run: .venv/bin/python benchmarks/limits.py [pointnet] [bottleneck] [mobilenet]   (all three by default; ~1 min)

- pointnet: where the fused shared MLP's time goes (torch profiler over 5 calls): the oneDNN matmuls
  against the max over points.
- bottleneck: the 5x5 bottleneck of (d) in NCHW and channels_last, and each conv of the pair alone, in
  GFLOP/s; the pair's ceiling is its time at each conv's own speed against the direct conv.
- mobilenet: eager, optimize()d, and optimize()d with the 13 depthwise convs removed (a strided slice
  where they stride), timed side by side: the most optimize() could gain with free depthwise convs;
  then each depthwise conv's GFLOP/s in channels_last, NCHW and oneDNN's blocked layout.
All timings are bench.timeit's (interleaved rounds, best round, with hold_freed_memory()).
"""
import copy
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import mkldnn

from onebyone.torch import hold_freed_memory, optimize
from onebyone.torch.bench import _pointnet_parts, timeit
from onebyone.torch.convact import ConvAct
from onebyone.zoo import create_model, model_info


def ms(t: dict) -> str:
    return ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in t.items())


def pointnet():
    _, chain, x = _pointnet_parts(32, 1024)
    with torch.no_grad():
        for _ in range(3):
            chain(x)
        with torch.profiler.profile() as prof:
            for _ in range(5):
                chain(x)
    rows = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(rows.values())
    for key in ("mkldnn::_linear_pointwise", "aten::amax", "aten::maximum"):
        print(f"pointnet fused: {key:28s} {rows.get(key, 0) / 5e3:6.2f} ms a call, {rows.get(key, 0) / total:5.1%} of the time")


def bottleneck():
    torch.manual_seed(0)
    xn = torch.randn(8, 192, 28, 28)
    w5, w1, w2 = torch.randn(32, 192, 5, 5), torch.randn(16, 192, 1, 1), torch.randn(32, 16, 5, 5)
    b1, b2 = torch.randn(16), torch.randn(32)
    cl = {k: v.contiguous(memory_format=torch.channels_last) for k, v in dict(x=xn, w5=w5, w1=w1, w2=w2).items()}
    y = F.relu(F.conv2d(cl["x"], cl["w1"], b1))  # (8, 16, 28, 28), channels_last

    def pair(x, a, b):
        return F.conv2d(F.relu(F.conv2d(x, a, b1)), b, b2, padding=2)

    t = timeit({"direct nchw": lambda: F.conv2d(xn, w5, b2, padding=2), "direct cl": lambda: F.conv2d(cl["x"], cl["w5"], b2, padding=2),
                "pair nchw": lambda: pair(xn, w1, w2), "pair cl": lambda: pair(cl["x"], cl["w1"], cl["w2"]),
                "1x1 cl": lambda: F.conv2d(cl["x"], cl["w1"], b1), "5x5 16->32 cl": lambda: F.conv2d(y, cl["w2"], b2, padding=2)}, 7)
    print("bottleneck:", ms(t))
    flops = {"direct cl": 2 * 8 * 784 * 192 * 32 * 25, "1x1 cl": 2 * 8 * 784 * 192 * 16, "5x5 16->32 cl": 2 * 8 * 784 * 16 * 32 * 25}
    print("bottleneck:", ", ".join(f"{k} {f / t[k] / 1e9:.0f} GFLOP/s" for k, f in flops.items()))
    mac_ratio = (192 * 32 * 25) / (192 * 16 + 16 * 32 * 25)
    print(f"bottleneck: measured {t['direct cl'] / t['pair cl'] / mac_ratio:.2f} of the MAC ratio; with each conv at its own"
          f" speed and nothing else, {t['direct cl'] / (t['1x1 cl'] + t['5x5 16->32 cl']) / mac_ratio:.2f}")


class _Strided(nn.Module):  # what a stride-2 depthwise conv does to the shape, at the cost of a copy
    def forward(self, x):
        return x[:, :, ::2, ::2].contiguous(memory_format=torch.channels_last)


def mobilenet():
    torch.manual_seed(0)
    model = create_model("mobilenet_v1").eval()
    x = torch.randn(8, *model_info("mobilenet_v1").input_size)
    opt, _ = optimize(model, x)
    bare = copy.deepcopy(opt)
    depthwise = []
    for parent in list(bare.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, ConvAct) and m.groups > 1:
                depthwise.append(m)
                setattr(parent, name, _Strided() if m.stride == (2, 2) else nn.Identity())
    with torch.no_grad():
        bare(x)
        for _ in range(3):
            t = timeit({"eager": lambda: model(x), "optimized": lambda: opt(x), "optimized, no depthwise": lambda: bare(x)}, 11)
            print(f"mobilenet_v1: {ms(t)}; optimized {t['eager'] / t['optimized']:.2f}x eager, without its"
                  f" {len(depthwise)} depthwise convs {t['eager'] / t['optimized, no depthwise']:.2f}x")
        seen = set()
        for m in depthwise:
            c, s = m.in_channels, {32: 112, 64: 112, 128: 56, 256: 28, 512: 14, 1024: 7}[m.in_channels]
            if (c, s, m.stride) in seen:
                continue
            seen.add((c, s, m.stride))
            xn = torch.randn(8, c, s, s)
            xc = xn.contiguous(memory_format=torch.channels_last)
            conv = nn.Conv2d(c, c, 3, m.stride, 1, groups=c).eval()
            conv.weight.data, conv.bias.data = m.weight.data.clone(), m.bias.data.clone()
            blocked, xb = mkldnn.MkldnnConv2d(conv, torch.float), xn.to_mkldnn()
            t = timeit({"channels_last": lambda: m(xc), "nchw": lambda: m(xn), "blocked": lambda: blocked(xb)}, 7)
            flops = 2 * 9 * 8 * c * (s // m.stride[0]) ** 2
            print(f"depthwise {c:4d} ch at {s:3d}x{s:<3d} stride {m.stride[0]}: "
                  + ", ".join(f"{k} {flops / v / 1e9:5.1f} GFLOP/s" for k, v in t.items()))


if __name__ == "__main__":
    hold_freed_memory()
    for part in sys.argv[1:] or ["pointnet", "bottleneck", "mobilenet"]:
        {"pointnet": pointnet, "bottleneck": bottleneck, "mobilenet": mobilenet}[part]()
