"""Every private torch API the fast path calls, in one place, each with a public fallback, and the one
function that answers what this CPU can do (``capabilities``).

A torch upgrade that moves or drops one of these breaks this file alone: an oneDNN op that is missing
makes ``capabilities().onednn`` False (the fast layers then run their plain torch ops), and each wrapper
below falls back to the public op that computes the same numbers.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import sys
import threading
import warnings

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves, tree_map

from ...activations import FUSABLE, get
from ...errors import OneByOneError
from .. import activations as acts

_MKLDNN_OPS = ("_linear_pointwise", "_reorder_linear_weight", "_convolution_pointwise",
               "_reorder_convolution_weight", "_is_mkldnn_bf16_supported")


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What this process can run fast.

    Attributes:
        isa: the instruction set ATen dispatches to ("AVX2", "AVX512", ...; ``ATEN_CPU_CAPABILITY`` lowers it).
        onednn: torch has oneDNN and the private oneDNN ops the fast layers call.
        bf16: the CPU has bfloat16 products that oneDNN uses (AVX512_BF16 or AMX; ``ONEDNN_MAX_CPU_ISA``
            below those turns it off): without them a bfloat16 product is emulated, slower than float32.
        avx512: the CPU has AVX-512 (F, BW, VL, DQ) and ATen uses it.
        amx: the CPU has AMX tiles for bfloat16.
        vnni: the CPU has int8 dot products (AVX512_VNNI or AVX_VNNI) and oneDNN may use them
            (``ONEDNN_MAX_CPU_ISA`` below VNNI turns it off): without them int8 products go through 16-bit
            intermediates that can saturate unless weights keep to 7 bits (onnxruntime's ``reduce_range``).
        amx_int8: the CPU has AMX tiles for int8 (oneDNN's int8 products use them where present).
        avx512_vnni: the CPU has AVX512_VNNI, the one VNNI that torch's own x86 int8 kernels (fbgemm) use
            (``FBGEMM_ENABLE_INSTRUCTIONS`` below ``AVX512_E1`` turns it off): an AVX_VNNI-only CPU runs them
            on 16-bit intermediates.
    """

    isa: str
    onednn: bool
    bf16: bool
    avx512: bool
    amx: bool
    vnni: bool = False
    amx_int8: bool = False
    avx512_vnni: bool = False

    @property
    def eight_bit_inputs(self) -> bool:
        """Do torch's x86 int8 kernels take 8-bit inputs against 8-bit weights without saturating? Both
        libraries need VNNI for it: fbgemm its AVX512_VNNI, oneDNN a VNNI it may use (``vnni``)."""
        return self.vnni and self.avx512_vnni

    def describe(self) -> str:
        """One line: 'AVX512, oneDNN, bfloat16 products, no AMX, VNNI' (', AMX-INT8' where the CPU has it)."""
        return ", ".join([self.isa, "oneDNN" if self.onednn else "no oneDNN",
                          "bfloat16 products" if self.bf16 else "no bfloat16 products",
                          "AMX" if self.amx else "no AMX", "VNNI" if self.vnni else "no VNNI"]
                         + (["AMX-INT8"] if self.amx_int8 else []))


def capabilities() -> Capabilities:
    """The one answer to every "can this CPU / torch do X" question of the fast path (tests patch it)."""
    return _probe()


@functools.lru_cache(maxsize=1)
def _probe() -> Capabilities:  # the hardware and this torch build do not change within a process
    isa = torch.backends.cpu.get_cpu_capability()
    onednn = torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in _MKLDNN_OPS)
    flags = set(cpu_fields().get("flags", "").split())
    return Capabilities(isa=isa, onednn=onednn, bf16=onednn and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                        avx512=isa.startswith("AVX512") and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags,
                        amx="amx_bf16" in flags and "amx_tile" in flags,
                        vnni=onednn_vnni(flags, os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get(
                            "DNNL_MAX_CPU_ISA", "")),
                        amx_int8="amx_int8" in flags and "amx_tile" in flags,
                        avx512_vnni="avx512_vnni" in flags and os.environ.get(  # fbgemm held below it: none
                            "FBGEMM_ENABLE_INSTRUCTIONS", "AVX512_E1").upper().startswith("AVX512_E1"))


def onednn_vnni(flags: set, max_isa: str) -> bool:
    """Does oneDNN's int8 reach VNNI on a CPU with these /proc/cpuinfo ``flags``, held to ``max_isa`` (its
    ``ONEDNN_MAX_CPU_ISA``; empty: no limit)?

    >>> zen4, alder = {"avx2", "avx512f", "avx512_vnni"}, {"avx2", "avx_vnni"}
    >>> onednn_vnni(zen4, ""), onednn_vnni(zen4, "AVX2"), onednn_vnni(zen4, "avx2_vnni"), onednn_vnni({"avx2"}, "")
    (True, False, False, False)
    >>> onednn_vnni(alder, ""), onednn_vnni(alder, "AVX512_CORE_VNNI"), onednn_vnni(alder, "AVX2_VNNI")
    (True, False, True)
    """
    max_isa = max_isa.upper()
    if max_isa in ("SSE41", "AVX", "AVX2", "AVX512_CORE"):  # the ISAs below any VNNI
        return False
    if max_isa.startswith("AVX2_VNNI"):  # the VEX-encoded one alone
        return "avx_vnni" in flags
    if max_isa.startswith("AVX512_CORE"):  # AVX2_VNNI is not below these in oneDNN's order: the EVEX one alone
        return "avx512_vnni" in flags
    return bool({"avx512_vnni", "avx_vnni"} & flags)


def cpu_fields() -> dict:
    """The first processor's fields in /proc/cpuinfo ({"model name": ..., "flags": ..., ...}; empty where
    there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}


def onednn_runs(x: torch.Tensor, weight: torch.Tensor | None = None) -> bool:
    """Can ``x`` (and ``weight``, of the same dtype) take oneDNN's CPU path: float32, or bfloat16 where the
    processor has bfloat16 products?"""
    caps = capabilities()
    if x.device.type != "cpu" or not caps.onednn or (weight is not None and weight.dtype != x.dtype):
        return False
    return x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and caps.bf16)


def post_op(act: str) -> tuple:
    """oneDNN's ``(attr, scalars, algorithm)`` for an activation fused after a product."""
    if act not in FUSABLE:
        raise OneByOneError(f"oneDNN fuses only the activations {FUSABLE} into a product, got {act!r}")
    return get(act).onednn


NAN_LOST = ("relu", "relu6")  # fused after a oneDNN product (a max with 0), these return 0 for NaN


def finite(x: torch.Tensor) -> bool:
    """Is every value of ``x`` finite? One sum (NaN and inf survive it): a few times quicker than
    ``isfinite(x).all()``; a sum that overflows answers False, and the caller takes its plain path."""
    return bool(torch.isfinite(x.sum()))


# (what the guarded model now running found its inputs to be, the value before its call, that call's frame):
# set by its call's first hook, put back by its last (a nested guarded call restores the outer one's); None: no
# model said. It lives for one call, in one thread or task; never a cache. A call ended by a KeyboardInterrupt
# (torch's last hook runs on an Exception only) leaves its value behind: its frame, gone from the stack, says so.
_INPUTS_FINITE = contextvars.ContextVar("onebyone_inputs_finite", default=None)
_PLAIN = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device)


def loses_nan(acts, x: torch.Tensor) -> bool:
    """Would fusing ``acts`` after oneDNN's products turn NaN in ``x`` into numbers: is one of them a ReLU
    (``NAN_LOST``) and ``x`` not ``nan_free``? Its caller then runs torch's plain layers."""
    return bool(set(acts) & set(NAN_LOST)) and not nan_free(x)


def nan_free(x: torch.Tensor) -> bool:
    """May a fused ReLU (which turns NaN into 0) run on ``x``: is it free of NaN and inf? The answer of the
    guarded model being run (``look_at_inputs``: one look at its inputs per call, trusted while that call is
    on the stack), else one sum over ``x``."""
    known = _INPUTS_FINITE.get()
    return finite(x) if known is None or known[0] is None or not _running(known[2]) else known[0]


def _running(frame) -> bool:
    """Is ``frame`` (a guarded call's) on this thread's stack still, below the caller: has that call not ended?"""
    f = sys._getframe(1)
    while f is not None:
        if f is frame:
            return True
        f = f.f_back
    return False


def inputs_finite(args, kwargs) -> bool | None:
    """Are all the floating-point tensors among a call's arguments finite (``finite`` on each)? None where an
    argument holds what it cannot look into (an object that is not a tensor, a number or a container torch
    knows)."""
    if not all(isinstance(t, (torch.Tensor, *_PLAIN)) for t in tree_leaves((args, kwargs))):
        return None
    return all(finite(t) for t in _float_tensors(args, kwargs))


def _float_tensors(args, kwargs) -> list:
    return [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def look_at_inputs(module, args, kwargs) -> None:
    """At the start of a guarded model's call: are its floating-point inputs finite? Its fused layers take
    the answer (``nan_free``) instead of each looking again: NaN or inf in the inputs then runs the plain
    layers, which carry them to the outputs as torch does. (A NaN the model makes itself from finite inputs
    is not looked for, nor one a forward pre-hook registered after this one makes.) Nothing while tracing
    or compiling: the plain layers run then."""
    if not tracing():
        outer = _INPUTS_FINITE.get()
        while outer is not None and not _running(outer[2]):  # a call that ended without its last hook
            outer = outer[1]
        _INPUTS_FINITE.set((inputs_finite(args, kwargs), outer, sys._getframe(1)))  # the caller: the model's call


def forget_inputs(module, args, kwargs, out) -> None:
    """At the end of a guarded model's call, also one that raised an ``Exception``: the value before it. (A
    ``KeyboardInterrupt`` skips this hook: ``nan_free`` then finds the call's frame gone and looks again.)"""
    if not tracing():
        known = _INPUTS_FINITE.get()
        _INPUTS_FINITE.set(None if known is None else known[1])


def nan_samples(args, kwargs, out, apart: bool = True):
    """``out`` (the outputs of a call on ``args``, ``kwargs`` of a model whose int8 codes carry no NaN:
    torch's int8 forms) with each sample whose inputs hold NaN or inf NaN in every output (in the float model
    the NaN reaches at least part of it; which part, the codes cannot say); every output all NaN where the
    model does not compute the samples on axis 0 apart (``apart``: ``tensors.samples_apart``), and outputs
    whose first axis is not the batch all NaN then."""
    leaves = _float_tensors(args, kwargs)
    if all(finite(t) for t in leaves):
        return out
    batch = {t.shape[0] for t in leaves if t.dim()}
    bad = None
    if len(batch) == 1 and apart:
        bad = torch.zeros(batch.pop(), dtype=torch.bool)
        for t in leaves:
            bad |= ~torch.isfinite(t).flatten(1).all(1) if t.dim() > 1 else ~torch.isfinite(t)

    def mark(t):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            return t
        t = t.clone()
        if bad is not None and t.dim() and t.shape[0] == bad.shape[0]:
            t[bad] = float("nan")
        else:
            t.fill_(float("nan"))
        return t

    return tree_map(mark, out)


# --- the oneDNN ops (what inductor emits on CPUs) and their public equivalents --------------------------

def linear_pointwise(x, w, b, act: str = "identity"):
    """act(x @ w.T + b) for rows x (T, C) and w (O, C), or w packed by ``reorder_linear_weight``."""
    if capabilities().onednn:
        return torch.ops.mkldnn._linear_pointwise(x, w, b, *post_op(act))
    return acts.function(act, inplace=True)(F.linear(x, w, b))


def reorder_linear_weight(w, rows: int):
    """w (O, C) reordered once into oneDNN's blocked layout for products with ``rows`` rows (w itself
    where oneDNN is missing)."""
    if capabilities().onednn:
        return torch.ops.mkldnn._reorder_linear_weight(w, rows)
    return w


def convolution_pointwise(x, w, b, geom, act: str = "identity"):
    """act(conv2d(x, w, b)) in one oneDNN call; ``geom`` = (padding, stride, dilation, groups) as lists."""
    if capabilities().onednn:
        return torch.ops.mkldnn._convolution_pointwise(x, w, b, *geom, *post_op(act))
    padding, stride, dilation, groups = geom
    return acts.function(act, inplace=True)(F.conv2d(x, w, b, stride, padding, dilation, groups))


def reorder_convolution_weight(w, geom, shape):
    """A conv weight reordered once into oneDNN's blocked layout for inputs of ``shape`` (w itself where
    oneDNN is missing)."""
    if capabilities().onednn:
        return torch.ops.mkldnn._reorder_convolution_weight(w, *geom, list(shape))
    return w


def onednn_int8() -> bool:
    """Has torch oneDNN's int8 products (``onednn.qlinear_pointwise``, what torch's x86 Inductor flow emits)?"""
    return capabilities().onednn and all(hasattr(torch.ops.onednn, op) for op in ("qlinear_prepack",
                                                                                  "qlinear_pointwise"))


def qlinear_prepack(q, rows: int):
    """An int8 weight (O, C) packed once by oneDNN for int8 products with ``rows`` rows (itself without oneDNN)."""
    if onednn_int8():
        return torch.ops.onednn.qlinear_prepack(q, [rows, q.shape[1]])
    return q


def qlinear_pointwise(x, x_scale: float, x_zero: int, packed, q, w_scales, b, out, act: str = "identity"):
    """act(x @ w.T + b) in int8: ``x`` uint8 rows (T, C) standing for ``(x - x_zero) * x_scale``, the weight
    int8 ``q`` (O, C) times ``w_scales`` (O,) (``packed`` by ``qlinear_prepack``); ``out``: (scale, zero) of
    the uint8 output it is requantized to in the same call, or None for float32."""
    if onednn_int8():
        dtype = torch.float32 if out is None else torch.uint8
        scale, zero = (1.0, 0) if out is None else out
        return torch.ops.onednn.qlinear_pointwise(x, x_scale, x_zero, packed, w_scales, _zero_points(q.shape[0]), b,
                                                  scale, zero, dtype, *post_op(act))
    y = acts.function(act)(F.linear((x.float() - x_zero) * x_scale, q.float() * w_scales[:, None], b))
    return y if out is None else quantize_rows(y, *out, 255)


@functools.lru_cache(maxsize=64)
def _zero_points(n: int) -> torch.Tensor:
    """The weights' zero points, all 0 (symmetric int8): one tensor per width, never written to."""
    return torch.zeros(n, dtype=torch.long)


def quantize_rows(x, scale: float, zero: int, levels: int):
    """float ``x`` -> uint8 codes ``round(x / scale) + zero`` clamped to 0..levels, in ``x``'s shape and order.
    Over all of 0..255 (activations), torch's quantize kernel, one vectorized pass (8x the arithmetic below on
    (8, 64, 1024)), its codes read through the storage they share; else arithmetic, one new tensor then in
    place. The two can differ by one code where ``x / scale`` lies within a float's rounding of a tie."""
    if levels == 255 and x.dtype == torch.float32 and hasattr(torch, "quantize_per_tensor"):
        deprecation_seen()
        q = torch.quantize_per_tensor(x, scale, zero, torch.quint8)
        return x.new_empty(0, dtype=torch.uint8).set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())
    return x.mul(1.0 / scale).round_().add_(zero).clamp_(0, levels).to(torch.uint8)


@functools.lru_cache(maxsize=1)
def deprecation_seen() -> bool:
    """torch's deprecation notice for quantized tensors comes once a process (one C++ warn-once, for every
    quantized tensor made): drawn here, once, under ``quantized_tensors``, so the int8 forms' calls after it
    need no warnings filter (entering one each call would reset the caller's once-only warnings and is not
    thread-safe)."""
    with quantized_tensors():
        torch.quantize_per_tensor(torch.zeros(1), 1.0, 0, torch.quint8)
    return True


@contextlib.contextmanager
def quantized_tensors():
    """torch's notice that quantized tensors are deprecated, kept out of the caller's output: its x86 int8
    kernels take them, and they are what the int8 forms measure and run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def packed_weights(m):
    """The packed int8 weights a torch quantized conv / Linear runs (its ``_packed_params``; a quantized
    Linear keeps them one module further in), or None for any other module."""
    if not hasattr(m, "_weight_bias") or type(m).__name__ == "LinearPackedParams":  # the Linear's own holder
        return None
    packed = getattr(_holder(m), "_packed_params", None)  # a dynamic RNN keeps a list of them: not one layer
    return packed if isinstance(packed, torch.ScriptObject) else None


def _holder(m):
    inner = getattr(m, "_packed_params", None)
    return inner if isinstance(inner, torch.nn.Module) else m


_LIBRARY = threading.Lock()  # held while ``repacked`` switches torch's int8 kernel library


def repacked(m, library: str):
    """The int8 weight and bias of the quantized layer ``m`` packed for the kernels of ``library`` ("fbgemm",
    "onednn"), ``m`` itself left as it was; None where that library refuses the layer."""
    holder = _holder(m)
    with _LIBRARY:  # (a process-wide setting: one switch at a time here; packing elsewhere meanwhile races)
        old_library, old = torch.backends.quantized.engine, holder._packed_params
        try:
            torch.backends.quantized.engine = library
            m.set_weight_bias(*m._weight_bias())
            return holder._packed_params
        except RuntimeError:
            return None
        finally:
            torch.backends.quantized.engine = old_library
            holder._packed_params = old


def set_packed(m, packed) -> None:
    """``m`` runs ``packed`` (from ``repacked``) from now on."""
    _holder(m)._packed_params = packed


def histogram_range(obs) -> tuple:
    """(low, high): the range a torch ``HistogramObserver`` picks, minimising the rounding error over its
    histogram (its whole observed range where that search is missing)."""
    search = getattr(obs, "_non_linear_param_search", None)
    low, high = search() if search is not None else (obs.min_val, obs.max_val)
    return float(low), float(high)


# --- the state of the process: tracing, exporting, torch function modes --------------------------------

def _onnx_exporting():
    """``torch.onnx.is_in_onnx_export`` without its two imports per call (its private flags where they are)."""
    global _onnx_exporting
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        _onnx_exporting = lambda: GLOBALS.in_onnx_export or _flags._is_onnx_exporting  # noqa: E731
    except ImportError:  # another torch layout: the public function
        _onnx_exporting = torch.onnx.is_in_onnx_export
    return _onnx_exporting()


def tracing() -> bool:
    """True while tracing, exporting or compiling: the fast paths run plain torch ops then."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or _onnx_exporting()


def function_mode_on() -> bool:
    """Is a ``TorchFunctionMode`` (the analyzer's) watching torch calls?"""
    probe = getattr(torch._C, "_is_torch_function_mode_enabled", None)
    return bool(probe()) if probe is not None else False


def without_function_modes():
    """A context that turns ``__torch_function__`` handling off (so a timer measures the kernels, not a
    mode that watches each call); a no-op context where torch has no such switch."""
    off = getattr(torch._C, "DisableTorchFunction", None)
    return off() if off is not None else _nothing()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def inductor_config():
    """``torch._inductor.config`` (imported on first use: it costs a second at import time)."""
    import torch._inductor.config as inductor

    return inductor


def compile_fx(gm, example_inputs):
    """Inductor's own dynamo backend (imported on first use)."""
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs)


PADS = (F.pad, torch._C._nn.pad, torch.constant_pad_nd) if hasattr(torch._C, "_nn") else (F.pad, torch.constant_pad_nd)
