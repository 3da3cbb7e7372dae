"""``optimize(dtype=torch.int8)``: post-training static quantization of the exactly rewritten model, its forms
raced as in float32, and kept only where it is faster and its error (and accuracy, where one is measured)
stays within what the caller allows.

A 1x1 convolution in int8 is an integer matrix product: with weights quantized per output channel,
``y[o] = s_x * s_w[o] * sum_c q_w[o, c] * q_x[c]`` (+ the bias): the scales factor out of the sum, which
runs on the CPU's int8 dot products and is requantized once per output. The forms:

- ``torch int8 (x86)``: torch's own int8 kernels (the x86 quantized backend, fbgemm and oneDNN) from FX
  graph mode quantization, weights per output channel, each activation's range observed on the calibration
  data and chosen on its own by measured error (``int8_ranges``: min/max, percentile or rounding-error
  minimum); where its error is out of tolerance, the layers whose int8 error alone is largest (1, 2, then 4)
  are kept in float32, where that measures better; on a model torch.fx cannot trace, ``torch int8 (x86,
  layer by layer)``: each layer an ``Int8Layer``;
- ``onebyone int8 (fused chains)``: each chain of 1x1 convs (a SharedMLP, a run in an ``nn.Sequential``) an
  ``Int8PointwiseChain`` (oneDNN's int8 products tile by tile, 8 bits between layers), the other layers
  float32: for models whose work is in such chains (PointNet);
- ``onnxruntime int8 (QDQ)``: the float model's ONNX export quantized by ``onnxruntime.quantization.
  quantize_static`` (QDQ, per-channel weights) on the same calibration data;
- ``OpenVINO int8 (NNCF)``: the same export quantized by ``nncf.quantize`` and compiled by OpenVINO.

Each form is checked against the float32 model on held-out calibration batches (the last quarter, at least
one; all of them where there is one batch, said in the report).
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from ...errors import OneByOneError
from .. import graph as G
from ..capture import Listener, calls_of, watch
from ..layers import Pointwise
from ..rewrite_report import OptimizeReport, RewriteReport, output_difference, outputs
from ..tensors import call, copy_model, describe, example_values
from . import int8_ranges, private
from .exported import require_engine
from .int8_chain import affine, int8_chains, rounded, weight_scales
from .onnx_runtime import OnnxRuntime, require_onnxruntime
from .openvino import OpenVino, require_openvino
from .private import capabilities
from .swaps import fuse_chains
from .timing import time_models

INT8_TOL = 5e-2  # default dtype_tol for int8, of the output scale: 8 bits keep about 0.4% a value
ACCURACY_TOL = 0.5  # points of top-1 accuracy int8 may lose before float32 is kept
QUANTIZED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
LAYER_SAMPLES = 4  # samples each layer's error alone in int8 is measured on
RANGE_SAMPLES = 2  # calibration samples each activation's range is chosen on
FALLBACK = (1, 2, 4)  # how many of the most sensitive layers torch's form tries in float32, in turn, past tolerance


def calibration_batches(calibration, example) -> list:
    """The calibration inputs as a list, each checked against ``example``: the same structure, and per
    tensor the same dtype and per-sample shape, finite. None: the example alone, with a warning."""
    if calibration is None:
        warnings.warn("optimize(dtype=torch.int8) without calibration data: activation ranges come from the "
                      "example alone; pass calibration=[batches of real inputs] for ranges that hold", stacklevel=3)
        return [example]
    if isinstance(calibration, (torch.Tensor, dict, str, bytes)) or not hasattr(calibration, "__iter__"):
        raise OneByOneError(f"calibration must be an iterable of inputs like the example (a list of batches), "
                            f"got {type(calibration).__name__}")
    batches, want = list(calibration), example_values(example)
    if not batches:
        raise OneByOneError("calibration is empty: give a list of input batches shaped like the example, "
                            f"{describe(example)}")
    for i, b in enumerate(batches):
        got = example_values(b)
        same = len(got) == len(want) and all(
            isinstance(g, torch.Tensor) == isinstance(w, torch.Tensor) and (not isinstance(g, torch.Tensor) or (
                g.dtype == w.dtype and g.shape[1:] == w.shape[1:])) for g, w in zip(got, want))
        if not same:
            raise OneByOneError(f"calibration batch {i} is {describe(b)}; expected inputs like the example, "
                                f"{describe(example)} (any batch size)")
        if any(isinstance(g, torch.Tensor) and g.dim() and g.shape[0] == 0 for g in got):
            raise OneByOneError(f"calibration batch {i} holds no samples ({describe(b)}): give batches of one or "
                                "more inputs")
        if any(isinstance(g, torch.Tensor) and g.is_floating_point() and not bool(torch.isfinite(g).all())
               for g in got):
            raise OneByOneError(f"calibration batch {i} holds NaN or infinite values: ranges observed on it would "
                                "be meaningless")
    return batches


def split(batches: list) -> tuple[list, list]:
    """(batches to observe ranges on, held-out batches to check on): the last quarter (at least one) held
    out; with a single batch, it serves both."""
    if len(batches) < 2:
        return batches, batches
    k = max(1, len(batches) // 4)
    return batches[:-k], batches[-k:]


def plain_layers(model: nn.Module, x) -> nn.Module:
    """A copy of ``model`` with each ``Pointwise`` as the torch layer it equals on the input it gets from
    ``x`` (a 1x1 ``Conv1d/2d/3d`` on (B, C, ...), an ``nn.Linear`` on (..., C)): what quantization tools
    know. A Pointwise they cannot take stays as it is (it runs in float32)."""
    work = copy.deepcopy(model)
    found = [m for m in work.modules() if isinstance(m, Pointwise)]
    first, _ = calls_of(work, x, found)
    names = G.names_by_module(work)
    for m, (args, _, _) in first.items():
        rank = args[0].dim() if args and isinstance(args[0], torch.Tensor) else 0
        new = _torch_layer(m, rank)
        for name in names[id(m)] if new is not None else ():  # a shared Pointwise: one layer in each place
            work = G.replace_module(work, name, new)
    return work


def _torch_layer(m: Pointwise, rank: int) -> nn.Module | None:
    w = m.weight.detach().reshape(m.out_channels, -1)  # (O, C / groups)
    if m.channel_dim == 1 and rank in (3, 4, 5):
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[rank - 3]
        new = conv(m.in_channels, m.out_channels, 1, stride=m.stride, groups=m.groups, bias=m.bias is not None)
        with torch.no_grad():
            new.weight.copy_(w.reshape(new.weight.shape))
    elif m.channel_dim == -1 and m.groups == 1 and m.stride == 1 and rank >= 2:
        new = nn.Linear(m.in_channels, m.out_channels, bias=m.bias is not None)
        with torch.no_grad():
            new.weight.copy_(w)
    else:
        return None
    if m.bias is not None:
        with torch.no_grad():
            new.bias.copy_(m.bias.detach())
    return new.to(m.weight.dtype).eval()


def quantizable(model: nn.Module) -> list:
    """The names of the layers int8 would run: convs and Linears."""
    return [n for n, m in model.named_modules() if isinstance(m, QUANTIZED)]


def torch_int8(model: nn.Module, x, observe: list, keep_float=(), given=None) -> tuple:
    """(``model`` (plain torch layers) quantized by FX graph mode for the x86 backend, what its ranges chose):
    int8 weights per output channel; each activation's range observed on ``observe`` and chosen on its own
    (``int8_ranges``: min/max, a percentile or the rounding-error minimum, by the output error it brings on
    the first ``RANGE_SAMPLES`` samples of ``observe``); the layers named in ``keep_float`` stay float32.
    ``given``: {tensor: (low, high)} chosen before (the choice's "bounds"): those are taken, the rest observed
    by min/max, and nothing is chosen (the choice is None). The choice: {"ranges": {observed tensor:
    candidate}, "bounds": {observed tensor: (low, high)}, "error": {"mse": ..., "chosen": ...}}."""
    if given is not None:
        prepared = int8_ranges.prepare(model, x, [], keep_float, observer="minmax")
        names = int8_ranges.observers(prepared)
        if any(src not in given for src in names.values()):  # a tensor the first pass did not observe
            int8_ranges.calibrate(prepared, observe)
        bounds = {n: given.get(src) or int8_ranges.seen_range(prepared.get_submodule(n)) for n, src in names.items()}
        return int8_ranges.convert(prepared, bounds), None
    prepared = int8_ranges.prepare(model, x, observe, keep_float)
    samples, names = [_first(observe[0], RANGE_SAMPLES)], int8_ranges.observers(prepared)
    want = expected(model, samples)  # the float model's (a run of ``prepared`` would add to its histograms)
    chosen, ranges, errors = int8_ranges.choose(prepared, names, samples, lambda m, b: error(m, want, b))
    bounds = {n: ranges[n][c] for n, c in chosen.items()}
    return int8_ranges.convert(prepared, bounds), {"ranges": {names[n]: c for n, c in chosen.items()},
                                                   "bounds": {names[n]: b for n, b in bounds.items()},
                                                   "error": errors}


class OnnxRuntimeInt8(OnnxRuntime):
    """``OnnxRuntime`` on the export quantized to int8 (QDQ, per-channel weights, activation ranges from
    ``observe``, onnxruntime's MinMax calibration); checked against ``model`` within ``tol`` like any export."""

    engine = "onnxruntime int8 (QDQ)"

    def __init__(self, model, observe: list, tol: float = INT8_TOL, **kw):
        super().__init__(model, tol=tol, **kw)
        self.observe = observe

    def compile(self, onnx: bytes):
        return super().compile(quantize_onnx(onnx, self.observe))


class OpenVinoInt8(OpenVino):
    """``OpenVino`` on the export quantized by NNCF (``nncf.quantize``: OpenVINO's own post-training int8, on
    the activation ranges of ``observe``); checked against ``model`` within ``tol`` like any export."""

    engine = "OpenVINO int8 (NNCF)"

    def __init__(self, model, observe: list, tol: float = INT8_TOL, **kw):
        super().__init__(model, tol=tol, **kw)
        self.observe = observe

    def compile(self, onnx: bytes):
        ov = require_openvino()
        nncf = require_engine("nncf", "OpenVINO int8", "openvino")
        model = ov.Core().read_model(model=onnx, weights=b"")
        names = [p.get_any_name() for p in model.inputs]
        feeds = _feeds(names, self.observe, _export_batch(model.inputs[0].get_partial_shape()))
        with warnings.catch_warnings(), _root_log_quiet(), _nncf_quiet(nncf):
            warnings.simplefilter("ignore")
            quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds))
        return self.compile_model(ov, quantized)


def _export_batch(shape) -> int:
    """The batch size an OpenVINO model's first input fixes (0: dynamic)."""
    return shape[0].get_length() if shape.rank.is_static and len(shape) and shape[0].is_static else 0


_QUIET = threading.Lock()


@contextlib.contextmanager
def _nncf_quiet(nncf):
    """NNCF logs its steps and draws progress bars on the process's stdout: kept out of the caller's output.
    The streams are the process's own, so one quantization at a time holds them (what another thread prints
    meanwhile is dropped too)."""
    from nncf.common.logging.logger import nncf_logger

    with _QUIET:
        level = nncf_logger.level
        nncf_logger.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            nncf_logger.setLevel(level)


def quantize_onnx(onnx: bytes, observe: list) -> bytes:
    """ONNX bytes quantized by ``onnxruntime.quantization.quantize_static`` on the inputs ``observe``."""
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    import onnx as onnx_lib

    graph = onnx_lib.load_from_string(onnx)
    inputs = list(graph.graph.input)
    names = [i.name for i in inputs]
    batch = inputs[0].type.tensor_type.shape.dim[0].dim_value if inputs else 0  # 0: not fixed by the export
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _root_log_quiet():
        warnings.simplefilter("ignore")
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx)
        quantize_static(src, dst, Reader(_feeds(names, observe, batch)), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=not capabilities().vnni)  # without VNNI, 8-bit weights can saturate
        return dst.read_bytes()


def _feeds(names: list, observe: list, batch: int) -> list:
    """The calibration inputs as onnxruntime feeds; where the export fixed its batch size, every sample
    regrouped into batches of that size (repeated to fill one where there are fewer samples)."""
    columns = [torch.cat([example_values(b)[i] for b in observe]) for i in range(len(names))]
    if batch:
        n = columns[0].shape[0]
        if n < batch:
            columns = [c.repeat(-(-batch // n), *([1] * (c.dim() - 1)))[:batch] for c in columns]
        columns = [c[: (c.shape[0] // batch) * batch] for c in columns]
        return [dict(zip(names, [c[i:i + batch].numpy() for c in columns])) for i in range(0, columns[0].shape[0],
                                                                                            batch)]
    return [dict(zip(names, [t.numpy() for t in example_values(b)])) for b in observe]


@contextlib.contextmanager
def _root_log_quiet():
    """onnxruntime.quantization logs advice on the root logger: kept out of the caller's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Ranges(Listener):
    """The smallest and largest value each watched layer was given (``low``, ``high``) and gave (``out``: id ->
    (low, high)), over every run it watches; each range holds 0, as int8's does. ``first``: id -> the first
    input each was given."""

    def __init__(self):
        self.low, self.high, self.out, self.first = {}, {}, {}, {}

    def pre(self, m, args, kwargs):
        if args and isinstance(args[0], torch.Tensor):
            k = id(m)
            self.first.setdefault(k, args[0])
            self.low[k] = min(self.low.get(k, 0.0), float(args[0].min()))
            self.high[k] = max(self.high.get(k, 0.0), float(args[0].max()))

    def post(self, m, args, kwargs, out):
        if isinstance(out, torch.Tensor):
            lo, hi = self.out.get(id(m), (0.0, 0.0))
            self.out[id(m)] = (min(lo, float(out.min())), max(hi, float(out.max())))


def observed(plain: nn.Module, observe: list, layers: list) -> _Ranges:
    """Each layer's input and output ranges over the ``observe`` batches."""
    ranges = _Ranges()
    for b in observe:
        watch(plain, b, ranges, modules=[plain.get_submodule(n) for n in layers])
    return ranges


class Int8Layer(nn.Module):
    """One conv or Linear run by torch's x86 int8 kernels on its own: the input quantized per tensor (uint8
    over its observed range; 7 bits without AVX512_VNNI, the one VNNI those kernels use: elsewhere pairs of
    8-bit products saturate a 16-bit sum; ``vnni``: whether it is there), the
    weights per output channel (int8, symmetric), the output requantized to 8 bits over its observed range
    and returned in float32. For models torch.fx cannot trace: no graph is needed, each layer pays its own
    (de)quantization."""

    KINDS = {nn.Conv1d: "Conv1d", nn.Conv2d: "Conv2d", nn.Conv3d: "Conv3d", nn.Linear: "Linear"}

    def __init__(self, layer: nn.Module, into: tuple, out: tuple, vnni: bool):
        super().__init__()
        import torch.ao.nn.quantized as nnq


        if type(layer) not in self.KINDS or getattr(layer, "padding_mode", "zeros") != "zeros" or isinstance(
                getattr(layer, "padding", 0), str):
            raise OneByOneError(f"Int8Layer takes nn.Conv1d/2d/3d with zero padding or nn.Linear, got {layer}")
        levels = 255 if vnni else 127  # the input's levels: pairs of 8-bit products saturate a 16-bit sum
        (self.scale, self.zero), (out_scale, out_zero) = affine(*into, levels), affine(*out, 255)
        w = layer.weight.detach().float()
        scales = weight_scales(w).double()
        with quantized_tensors():
            qw = torch.quantize_per_channel(w, scales, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
        kind = getattr(nnq, self.KINDS[type(layer)])
        if kind is nnq.Linear:
            self.q = kind(layer.in_features, layer.out_features)
        else:
            self.q = kind(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups)
        self.q.set_weight_bias(qw, None if layer.bias is None else layer.bias.detach().float())
        self.q.scale, self.q.zero_point = out_scale, out_zero

    def forward(self, x):
        with quantized_tensors():
            return self.q(torch.quantize_per_tensor(x, self.scale, self.zero, torch.quint8)).dequantize()


@contextlib.contextmanager
def quantized_tensors():
    """torch's notice that quantized tensors are deprecated, kept out of the caller's output: its x86 int8
    kernels take them, and they are what this form measures and runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        yield


def torch_int8_layers(plain: nn.Module, observe: list, layers: list, keep_float=()) -> tuple:
    """(a copy of ``plain`` with each of ``layers`` but ``keep_float`` an ``Int8Layer``, the layers left in
    float32): torch's int8 kernels without a graph (where torch.fx cannot trace the model). A layer not called
    on ``observe``, of another class or padding mode, or that torch's quantized kernels refuse on its observed
    input stays float32 and is listed; where that is every layer, refused."""
    work, ranges, floats = copy_model(plain), observed(plain, observe, layers), []
    aliases = G.names_by_module(work)
    for n in layers:
        m, places = plain.get_submodule(n), aliases[id(work.get_submodule(n))]
        try:
            if n in keep_float or id(m) not in ranges.out:
                raise OneByOneError("kept in float32")
            q = Int8Layer(m, (ranges.low[id(m)], ranges.high[id(m)]), ranges.out[id(m)],
                          capabilities().avx512_vnni)
            with torch.no_grad():
                q(ranges.first[id(m)])  # the kernels take it, or raise here
        except Exception:  # noqa: BLE001 - a layer int8 cannot run stays float32, listed
            floats.append(n)
            continue
        for place in places:  # a layer shared by several places is one int8 layer in each
            work = G.replace_module(work, place, q)
    if len(floats) == len(layers):
        raise OneByOneError("no layer runs in torch's int8 kernels: each was kept in float32, refused by them or "
                            "not called on the calibration data")
    return work.eval(), tuple(floats)


def chains_int8(plain: nn.Module, x, observe: list) -> tuple:
    """(a copy of ``plain`` with each chain of 1x1 convs (each SharedMLP, each run of two or more in an
    ``nn.Sequential``) an ``Int8PointwiseChain``, every other layer left in float32 (their names)):
    the form for models whose work is in such chains (PointNet)."""
    work = int8_chains(fuse_chains(copy_model(plain), x, RewriteReport("int8 chains")), observe)
    return work.eval(), tuple(quantizable(work))


class _OneLayerInt8(nn.Module):
    """``layer`` as torch's int8 form computes it: its input rounded over the observed range (per tensor; 128
    levels, the x86 default's 7 bits), its weights to int8 per output channel (symmetric); the products then
    exact, as the integer sum is."""

    def __init__(self, layer: nn.Module, low: float, high: float):
        super().__init__()
        self.layer = copy_model(layer)
        w = layer.weight.detach()
        scale = weight_scales(w)
        with torch.no_grad():
            self.layer.weight.copy_(torch.fake_quantize_per_channel_affine(
                w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127))
        self.levels = 127  # as torch's form quantizes its activations (reduce_range) on every CPU
        self.scale, self.zero = affine(low, high, self.levels)

    def forward(self, x):
        return self.layer(rounded(x, self.scale, self.zero, self.levels).to(x.dtype))


def layer_errors(plain: nn.Module, observe: list, held: list, layers: list) -> dict:
    """{layer name: the model's output error, relative to its output scale on ``held``, with that layer alone in
    int8} (input per tensor over the ranges seen on ``observe``, weights per output channel): where int8 hurts.
    Measured on a copy (``plain`` is not touched), on the first ``LAYER_SAMPLES`` held-out samples: one run of
    the model per layer."""
    plain = copy_model(plain)
    ranges, named = observed(plain, observe, layers), {n: plain.get_submodule(n) for n in layers}
    held = [_first(held[0], LAYER_SAMPLES)]
    want, out = expected(plain, held), {}
    for n, m in named.items():
        if id(m) not in ranges.low:
            continue  # not called on these inputs
        G.replace_module(plain, n, _OneLayerInt8(m, ranges.low[id(m)], ranges.high[id(m)]))
        try:
            out[n] = error(plain, want, held)
        finally:
            G.replace_module(plain, n, m)
    return out


def _first(batch, n: int):
    """The first ``n`` samples of a batch (a tensor, a tuple of them, or a dict of keyword tensors)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: _first(v, n) for k, v in batch.items()}
    return type(batch)(_first(v, n) for v in batch) if isinstance(batch, (tuple, list)) else batch


def expected(reference: nn.Module, held: list) -> list:
    """``reference``'s outputs on each held-out batch (what ``error`` compares every form with)."""
    with torch.no_grad():
        return [outputs(call(reference, b)) for b in held]


def error(form, want: list, held: list) -> float:
    """The largest difference of ``form``'s outputs from ``want`` (the reference's outputs on each batch of
    ``held``: ``expected``), relative to the reference's output scale."""
    worst = 0.0
    with torch.no_grad():
        for w, b in zip(want, held):
            diff, scale = output_difference(w, outputs(call(form, b)), "int8")
            worst = max(worst, diff / max(scale, 1e-30))
    return worst


def top1(labels, held: list):
    """An ``evaluate`` from labels: the top-1 accuracy, in points, of a model on the held-out batches
    (``labels``: class indices for their samples, in order)."""
    labels = torch.as_tensor(labels).reshape(-1)
    n = sum(example_values(b)[0].shape[0] for b in held)
    if labels.numel() != n:
        raise OneByOneError(f"labels has {labels.numel()} entries; the held-out calibration batches hold {n} samples")

    def evaluate(model) -> float:
        with torch.no_grad():
            got = torch.cat([outputs(call(model, b))[0].argmax(-1).reshape(-1) for b in held])
        return 100.0 * float((got == labels).float().mean())
    return evaluate


def int8(work: nn.Module, folded: nn.Module, x, report: OptimizeReport, given: nn.Module, calibration,
         tol: float, accuracy_tol: float, evaluate=None, labels=None) -> nn.Module:
    """The fastest int8 form of ``folded`` (the exactly rewritten float model) within ``tol`` of the output
    scale against ``given`` on held-out calibration batches and, with ``evaluate`` (model -> accuracy in
    points) or ``labels``, losing at most ``accuracy_tol`` points; ``work`` (the float32 rewrite) where no
    form qualifies or none runs faster. ``report.precision`` gives each form's error, time and accuracy, and
    for each layer (``layers``) the precision it runs in and the output error with that layer alone in int8."""
    batches = calibration_batches(calibration, x)
    (observe, held), plain = split(batches), plain_layers(folded, x)
    layers = quantizable(plain)
    precision = report.precision = {"dtype": "int8", "tolerance": tol, "accuracy_tol": accuracy_tol,
                                    "calibration_batches": len(batches), "held_out": len(held), "forms": {}}
    if held is observe:
        report.notes.append("int8: one calibration batch, used both to observe ranges and to check: give more")
    if not layers:
        why = "int8: nothing to quantize (no conv or Linear): float32 kept"
        report.notes.append(why)
        warnings.warn(f"optimize: {why}", stacklevel=3)
        return work
    if evaluate is None and labels is not None:
        evaluate = top1(labels, held)
    want = expected(given, held)
    precision["layers"] = _layer_rows(plain, observe, held, layers, report)
    alone = {n: r["int8_alone_error"] for n, r in precision["layers"].items()}
    forms = _forms(plain, x, observe, held, want, tol, report, _by_sensitivity(layers, alone))
    for label, (form, err, floats) in forms.items():
        precision["forms"][label] = {"relative_error": err, "float32_layers": list(floats)}
    fine = {k: f for k, (f, e, _) in forms.items() if e <= tol}
    for k in set(forms) - set(fine):
        report.skipped.append((k, f"its int8 error {forms[k][1]:.3g} of the output scale is over dtype_tol {tol:g}"))
    if evaluate is not None:
        fine = _accurate(fine, work, evaluate, accuracy_tol, report)
    if not fine:
        report.notes.append("int8: no form within the tolerances: float32 kept")
        return work
    t = time_models({"float32": work, **fine}, x)
    for k, v in t.items():
        (precision["forms"][k] if k in precision["forms"] else precision.setdefault("float32", {}))["ms"] = v * 1e3
    best = min(fine, key=t.get)
    if t[best] >= t["float32"]:
        report.notes.append(f"int8 ran no faster than float32 on this CPU ({t[best] * 1e3:.3g} against "
                            f"{t['float32'] * 1e3:.3g} ms a call): float32 kept")
        return work
    precision["kept"] = best
    floats = forms[best][2]
    for n, row in precision["layers"].items():
        row["precision"] = "float32" if n in floats else "int8"
    report.changed.append(f"{best} kept: {t[best] * 1e3:.3g} ms a call against float32's {t['float32'] * 1e3:.3g}; "
                          f"{len(layers) - len(floats)} of {len(layers)} layers in int8"
                          + (f" ({', '.join(floats)} kept in float32)" if floats else ""))
    report.layers = []  # the float kernels chosen are not what runs
    return NanSamples(fine[best]) if best.startswith("torch int8") else fine[best]


class NanSamples(nn.Module):
    """``model``, one of torch's int8 forms (whose codes carry no NaN: its quantize turns NaN into a code),
    answering NaN for each sample whose inputs hold NaN or inf (``private.nan_samples``). Its ``state_dict``
    is ``model``'s, under ``model.``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        return out if private.tracing() else private.nan_samples(args, kwargs, out)


def _accurate(fine: dict, work, evaluate, accuracy_tol: float, report) -> dict:
    """The forms of ``fine`` whose accuracy (``evaluate``) is within ``accuracy_tol`` points of float32's (``work``);
    each measured in ``report.precision``, each left out named in ``report.skipped``."""
    precision = report.precision
    base = precision["float32_accuracy"] = float(evaluate(work))
    kept = {}
    for k, form in fine.items():
        acc = precision["forms"][k]["accuracy"] = float(evaluate(form))
        if base - acc > accuracy_tol:
            report.skipped.append((k, f"top-1 {acc:.2f} against float32's {base:.2f}: loses more than "
                                      f"accuracy_tol {accuracy_tol:g} points"))
        else:
            kept[k] = form
    return kept


def _layer_rows(plain, observe, held, layers, report) -> dict:
    """{layer: its precision (float32 until an int8 form is kept) and its error alone in int8 (None where not
    measured: a measurement that fails is named in the notes; the forms stand on their own)}."""
    try:
        alone = layer_errors(plain, observe, held, layers)
    except Exception as e:  # noqa: BLE001 - named, not raised
        alone = {}
        report.notes.append(f"int8: each layer's error alone was not measured: {_why(e)}")
    return {n: {"int8_alone_error": alone.get(n), "precision": "float32"} for n in layers}


def _by_sensitivity(layers: list, alone: dict) -> list:
    """The layers, those whose error alone in int8 is largest first; unmeasured, the first and last layers (the
    usual sensitive ones) lead."""
    if any(alone.get(n) is not None for n in layers):
        return sorted(layers, key=lambda n: -(alone.get(n) or 0.0))
    return list(dict.fromkeys([layers[0], layers[-1], *layers]))


def _forms(plain, x, observe, held, want, tol, report, layers) -> dict:
    """{label: (form, its error on ``held``, the layers it keeps in float32)} for each form that could be made;
    ``layers``: the quantizable layers, the most sensitive first (torch's form keeps the first 1, 2, 4 of them
    in float32 while its error is over ``tol``, as long as that measures better)."""
    forms = {}
    try:
        q, choice = torch_int8(plain, x, observe)
        err, floats = error(q, want, held), ()
        report.precision |= {"observers": choice, "all_int8_error": err}  # every layer in int8, before any fallback
        for k in FALLBACK:  # past the tolerance: the layers whose int8 error alone is largest kept in float32
            if err <= tol or k >= len(layers):
                break
            keep = tuple(layers[:k])
            q2, _ = torch_int8(plain, x, observe, keep_float=keep, given=choice["bounds"])
            err2 = error(q2, want, held)
            if err2 < err:
                q, err, floats = q2, err2, keep
        forms["torch int8 (x86)"] = (q, err, floats)
    except Exception as e:  # noqa: BLE001 - FX tracing and the quantizer raise many kinds: named, not raised
        report.skipped.append(("torch int8 (x86)", _why(e)))
        try:  # no graph: each layer quantizes its input, runs int8 and dequantizes on its own
            q, floats = torch_int8_layers(plain, observe, layers)
            forms["torch int8 (x86, layer by layer)"] = (q, error(q, want, held), floats)
        except Exception as e:  # noqa: BLE001 - a layer torch's quantized kernels refuse: named, not raised
            report.skipped.append(("torch int8 (x86, layer by layer)", _why(e)))
    try:  # each chain of 1x1 convs one int8 kernel call per layer, 8-bit between layers
        q, floats = chains_int8(plain, x, observe)
        forms["onebyone int8 (fused chains)"] = (q, error(q, want, held), floats)
    except Exception as e:  # noqa: BLE001 - no chain, or one oneDNN refuses: named, not raised
        report.skipped.append(("onebyone int8 (fused chains)", _why(e)))
    exports = {}  # one ONNX export for both engines
    for engine in (OnnxRuntimeInt8, OpenVinoInt8):
        try:
            form = engine(plain, observe, tol=math.inf, exports=exports)
            with torch.no_grad():
                form.prepare(x, call(plain, x))
            forms[engine.engine] = (form, error(form, want, held), ())
        except Exception as e:  # noqa: BLE001 - not installed, an export or a quantization that fails: named
            report.skipped.append((engine.engine, _why(e)))
    return forms


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
