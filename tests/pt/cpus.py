"""The CPUs the fast path branches on, simulated by patching its one capability function, so that every
branch runs on any machine; and the passes of ``optimize`` without the timed fallback to the model given."""
import pytest

from onebyone.torch.fast import Capabilities, private
from onebyone.torch.fast.passes import PASSES

REAL = private.capabilities()  # this machine, before any patching
SETS = {
    "no oneDNN": Capabilities(isa="DEFAULT", onednn=False, bf16=False, avx512=False, amx=False),
    "AVX2": Capabilities(isa="AVX2", onednn=True, bf16=False, avx512=False, amx=False),
    "AVX-512 with bfloat16": Capabilities(isa="AVX512", onednn=True, bf16=True, avx512=True, amx=False),
}
REWRITES = [p for p in PASSES if p not in ("engines", "keep_faster")]  # the rewrites alone: no engines, no fallback
WITH_ENGINES = REWRITES + ["engines"]  # the rewrites and the engines weighed, without the timed fallback


def simulate(monkeypatch, name: str) -> Capabilities:
    """Make the fast path see the CPU ``name``; skip, saying why, where it claims what this CPU lacks (the
    oneDNN kernels it would choose cannot run here)."""
    caps = SETS[name]
    if caps.onednn and not REAL.onednn or caps.bf16 and not REAL.bf16:
        pytest.skip(f"simulating '{name}' needs oneDNN kernels this CPU cannot run ({REAL.describe()})")
    monkeypatch.setattr(private, "capabilities", lambda: caps)
    return caps
