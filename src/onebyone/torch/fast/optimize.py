"""``optimize(model, example)``: the exact rewrites that make an eval model faster on this machine.

1. fold eval BatchNorms and merge linear pairs (``merge_pointwise``, which folds first);
2. replace every ``SharedMLP``, and every run of two or more 1x1 convs (with the BatchNorm /
   activation / dropout between them) inside an ``nn.Sequential``, by a ``FusedPointwiseChain``;
3. run every Conv2d / Pointwise and the activation after it as one oneDNN call with packed weights
   (``ConvAct``), and every MaxPool2d as a ``MaxPool`` (no index tensor where that is faster);
4. move the model and its input to channels_last when that runs faster on ``example`` (timed);
5. check the outputs against the original, in float64 and in the example's dtype (the oneDNN path),
   within ``tol`` of the output scale;
6. with ``dtype=torch.bfloat16``, run it in bfloat16 behind a ``CastIO``; with ``compile=True``, time it
   against ``Compiled`` forms (``torch.compile``) and keep the fastest.

Running the example on the fast path times, for each stride-1 1x1 conv on a channels_last input, oneDNN's
conv against its matmul over rows, and for each max pool ``F.max_pool2d`` against a max of strided views;
the report's ``layers`` list what was chosen for each.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ...activations import FUSABLE
from ...errors import OneByOneError
from .. import activations as acts
from .. import graph as G
from ..layer_kinds import is_plain_pointwise
from ..layers import ChannelBatchNorm, Pointwise, SharedMLP
from ..rewrite_report import RewriteReport, finish, max_difference
from ..rewrites import merge_pointwise
from ..tensors import call, cast, check_module, input_kw, probe_input
from .chain import FusedPointwiseChain
from .compiled import Compiled
from .convact import ConvAct
from .onnx_runtime import OnnxRuntime, require_onnxruntime
from .pool import MaxPool
from .timing import medians

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, ChannelBatchNorm)


def _in_chain(m) -> bool:
    """May ``m`` sit inside a fused chain: a plain 1x1 conv, an eval BatchNorm, or an activation oneDNN fuses?"""
    return _chain_conv(m) or isinstance(m, _NORMS) or acts.name_of(m) in FUSABLE


def _chain_conv(m) -> bool:
    return is_plain_pointwise(m) and not isinstance(m, nn.Linear)


class ChannelsLast(nn.Module):
    """Runs ``model`` (its weights already channels_last) with every 4-D input tensor, positional or
    keyword, in channels_last memory format."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a new Module starts in training mode; keep the model's

    def forward(self, *args, **kwargs):
        return self.model(*(_channels_last(a) for a in args), **{k: _channels_last(v) for k, v in kwargs.items()})


def _channels_last(v):
    return v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) and v.dim() == 4 else v


class CastIO(nn.Module):
    """Runs ``model`` (its parameters in ``dtype``) on its inputs cast to ``dtype``; its floating-point
    outputs come back in the dtype the input had, so a caller sees the model it gave."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model.to(dtype), dtype
        self.train(model.training)

    def forward(self, *args, **kwargs):
        given = next((t.dtype for t in list(args) + list(kwargs.values())
                      if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
        out = self.model(*cast(args, self.dtype), **cast(kwargs, self.dtype))
        return out if given is None else _cast_out(out, given)

    def __repr__(self) -> str:
        return f"CastIO({str(self.dtype).removeprefix('torch.')}, {self.model!r})"


def _cast_out(y, dtype):
    if isinstance(y, torch.Tensor):
        return y.to(dtype) if y.is_floating_point() else y
    if isinstance(y, (tuple, list)):
        return type(y)(_cast_out(v, dtype) for v in y)
    if isinstance(y, dict):
        return type(y)({k: _cast_out(v, dtype) for k, v in y.items()})
    return y


def _runs(seq: nn.Sequential):
    """(start, stop) of each run: a 1x1 conv (not Linear), then 1x1 convs, norms, activations, dropout."""
    mods, i = list(seq), 0
    while i < len(mods):
        if _chain_conv(mods[i]):
            j = i + 1
            while j < len(mods) and _in_chain(mods[j]):
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def fuse_chains(model: nn.Module, report: RewriteReport) -> nn.Module:
    """Swap SharedMLPs and 1x1 runs in Sequentials for FusedPointwiseChains (in place; a SharedMLP that is
    the model itself is returned as the chain)."""
    gone, root = (), model  # names of replaced SharedMLPs: their old insides are no longer in the model
    for name, m in list(model.named_modules()):
        if name.startswith(gone):
            continue
        if isinstance(m, SharedMLP):
            try:
                chain = FusedPointwiseChain.from_shared_mlp(m)
            except OneByOneError as e:
                report.skipped.append((name, str(e)))
                continue
            root = G.replace_module(root, name, chain)
            gone += (name + ".",)
            report.changed.append(f"{name}: SharedMLP {m.widths} -> FusedPointwiseChain (tile {chain.plan.tile})")
        elif isinstance(m, nn.Sequential):
            for i, j in list(_runs(m)):
                if sum(_chain_conv(layer) for layer in list(m)[i:j]) < 2:
                    continue  # one 1x1 conv: one oneDNN call already; tiling it only adds Python overhead (measured)
                try:
                    chain = FusedPointwiseChain.from_layers(list(m)[i:j])
                except OneByOneError as e:
                    report.skipped.append((f"{name}[{i}:{j}]", str(e)))
                    continue
                m[i] = chain
                for k in range(i + 1, j):
                    m[k] = nn.Identity()
                report.changed.append(
                    f"{name or 'model'}[{i}:{j}]: {j - i} layers -> FusedPointwiseChain {chain.plan.widths}"
                )
    return root


def fuse_conv_acts(model: nn.Module, x, report: RewriteReport) -> nn.Module:
    """Swap every Conv2d / Pointwise for a ``ConvAct`` (in place), then take into each the activation that
    alone reads its output, wherever the model's ``forward`` calls it: one eager run on ``x`` shows what
    feeds what (Identity and eval Dropout pass their input through). An activation module called at
    several places is taken in only where every one of its calls alone reads a conv's output (a conv
    called more than once takes none). What ConvAct cannot run is skipped; a model that is itself a
    Conv2d / Pointwise is returned as its ConvAct."""
    model, swapped = _swap(model, lambda m: isinstance(m, (nn.Conv2d, Pointwise)), ConvAct, report)
    if not swapped:
        return model
    calls = G.record_calls(model, x)
    found, readers = [], {}  # (conv call, its name, kind, the activation call alone reading it or None)
    for c in calls.calls:
        if id(c.module) not in swapped or c.output is None:
            continue
        name, kind = swapped.pop(id(c.module))
        value, users = c.output, calls.uses[c.output]
        while len(users) == 1 and _passes_through(users[0]):  # past Identity and eval Dropout
            value, users = users[0].output, calls.uses[users[0].output]
        act = users[0] if len(users) == 1 and isinstance(users[0], G.Call) else None
        act_name = acts.name_of(act.module) if act is not None else None
        fusable = (act_name in FUSABLE and act_name != "identity" and act.input == value
                   and calls.counts[id(c.module)] == 1)  # a conv called twice would apply it to both calls
        found.append((c, name, kind, act if fusable else None))
        if fusable:
            readers.setdefault(id(act.module), []).append(act)
    for c, name, kind, act in found:  # an activation module is taken into convs only where each of its
        # calls follows a conv of its own (Fire modules share one ReLU among three convs); it becomes Identity
        if act is not None and len(readers[id(act.module)]) == calls.counts[id(act.module)]:
            c.module.act = acts.name_of(act.module)
            model = G.replace_module(model, act.name, nn.Identity())
            report.changed.append(f"{name or '(the model)'} + {act.name}: {kind} + {type(act.module).__name__} "
                                  "-> ConvAct (one oneDNN call, packed weights)")
        else:
            report.changed.append(f"{name or '(the model)'}: {kind} -> ConvAct (one oneDNN call, packed weights)")
    for name, kind in swapped.values():  # never called on the example
        report.changed.append(f"{name}: {kind} -> ConvAct (one oneDNN call, packed weights; not called on the example)")
    return model


def swap_max_pools(model: nn.Module, report: RewriteReport) -> nn.Module:
    """Swap every nn.MaxPool2d for a ``MaxPool`` (in place; the same values); one with dilation or indices
    is skipped, said in the report."""
    model, swapped = _swap(model, lambda m: type(m) is nn.MaxPool2d, MaxPool, report)
    report.changed += [f"{name or '(the model)'}: MaxPool2d -> MaxPool (no index tensor where faster)"
                       for name, _ in swapped.values()]
    return model


def _swap(model: nn.Module, match, make, report: RewriteReport) -> tuple:
    """Each module for which ``match`` holds (the model itself included) replaced, in place, by ``make(it)``;
    what ``make`` refuses is named in ``report.skipped``. Returns (model, {id(new): (name, old class name)})."""
    swapped = {}
    for name, m in [("", model)] if match(model) else list(model.named_modules()):
        if not match(m):
            continue
        try:
            new = make(m)
        except OneByOneError as e:
            report.skipped.append((name or "(the model)", str(e)))
            continue
        model = G.replace_module(model, name, new)
        swapped[id(new)] = (name, type(m).__name__)
    return model, swapped


def _passes_through(use) -> bool:
    """A call that hands its input on unchanged: Identity, or Dropout in eval mode."""
    return isinstance(use, G.Call) and acts.name_of(use.module) == "identity" and use.output is not None


BF16_TOL = 2e-2  # of the output scale: bfloat16 keeps 8 bits of mantissa, about 0.4% an operation


def optimize(model: nn.Module, example=None, *, input_size=None, tol: float = 1e-4, channels_last=None, dtype=None,
             dtype_tol: float = BF16_TOL, compile: bool = False):
    """An eval model rewritten for speed, with the same outputs; returns (model, RewriteReport).

    Args:
        example: an input batch to trace, time and check on (or ``input_size``, one sample's shape).
        tol: allowed max |difference| relative to the output scale, checked in float64.
        channels_last: True / False to force; None times both on ``example``.
        dtype: ``torch.bfloat16`` runs the products in bfloat16 (accumulating in float32, as oneDNN does)
            with the weights converted once; inputs and outputs stay in the caller's dtype. The float32
            rewrite is checked at ``tol`` first; the bfloat16 model's error against the original float32
            one is then measured on ``example`` and must stay within ``dtype_tol`` of the output scale
            (``report.precision`` gives it, and both precisions' times on ``example``; where bfloat16
            runs no faster, as on small models whose time goes to per-call costs, the report says so and
            the model stays in bfloat16).
        compile: also try ``torch.compile`` (``Compiled``: Inductor with freezing) on the model with its
            BatchNorms folded (Inductor fuses the convs and chooses layouts itself), and, where there are
            fused chains, on that model with the chains in place, each one opaque operator; in float32,
            where onnxruntime is installed (``pip install onebyone[onnx]``), also that model's ONNX
            export in onnxruntime (``OnnxRuntime``); keep the fastest of these and the eager rewrite on
            ``example`` (the report gives each one's time). Compiling takes seconds to a minute and
            needs a C++ compiler; a form that fails, or moves the outputs past the tolerance, is named
            in ``report.skipped`` with the reason, and the others are weighed without it.
    """
    if not isinstance(compile, bool):
        raise OneByOneError(f"compile must be True or False, got {compile!r}")
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise OneByOneError(f"dtype must be None, torch.float32 or torch.bfloat16, got {dtype!r}")
    if check_module(model).training:
        raise OneByOneError(f"optimize needs an eval-mode model (BatchNorm folding uses running statistics); "
                            f"call {type(model).__name__}.eval() first")
    x = probe_input(model, example, input_size)
    report = RewriteReport("optimize")
    try:
        work, merged = merge_pointwise(model, example=x, tol=tol)
        report.changed += merged.changed
        report.skipped += merged.skipped
    except OneByOneError as e:  # e.g. a model fx cannot trace: fusing by module structure still works
        work = copy.deepcopy(model)
        report.skipped.append(("fold_batchnorm / merge_pointwise", str(e)))
    merged = copy.deepcopy(work) if compile else None  # for torch.compile: it fuses convs and picks layouts itself
    work = fuse_chains(work, report)
    has_chain = any(isinstance(m, FusedPointwiseChain) for m in work.modules())
    chained = copy.deepcopy(work) if compile and has_chain else None  # and the same with our chains in it
    work = fuse_conv_acts(work, x, report)
    work = swap_max_pools(work, report)
    images = [v for v in (x.values() if isinstance(x, dict) else x if isinstance(x, (tuple, list)) else [x])
              if isinstance(v, torch.Tensor) and v.dim() == 4]  # what ChannelsLast can move
    has_conv = images and any(isinstance(m, (nn.Conv2d, ConvAct)) or getattr(m, "channel_dim", None) == 1
                              for m in work.modules())
    if has_conv and channels_last is not False:
        cl = ChannelsLast(copy.deepcopy(work).to(memory_format=torch.channels_last))
        if channels_last or _faster(cl, work, x):
            work = cl
            chained = None if chained is None else ChannelsLast(chained.to(memory_format=torch.channels_last))
            report.changed.append("model and input moved to channels_last")
        else:
            report.notes.append("channels_last was timed and ran slower: kept the input's layout")
    work, report = finish(report, model, work, x, tol, inplace=False)
    diff, scale = max_difference(model, work, x, dtype=None)  # the fast path itself: oneDNN runs float32 only
    own = str(input_kw(model)["dtype"]).replace("torch.", "")  # the model's own dtype
    if diff > tol * max(scale, 1.0):
        raise OneByOneError(f"optimize changed the {own} outputs by {diff:.3g} "
                            f"(> tolerance {tol * max(scale, 1.0):.3g})")
    report.notes.append(f"checked in {own} on the fast path too: max abs diff {diff:.3g}")
    report.layers = _kernels(work)  # what the fast path timed and chose while running the example
    if dtype == torch.bfloat16:
        work = _lower_precision(model, work, x, dtype, dtype_tol, report)
    if compile:
        forms = {"torch.compile": merged, "torch.compile around the fused chains": chained}
        forms = {k: Compiled(m if dtype is None else CastIO(m, dtype)) for k, m in forms.items() if m is not None}
        forms |= _onnx_form(merged, dtype, tol, report)
        work = _try_compile(model, work, forms, x, tol if dtype is None else dtype_tol, report)
    convs = [r["kernel"] for r in report.layers if r["kernel"] in ("conv", "matmul over rows")]
    pools = [r["kernel"] for r in report.layers if r["kernel"] in ("max_pool2d", "max of views")]
    if convs:
        report.notes.append(f"kernels timed on the example: {convs.count('matmul over rows')} of {len(convs)} 1x1 "
                            "convs run as oneDNN's matmul over rows, the rest as its conv (report.layers lists each)")
    if pools:
        report.notes.append(f"{pools.count('max of views')} of {len(pools)} max pools run as a max of strided views "
                            "(no index tensor), the rest as F.max_pool2d")
    return work, report


def _lower_precision(model, work, x, dtype, tol, report):
    """``work`` in ``dtype`` behind a ``CastIO``, its error against the float32 ``model`` measured on ``x``."""
    low = CastIO(copy.deepcopy(work), dtype)
    diff, scale = max_difference(model, low, x, dtype=None)
    report.precision = {"dtype": str(dtype).removeprefix("torch."), "max_abs_diff": diff,
                        "relative": diff / max(scale, 1e-30), "tolerance": tol}
    if diff > tol * max(scale, 1e-30):
        raise OneByOneError(f"in {report.precision['dtype']} the outputs moved by {diff:.3g}, "
                            f"{diff / max(scale, 1e-30):.3g} of their scale (> dtype_tol {tol:.3g}); keep float32, "
                            "or accept more with dtype_tol")
    report.notes.append(f"runs in {report.precision['dtype']}: max abs diff {diff:.3g} against the float32 model, "
                        f"{report.precision['relative']:.3g} of the output scale (tolerance {tol:.3g})")
    name = report.precision["dtype"]
    t = _times({"float32": work, name: low}, x)
    report.precision["ms"] = {k: v * 1e3 for k, v in t.items()}
    if t[name] >= t["float32"]:  # kept as asked (memory may be the point), but said
        report.notes.append(f"{name} was timed and ran no faster than float32 ({t[name] * 1e3:.3g} against "
                            f"{t['float32'] * 1e3:.3g} ms a call); dtype=None is the faster choice for this input")
    report.layers = _kernels(low.model)  # timed again in dtype
    return low


def _kernels(model) -> list:
    """[{name, input_shape, kernel}] for each input shape each ConvAct / MaxPool timed its kernels on."""
    return [{"name": n, "input_shape": list(key[0] if isinstance(m, MaxPool) else key), "kernel": k}
            for n, m in model.named_modules() if isinstance(m, (ConvAct, MaxPool)) for key, k in m.kernels().items()]


def _onnx_form(merged, dtype, tol, report) -> dict:
    """{"onnxruntime": the BatchNorm-folded model in OnnxRuntime}, where onnxruntime is installed and the
    model runs in float32 (its CPU provider has no fast bfloat16 kernels); else {} and a note why."""
    if dtype is not None:
        report.notes.append("onnxruntime was not weighed: it runs float32 only here")
        return {}
    try:
        require_onnxruntime()
    except OneByOneError as e:
        report.notes.append(f"onnxruntime was not weighed: {e}")
        return {}
    return {"onnxruntime": OnnxRuntime(copy.deepcopy(merged), tol=tol)}


def _try_compile(model, work, forms: dict, x, tol, report):
    """The fastest on ``x`` of ``work`` and the compiled ``forms`` ({label: Compiled}) whose outputs stay within
    ``tol`` of ``model``'s; the report lists each form's time."""
    fine = {}
    for label, comp in forms.items():
        try:
            with torch.no_grad():
                call(comp, x)  # compiles
        except Exception as e:  # noqa: BLE001 (dynamo and inductor raise many kinds: name it, keep the eager rewrite)
            report.skipped.append((label, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            continue
        diff, scale = max_difference(model, comp, x, dtype=None)
        if diff > tol * max(scale, 1.0):
            report.skipped.append((label, f"it moved the outputs by {diff:.3g} (> {tol * max(scale, 1.0):.3g})"))
        else:
            fine[label] = comp
    if not fine:
        return work
    t = _times({"the eager rewrite": work, **fine}, x)
    best = min(t, key=t.get)
    timed = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in t.items())
    if best == "the eager rewrite":
        report.notes.append(f"the compiled forms were timed and ran slower ({timed} a call): kept the eager rewrite")
        return work
    engine = "Inductor, freezing" if isinstance(fine[best], Compiled) else "its ONNX export, CPU provider"
    report.changed.append(f"{best} ({engine}) kept: {timed} a call")
    return fine[best]


def _times(models: dict, x, rounds: int = 7) -> dict:
    """{label: seconds a call on ``x``}: medians of interleaved calls, after two warm-up calls of each, each
    timed call right after an untimed one of the same model (what a loop over one model sees)."""
    with torch.no_grad():
        for m in models.values():
            call(m, x), call(m, x)
        return medians({k: (lambda m=m: call(m, x)) for k, m in models.items()}, rounds, settle=True)


def _faster(a: nn.Module, b: nn.Module, x) -> bool:
    """Does ``a`` run ``x`` faster than ``b``?"""
    t = _times({"a": a, "b": b}, x, rounds=5)
    return t["a"] < t["b"]
