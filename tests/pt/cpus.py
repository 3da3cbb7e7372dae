"""The CPUs the fast path branches on, simulated by patching its one capability function, so that every
branch runs on any machine; and the passes of ``optimize`` without the timed fallback to the model given.

``ONEBYONE_SIMULATE_CPU=AVX2 pytest tests/pt`` runs the whole torch suite as on that CPU (one of ``SETS``):
the capability answer is patched before any test module asks it, so what needs more skips as it would there."""
import os

import pytest

from onebyone.torch.fast import Capabilities, private
from onebyone.torch.fast.passes import PASSES

SETS = {
    "no oneDNN": Capabilities(isa="DEFAULT", onednn=False, bf16=False, avx512=False, amx=False),
    "AVX2": Capabilities(isa="AVX2", onednn=True, bf16=False, avx512=False, amx=False),
    "AVX-512 with bfloat16": Capabilities(isa="AVX512", onednn=True, bf16=True, avx512=True, amx=False),
}
SIMULATED = os.environ.get("ONEBYONE_SIMULATE_CPU")
if SIMULATED:
    private._probe = lambda caps=SETS[SIMULATED]: caps  # what capabilities() answers
REAL = private.capabilities()  # this machine (or the one simulated for the whole run), before any patching
# a test of what the hardware itself does (the probe, OpenVINO's own choice): meaningless on a simulated CPU
reads_the_hardware = pytest.mark.skipif(bool(SIMULATED), reason=f"the whole run simulates {SIMULATED}")
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
