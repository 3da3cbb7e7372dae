"""Every timm architecture through the analyzer and the rewrites, one process a model, resumable.

    python benchmarks/timm_sweep.py --out benchmarks/timm_sweep.jsonl [--limit N] [--pattern 'repvgg*']
    python benchmarks/timm_sweep.py --out benchmarks/timm_sweep.jsonl --table   # the counts, as markdown

Each model is built with random weights (nothing downloaded) and norms with non-trivial running statistics,
at 64 x 64 where it takes that (``img_size=64`` where its factory has one), else at its published size. In a
process of its own with a time limit (``--timeout``): the analyzer against PyTorch's FlopCounterMode,
``fold_batchnorm``, ``merge_branches`` and ``reparameterize`` (each checks itself in float64), every norm
accounted for (changed, or named in ``report.skipped``), and, where timm has a ``reparameterize()`` / ``fuse()``
method, ``reparameterize`` against timm's ``reparameterize_model``. One JSON line per model is appended to
``--out``; models already there are skipped, so the sweep runs in pieces.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_PARAMS = 100_000_000  # larger models are listed as too large, not swept


def _torchvision_schemas():
    """timm imports torchvision; its CUDA wheel's operators do not load beside a CPU torch (tests' ecosystem.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.pt import ecosystem

    ecosystem.define_schemas()


def _build(timm, name):
    """(model, input) at 64 x 64 where the model takes it, else at its published size."""
    import torch

    for kw in ({"img_size": 64}, {}):
        try:
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, **kw).eval()
        except Exception:  # noqa: BLE001 - a factory without img_size, or one that refuses 64
            continue
        cfg = model.pretrained_cfg.get("input_size", (3, 224, 224))
        for size in ((cfg[0], 64, 64), tuple(cfg)):
            x = torch.randn(1, *size, generator=torch.Generator().manual_seed(2))
            try:
                with torch.no_grad():
                    model(x)
                return model, x
            except Exception:  # noqa: BLE001 - too small for this model: try the next size
                continue
    raise RuntimeError("builds and runs at neither 64 x 64 nor its published size")


def _outcome(fn):
    """{"ok": result} / {"refused": message} (a OneByOneError) / {"raw": type: message} (anything else)."""
    from onebyone import OneByOneError

    t0 = time.perf_counter()
    try:
        out = {"ok": fn()}
    except OneByOneError as e:
        out = {"refused": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 - what the sweep is for: a raw error is counted, not hidden
        out = {"raw": f"{type(e).__name__}: {str(e)[:300]}"}
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def one(name: str) -> dict:
    """The record of one model (run in its own process)."""
    _torchvision_schemas()
    import timm
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from onebyone import analyze
    from onebyone.torch import fold_batchnorm, merge_branches, reparameterize

    torch.set_num_threads(1)
    with torch.device("meta"):  # counted before anything is allocated: a 1B-parameter model would not fit here
        size = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
    if size > MAX_PARAMS:
        return {"model": name, "params": size, "too_large": f"over {MAX_PARAMS:,} parameters: the float64 checks "
                                                            "would not fit a 24 GiB machine"}
    model, x = _build(timm, name)
    from tests.pt.ecosystem import norm_sites, randomize_norms, silent_sites

    model = randomize_norms(model)
    rec = {"model": name, "input": list(x.shape), "params": sum(p.numel() for p in model.parameters())}

    def analyzed():
        s = analyze(model, example=x)  # first: FlopCounterMode's module hooks can outlive it (torch 2.13)
        out = {"macs": s.macs, "uncounted": len(s.uncounted)}
        torch.backends.mha.set_fastpath_enabled(False)
        try:  # the reference: PyTorch's own counter (it fails on some models itself: CaiT's class attention)
            with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as fc:
                model(x)
            out["flop_counter_macs"] = fc.get_total_flops() // 2
        except Exception as e:  # noqa: BLE001 - named in the record, not counted against the analyzer
            out["flop_counter_error"] = f"{type(e).__name__}: {str(e)[:200]}"
        return out

    rec["analyze"] = _outcome(analyzed)
    sites = norm_sites(model, x)
    rec["norms"] = len(sites)

    def rewrite(fn):
        def run():
            new, r = fn(model, example=x)
            silent = silent_sites(r, sites)
            return {"changed": len(r.changed), "skipped": len(r.skipped), "unnamed_norms": silent[:5],
                    "unnamed": len(silent), "params_after": r.params_after,
                    "convs_norms_after": _convs_norms(new)}
        return run

    for key, fn in (("fold", fold_batchnorm), ("merge", merge_branches), ("reparameterize", reparameterize)):
        rec[key] = _outcome(rewrite(fn))
    if any(hasattr(m, "reparameterize") or hasattr(m, "fuse") for m in model.modules()):
        from timm.utils.model import reparameterize_model

        def theirs():
            t = reparameterize_model(model)
            return {"params_after": sum(p.numel() for p in t.parameters()), "convs_norms_after": _convs_norms(t)}
        rec["timm_reparameterize"] = _outcome(theirs)
    return rec


def _child(name: str, conn) -> None:
    """One model's record, sent to the parent (a forked process: the imports are the parent's)."""
    try:
        rec = one(name)
    except Exception as e:  # noqa: BLE001 - a model that does not build or run here: named in the table
        rec = {"model": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    conn.send(rec)
    conn.close()


def _convs_norms(model) -> int:
    import torch

    return sum(isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)) or
               isinstance(getattr(m, "running_mean", None), torch.Tensor) for m in model.modules())


def table(path: Path) -> str:
    """The sweep's counts as markdown."""
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for key in ("analyze", "fold", "merge", "reparameterize"):
        got = [r[key] for r in recs if key in r]
        ok = [g for g in got if "ok" in g]
        unnamed = sum(g["ok"].get("unnamed", 0) for g in ok)
        rows.append(f"| {key} | {len(got)} | {len(ok)} | {sum('refused' in g for g in got)} | "
                    f"{sum('raw' in g for g in got)} | {unnamed if key in ('fold', 'reparameterize') else '-'} |")
    eq = [r for r in recs if "flop_counter_macs" in r.get("analyze", {}).get("ok", {})]
    same = sum(r["analyze"]["ok"]["macs"] == r["analyze"]["ok"]["flop_counter_macs"] for r in eq)
    fam = [r for r in recs if "ok" in r.get("timm_reparameterize", {}) and "ok" in r.get("reparameterize", {})]
    level = [r for r in fam if all(r["reparameterize"]["ok"][k] <= r["timm_reparameterize"]["ok"][k]
                                   for k in ("params_after", "convs_norms_after"))]
    short = sorted(r["model"] for r in fam if r not in level)
    failed = sorted(r["model"] for r in recs if "error" in r)
    large = [r for r in recs if "too_large" in r]
    return "\n".join([
        f"{len(recs)} timm models: {len(large)} over {MAX_PARAMS:,} parameters listed, not swept; "
        f"{len(failed)} did not build or run at a small input, or ran past the time limit.", "",
        "| step | models | exact / done | refused (OneByOneError) | raw error | norms not named |",
        "|---|---|---|---|---|---|", *rows, "",
        f"Analyzer MACs equal to FlopCounterMode's on {same} of {len(eq)} (where they differ, see the JSON lines).",
        f"reparameterize at or past timm's reparameterize_model (params and convs + norms) on {len(level)} of "
        f"{len(fam)} models with a timm reparameterize()/fuse() method"
        + (f"; short on: {', '.join(short)}" if short else "."),
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "timm_sweep.jsonl")
    p.add_argument("--pattern", default="*", help="only the timm names matching one of these globs (comma-separated)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many new models (0: all)")
    p.add_argument("--timeout", type=int, default=240, help="seconds a model (default 240)")
    p.add_argument("--table", action="store_true", help="print the counts of --out as markdown, run nothing")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(one(a.one)))
        return 0
    if a.table:
        print(table(a.out))
        return 0
    os.environ["OMP_NUM_THREADS"] = "1"
    _torchvision_schemas()
    import multiprocessing

    import timm
    import torch

    import onebyone.torch  # noqa: F401 - imported once here: each model's process is forked from this one

    torch.set_num_threads(1)
    done = {json.loads(line)["model"] for line in a.out.read_text().splitlines() if line.strip()} \
        if a.out.exists() else set()
    globs = a.pattern.split(",")
    todo = [n for n in timm.list_models() if any(fnmatch.fnmatch(n, g) for g in globs) and n not in done]
    fork = multiprocessing.get_context("fork")
    for i, name in enumerate(todo[: a.limit or None]):
        t0 = time.perf_counter()
        receive, send = fork.Pipe(duplex=False)
        p = fork.Process(target=_child, args=(name, send))
        p.start()
        send.close()
        got = receive.recv() if receive.poll(a.timeout) else None
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()
        rec = got if got is not None else {"model": name, "error": f"ran past {a.timeout} s" if p.exitcode in (
            None, -9) else f"its process ended with status {p.exitcode} (out of memory or a crash)"}
        with a.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"[{i + 1}/{len(todo)}] {name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
