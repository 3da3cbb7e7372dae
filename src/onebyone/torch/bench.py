"""``onebyone bench``: every speed claim measured side by side in one run, reported as ratios.

Sections (each a function returning rows of plain dicts):
  a  the pointwise op over widths: Pointwise vs F.conv2d (NCHW, channels_last) vs torch.matmul
  b  PointNet's shared MLP 3-64-64-64-128-1024 + max pool: fused vs eager Conv1d vs torch.compile
  c  dense prediction: a convolutionalized classifier vs the classifier on every crop
  d  the 5x5 bottleneck: measured speedup vs the MAC ratio
  e  optimize() on zoo models: vs eager and vs torch.compile
``peak`` (GFLOP/s of a large channels_last 1x1 conv) and ``bandwidth`` (GB/s of a large copy) are
measured in the same run. Times are the best of interleaved repeats after a warm-up (see ``timeit``).
"""
from __future__ import annotations

import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

from .. import cost
from ..errors import OneByOneError
from .engine import hold_freed_memory, per_block, timings

POINTNET = (3, 64, 64, 64, 128, 1024)


def _progress(i: int, n: int, what: str) -> None:
    bar = "#" * int(24 * i / n)
    sys.stderr.write(f"\rbench [{bar:<24}] {i}/{n} {what:<48}")
    sys.stderr.write("\n" if i == n else "")
    sys.stderr.flush()


def timeit(fns: dict, repeat: int = 5, block: float = 0.005, budget: float = 0.1) -> dict:
    """Best seconds per call of each callable under no_grad over interleaved rounds after a warm-up
    call (``engine.timings``). The best, not the median: on a shared machine other tenants only ever
    add time, in bursts longer than a round, and the median of a few rounds moved by 30% from run to
    run. A callable faster than ``block`` seconds is timed over as many calls in a row as fill it: a
    1 ms conv timed right after a 5 ms one ran 30-50% slower than in a row of its own. Rounds:
    ``repeat``, or more (up to 25) while each callable's rounds fit in ``budget`` seconds, so that
    short calls, whose best of 5 moved by 10% between runs, are sampled as often as they cheaply can."""
    with torch.no_grad():
        for f in fns.values():
            f()  # the warm-up (a first call may pick kernels, pack weights, compile)
        once = {k: t for k, (t,) in timings(fns, 1).items()}
        calls = per_block(once, block)
        rounds = max(repeat, min(25, int(budget / max(calls[k] * t for k, t in once.items()))))
        return {k: min(v) for k, v in timings(fns, rounds, calls).items()}


def peak(repeat: int = 5) -> dict:
    """GFLOP/s of large channels_last 1x1 convs (best shape) and GB/s of a 256 MB copy."""
    best = 0.0
    for b, c, o, s in ((4, 1024, 1024, 28), (1, 512, 2048, 32), (4, 256, 1024, 56)):
        x = torch.randn(b, c, s, s).contiguous(memory_format=torch.channels_last)
        w = torch.randn(o, c, 1, 1)
        t = timeit({"conv": lambda: F.conv2d(x, w)}, repeat)["conv"]
        best = max(best, 2 * b * s * s * c * o / t / 1e9)
    src, dst = torch.randn(32 << 20), torch.empty(32 << 20)
    t = timeit({"copy": lambda: dst.copy_(src)}, repeat)["copy"]
    return {"peak_gflops": best, "bandwidth_gbs": 2 * src.numel() * 4 / t / 1e9}


def _roof(name, flops, bytes_, seconds, section) -> dict:
    return {"section": section, "name": name, "gflops": flops / seconds / 1e9, "intensity": flops / bytes_, "ms": seconds * 1e3}


def pointwise_op(quick: bool, repeat: int) -> list:
    from .layers import Pointwise

    rows = []
    b, s = (4, 28) if quick else (8, 56)
    for c in ((3, 64, 256, 1024) if quick else (3, 16, 64, 256, 512, 1024)):
        o = 64 if c == 3 else c
        layer = Pointwise(c, o).eval()
        w, bias = layer.weight, layer.bias
        x = torch.randn(b, c, s, s)
        xcl = x.contiguous(memory_format=torch.channels_last)
        # each layout's contenders timed among themselves: the ratio is within a layout, and NCHW's large
        # matmul outputs would otherwise evict and unmap what the channels_last calls use. The control is
        # F.conv2d a second time: its ratio shows how far the timer alone moves a ratio (an A/A test)
        t = timeit({"pointwise_nchw": lambda: layer(x), "conv2d_nchw": lambda: F.conv2d(x, w, bias),
                    "matmul_nchw": lambda: torch.matmul(w.flatten(1), x.flatten(2)) + bias[:, None],
                    "control_nchw": lambda: F.conv2d(x, w, bias)}, repeat)
        t |= timeit({"pointwise_cl": lambda: layer(xcl), "conv2d_cl": lambda: F.conv2d(xcl, w, bias),
                     "matmul_cl": lambda: torch.matmul(xcl.permute(0, 2, 3, 1), w.flatten(1).t()) + bias,
                     "control_cl": lambda: F.conv2d(xcl, w, bias)}, repeat)
        flops = 2 * cost.conv1x1_cost((b, c, s, s), o).macs
        bytes_ = 4 * (b * s * s * (c + o) + c * o)
        row = {"c_in": c, "c_out": o, "batch": b, "size": s, **{k: v * 1e3 for k, v in t.items()}}
        row["pointwise_vs_best_nchw"] = min(t["conv2d_nchw"], t["matmul_nchw"]) / t["pointwise_nchw"]
        row["pointwise_vs_best_cl"] = min(t["conv2d_cl"], t["matmul_cl"]) / t["pointwise_cl"]
        row["control_vs_best"] = {k: min(t[f"conv2d_{k}"], t[f"matmul_{k}"]) / t[f"control_{k}"] for k in ("nchw", "cl")}
        row["roofline"] = [_roof(f"pointwise {c}->{o} {k}", flops, bytes_, t[k], "a") for k in ("pointwise_nchw", "pointwise_cl")]
        rows.append(row)
    return rows


def _pointnet_parts(b: int, n: int):
    from .fused import FusedPointwiseChain

    torch.manual_seed(0)
    eager = nn.Sequential(*[m for i, o in zip(POINTNET, POINTNET[1:]) for m in (nn.Conv1d(i, o, 1), nn.ReLU())]).eval()
    fused = FusedPointwiseChain.from_layers(list(eager), pool="max")
    x = torch.randn(b, 3, n)
    return eager, fused, x


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(fn) -> int | None:
    """Bytes by which one call of ``fn`` raises the process's resident memory at its peak (Linux:
    the high-water mark is reset through /proc/self/clear_refs first); None where that is unavailable."""
    try:
        with torch.no_grad():
            fn()  # warm: caches and one-time allocations are not the call's memory
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status_kb("VmRSS")
            fn()
            return (_status_kb("VmHWM") - base) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def shared_mlp(quick: bool, repeat: int, compile_: bool) -> dict:
    b, n = (8, 1024) if quick else (32, 1024)
    eager, fused, x = _pointnet_parts(b, n)
    fns = {"eager": lambda: eager(x).amax(2), "fused": lambda: fused(x)}
    if compile_:
        comp = torch.compile(eager)
        fns["compile"] = lambda: comp(x).amax(2)
    with torch.no_grad():
        ref = eager(x).amax(2)
        err = {k: float((f() - ref).abs().max()) for k, f in fns.items()}
    t = timeit(fns, repeat)
    flops = 2 * b * n * sum(i * o for i, o in zip(POINTNET, POINTNET[1:]))
    mem = {k: peak_memory(f) for k, f in fns.items()}
    out = {"batch": b, "points": n, "ms": {k: v * 1e3 for k, v in t.items()}, "max_abs_diff": err,
           "gflops": {k: flops / v / 1e9 for k, v in t.items()}, "peak_extra_bytes": mem,
           "fused_vs_eager": t["eager"] / t["fused"],
           "fused_memory_vs_eager": None if mem["eager"] is None else mem["fused"] / max(mem["eager"], 1),
           "roofline": [_roof(f"shared MLP {k}", flops, 4 * b * n * (3 + 1024), v, "b") for k, v in t.items()]}
    if compile_:
        out["fused_vs_compile"] = t["compile"] / t["fused"]
    return out


def _window_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def dense_prediction(quick: bool, repeat: int) -> dict:
    from .convolutionalize import convolutionalize

    model = _window_classifier()  # 28x28 windows, total stride 4, no padding: each cell equals its crop
    conv, _ = convolutionalize(model, (1, 28, 28))
    image = torch.randn(1, 1, 252, 252)
    crops = image.unfold(2, 28, 4).unfold(3, 28, 4)  # (1, 1, 57, 57, 28, 28)
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(-1, 1, 28, 28).contiguous()  # (3249, 1, 28, 28)
    one_by_one = lambda: [model(crops[i:i + 1]) for i in range(len(crops))]  # noqa: E731
    t = timeit({"every_crop_batched": lambda: model(crops), "every_crop_one_by_one": one_by_one,
                "convolutionalized": lambda: conv(image)}, max(1, repeat // 2))
    with torch.no_grad():
        grid = conv(image)[0].permute(1, 2, 0).reshape(-1, 10)  # (10, 57, 57) -> (3249, 10)
        err = float((grid - model(crops)).abs().max())
    return {"windows": crops.shape[0], "ms": {k: v * 1e3 for k, v in t.items()}, "max_abs_diff": err,
            "speedup": t["every_crop_one_by_one"] / t["convolutionalized"],
            "speedup_vs_batched_crops": t["every_crop_batched"] / t["convolutionalized"]}


def bottleneck(quick: bool, repeat: int) -> dict:
    b = 4 if quick else 8
    torch.manual_seed(0)
    x = torch.randn(b, 192, 28, 28).contiguous(memory_format=torch.channels_last)
    direct = nn.Conv2d(192, 32, 5, padding=2).eval().to(memory_format=torch.channels_last)
    reduce = nn.Sequential(nn.Conv2d(192, 16, 1), nn.ReLU(), nn.Conv2d(16, 32, 5, padding=2)).eval().to(memory_format=torch.channels_last)
    t = timeit({"direct_5x5": lambda: direct(x), "bottleneck": lambda: reduce(x)}, repeat)
    macs_direct = cost.conv_cost((1, 192, 28, 28), 32, 5, padding="same").macs
    macs_bottle = cost.conv1x1_cost((1, 192, 28, 28), 16).macs + cost.conv_cost((1, 16, 28, 28), 32, 5, padding="same").macs
    ratio = macs_direct / macs_bottle
    speedup = t["direct_5x5"] / t["bottleneck"]
    return {"batch": b, "macs_direct": macs_direct, "macs_bottleneck": macs_bottle, "mac_ratio": ratio,
            "ms": {k: v * 1e3 for k, v in t.items()}, "speedup": speedup, "speedup_vs_mac_ratio": speedup / ratio}


def optimized_models(quick: bool, repeat: int, compile_: bool, names=("nin_cifar", "squeezenet1_1", "mobilenet_v1")) -> list:
    from ..zoo import create_model, model_info
    from .optimize import optimize

    rows = []
    for name in names:
        torch.manual_seed(0)
        model = create_model(name).eval()
        x = torch.randn(8, *model_info(name).input_size)
        opt, report = optimize(model, x)
        fns = {"eager": lambda: model(x), "optimized": lambda: opt(x)}
        if compile_:
            comp = torch.compile(model)
            fns["compile"] = lambda: comp(x)
        t = timeit(fns, repeat)
        flops = 2 * 8 * model_info(name).macs
        row = {"model": name, "batch": 8, "ms": {k: v * 1e3 for k, v in t.items()}, "vs_eager": t["eager"] / t["optimized"],
               "gflops": {k: flops / v / 1e9 for k, v in t.items()}, "changes": len(report.changed), "max_abs_diff": report.max_abs_diff}
        if compile_:
            row["vs_compile"] = t["compile"] / t["optimized"]
        rows.append(row)
    return rows


SECTIONS = "abcde"


def run(sections: str = SECTIONS, quick: bool = False, compile_: bool = True, progress: bool = True, runs: int = 1) -> dict:
    """Run the chosen sections ``runs`` times; returns one JSON-able dict: the last run (machine, peak,
    then a key per section) and ``headlines``, each headline ratio's median over the runs, with
    ``spread`` (its min and max) and ``runs`` (every run's headlines) when there was more than one."""
    if runs < 1:
        raise OneByOneError(f"runs must be at least 1, got {runs}")
    held = hold_freed_memory()  # page faults of freed-and-refetched activations moved eager mobilenet_v1 by 2x
    every = []
    for i in range(runs):
        prefix = f"run {i + 1}/{runs} " if runs > 1 else ""
        result = _run_once(sections, quick, compile_, prefix if progress else False)
        every.append(headlines(result))
    result["headlines"] = {k: statistics.median(r[k] for r in every) for k in every[0]}
    result["malloc"] = "freed memory held (engine.hold_freed_memory)" if held else "as the platform runs it"
    if runs > 1:
        result["spread"] = {k: [min(r[k] for r in every), max(r[k] for r in every)] for k in every[0]}
        result["runs"] = every
    return result


def headlines(result: dict) -> dict:
    """The ratios the README table quotes, by name, from one run."""
    out = {}
    for row in result.get("pointwise_op", []):
        out[f"a {row['c_in']} nchw"], out[f"a {row['c_in']} channels_last"] = row["pointwise_vs_best_nchw"], row["pointwise_vs_best_cl"]
    if "pointwise_op" in result:  # the lowest A/A reading of the run: ratios above it are within the timer's reach
        out["a control"] = min(v for row in result["pointwise_op"] for v in row["control_vs_best"].values())
    if "shared_mlp" in result:
        s = result["shared_mlp"]
        out["b vs eager"], out["b fraction of peak"] = s["fused_vs_eager"], s["fraction_of_peak"]
        out["b ceiling vs eager"] = s["ceiling_vs_eager"]
        out |= {"b vs compile": s["fused_vs_compile"]} if "fused_vs_compile" in s else {}
    if "dense_prediction" in result:
        out["c vs each crop"] = result["dense_prediction"]["speedup"]
    if "bottleneck" in result:
        out["d of the MAC ratio"] = result["bottleneck"]["speedup_vs_mac_ratio"]
    for row in result.get("optimize", []):
        out[f"e {row['model']} vs eager"], out[f"e {row['model']} ceiling vs eager"] = row["vs_eager"], row["ceiling_vs_eager"]
        out |= {f"e {row['model']} vs compile": row["vs_compile"]} if "vs_compile" in row else {}
    return out


def _run_once(sections: str, quick: bool, compile_: bool, progress) -> dict:
    """One run of the sections; ``progress``: False, or a prefix for the progress bar."""
    repeat = 3 if quick else 7
    steps = ["peak"] + [s for s in SECTIONS if s in sections]
    result = {"machine": _machine(), "quick": quick, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for i, step in enumerate(steps):
        if progress is not False:
            _progress(i, len(steps), progress + {"peak": "peak and bandwidth", "a": "(a) pointwise op", "b": "(b) shared MLP",
                                      "c": "(c) dense prediction", "d": "(d) bottleneck", "e": "(e) optimize() on zoo models"}[step])
        if step == "peak":
            result.update(peak(repeat))
        elif step == "a":
            result["pointwise_op"] = pointwise_op(quick, repeat)
        elif step == "b":
            result["shared_mlp"] = shared_mlp(quick, repeat + 8, compile_)  # the flagship ratio: more rounds
        elif step == "c":
            result["dense_prediction"] = dense_prediction(quick, repeat)
        elif step == "d":
            result["bottleneck"] = bottleneck(quick, repeat)
        else:
            result["optimize"] = optimized_models(quick, repeat + 4, compile_)  # whole models: the noisiest ratios
    if "pointwise_op" in result:  # the large channels_last 1x1 convs of (a) count towards the peak too
        sizes = [(r, 2 * cost.conv1x1_cost((r["batch"], r["c_in"], r["size"], r["size"]), r["c_out"]).macs) for r in result["pointwise_op"]]
        result["peak_gflops"] = max([result["peak_gflops"]] + [f / r["conv2d_cl"] * 1e3 / 1e9 for r, f in sizes])
        for row in result["pointwise_op"]:
            for r in row["roofline"]:
                r["fraction_of_peak"] = r["gflops"] / result["peak_gflops"]
    # against the final peak, which (a) may have raised; the ceiling is eager's time over the time of its FLOPs
    # at that peak (peak / eager's GFLOP/s): the most an implementation whose products run no faster than the
    # best large 1x1 conv could gain (KxK convs ran up to 15% faster here: benchmarks/limits.py peaks)
    if "shared_mlp" in result:
        s = result["shared_mlp"]
        s["fraction_of_peak"] = s["gflops"]["fused"] / result["peak_gflops"]
        s["ceiling_vs_eager"] = result["peak_gflops"] / s["gflops"]["eager"]
    for row in result.get("optimize", []):
        row["fraction_of_peak"] = {k: v / result["peak_gflops"] for k, v in row["gflops"].items()}
        row["ceiling_vs_eager"] = result["peak_gflops"] / row["gflops"]["eager"]
    if progress is not False:
        _progress(len(steps), len(steps), progress + "done")
    return result


def _machine() -> str:
    import platform

    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {torch.get_num_threads()} threads, {platform.system()}"


def summary(result: dict) -> list[str]:
    """The last run's measurements as lines of text, then (after several runs) each headline ratio's
    median and range over the runs (what the README table shows)."""
    lines = [f"machine: {result['machine']}; peak {result['peak_gflops']:.0f} GFLOP/s (channels_last 1x1 conv), "
             f"copy bandwidth {result['bandwidth_gbs']:.1f} GB/s" + (f"; malloc: {result['malloc']}" if "malloc" in result else "")]
    for row in result.get("pointwise_op", []):
        lines.append(f"(a) {row['c_in']:>4}->{row['c_out']:<4} Pointwise vs best of conv2d/matmul: NCHW {row['pointwise_vs_best_nchw']:.2f}x, "
                     f"channels_last {row['pointwise_vs_best_cl']:.2f}x; {row['roofline'][1]['fraction_of_peak']:.0%} of peak")
    if "pointwise_op" in result:
        lines.append(f"(a) control, F.conv2d timed as a contender against itself: lowest ratio {headlines(result)['a control']:.2f}x")
    if "shared_mlp" in result:
        s = result["shared_mlp"]
        lines.append(f"(b) shared MLP, B={s['batch']} N={s['points']}: fused {s['fused_vs_eager']:.2f}x eager"
                     + (f", {s['fused_vs_compile']:.2f}x torch.compile" if "fused_vs_compile" in s else "")
                     + f", {s['fraction_of_peak']:.0%} of peak (ceiling {s['ceiling_vs_eager']:.2f}x eager), peak extra memory "
                     + ", ".join(f"{k} {v / 1e6:.1f} MB" if v is not None else f"{k} n/a" for k, v in s["peak_extra_bytes"].items()))
    if "dense_prediction" in result:
        d = result["dense_prediction"]
        lines.append(f"(c) dense prediction over {d['windows']} windows: convolutionalized {d['speedup']:.1f}x the classifier "
                     f"run crop by crop, {d['speedup_vs_batched_crops']:.1f}x all crops in one batch")
    if "bottleneck" in result:
        d = result["bottleneck"]
        lines.append(f"(d) 5x5 bottleneck: {d['speedup']:.2f}x faster for a {d['mac_ratio']:.2f}x MAC ratio ({d['speedup_vs_mac_ratio']:.2f} of it)")
    for row in result.get("optimize", []):
        lines.append(f"(e) optimize({row['model']}), batch 8: {row['vs_eager']:.2f}x eager (ceiling {row['ceiling_vs_eager']:.2f}x)"
                     + (f", {row['vs_compile']:.2f}x torch.compile" if "vs_compile" in row else "")
                     + "; " + ", ".join(f"{k} {v:.0%}" for k, v in row["fraction_of_peak"].items()) + " of peak")
    if "spread" in result:
        lines.append(f"over {len(result['runs'])} runs, median (min - max): " + "; ".join(f"{k} {cell(result, k)}" for k in result["headlines"]))
    return lines


def cell(result: dict, name: str) -> str:
    """One headline as the README table writes it: the median, and its range when there were several runs."""
    fmt = (lambda v: f"{v:.0%}") if "fraction" in name else (lambda v: f"{v:.2f}") if " of the " in name else (lambda v: f"{v:.2f}x")
    lo, hi = result.get("spread", {}).get(name, (None, None))
    return fmt(result["headlines"][name]) + (f" ({fmt(lo)} - {fmt(hi)})" if lo is not None else "")


def write(result: dict, json_path=None, png_path=None) -> None:
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=2)
    if png_path:
        from ..figures import bench_roofline

        bench_roofline(result, png_path)


