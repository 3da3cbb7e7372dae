"""What limits the bench targets that are not met (README, Speed): the measurements behind each reason.

Run: .venv/bin/python benchmarks/limits.py [peaks] [pointnet] [bottleneck] [nin] [mobilenet] [peers] [bf16] [chain]
[pointnet_cls]
(all by default; a few minutes)

- peaks: the bench's peak (its best large channels_last 1x1 conv) beside 3x3 and 5x5 convs and a large
  torch.mm: how far the machine goes past the 1x1 peak that the bench's ceilings are computed from.
- pointnet: where the fused shared MLP's time goes (torch profiler over 5 calls): the oneDNN matmuls
  against the max over points.
- bottleneck: the 5x5 bottleneck of (d) in NCHW and channels_last, and each conv of the pair alone, in
  GFLOP/s; the pair's ceiling is its time at each conv's own speed against the direct conv.
- nin: the optimize()d nin_cifar layer by layer (forward hooks): the KxK convs, the fused 1x1 chains and
  the rest, in ms and GFLOP/s, and what the chains would have to run at for 1.5x eager.
- mobilenet: the optimize()d mobilenet_v1 layer by layer as for nin; eager, optimize()d, and optimize()d
  with the 13 depthwise convs removed (a strided slice where they stride), timed side by side: the most
  optimize() could gain with free depthwise convs; then each depthwise conv's GFLOP/s in channels_last,
  NCHW and oneDNN's blocked layout.
- peers: where onnxruntime beats optimize() (mobilenet_v1, squeezenet1_1, googlenet, hf_mobilenet_v2 at batch
  8): optimize()'s layers by kind (forward hooks) beside onnxruntime's nodes by kind (its own profiler, which
  names the operator each node ran), in ms per call, and both whole models timed side by side: what the
  layers' sum leaves out is spent between them (Python, and ops outside modules: cat, pad, add).
- chain: PointNet's shared MLP fused, beside onnxruntime and OpenVINO (B = 8 and 32, 1,024 points), then
  where our chain (torch profiler) and onnxruntime (its profiler, by node) spend their time.
- pointnet_cls: the whole optimize()d pointnet_cls (and which form it kept) and its eager rewrite alone beside
  onnxruntime and OpenVINO (B = 8), then where the rewrite and onnxruntime spend their time, by operator
  (each one's profiler).
- bf16: optimize() in float32 and in bfloat16 on squeezenet1_1 and mobilenet_v1, layer kinds side by side:
  which kinds gain less than the 1.7x target.
All timings are bench.timeit's (interleaved rounds, best round, with hold_freed_memory()).
"""
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import mkldnn

from onebyone.bench.memory import hold_freed_memory
from onebyone.bench.sections import _onnx_session, _onnxruntime, _pointnet_parts, _real_models, peak, timeit
from onebyone.torch import FusedPointwiseChain, optimize
from onebyone.torch.fast.convact import ConvAct
from onebyone.torch.tensors import call
from onebyone.zoo import create_model, model_info


def ms(t: dict) -> str:
    return ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in t.items())


def peaks():
    torch.manual_seed(0)
    a = torch.randn(4096, 4096)
    x3, w3 = torch.randn(8, 256, 56, 56), torch.randn(256, 256, 3, 3)
    x5, w5 = torch.randn(8, 192, 28, 28), torch.randn(32, 192, 5, 5)
    x3, w3, x5, w5 = (t.contiguous(memory_format=torch.channels_last) for t in (x3, w3, x5, w5))
    flops = {"mm 4096": 2 * 4096 ** 3, "3x3 conv 256->256 at 56x56": 2 * 8 * 3136 * 256 * 256 * 9,
             "5x5 conv 192->32 at 28x28": 2 * 8 * 784 * 192 * 32 * 25}
    with torch.no_grad():
        best = peak(5)["peak_gflops"]
        t = timeit(
            {
                "mm 4096": lambda: torch.mm(a, a),
                "3x3 conv 256->256 at 56x56": lambda: F.conv2d(x3, w3, padding=1),
                "5x5 conv 192->32 at 28x28": lambda: F.conv2d(x5, w5, padding=2),
            },
            5,
        )
    print(
        f"peaks: the bench's 1x1 peak {best:.0f} GFLOP/s; "
        + ", ".join(f"{k} {flops[k] / v / 1e9:.0f}" for k, v in t.items())
    )


def _macs(m, x, y) -> int:
    if isinstance(m, ConvAct):
        return y.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
    if isinstance(m, FusedPointwiseChain):
        return x.numel() // m.plan.widths[0] * m.plan.macs_per_point()
    return 0


def layer_times(model, x, calls: int = 7) -> list:
    """[(name, kind, best seconds, MACs)] for each ConvAct, FusedPointwiseChain and other leaf layer, from
    forward hooks over ``calls`` calls of the whole model: each layer timed where it runs, caches as it finds them."""
    rows, start = {}, {}
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (ConvAct, FusedPointwiseChain))
              or (not list(m.children()) and not isinstance(m, nn.Identity))]
    layers = [(n, m) for n, m in layers if not any(n.startswith(o + ".") for o, _ in layers)]  # not inside a chain
    hooks = []
    for n, m in layers:
        kind = (
            ("depthwise" if m.groups > 1 else "1x1" if m.kernel_size == (1, 1) else "KxK")
            if isinstance(m, ConvAct)
            else "fused 1x1 chain"
            if isinstance(m, FusedPointwiseChain)
            else "other"
        )
        hooks.append(m.register_forward_pre_hook(lambda m, a, n=n: start.__setitem__(n, time.perf_counter())))
        hooks.append(
            m.register_forward_hook(
                lambda m, a, y, n=n, kind=kind: rows.setdefault(n, [kind, [], _macs(m, a[0], y)])[1].append(
                    time.perf_counter() - start[n]
                )
            )
        )
    with torch.no_grad():
        for _ in range(calls):
            call(model, x)
    for h in hooks:
        h.remove()
    return [(n, kind, min(ts), macs) for n, (kind, ts, macs) in rows.items()]


def by_kind(rows) -> dict:
    """{kind: (seconds, MACs, lowest GFLOP/s, highest GFLOP/s)} over the rows of ``layer_times``."""
    out = {}
    for _, kind, t, macs in rows:
        s, m, lo, hi = out.get(kind, (0.0, 0, float("inf"), 0.0))
        g = 2 * macs / t / 1e9
        out[kind] = (s + t, m + macs, min(lo, g) if macs else lo, max(hi, g))
    return out


def show(name, rows) -> dict:
    kinds = by_kind(rows)
    for kind, (t, macs, lo, hi) in kinds.items():
        rate = f", {2 * macs / t / 1e9:.0f} GFLOP/s overall ({lo:.0f} - {hi:.0f} layer by layer)" if macs else ""
        print(f"{name}: {kind:16s} {t * 1e3:6.2f} ms{rate}")
    return kinds


def nin():
    torch.manual_seed(0)
    model = create_model("nin_cifar").eval()
    x = torch.randn(8, *model_info("nin_cifar").input_size)
    opt, _ = optimize(model, x)
    kinds = show("nin_cifar, optimized", layer_times(opt, x, 15))
    with torch.no_grad():
        t = timeit({"eager": lambda: model(x), "optimized": lambda: opt(x)}, 11)
    rest = sum(v[0] for k, v in kinds.items() if k != "fused 1x1 chain")
    budget = t["eager"] / 1.5 - rest  # what the chains may take for 1.5x, everything else as it is
    chains = kinds.get("fused 1x1 chain", (0, 0))
    need = f"{2 * chains[1] / budget / 1e9:.0f} GFLOP/s" if budget > 0 else "less than nothing"
    print(f"nin_cifar: {ms(t)}, optimized {t['eager'] / t['optimized']:.2f}x eager; for 1.5x the fused chains "
          f"({chains[0] * 1e3:.2f} ms now) would have to run at {need}")


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
        print(
            f"pointnet fused: {key:28s} {rows.get(key, 0) / 5e3:6.2f} ms a call, "
            f"{rows.get(key, 0) / total:5.1%} of the time"
        )


def bottleneck():
    torch.manual_seed(0)
    xn = torch.randn(8, 192, 28, 28)
    w5, w1, w2 = torch.randn(32, 192, 5, 5), torch.randn(16, 192, 1, 1), torch.randn(32, 16, 5, 5)
    b1, b2 = torch.randn(16), torch.randn(32)
    cl = {k: v.contiguous(memory_format=torch.channels_last) for k, v in dict(x=xn, w5=w5, w1=w1, w2=w2).items()}
    y = F.relu(F.conv2d(cl["x"], cl["w1"], b1))  # (8, 16, 28, 28), channels_last

    def pair(x, a, b):
        return F.conv2d(F.relu(F.conv2d(x, a, b1)), b, b2, padding=2)

    t = timeit({"direct nchw": lambda: F.conv2d(xn, w5, b2, padding=2),
                "direct cl": lambda: F.conv2d(cl["x"], cl["w5"], b2, padding=2),
                "pair nchw": lambda: pair(xn, w1, w2), "pair cl": lambda: pair(cl["x"], cl["w1"], cl["w2"]),
                "1x1 cl": lambda: F.conv2d(cl["x"], cl["w1"], b1),
                "5x5 16->32 cl": lambda: F.conv2d(y, cl["w2"], b2, padding=2)}, 7)
    print("bottleneck:", ms(t))
    flops = {"direct cl": 2 * 8 * 784 * 192 * 32 * 25, "1x1 cl": 2 * 8 * 784 * 192 * 16,
             "5x5 16->32 cl": 2 * 8 * 784 * 16 * 32 * 25}
    print("bottleneck:", ", ".join(f"{k} {f / t[k] / 1e9:.0f} GFLOP/s" for k, f in flops.items()))
    mac_ratio = (192 * 32 * 25) / (192 * 16 + 16 * 32 * 25)
    print(
        f"bottleneck: measured {t['direct cl'] / t['pair cl'] / mac_ratio:.2f} of the MAC ratio; "
        "with each conv at its own"
        f" speed and nothing else, {t['direct cl'] / (t['1x1 cl'] + t['5x5 16->32 cl']) / mac_ratio:.2f}"
    )


class _Strided(nn.Module):  # what a stride-2 depthwise conv does to the shape, at the cost of a copy
    def forward(self, x):
        return x[:, :, ::2, ::2].contiguous(memory_format=torch.channels_last)


def mobilenet():
    torch.manual_seed(0)
    model = create_model("mobilenet_v1").eval()
    x = torch.randn(8, *model_info("mobilenet_v1").input_size)
    opt, _ = optimize(model, x)
    bare = copy.deepcopy(opt)
    depthwise, shapes = [], {}  # shapes: each depthwise conv's input shape, recorded on one call
    hooks = [m.register_forward_pre_hook(lambda m, a: shapes.update({m: tuple(a[0].shape)}))  # returns None: input kept
             for m in bare.modules() if isinstance(m, ConvAct) and m.groups > 1]
    with torch.no_grad():
        bare(x)
    for h in hooks:
        h.remove()
    for parent in list(bare.modules()):
        for name, m in list(parent.named_children()):
            if isinstance(m, ConvAct) and m.groups > 1:
                depthwise.append(m)
                setattr(parent, name, _Strided() if m.stride == (2, 2) else nn.Identity())
    show("mobilenet_v1, optimized", layer_times(opt, x))
    with torch.no_grad():
        bare(x)
        for _ in range(3):
            t = timeit(
                {"eager": lambda: model(x), "optimized": lambda: opt(x), "optimized, no depthwise": lambda: bare(x)}, 11
            )
            print(f"mobilenet_v1: {ms(t)}; optimized {t['eager'] / t['optimized']:.2f}x eager, without its"
                  f" {len(depthwise)} depthwise convs {t['eager'] / t['optimized, no depthwise']:.2f}x")
        seen = set()
        for m in depthwise:
            shape = shapes[m]
            if (shape, m.stride) in seen:
                continue
            seen.add((shape, m.stride))
            xn = torch.randn(shape)
            c, s = shape[1], shape[2]
            xc = xn.contiguous(memory_format=torch.channels_last)
            conv = nn.Conv2d(c, c, 3, m.stride, 1, groups=c).eval()
            conv.weight.data, conv.bias.data = m.weight.data.clone(), m.bias.data.clone()
            blocked, xb = mkldnn.MkldnnConv2d(conv, torch.float), xn.to_mkldnn()
            t = timeit({"channels_last": lambda: m(xc), "nchw": lambda: m(xn), "blocked": lambda: blocked(xb)}, 7)
            flops = 2 * 9 * m(xc).numel()  # 9 multiply-adds per output value
            print(f"depthwise {c:4d} ch at {s:3d}x{s:<3d} stride {m.stride[0]}: "
                  + ", ".join(f"{k} {flops / v / 1e9:5.1f} GFLOP/s" for k, v in t.items()))


def _ort_kind(node: dict) -> str:
    """An onnxruntime profile node's kind, named as layer_times names ours (from its weight's shape)."""
    op, shapes = node["args"]["op_name"], node["args"].get("input_type_shape", [])
    if "Conv" in op and len(shapes) > 1:
        w = list(shapes[1].values())[0]  # (O, C / groups, kh, kw)
        if len(w) == 4:
            return "depthwise" if w[1] == 1 and w[0] > 1 else "1x1" if w[2:] == [1, 1] else "KxK"
    return f"other: {op}"


def ort_times(model, x, calls: int = 20) -> dict:
    """{kind: ms per call} of ``model``'s ONNX export in onnxruntime (as the bench runs it), from its profiler."""
    import json

    session, feeds = _onnx_session(model, x, profile=True)
    for _ in range(calls + 3):
        session.run(None, feeds)
    path = session.end_profiling()  # onnxruntime writes its profile into the current folder: read, then remove
    try:
        with open(path) as f:
            nodes = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    finally:
        os.remove(path)
    out = {}
    for e in nodes[-calls * len(nodes) // (calls + 3):]:  # the last ``calls`` runs: warm
        k = _ort_kind(e)
        out[k] = out.get(k, 0.0) + e["dur"] / 1e3 / calls
    return out


def peers():
    models = {n: (create_model(n).eval(), torch.randn(8, *model_info(n).input_size))
              for n in ("mobilenet_v1", "squeezenet1_1", "googlenet")}
    models.update({k: v[:2] for k, v in _real_models().items() if k == "hf_mobilenet_v2"})
    for name, (model, x) in models.items():
        opt, _ = optimize(model, x)
        ours = {k: t * 1e3 for k, (t, _, _, _) in by_kind(layer_times(opt, x)).items()}
        theirs = ort_times(model, x)
        with torch.no_grad():
            t = timeit({"optimized": lambda: call(opt, x), "onnxruntime": _onnxruntime(model, x)}, 7)
        print(f"{name}: whole model optimized {t['optimized'] * 1e3:.2f} ms, "
              f"onnxruntime {t['onnxruntime'] * 1e3:.2f} ms")
        for k in sorted(set(ours) | set(theirs), key=lambda k: -max(ours.get(k, 0), theirs.get(k, 0))):
            print(f"  {k:34s} optimized {ours.get(k, 0):7.2f} ms   onnxruntime {theirs.get(k, 0):7.2f} ms")


def chain():
    """PointNet's shared MLP (3-64-64-64-128-1024, max over 1,024 points): our fused chain (kernels tuned as
    optimize() does) beside onnxruntime and OpenVINO on the same input, side by side; then where each spends
    its time: our oneDNN products and max (torch profiler) and onnxruntime's nodes (its own profiler)."""

    from onebyone.bench.sections import _MaxOverPoints, _openvino
    from onebyone.torch.fast.passes import choose_kernels

    for b in (8, 32):
        eager, fused, x = _pointnet_parts(b, 1024)
        choose_kernels(fused, x)
        pooled = _MaxOverPoints(eager).eval()
        fns = {"fused": lambda: fused(x), "onnxruntime": _onnxruntime(pooled, x), "openvino": _openvino(pooled, x)}
        t = timeit({k: f for k, f in fns.items() if f is not None}, 9)
        print(f"chain B={b}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items())
              + f"; kernels {fused.kernel_names()}")
        print("  fused, ms a call: " + _ms(_torch_ops(lambda: fused(x)), 6))
        print("  onnxruntime, ms a call: " + _ms(_ort_ops(pooled, x)))


def pointnet_cls():
    """The whole optimize()d pointnet_cls (batch 8; the form it kept named) and its eager rewrite beside
    onnxruntime and OpenVINO, side by side, then where the rewrite and onnxruntime spend their time, by
    operator (each one's profiler)."""
    from onebyone.bench.sections import _kept, _openvino
    from onebyone.torch.fast.passes import PASSES

    model, x = create_model("pointnet_cls").eval(), torch.randn(8, *model_info("pointnet_cls").input_size)
    opt, _ = optimize(model, x)
    rewrite, _ = optimize(model, x, passes=[p for p in PASSES if p != "engines"])  # the eager rewrite alone
    fns = {"optimized": lambda: call(opt, x), "rewrite": lambda: call(rewrite, x),
           "onnxruntime": _onnxruntime(model, x), "openvino": _openvino(model, x)}
    with torch.no_grad():
        t = timeit({k: f for k, f in fns.items() if f is not None}, 9)
    print(f"pointnet_cls B=8 (optimize() kept {_kept(opt)}): "
          + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items()))
    print("  the eager rewrite, ms a call: " + _ms(_torch_ops(lambda: call(rewrite, x)), 10))
    print("  onnxruntime, ms a call: " + _ms(_ort_ops(model, x)))


def _torch_ops(fn, runs: int = 5) -> dict:
    """{torch operator: its own ms a call} over ``runs`` calls of ``fn`` (torch profiler, after a warm-up)."""
    with torch.no_grad():
        fn()
        with torch.profiler.profile() as prof:
            for _ in range(runs):
                fn()
    return {e.key: e.self_cpu_time_total / runs / 1e3 for e in prof.key_averages()}


def _ort_ops(model, x, runs: int = 5) -> dict:
    """{onnxruntime operator and provider: ms a call} of ``model``'s export, over its last ``runs`` of
    ``runs + 3`` runs (its own profiler)."""
    import json

    session, feeds = _onnx_session(model, x, profile=True)
    for _ in range(runs + 3):
        session.run(None, feeds)
    path = session.end_profiling()  # written into the current folder: read, then removed
    with open(path) as f:
        nodes = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    os.remove(path)
    per = {}
    for e in nodes[-runs * len(nodes) // (runs + 3):]:
        key = f"{e['args']['op_name']} {e['args'].get('provider', '')}".strip()
        per[key] = per.get(key, 0.0) + e["dur"] / 1e3 / runs
    return per


def _ms(per: dict, top: int | None = None) -> str:
    rows = sorted(per.items(), key=lambda r: -r[1])[:top]
    return ", ".join(f"{k} {v:.2f}" for k, v in rows) + f" (all {sum(per.values()):.2f})"


def bf16():
    for name in ("squeezenet1_1", "mobilenet_v1"):
        model = create_model(name).eval()
        x = torch.randn(8, *model_info(name).input_size)
        forms = {"float32": optimize(model, x)[0], "bfloat16": optimize(model, x, dtype=torch.bfloat16)[0]}
        kinds = {k: {kind: t * 1e3 for kind, (t, *_) in by_kind(layer_times(m, x)).items()} for k, m in forms.items()}
        with torch.no_grad():
            t = timeit({k: (lambda m=m: m(x)) for k, m in forms.items()}, 7)
        print(f"{name}: whole model float32 {t['float32'] * 1e3:.2f} ms, bfloat16 {t['bfloat16'] * 1e3:.2f} ms "
              f"({t['float32'] / t['bfloat16']:.2f}x)")
        for kind in kinds["float32"]:
            a, b = kinds["float32"][kind], kinds["bfloat16"].get(kind, 0.0)
            print(f"  {kind:16s} float32 {a:7.2f} ms   bfloat16 {b:7.2f} ms   {a / b if b else 0:.2f}x")


if __name__ == "__main__":
    hold_freed_memory()
    parts = {"peaks": peaks, "pointnet": pointnet, "bottleneck": bottleneck, "nin": nin, "mobilenet": mobilenet,
             "peers": peers, "bf16": bf16, "chain": chain, "pointnet_cls": pointnet_cls}
    for part in sys.argv[1:] or list(parts):
        parts[part]()
