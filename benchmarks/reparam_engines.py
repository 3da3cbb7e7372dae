"""optimize() on timm's re-parameterizable models, given their training form, against the engines given the
same model: onnxruntime and OpenVINO do not merge parallel branches, optimize() does (its reparameterize pass)
before racing them. For reference, the engines given timm's own ``reparameterize_model`` form too.

    python benchmarks/reparam_engines.py [--batch 8] [--size 224] [--json benchmarks/reparam_engines.json]

Random weights, norms with non-trivial running statistics; every contender timed in interleaved rounds in one
process (``onebyone.bench.sections.timeit``: best block of calls).
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pt import ecosystem  # noqa: E402 - before timm imports torchvision

MODELS = ("mobileone_s0", "repvgg_a0", "fastvit_t8")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    timm = ecosystem.load("timm")
    import torch
    from timm.utils.model import reparameterize_model

    from onebyone.bench.sections import _engines, timeit
    from onebyone.torch import optimize
    from onebyone.torch.fast.private import capabilities, cpu_fields

    rows = []
    for name in a.models:
        torch.manual_seed(0)
        model = ecosystem.randomize_norms(timm.create_model(name, pretrained=False))
        x = torch.randn(a.batch, 3, a.size, a.size)
        t0 = time.perf_counter()
        opt, report = optimize(model, x)
        seconds = time.perf_counter() - t0
        theirs = reparameterize_model(model)
        fns = {"eager": lambda: model(x), "optimized": lambda: opt(x)}
        fns |= {f"{k} (training form)": f for k, f in _engines(model, x).items()}
        fns |= {f"{k} (timm's reparameterized form)": f for k, f in _engines(theirs, x).items()}
        t = timeit(fns, a.repeat)
        given = [k for k in t if k.endswith("(training form)")]
        row = {"model": name, "batch": a.batch, "size": a.size, "ms": {k: v * 1e3 for k, v in t.items()},
               "optimize_seconds": seconds, "kept": type(opt).__name__,
               "vs_best_engine_given_the_same_model": min(t[k] for k in given) / t["optimized"] if given else None,
               "vs_eager": t["eager"] / t["optimized"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"machine": f"{cpu_fields().get('model name', platform.machine())}; {capabilities().describe()}",
           "torch_threads": torch.get_num_threads(), "rows": rows}
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
