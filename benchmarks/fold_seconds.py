"""Seconds ``fold_batchnorm`` and ``reparameterize`` take on every timm and torchvision model of the test suite
(``tests/pt/test_ecosystem_models.py``: random weights, non-trivial norm statistics, the suite's small inputs),
best of ``--repeat`` calls, one model after another in this process.

    python benchmarks/fold_seconds.py [--repeat 2]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pt import ecosystem  # noqa: E402 - before timm imports torchvision

ecosystem.define_schemas()

from onebyone.torch import fold_batchnorm, reparameterize  # noqa: E402
from tests.pt.test_ecosystem_models import MODELS, build  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    worst = {}
    for source, name in MODELS:
        model, x = build(source, name)
        row = {}
        for fn in (fold_batchnorm, reparameterize):
            best = float("inf")
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                fn(model, example=x)
                best = min(best, time.perf_counter() - t0)
            row[fn.__name__] = best
            worst[fn.__name__] = max(worst.get(fn.__name__, (0.0, "")), (best, name))
        print(f"{source}:{name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)
    print("slowest: " + "; ".join(f"{k} {v[0]:.2f} s ({v[1]})" for k, v in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
