"""torch's own int8 forms of a model, and what measures them: FX graph mode quantization for the x86 backend
(``torch_int8``: weights per output channel, each activation's range chosen by measured error in
``int8_ranges``), each layer an ``Int8Layer`` where torch.fx cannot trace, each layer's error alone in int8
(``layer_errors``), and the output error of any form against the float model (``expected``, ``error``)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ...errors import OneByOneError
from .. import graph as G
from ..capture import Listener, calls_of, watch
from ..layers import Pointwise
from ..rewrite_report import output_difference
from ..tensors import call, copy_model, outputs
from . import int8_ranges, private
from .int8_chain import affine, rounded, weight_scales
from .int8_kept import ShapeChecked
from .int8_traced import Traced
from .private import quantized_tensors

QUANTIZED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
LAYER_SAMPLES = 4  # samples each layer's error alone in int8 is measured on
RANGE_SAMPLES = 2  # calibration samples each activation's range is chosen on


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


SETTINGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
            "in_features", "out_features")


def settings_of(layer: nn.Module, to: nn.Module) -> None:
    """``layer``'s plain settings (stride, padding, ...) on ``to``, the module standing in for it: code around a
    layer reads them each call (Hugging Face's MobileNetV2 pads by its convs' stride and kernel size)."""
    for k in SETTINGS:
        if hasattr(layer, k):
            setattr(to, k, getattr(layer, k))


class Int8Layer(nn.Module):
    """One conv or Linear run by torch's x86 int8 kernels on its own: the input quantized per tensor (uint8
    over its observed range; 7 bits unless ``vnni``: the CPU's VNNI serves both of torch's kernel libraries,
    ``Capabilities.eight_bit_inputs``; elsewhere pairs of 8-bit products saturate a 16-bit sum), the
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
        self.levels = levels = 255 if vnni else 127  # the input's: pairs of 8-bit products saturate a 16-bit sum
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
        settings_of(layer, self)

    def get_extra_state(self) -> dict:
        """Its input's quantization (scale, zero point, largest code) in ``state_dict``, beside its int8 layer's."""
        return {"scale": self.scale, "zero": self.zero, "levels": self.levels}

    def set_extra_state(self, state) -> None:
        got = state if isinstance(state, dict) else {}
        scale, zero, levels = (got.get(k) for k in ("scale", "zero", "levels"))
        if not (isinstance(scale, float) and math.isfinite(scale) and scale > 0 and levels in (127, 255)
                and isinstance(zero, int) and 0 <= zero <= levels):
            raise OneByOneError("an Int8Layer's saved state is its input's {'scale': float > 0, 'zero': int in "
                                f"0..levels, 'levels': 127 or 255}}, got {state!r}")
        self.scale, self.zero, self.levels = scale, zero, levels

    @property
    def weight(self) -> torch.Tensor:
        """The float32 weight its int8 weight stands for (for code that reads a layer's weight: its dtype, its
        shape, as Hugging Face models do before casting their input each call): made once."""
        if self.__dict__.get("_float_weight") is None:
            self.__dict__["_float_weight"] = self.q.weight().dequantize()
        return self.__dict__["_float_weight"]

    def forward(self, x):
        if self.levels > 127 and not private.capabilities().eight_bit_inputs:
            raise OneByOneError("this Int8Layer takes 8-bit inputs (made on a CPU whose VNNI serves torch's int8 "
                                "kernels); here its products would saturate: make the int8 form again on this CPU")
        private.deprecation_seen()  # torch's one notice, drawn quietly: no warnings filter each call
        return self.q(torch.quantize_per_tensor(x, self.scale, self.zero, torch.quint8)).dequantize()


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
                          private.capabilities().eight_bit_inputs)
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


class _OneLayerInt8(nn.Module):
    """``layer`` as torch's int8 form computes it: its input rounded over the observed range (per tensor; 128
    levels, the x86 default's 7 bits), its weights to int8 per output channel (symmetric); the products then
    exact, as the integer sum is."""

    def __init__(self, layer: nn.Module, low: float, high: float):
        super().__init__()
        self.layer = copy_model(layer)
        w = layer.weight.detach().float()  # torch's fake quantization takes float32 scales
        scale = weight_scales(w)
        with torch.no_grad():
            self.layer.weight.copy_(torch.fake_quantize_per_channel_affine(
                w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127))
        self.levels = 127  # as torch's form quantizes its activations (reduce_range) on every CPU
        self.scale, self.zero = affine(low, high, self.levels)
        settings_of(layer, self)

    @property
    def weight(self) -> torch.Tensor:  # what code reading the layer's weight (its dtype, its shape) expects
        return self.layer.weight

    def forward(self, x):
        return self.layer(rounded(x, self.scale, self.zero, self.levels).to(x.dtype))


def layer_errors(plain: nn.Module, observe: list, held: list, layers: list) -> dict:
    """{layer name: the model's output error, relative to its output scale on ``held``, with that layer alone in
    int8} (input per tensor over the ranges seen on ``observe``, weights per output channel): where int8 hurts.
    Measured on a copy (``plain`` is not touched), on the first ``LAYER_SAMPLES`` held-out samples: one run of
    the model per layer."""
    plain = copy_model(plain)
    ranges, named = observed(plain, observe, layers), {n: plain.get_submodule(n) for n in layers}
    held, places = [_first(held[0], LAYER_SAMPLES)], G.names_by_module(plain)
    want, out = expected(plain, held), {}
    for n, m in named.items():
        if id(m) not in ranges.low:
            continue  # not called on these inputs
        q = _OneLayerInt8(m, ranges.low[id(m)], ranges.high[id(m)])
        for place in places[id(m)]:  # a shared layer: in int8 wherever it is called (the root: the model itself)
            plain = G.replace_module(plain, place, q)
        try:
            out[n] = error(plain, want, held)
        finally:
            for place in places[id(m)]:
                plain = G.replace_module(plain, place, m)
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


def _repack_after_load(module, incompatible_keys) -> None:
    module.repack()


class NanSamples(ShapeChecked):
    """``model``, one of torch's int8 forms (whose codes carry no NaN: its quantize turns NaN into a code),
    answering NaN for each sample whose inputs hold NaN or inf (``private.nan_samples``); with a
    ``reference``, each new per-sample shape checked against it (``ShapeChecked``). Its ``state_dict``
    is ``model``'s, under ``model.`` (the FX graph's under ``model.graph_module.`` where ``model`` is
    ``Traced``). ``kernels`` ({layer: "fbgemm" or "onednn"}, ``int8_kernels``): the library each layer's
    weights are packed for, packed so again in a copy and after its own
    ``load_state_dict`` (torch packs them for ``torch.backends.quantized.engine`` there, whose products may
    round otherwise; loading into ``.model`` alone does not). ``apart``: does the model compute each sample on
    axis 0 on its own (``tensors.samples_apart``)? Where not, NaN in any sample's inputs gives all NaN."""

    def __init__(self, model: nn.Module, kernels: dict | None = None, reference: nn.Module | None = None,
                 tol: float = 0.0, measured: tuple = (), scale: float = 0.0, apart: bool = True):
        super().__init__(model, reference, tol, measured, scale)
        self.kernels, self.apart = dict(kernels or {}), apart
        self.register_load_state_dict_post_hook(_repack_after_load)

    def repack(self) -> None:
        """Each layer of ``kernels`` packed for its library (where it is still a packed int8 layer and that
        library takes it); a ``Traced`` form's traces (of the weights packed before) dropped."""
        graph = self.model.graph_module if isinstance(self.model, Traced) else self.model
        for name, library in getattr(self, "kernels", {}).items():
            try:
                m = graph.get_submodule(name)
            except AttributeError:  # the layer was replaced since
                continue
            packed = private.repacked(m, library) if private.packed_weights(m) is not None else None
            if packed is not None:
                private.set_packed(m, packed)
        if isinstance(self.model, Traced):
            self.model.forget()

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        new.repack()
        return new

    def marked(self, args: tuple, kwargs: dict, out):
        return private.nan_samples(args, kwargs, out, getattr(self, "apart", True))
