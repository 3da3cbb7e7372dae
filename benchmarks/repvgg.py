"""Section (f) of ``onebyone bench`` on its own, at batch 8 with 7 rounds: a RepVGG-A0-sized network's training
form against the same network after ``merge_branches``, eager and through ``optimize()``, side by side.

    python benchmarks/repvgg.py
"""
import sys

import torch

from onebyone.bench import timeit
from onebyone.bench.branches import merged_branches


def main() -> int:
    f = merged_branches(False, 7, timeit)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {f['batch']}: {f['blocks_merged']} "
          f"blocks merged (max abs diff {f['max_abs_diff']:.3g}, params {f['params'][0]:,} -> {f['params'][1]:,}); "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in f["ms"].items())
          + f"; merged {f['merged_vs_training']:.2f}x, merged and optimize()d {f['optimized_vs_training']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
