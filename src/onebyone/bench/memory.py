"""Process memory for the benchmark: ``hold_freed_memory`` (glibc's malloc keeps freed activations for
reuse) and ``peak_memory`` (how much one call raises the resident set)."""
from __future__ import annotations

import torch


def hold_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MiB for reuse instead of returning them to
    the kernel, which would fault every page in again on the next call. Process-wide and permanent;
    Linux with glibc only. Returns whether it took effect.

    Sets the mmap threshold to 32 MiB (its largest value on 64-bit; larger blocks are still mmapped) and
    the trim threshold to 1 GiB. ``benchmarks/README.md`` says why the bench needs it.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):
        return False


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
