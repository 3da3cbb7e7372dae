"""Kernels for the 1x1 conv in PyTorch, and the choice between them.

The same line, ``y = W @ x + b`` over channels, can run as a conv (NCHW or channels_last, where
oneDNN is fast on CPUs), a batched matmul, or ``F.linear``. Which is fastest depends on the layout,
the widths and the machine, so each input signature is timed once on the real call and the winner
is cached (``choices()`` shows the cache). While tracing, exporting or compiling, the static
default is used and nothing is timed.

It also holds what the oneDNN fast paths (``ConvAct``, ``FusedPointwiseChain``) share: the activations
oneDNN fuses into a product (``MKLDNN_ACTS``), the cache of packed weights (``PackedWeights``), and
the interleaved timer (``timings``) that the kernel choice and ``onebyone bench`` both use.
"""
from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F

from ..errors import OneByOneError

_CACHE: dict = {}
_FAST: dict = {}  # the full signature of a call -> its kernel, for the calls after the first
_MIN_MACS_TO_TIME = 200_000  # below this every kernel takes microseconds: use the default
# the activations a oneDNN call can fuse after its product: name -> (attr, scalars, algorithm), and plain torch
MKLDNN_ACTS = {"identity": ("none", [], ""), "relu": ("relu", [], ""), "relu6": ("hardtanh", [0.0, 6.0], ""),
               "gelu": ("gelu", [], "none")}
PLAIN_ACTS = {"identity": lambda h: h, "relu": F.relu, "relu6": F.relu6, "gelu": F.gelu}


def act_name(m) -> str | None:
    """The ``MKLDNN_ACTS`` name of an activation module (eval Dropout and Identity: "identity"), else None."""
    if isinstance(m, torch.nn.GELU):
        return "gelu" if m.approximate == "none" else None  # oneDNN's gelu here is the erf one
    names = {torch.nn.Identity: "identity", torch.nn.Dropout: "identity", torch.nn.ReLU: "relu", torch.nn.ReLU6: "relu6"}
    return names.get(type(m))


class PackedWeights(dict):
    """Weights reordered once into oneDNN's blocked layout, keyed by what they were packed for (input
    shape, the weights' pointers and versions, so an in-place edit repacks); at most ``size`` entries.
    Not module state: copies and pickles start empty (oneDNN tensors have no storage to copy)."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size

    def get_or_make(self, key, make):
        if key not in self:
            if len(self) >= self.size:
                self.clear()
            self[key] = make()
        return self[key]

    def __deepcopy__(self, memo):
        return PackedWeights(self.size)

    def __reduce__(self):
        return PackedWeights, (self.size,)


def _strided(x, stride: int, spatial):
    if stride == 1:
        return x
    return x[tuple(slice(None, None, stride) if a in spatial else slice(None) for a in range(x.dim()))]


# --- candidates: each takes (x, w4, b, stride, groups) with w4 (O, C/g, 1, 1) --------------------

def _conv2d(x, w, b, stride, groups):  # (B, C, H, W), any memory format
    return F.conv2d(x, w, b, stride, 0, 1, groups)


def _conv2d_cl(x, w, b, stride, groups):  # (B, C, H, W) moved to channels_last first
    return F.conv2d(x.contiguous(memory_format=torch.channels_last), w, b, stride, 0, 1, groups)


def _bmm(x, w, b, stride, groups):  # (B, C, *S): W (O, C) @ x (B, C, P)
    x = _strided(x, stride, range(2, x.dim()))
    y = torch.matmul(w.flatten(1), x.flatten(2))  # (O, C) @ (B, C, P) -> (B, O, P)
    if b is not None:
        y = y + b[:, None]
    return y.view(x.shape[0], w.shape[0], *x.shape[2:])


def _conv1d(x, w, b, stride, groups):  # (B, C, L)
    return F.conv1d(x, w[..., 0], b, stride, 0, 1, groups)


def _conv1d_as_cl2d(x, w, b, stride, groups):  # (B, C, L) as a channels_last (B, C, L, 1) image
    x4 = x.unsqueeze(-1).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x4, w, b, (stride, 1), 0, 1, groups).squeeze(-1)


def _linear(x, w, b, stride, groups):  # (..., C)
    return F.linear(x, w.flatten(1), b)


def _last_as_cl2d(x, w, b, stride, groups):  # (..., C) viewed as a channels_last (1, C, M, 1) image
    lead = x.shape[:-1]
    x4 = x.reshape(1, -1, 1, x.shape[-1]).permute(0, 3, 1, 2)  # (M, C) -> (1, C, M, 1), channels_last strides
    y = F.conv2d(x4, w, b, 1, 0, 1, groups)  # (1, O, M, 1)
    return y.permute(0, 2, 3, 1).reshape(*lead, w.shape[0])  # -> (..., O)


def rows_linear(x, w, b, act: str = "identity"):  # channels_last (B, C, H, W) as rows (B*H*W, C) @ (C, O)
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view: channels_last memory is row-major (B, H, W, C)
    w = w if w.dim() == 2 else w.flatten(1)  # (O, C, 1, 1) -> (O, C); a packed (O, C) oneDNN weight as it is
    y = torch.ops.mkldnn._linear_pointwise(rows, w, b, *MKLDNN_ACTS[act])  # oneDNN matmul, bias and act fused
    return y.view(x.shape[0], x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)  # (B, H, W, O) -> channels_last (B, O, H, W)


def _cl_rows(x, w, b, stride, groups):
    return rows_linear(x, w, b)


def _candidates(kind: str, groups: int, stride: int = 1):
    table = {
        "nchw": [_conv2d, _conv2d_cl] + ([_bmm] if groups == 1 else []),
        "channels_last": [_conv2d] + ([_cl_rows] if groups == 1 and stride == 1 else []),
        "ncl": [_conv1d_as_cl2d, _conv1d] + ([_bmm] if groups == 1 else []),
        "nc": [_linear] if groups == 1 else [_last_as_cl2d],
        "last": [_last_as_cl2d] + ([_linear] if groups == 1 else []),
    }
    return table[kind]


def _kind(x, channel_dim: int) -> str:
    if channel_dim == -1:
        return "last"
    if x.dim() == 4:
        return "channels_last" if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else "nchw"
    return {2: "nc", 3: "ncl"}.get(x.dim(), "nd")


def _onnx_exporting():
    """``torch.onnx.is_in_onnx_export`` without its two imports per call (2 us, on every layer call)."""
    global _onnx_exporting
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        _onnx_exporting = lambda: GLOBALS.in_onnx_export or _flags._is_onnx_exporting  # noqa: E731
    except ImportError:  # another torch layout: the public function
        _onnx_exporting = torch.onnx.is_in_onnx_export
    return _onnx_exporting()


def tracing() -> bool:
    """True while tracing, exporting or compiling: run the static default, time nothing."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or _onnx_exporting()


def quiet() -> bool:
    """True when gradients are being recorded, or while tracing, exporting or compiling: no kernel
    choice, no cached fast path."""
    return torch.is_grad_enabled() or tracing()


def fastest(cands, *args, budget: float = 0.05, margin: float = 0.1, block: float = 1e-3):
    """The candidate that runs ``args`` fastest; candidates that raise (no kernel for this dtype...) drop out.

    The candidates are timed in interleaved rounds (3 to 15, as many as fit in about ``budget`` seconds
    each) and compared by their median; a sample is a block of calls in a row lasting about ``block``
    seconds. One-shot timings of sub-millisecond kernels are decided by where the allocator put the
    output: for a (8, 3, 56, 56) channels_last input, single-call samples kept oneDNN's matmul (about
    1.25x slower than the conv there) in 6 of 30 fresh choices, blocks of calls in 1 of 30. The first
    candidate (the static default, what tracing runs) keeps its place unless another beats it by
    more than ``margin``: between kernels within noise of each other, a switch is a coin toss.
    """
    first = {}
    for fn in cands:
        try:
            fn(*args)  # a warm-up call, then one timed call
            first[fn] = _once(fn, *args)
        except (RuntimeError, NotImplementedError, AttributeError):
            continue
    if not first:
        raise OneByOneError(f"no kernel among {[f.__name__ for f in cands]} runs on inputs {[getattr(a, 'shape', a) for a in args]}")
    calls = per_block(first, block)
    rounds = max(3, min(15, int(budget / max(block, min(first.values())))))
    times = medians({fn: (lambda fn=fn: fn(*args)) for fn in first}, rounds, calls)
    best = min(times, key=times.get)
    default = next(iter(times))
    return best if times[best] < (1 - margin) * times[default] else default


def per_block(seconds: dict, block: float) -> dict:
    """Calls in a row (1 to 50) that fill ``block`` seconds, for each callable's seconds per call."""
    return {k: max(1, min(50, int(block / max(t, 1e-7)))) for k, t in seconds.items()}


def medians(fns: dict, rounds: int, calls=None) -> dict:
    """Median seconds per call of each no-argument callable over ``rounds`` interleaved rounds (``timings``)."""
    return {k: sorted(v)[len(v) // 2] for k, v in timings(fns, rounds, calls).items()}


def timings(fns: dict, rounds: int, calls=None) -> dict:
    """Seconds per call of each no-argument callable in each of ``rounds`` interleaved rounds, so that
    drift and the allocator's moods hit every candidate alike. Each round runs them in a new (seeded)
    random order: a call right after a large one finds its input out of cache and its output pages
    unmapped, and a fixed order (or a rotation of one) would charge that to the same candidate.
    ``calls`` (name -> n, default 1): time n calls in a row and divide, so that a short call pays that
    toll once per n rather than on every sample."""
    keys, order, calls = list(fns), random.Random(0), calls or {}
    times = {k: [] for k in keys}
    for _ in range(rounds):
        for k in order.sample(keys, len(keys)):
            times[k].append(_once(fns[k], n=calls.get(k, 1)))
    return times


def _once(fn, *args, n: int = 1) -> float:
    """Seconds per call of ``n`` calls of ``fn(*args)`` in a row (CUDA synchronised)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def hold_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed activations for reuse instead of handing them back to the
    kernel, which then faults every page in again on the next call (process-wide; Linux with glibc
    only; returns whether it took effect).

    glibc serves a large block with mmap and unmaps it when freed, raising that threshold only as
    it sees blocks come back, and returns the top of its heap to the kernel past a trim threshold. On
    our machines a process ended up in one state or the other: eager mobilenet_v1 at batch 8 took
    25,000 page faults and 103 ms a call in one process, none and 48 ms in the next, and its
    optimize()d form 12,500 faults and 65 ms against 38 ms. This fixes the mmap threshold at its largest
    value (32 MiB on 64-bit) and the trim threshold at 1 GiB; blocks over 32 MiB are still mmapped.
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


def _signature(x, weight, bias, stride, groups, channel_dim) -> tuple:
    return x.shape, x.stride(), x.dtype, x.device, weight.shape, bias is None, stride, groups, channel_dim


def picked(x, weight, bias=None, stride: int = 1, groups: int = 1, channel_dim: int = 1):
    """The kernel ``pointwise`` keeps for calls like this one (None until it has run one outside
    autograd and tracing): ``kernel(x, weight, bias, stride, groups)``."""
    return _FAST.get(_signature(x, weight, bias, stride, groups, channel_dim))


def pointwise(x, weight, bias=None, stride: int = 1, groups: int = 1, channel_dim: int = 1):
    """The 1x1 conv of x with weight (O, C/g, 1, 1), on the fastest kernel for this input."""
    sig = _signature(x, weight, bias, stride, groups, channel_dim)
    fast = _FAST.get(sig)
    if fast is not None and not quiet():  # a signature timed before: no more checks
        return fast(x, weight, bias, stride, groups)
    kind = _kind(x, channel_dim)
    if kind == "nd":  # (B, C, D, H, W) and beyond: go through channel-last
        y = pointwise(_strided(x, stride, range(2, x.dim())).movedim(1, -1), weight, bias, 1, groups, -1)
        return y.movedim(-1, 1)
    if kind in ("last", "nc"):
        x = _strided(x, stride, range(1, x.dim() - 1)) if kind == "last" else x
        stride = 1
    cands = _candidates(kind, groups, stride)
    macs = x.numel() // x.shape[channel_dim] * weight.shape[0] * weight.shape[1]
    if len(cands) == 1 or quiet() or macs < _MIN_MACS_TO_TIME:
        fn = cands[0]
    else:
        key = (kind, x.device.type, x.dtype, tuple(x.shape), tuple(weight.shape), bias is not None, stride, groups)
        if key not in _CACHE:
            _CACHE[key] = fastest(cands, x, weight, bias, stride, groups).__name__
        fn = next(f for f in cands if f.__name__ == _CACHE[key])
    if not quiet() and kind not in ("last", "nc"):  # x came as the caller passed it: the signature alone picks fn
        _FAST[sig] = fn
    return fn(x, weight, bias, stride, groups)


def choices() -> dict:
    """The kernel chosen for each input signature timed so far."""
    return dict(_CACHE)
