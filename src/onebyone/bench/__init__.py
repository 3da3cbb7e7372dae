"""``onebyone bench``: every speed claim measured side by side in one run, reported as ratios.

``run`` runs the sections (``bench.sections``) one or more times and returns one JSON-able dict;
``summary`` turns it into lines of text, ``write`` into a JSON file and a roofline PNG. Only the
command imports this package: it holds the timers' harness and ``hold_freed_memory``, which changes
the process's malloc.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
from contextlib import nullcontext

import torch

from .. import cost
from ..checks import strict_json
from ..errors import OneByOneError
from ..progress import Bar
from ..torch.fast import capabilities, private
from .branches import merged_branches
from .int8 import int8_models
from .memory import hold_freed_memory
from .sections import bottleneck, dense_prediction, optimized_models, peak, pointwise_op, shared_mlp, timeit

SECTIONS = "abcdefg"
LABELS = {"peak": "peak and bandwidth", "a": "(a) pointwise op", "b": "(b) shared MLP", "c": "(c) dense prediction",
          "d": "(d) bottleneck", "e": "(e) optimize() on zoo models", "f": "(f) branches merged",
          "g": "(g) int8"}


def check_outputs(sections: str, json_path=None, png_path=None) -> list:
    """Refuse, before any timing, sections that do not exist, a roofline PNG with neither section a nor b or
    named other than ``*.png``, an output that cannot be written, one file named for both the JSON and the PNG,
    and an existing file that is not a bench result (a JSON holding ``machine``, a PNG) to replace: a file of
    the user's. Returns the outputs that will replace an earlier result."""
    from ..checks import check_writable_file

    if not sections or set(sections) - set(SECTIONS):
        raise OneByOneError(f"--sections takes letters from {SECTIONS!r}, got {sections!r}")
    if png_path and not set(sections) & {"a", "b"}:
        raise OneByOneError(f"--png draws the roofline of sections a and b; --sections {sections} has neither")
    if png_path and not str(png_path).lower().endswith(".png"):
        raise OneByOneError(f"--png writes a PNG: name a file ending in .png, got {png_path}")
    replaced = []
    for path, flag in ((json_path, "--json"), (png_path, "--png")):
        if path is not None and check_writable_file(path, flag).exists():
            if not _a_result(path, flag):
                raise OneByOneError(f"{flag} {path} exists and is not a bench result: name a new file (a bench "
                                    "replaces only a result of its own)")
            replaced.append(path)
    if json_path and png_path and os.path.realpath(json_path) == os.path.realpath(png_path):
        raise OneByOneError(f"--json and --png name the same file {json_path}: the figure would replace the results")
    return replaced


def _a_result(path, flag: str) -> bool:
    """Is the file at ``path`` what ``bench`` writes for ``flag``: a JSON object with ``machine``, or a PNG?"""
    try:
        with open(path, "rb") as f:
            head = f.read(8) if flag == "--png" else f.read()
        if flag == "--png":
            return head == b"\x89PNG\r\n\x1a\n"
        value = json.loads(head)
        return isinstance(value, dict) and "machine" in value
    except (OSError, ValueError, TypeError):
        return False


def run(sections: str = SECTIONS, quick: bool = False, compile_: bool = True, progress: bool = True, runs: int = 1,
        save=None) -> dict:
    """Run the chosen sections ``runs`` times; returns one JSON-able dict: the last run (machine, peak,
    then a key per section) and ``headlines``, each headline ratio's median over the runs, with
    ``spread`` (its min and max) and ``runs`` (every run's headlines) when there was more than one.
    ``save(result)`` is called after every finished run with the result so far, so an interrupted
    invocation keeps what it measured."""
    if runs < 1:
        raise OneByOneError(f"runs must be at least 1, got {runs}")
    held = hold_freed_memory()  # freed activations kept mapped: no page faults when the next call refetches them
    every = []
    for i in range(runs):
        prefix = f"run {i + 1}/{runs} " if runs > 1 else ""
        result = _run_once(sections, quick, compile_, prefix if progress else False)
        result["unreliable"] = reliability(result)
        if result["unreliable"]:  # repeated once where a run cannot be trusted; the second stands, flagged or not
            why = result["unreliable"]
            result = _run_once(sections, quick, compile_, (prefix + "again ") if progress else False)
            result["unreliable"], result["repeated_because"] = reliability(result), why
        every.append(headlines(result))
        result["headlines"] = {k: statistics.median(r[k] for r in every) for k in every[0]}
        result["malloc"] = "freed memory held (bench.hold_freed_memory)" if held else "as the platform runs it"
        if len(every) > 1:
            result["spread"] = {k: [min(r[k] for r in every), max(r[k] for r in every)] for k in every[0]}
            result["runs"] = list(every)
        if save is not None:
            save(result)
    return result


def headlines(result: dict) -> dict:
    """The ratios the README tables quote, by name, from one run."""
    out = {}
    for row in result.get("pointwise_op", []):
        out[f"a {row['c_in']} nchw"] = row["pointwise_vs_best_nchw"]
        out[f"a {row['c_in']} channels_last"] = row["pointwise_vs_best_cl"]
    if "pointwise_op" in result:  # the lowest A/A reading of the run: ratios above it are within the timer's reach
        out["a control"] = min(v for row in result["pointwise_op"] for v in row["control_vs_best"].values())
    if "shared_mlp" in result:
        s = result["shared_mlp"]
        out["b vs eager"], out["b fraction of peak"] = s["fused_vs_eager"], s["fraction_of_peak"]
        out["b ceiling vs eager"] = s["ceiling_vs_eager"]
        for key, label in (("fused_vs_compile", "vs compile"), ("fused_vs_onnxruntime", "vs onnxruntime"),
                           ("fused_vs_openvino", "vs openvino"), ("fused_vs_best_engine", "vs best engine")):
            out |= {f"b {label}": s[key]} if key in s else {}
        if "bf16_vs_eager" in s:
            out["b bf16 vs eager"], out["b bf16 vs fused"] = s["bf16_vs_eager"], s["bf16_vs_fused"]
        if "bf16_ceiling_vs_eager" in s:
            out["b bf16 ceiling vs eager"] = s["bf16_ceiling_vs_eager"]
    if "dense_prediction" in result:
        out["c vs each crop"] = result["dense_prediction"]["speedup"]
    if "bottleneck" in result:
        out["d of the MAC ratio"] = result["bottleneck"]["speedup_vs_mac_ratio"]
    if "branches" in result:
        out["f merged vs training"] = result["branches"]["merged_vs_training"]
        out["f merged and optimized vs training"] = result["branches"]["optimized_vs_training"]
    for row in result.get("optimize", []):
        m = row["model"]
        out[f"e {m} vs eager"], out[f"e {m} ceiling vs eager"] = row["vs_eager"], row["ceiling_vs_eager"]
        for key, label in (("vs_compile", "vs compile"), ("vs_compile_frozen", "vs compile frozen"),
                           ("vs_onnxruntime", "vs onnxruntime"), ("vs_openvino", "vs openvino"),
                           ("vs_best_engine", "vs best engine"), ("vs_best_peer", "vs best peer"),
                           ("with_compile_vs_best_peer", "with compile vs best peer"),
                           ("bf16_vs_optimized", "bf16 vs optimize"), ("optimize_seconds", "optimize seconds")):
            out |= {f"e {m} {label}": row[key]} if key in row else {}
    for row in result.get("int8", []):
        m = row["model"]
        out[f"g {m} int8 vs float32"] = row["int8_vs_float32"]
        out |= {f"g {m} int8 vs best int8 engine": row["int8_vs_best_int8_engine"]} \
            if "int8_vs_best_int8_engine" in row else {}
    return out


def reliability(result: dict, slack: float = 1.25, busy: float = 1.5) -> list:
    """Why a run cannot be trusted, if it cannot: one of our float32 contenders (``_ours``) faster than
    ``slack`` times the run's measured peak (k x k convs may run somewhat above the 1x1 conv peak, so a
    little above it is real; far above it, the peak was measured while the machine was busier), a ratio of
    ours above its own ceiling, or
    two contenders of one comparison whose median rounds took over ``busy`` times their best (the machine
    was busy while they ran: a best round may have met a quiet moment that the others did not; one
    contender alone that jitters, as an engine's module on a model of microseconds does, is its own)."""
    flags = [f"{where} {k}: its median round took {v:.2f}x its best (the machine was busy)"
             for where, spread in [("(b)", result.get("shared_mlp", {}).get("round_spread", {}))]
             + [(f"(e) {row['model']}", row.get("round_spread", {})) for row in result.get("optimize", [])]
             if sum(v > busy for v in spread.values()) >= 2 for k, v in spread.items() if v > busy]
    peak = result.get("peak_gflops")
    if not peak:
        return flags
    measured = [("(b)", k, v) for k, v in result.get("shared_mlp", {}).get("gflops", {}).items() if _ours(k, {})]
    measured += [(f"(e) {row['model']}", k, v) for row in result.get("optimize", []) for k, v in row["gflops"].items()
                 if _ours(k, row)]
    flags += [f"{where} {k} ran at {v:.0f} GFLOP/s, {v / peak:.0%} of the run's measured peak {peak:.0f}"
              for where, k, v in measured if v > slack * peak]
    s = result.get("shared_mlp")
    if s and s["fused_vs_eager"] > slack * s["ceiling_vs_eager"]:
        flags.append(f"(b) fused ran {s['fused_vs_eager']:.2f}x eager, above its ceiling {s['ceiling_vs_eager']:.2f}x")
    if s and s.get("bf16_fraction_of_peak", 0) > slack:
        flags.append(f"(b) fused_bf16 ran at {s['bf16_fraction_of_peak']:.0%} of the run's measured bfloat16 peak "
                     f"{result['peak_gflops_bf16']:.0f} GFLOP/s")
    flags += [f"(e) {row['model']} ran {row['vs_eager']:.2f}x eager, above its ceiling {row['ceiling_vs_eager']:.2f}x"
              for row in result.get("optimize", []) if row["vs_eager"] > slack * row["ceiling_vs_eager"]
              and _ours("optimized", row)]
    return flags


def _ours(contender: str, row: dict) -> bool:
    """Does ``contender`` run its products as our float32 kernels do (so that the 1x1 conv peak bounds it)?
    Not bfloat16, not an engine (onnxruntime, OpenVINO and Inductor may run k x k convs with fewer
    multiplications, Winograd's), nor ``optimize()``'s result where it kept an engine's form."""
    engines = ("bf16", "onnxruntime", "openvino", "compile")
    if any(e in contender for e in engines):
        return False
    return contender != "optimized" or row.get("kept", "the eager rewrite") == "the eager rewrite"


def times(ratio: float, than: str) -> str:
    """A speed ratio in words: "1.52x faster than eager", or "1.52x slower than eager" below 1."""
    return f"{ratio:.2f}x faster than {than}" if ratio >= 1 else f"{1 / ratio:.2f}x slower than {than}"


def _run_once(sections: str, quick: bool, compile_: bool, progress) -> dict:
    """One run of the sections; ``progress``: False, or a prefix for the progress bar."""
    repeat = 3 if quick else 7
    steps = ["peak"] + [s for s in SECTIONS if s in sections]
    caps = capabilities()
    result = {"machine": _machine(), "cpu": dataclasses.asdict(caps) | {"describe": caps.describe()}, "quick": quick,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    bar = Bar(f"{progress}bench", len(steps)) if progress is not False else None
    with bar or nullcontext():  # an error or Ctrl-C stops the bar where it was
        for i, step in enumerate(steps):
            if bar is not None:
                bar.update(i, LABELS[step])
            if step == "peak":
                result.update(peak(repeat, quick))
            elif step == "a":
                result["pointwise_op"] = pointwise_op(quick, repeat)
            elif step == "b":
                result["shared_mlp"] = shared_mlp(quick, repeat + 8, compile_)  # the flagship ratio: more rounds
            elif step == "c":
                result["dense_prediction"] = dense_prediction(quick, repeat)
            elif step == "d":
                result["bottleneck"] = bottleneck(quick, repeat)
            elif step == "e":
                skipped = []
                result["optimize"] = optimized_models(quick, repeat + 4, compile_, skipped=skipped)  # the noisiest
                if skipped:
                    result["optimize_skipped"] = skipped
            elif step == "f":
                result["branches"] = merged_branches(quick, repeat, timeit)
            else:
                skipped = result.setdefault("int8_skipped", [])
                result["int8"] = int8_models(quick, repeat, timeit, skipped=skipped)
    if "pointwise_op" in result:  # the large channels_last 1x1 convs of (a) count towards the peak too
        sizes = [
            (r, 2 * cost.conv1x1_cost((r["batch"], r["c_in"], r["size"], r["size"]), r["c_out"]).macs)
            for r in result["pointwise_op"]
        ]
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
        if "fused_bf16" in s["gflops"] and "peak_gflops_bf16" in result:  # the same at the bfloat16 peak
            s["bf16_fraction_of_peak"] = s["gflops"]["fused_bf16"] / result["peak_gflops_bf16"]
            s["bf16_ceiling_vs_eager"] = result["peak_gflops_bf16"] / s["gflops"]["eager"]
    for row in result.get("optimize", []):
        row["fraction_of_peak"] = {k: v / result["peak_gflops"] for k, v in row["gflops"].items()}
        row["ceiling_vs_eager"] = result["peak_gflops"] / row["gflops"]["eager"]
    if bar is not None:
        bar.close(f"{len(steps)} steps ({', '.join(LABELS[s] for s in steps)})")
    return result


def _machine() -> str:
    import platform

    fields = private.cpu_fields()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:  # a cloud CPU's name often hides its generation
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return f"{name}, {torch.get_num_threads()} threads, {platform.system()}"


def summary(result: dict) -> list[str]:
    """The last run's measurements as lines of text, then (after several runs) each headline ratio's
    median and range over the runs (what the README tables show); an unreliable run says so first."""
    lines = [f"UNRELIABLE RUN (repeat it on a quieter machine): {flag}" for flag in result.get("unreliable", [])]
    lines += [f"not in this run: {why}" for why in result.get("optimize_skipped", [])]
    lines.append(f"machine: {result['machine']}"
                 + (f" ({result['cpu']['describe']})" if "cpu" in result else "")
                 + f"; peak {result['peak_gflops']:.0f} GFLOP/s (channels_last 1x1 conv), "
                 + (f"{result['peak_gflops_bf16']:.0f} in bfloat16, " if "peak_gflops_bf16" in result else "")
                 + (f"{result['peak_gops_int8']:.0f} GOP/s in int8, " if "peak_gops_int8" in result else "")
                 + f"copy bandwidth {result['bandwidth_gbs']:.1f} GB/s"
                 + (f"; malloc: {result['malloc']}" if "malloc" in result else ""))
    for row in result.get("pointwise_op", []):
        lines.append(f"(a) {row['c_in']:>4}->{row['c_out']:<4} Pointwise vs the best of conv2d/matmul: NCHW "
                     f"{row['pointwise_vs_best_nchw']:.2f}x, channels_last {row['pointwise_vs_best_cl']:.2f}x; "
                     f"{row['roofline'][1]['fraction_of_peak']:.0%} of peak")
    if "pointwise_op" in result:
        lines.append("(a) control, F.conv2d timed as a contender against itself: "
                     f"lowest ratio {headlines(result)['a control']:.2f}x")
    if "shared_mlp" in result:
        lines.append(_shared_mlp_line(result["shared_mlp"]))
    if "dense_prediction" in result:
        d = result["dense_prediction"]
        lines.append(f"(c) dense prediction over {d['windows']} windows: convolutionalized "
                     f"{times(d['speedup'], 'the classifier run crop by crop')}, "
                     f"{times(d['speedup_vs_batched_crops'], 'all crops in one batch')}")
    if "bottleneck" in result:
        d = result["bottleneck"]
        lines.append(f"(d) 5x5 bottleneck: {times(d['speedup'], 'the direct conv')} for a {d['mac_ratio']:.2f}x "
                     f"MAC ratio ({d['speedup_vs_mac_ratio']:.2f} of it)")
    lines += [_optimize_line(row) for row in result.get("optimize", [])]
    if "branches" in result:
        f = result["branches"]
        lines.append(f"(f) RepVGG-A0, batch {f['batch']}, {f['blocks_merged']} blocks merged: merged "
                     f"{times(f['merged_vs_training'], 'the training form')}, merged and optimize()d "
                     f"{times(f['optimized_vs_training'], 'the training form')}")
    lines += [f"not in this run: {why}" for why in result.get("int8_skipped", [])]
    for row in result.get("int8", []):
        engines = {k: v for k, v in row["ms"].items() if k.endswith("_int8") and k != "optimized_int8"}
        lines.append(f"(g) {row['model']}, batch {row['batch']}: optimize() in int8 ({row['kept']}, "
                     f"{row['int8_seconds']:.1f} s to make) {times(row['int8_vs_float32'], 'optimize() in float32')}"
                     + (f", {times(row['int8_vs_best_int8_engine'], 'the faster engine int8')}" if engines else "")
                     + "; ms a call: " + ", ".join(f"{k} {v:.3g}" for k, v in row["ms"].items())
                     + "; error of the float32 scale: "
                     + ", ".join(f"{k} {v:.2g}" for k, v in row["error"].items()))
    if "spread" in result:
        lines.append(f"over {len(result['runs'])} runs, median (min - max): "
                     + "; ".join(f"{k} {cell(result, k)}" for k in result["headlines"]))
    return lines


def _shared_mlp_line(s: dict) -> str:
    """Section (b)'s line of the summary."""
    memory = ", ".join(f"{k} {v / 1e6:.1f} MB" if v is not None else f"{k} n/a"
                       for k, v in s["peak_extra_bytes"].items())
    peers = [times(s[k], label) for k, label in (("fused_vs_compile", "torch.compile"),
                                                 ("fused_vs_onnxruntime", "onnxruntime"),
                                                 ("fused_vs_openvino", "OpenVINO")) if k in s]
    return (f"(b) shared MLP, B={s['batch']} N={s['points']}: fused {times(s['fused_vs_eager'], 'eager')}"
            + "".join(f", {p}" for p in peers)
            + f", {s['fraction_of_peak']:.0%} of peak (ceiling {s['ceiling_vs_eager']:.2f}x eager)"
            + (f"; in bfloat16 {times(s['bf16_vs_eager'], 'eager float32')}, "
               f"{times(s['bf16_vs_fused'], 'the float32 chain')}" if "bf16_vs_eager" in s else "")
            + (f", {s['bf16_fraction_of_peak']:.0%} of the bfloat16 peak (ceiling "
               f"{s['bf16_ceiling_vs_eager']:.2f}x eager)" if "bf16_ceiling_vs_eager" in s else "")
            + f"; peak extra memory {memory}")


def _optimize_line(row: dict) -> str:
    """One model's line of section (e) in the summary."""
    peers = [times(row[k], label) for k, label in (("vs_compile", "torch.compile"),
                                                   ("vs_compile_frozen", "torch.compile with freezing"),
                                                   ("vs_onnxruntime", "onnxruntime"),
                                                   ("vs_openvino", "OpenVINO")) if k in row]
    return (f"(e) optimize({row['model']}), batch 8, {row['optimize_seconds']:.1f} s, {row['kept']} kept: "
            f"{times(row['vs_eager'], 'eager')} (ceiling {row['ceiling_vs_eager']:.2f}x)"
            + "".join(f", {p}" for p in peers)
            + (f"; with compile=True ({row['kept_with_compile']} kept) "
               f"{times(row['with_compile_vs_best_peer'], 'the fastest peer')}"
               if "with_compile_vs_best_peer" in row else "")
            + (f"; in bfloat16 {times(row['bf16_vs_optimized'], 'optimize() in float32')}"
               if "bf16_vs_optimized" in row else "")
            + "; " + ", ".join(f"{k} {v:.0%}" for k, v in row["fraction_of_peak"].items()) + " of peak")


def cell(result: dict, name: str) -> str:
    """One headline as the README table writes it: the median, and its range when there were several runs."""
    fmt = (
        (lambda v: f"{v:.0%}")
        if "fraction" in name
        else (lambda v: f"{v:.2f}")
        if " of the " in name
        else (lambda v: f"{v:.1f} s")
        if name.endswith(" seconds")
        else (lambda v: f"{v:.2f}x")
    )
    lo, hi = result.get("spread", {}).get(name, (None, None))
    return fmt(result["headlines"][name]) + (f" ({fmt(lo)} - {fmt(hi)})" if lo is not None else "")


def write(result: dict, json_path=None, png_path=None) -> None:
    """The result as JSON (written whole or not at all) and, if asked, its roofline as a PNG."""
    if json_path:
        import tempfile

        from ..checkpoint import umask

        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(json_path)), suffix=".tmp")  # a new name
        with os.fdopen(fd, "w") as f:
            f.write(strict_json(result, indent=2))  # (an error that is not finite: null)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it 0600; a result is as readable as any file
        os.replace(tmp, json_path)
    if png_path:
        from ..plots import bench_roofline

        bench_roofline(result, png_path)
