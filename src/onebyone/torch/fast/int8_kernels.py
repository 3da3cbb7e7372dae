"""Which of torch's two x86 int8 kernel libraries runs each layer of torch's int8 form, by measurement.

torch packs each quantized conv and Linear for fbgemm's kernels or oneDNN's by a fixed rule (its ``x86``
choice: oneDNN for convs of at most 100 groups where the CPU has VNNI, fbgemm for the rest), and which is
faster differs by layer and by CPU. ``fastest_kernels`` times each layer with both, on the input the model
gives it, and keeps the faster; ``optimize(dtype=torch.int8)`` reports the choice as
``report.precision["torch_kernels"]`` ({layer: "fbgemm" or "onednn"}).
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..capture import calls_of
from . import private

LIBRARIES = ("fbgemm", "onednn")
ROUNDS = 5  # interleaved timings of each layer with each library; the best of each counts


def fastest_kernels(q: nn.Module, x, rounds: int = ROUNDS) -> dict:
    """In place: each quantized conv and Linear of ``q`` (a torch int8 form, as ``torch_int8`` makes it)
    packed for whichever of fbgemm's and oneDNN's kernels ran it faster on the input ``x`` gives it, the best
    of ``rounds`` interleaved timings each; returns {layer name: library}. Only where the CPU has VNNI
    (without it torch runs fbgemm's alone) and torch has both; elsewhere, and for a layer ``x`` does not
    reach, nothing changes. The choice lives in the packed weights: a copy, or a saved model loaded again,
    packs them anew for the library ``torch.backends.quantized.engine`` names."""
    have = torch.backends.quantized.supported_engines
    if not private.capabilities().vnni or not all(lib in have for lib in LIBRARIES):
        return {}
    layers = {n: m for n, m in q.named_modules() if private.packed_weights(m) is not None}
    first, _ = calls_of(q, x, layers.values())
    chosen = {}
    with torch.no_grad():
        for name, m in layers.items():
            if m not in first:
                continue
            packed = {lib: p for lib in LIBRARIES if (p := private.repacked(m, lib)) is not None}
            if packed:
                best = best_times(m, first[m][:2], packed, rounds)
                chosen[name] = min(best, key=best.get)
                private.set_packed(m, packed[chosen[name]])
    return chosen


def best_times(m: nn.Module, call: tuple, packed: dict, rounds: int) -> dict:
    """{library: the best of ``rounds`` timings of ``m`` on ``call`` ((args, kwargs)) running ``packed[library]``},
    the libraries taking turns; a library alone is not timed (0.0)."""
    best, before = dict.fromkeys(packed, math.inf if len(packed) > 1 else 0.0), private.packed_weights(m)
    try:
        for _ in range(rounds if len(packed) > 1 else 0):
            for lib, p in packed.items():
                private.set_packed(m, p)
                start = time.perf_counter()
                m(*call[0], **call[1])
                best[lib] = min(best[lib], time.perf_counter() - start)
    finally:
        private.set_packed(m, before)  # what it ran before, whatever happens
    return best
