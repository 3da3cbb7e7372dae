"""torch's int8 form with each activation's range chosen on its own, by measured error.

FX graph mode puts an observer on every tensor int8 will quantize (a layer's input, an activation's output).
Each observer's histogram offers three ranges: the whole range seen ("minmax"), the range that keeps all
but the outer 0.01% ("percentile"), and the range that minimises the rounding error over the histogram
("mse", torch's x86 default). Which is best depends on the tensor: an activation with rare large values
loses resolution on every other value under min/max, one whose large values matter is clipped by the
others. So each is tried where it stands: the graph runs with every observed tensor rounded as int8 will
round it (weights stay float), and one tensor at a time (in graph order) takes the candidate that moves
the model's output least on calibration samples (``int8_torch.RANGE_SAMPLES`` of them).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import fx, nn

from ...errors import OneByOneError
from ..capture import trace
from ..tensors import call
from . import private
from .int8_chain import affine, rounded

CANDIDATES = ("mse", "minmax", "percentile")  # the first is the start
PERCENTILE = 99.99


def prepare(model: nn.Module, x, observe: list, keep_float=(), observer: str = "histogram"):
    """``model`` prepared by FX graph mode for the x86 backend (``observer``: "histogram" observers on
    activations, torch's x86 default, or "minmax", quicker; per-channel weights; the layers named in
    ``keep_float`` left float) and run on each batch of ``observe``."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver, default_per_channel_weight_observer
    from torch.ao.quantization.quantize_fx import prepare_fx

    from ..tensors import example_values

    mapping = get_default_qconfig_mapping("x86")
    if observer == "minmax":  # 7-bit activations, as the x86 default: safe without VNNI
        mapping = mapping.set_global(QConfig(activation=MinMaxObserver.with_args(reduce_range=True),
                                             weight=default_per_channel_weight_observer))
    for name in keep_float:
        mapping = mapping.set_module_name(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices: the kernels are what is used
        prepared = prepare_fx(without_identities(copy.deepcopy(model).eval()), mapping, tuple(example_values(x)))
    return calibrate(prepared, observe)


def without_identities(model: nn.Module) -> nn.Module:
    """``model`` as a torch.fx graph with each ``nn.Identity`` call left out (module names kept): a folded
    BatchNorm's place between a conv and its ReLU would keep FX from fusing them into one int8 kernel.
    ``model`` itself where torch.fx cannot trace it (``prepare_fx`` then says why)."""
    try:
        graph = trace(model)
    except OneByOneError:  # prepare_fx traces it again and says why, named by the caller
        return model
    for node in list(graph.graph.nodes):
        if node.op == "call_module" and type(graph.get_submodule(node.target)) is nn.Identity and node.args:
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.recompile()
    return graph


def calibrate(prepared, observe: list):
    """``prepared`` run on each batch of ``observe`` (its observers record what they see)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for b in observe:
            call(prepared, b)
    return prepared


def observers(prepared) -> dict:
    """{observer module name: the name of what its tensor comes from (a module path, a graph node, the input)},
    one name per observer: where FX shares one observer among tensors (a concatenation's inputs and output
    must share their scale), the first of its names stands for all. Observers of fixed ranges (a sigmoid's)
    are not listed: their range is the function's."""
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    found, seen = {}, set()
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        obs = prepared.get_submodule(node.target)
        if isinstance(obs, (HistogramObserver, MinMaxObserver)) and id(obs) not in seen:
            seen.add(id(obs))
            src = node.args[0]
            found[node.target] = src.target if src.op in ("call_module", "placeholder") else src.name
    return found


def _places(prepared, name: str) -> list:
    """Every name under which the observer ``name`` sits in the graph (a shared observer has several)."""
    obs = prepared.get_submodule(name)
    return [n for n, m in prepared.named_modules(remove_duplicate=False) if m is obs]


def seen_range(obs) -> tuple:
    """(low, high): the whole range an observer saw."""
    return float(obs.min_val), float(obs.max_val)


def candidates(obs) -> dict:
    """{candidate: (low, high)} from one histogram observer."""
    lo, hi = seen_range(obs)
    return {"mse": private.histogram_range(obs), "minmax": (lo, hi), "percentile": _percentile(obs.histogram, lo, hi)}


def _percentile(hist: torch.Tensor, lo: float, hi: float) -> tuple:
    """The range holding all but the outer (100 - PERCENTILE)% of a histogram over [lo, hi] (an end at 0 stays)."""
    c = hist.double().cumsum(0)
    tail = float(c[-1]) * (1 - PERCENTILE / 100)
    width = (hi - lo) / len(hist)
    first = int(torch.searchsorted(c, torch.tensor(tail, dtype=torch.float64)))
    last = int(torch.searchsorted(c, c[-1] - tail))
    return (lo + first * width if lo < 0 else lo), (lo + (last + 1) * width if hi > 0 else hi)


class _Rounded(nn.Module):
    """An observer's place in the graph, rounding its tensor as int8 will: per tensor over (low, high)."""

    def __init__(self, obs, low: float, high: float):
        super().__init__()
        self.qmin, self.qmax = int(obs.quant_min), int(obs.quant_max)
        self.set(low, high)

    def set(self, low: float, high: float) -> None:
        low, high = min(low, 0.0), max(high, 0.0)
        if self.qmin == 0:
            self.scale, self.zero = affine(low, high, self.qmax)
        else:  # a signed range
            self.scale = max(high - low, 1e-12) / (self.qmax - self.qmin)
            self.zero = int(min(self.qmax, max(self.qmin, round(self.qmin - low / self.scale))))

    def forward(self, x):
        if self.qmin == 0 and self.qmax <= 255:  # uint8 codes: torch's quicker kernels
            return rounded(x, self.scale, self.zero, self.qmax).to(x.dtype)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero, self.qmin, self.qmax)


def choose(prepared, names: dict, samples: list, error) -> tuple:
    """({observer: chosen candidate}, {observer: its candidates' ranges}, {"mse": the output error with
    torch's default everywhere, "chosen": with the choices}) for the observers ``names`` (``observers``'s
    answer) on ``samples``; ``error(model, samples)`` measures
    a model's output error. Greedy, one observed tensor at a time, in graph order; a candidate within 1% of
    one tried is not tried again."""
    sim = copy.deepcopy(prepared)
    ranges = {n: candidates(prepared.get_submodule(n)) for n in names}
    chosen = dict.fromkeys(names, CANDIDATES[0])
    sites = {n: _Rounded(prepared.get_submodule(n), *ranges[n][chosen[n]]) for n in names}
    for n, r in sites.items():
        for place in _places(prepared, n):
            setattr(sim, place, r)
    start = best = error(sim, samples)
    for n in names:
        tried = [ranges[n][chosen[n]]]
        for c in CANDIDATES[1:]:
            lo, hi = ranges[n][c]
            if any(abs(lo - a) + abs(hi - b) <= 0.01 * max(hi - lo, 1e-12) for a, b in tried):
                continue
            tried.append((lo, hi))
            sites[n].set(lo, hi)
            e = error(sim, samples)
            if e < best:
                best, chosen[n] = e, c
        sites[n].set(*ranges[n][chosen[n]])
    return chosen, ranges, {"mse": start, "chosen": best}


def convert(prepared, bounds: dict) -> nn.Module:
    """The int8 model, each observed tensor quantized over its range in ``bounds`` ({observer name: (low,
    high)}, as ``observers`` names them)."""
    from torch.ao.quantization.observer import MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx

    prepared = copy.deepcopy(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's notices (reduce_range's deprecation among them)
        for n, (low, high) in bounds.items():
            old = prepared.get_submodule(n)
            own = {"quant_min": old.quant_min, "quant_max": old.quant_max} if old.has_customized_qrange else {}
            fixed = MinMaxObserver(dtype=old.dtype, qscheme=old.qscheme, reduce_range=old.reduce_range and not own,
                                   **own)  # the same levels: a given range is already reduced
            fixed(torch.tensor([low, high]))  # min_val, max_val := the range
            for place in _places(prepared, n):
                setattr(prepared, place, fixed)
        return safe_for_kernels(convert_fx(prepared)).eval()


FIXED = {nn.Sigmoid: (0.0, 1.0), nn.Hardsigmoid: (0.0, 1.0), nn.Softmax: (0.0, 1.0), nn.Tanh: (-1.0, 1.0),
         torch.sigmoid: (0.0, 1.0), torch.tanh: (-1.0, 1.0), torch.softmax: (0.0, 1.0),
         torch.nn.functional.hardsigmoid: (0.0, 1.0), torch.nn.functional.softmax: (0.0, 1.0),
         torch.nn.functional.tanh: (-1.0, 1.0), torch.nn.functional.sigmoid: (0.0, 1.0),
         "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softmax": (0.0, 1.0)}  # module, function, method: range
MEANS = ("mean", torch.mean)  # a method's name, a function: what PlainStrides goes before


class SevenBitCodes(nn.Module):
    """Requantizes a quantized tensor to 7 bits over a fixed range (a float tensor passes as it is)."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.scale, self.zero = affine(low, high, 127)

    def forward(self, x):
        if not x.is_quantized:
            return x
        private.deprecation_seen()
        return torch.quantize_per_tensor(x.dequantize(), self.scale, self.zero, torch.quint8)


def safe_for_kernels(q):
    """``q`` (a converted FX model) made safe to run on torch's quantized kernels:

    - the output of each op torch's kernels give a fixed 8-bit range (sigmoid, tanh, hardsigmoid, softmax:
      codes 0..255, whatever the observer) requantized to 7 bits: handed on as a conv's or Linear's input,
      8-bit codes would saturate pairs of 8-bit products on a CPU without VNNI (where a form made on a CPU
      with VNNI may also be run);
    - the input of each ``mean`` given plain strides where it is a 1 x 1 map (``PlainStrides``)."""
    graph, made = q.graph, 0
    for node in list(graph.nodes):
        key = (type(q.get_submodule(node.target)) if node.op == "call_module" else node.target
               if node.op in ("call_function", "call_method") else None)
        if key in FIXED:
            name, module, at = f"_seven_bit_{made}", SevenBitCodes(*FIXED[key]), graph.inserting_after(node)
        elif key in MEANS and node.args and isinstance(node.args[0], fx.Node):
            name, module, at = f"_plain_strides_{made}", PlainStrides(), graph.inserting_before(node)
        else:
            continue
        q.add_submodule(name, module)
        made += 1
        with at:
            if key in FIXED:  # every use of the op's output takes the 7-bit codes
                new = graph.call_module(name, (node,))
                node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
            else:  # the mean alone takes the copy
                node.replace_input_with(node.args[0], graph.call_module(name, (node.args[0],)))
    if made:
        q.recompile()
    return q


class PlainStrides(nn.Module):
    """A quantized (N, C, 1, 1) map copied to plain strides; any other tensor passes as it is. A quantized
    conv gives a 1 x 1 map channels-last strides (C, 1, C, C) that torch's quantized ``mean`` refuses
    ("required rank 4 tensor to use channels_last format"): a model pooling that way ran in float only."""

    def forward(self, x):
        if x.is_quantized and x.dim() == 4 and x.shape[2] * x.shape[3] == 1:
            return x.clone(memory_format=torch.contiguous_format)  # .contiguous() keeps those strides
        return x
