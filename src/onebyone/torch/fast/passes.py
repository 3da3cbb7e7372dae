"""``optimize(model, example)``: the exact rewrites that make an eval model faster on this machine, as a
driver over named passes, each ``pass(model, ctx) -> model``:

- ``reparameterize``: fold norms and merge parallel branches until nothing changes (``reparameterize``);
- ``fold``: fold eval BatchNorms and merge linear pairs (``merge_pointwise``);
- ``chains``: each ``SharedMLP`` and each run of 1x1 convs in an ``nn.Sequential`` -> ``FusedPointwiseChain``;
- ``conv_acts``: each Conv2d / Pointwise and the activation after it -> one ``ConvAct`` (one oneDNN call);
- ``pools``: each MaxPool2d -> ``MaxPool``;
- ``channels_last``: the model and its input in channels_last memory, where that times faster (in float32
  with ``engines`` to come, timed in their race instead of alone);
- ``check``: the outputs against the original's, in float64 and in the example's dtype (always runs);
- ``kernels``: each fast layer's kernel for the example's shapes, timed here and stored in the layer (in
  float32 with ``engines`` to come, after their race and only where the eager rewrite can still win);
- ``bfloat16``: with ``dtype=torch.bfloat16``, the products in bfloat16 behind a ``CastIO``;
- ``engines``: onnxruntime and OpenVINO (where installed) and, with ``compile=True``, ``torch.compile``
  weighed against the rest;
- ``keep_faster``: the model given, unchanged, where it ran faster than the result on the example.

Only ``optimize`` (the ``channels_last``, ``kernels``, ``bfloat16``, ``engines`` and ``keep_faster``
passes) times anything; the layers it returns run the kernels it chose, listed in ``report.layers``.
"""
from __future__ import annotations

import copy
import dataclasses
import time
import warnings

import torch
from torch import nn

from ...checks import check_tolerance
from ...errors import OneByOneError
from ..capture import calls_of
from ..reparameterize import reparameterized
from ..rewrite_report import KernelChoice, RewriteReport, finish, output_difference, outputs
from ..rewrites import merged_pointwise
from ..tensors import call, check_module, example_values, first_sample, input_kw, probe_input
from . import private
from .chain import FusedPointwiseChain
from .compiled import Compiled
from .convact import ConvAct
from .exported import Exported
from .onnx_runtime import OnnxRuntime
from .openvino import OpenVino
from .pool import MaxPool
from .swaps import fuse_chains, fuse_conv_acts, swap_max_pools
from .timing import fastest, time_models
from .wrappers import CastIO, ChannelsLast

BF16_TOL = 2e-2  # of the output scale: bfloat16 keeps 8 bits of mantissa, about 0.4% an operation
GIVEN = "the model given"  # its label where it is timed beside the rewrite
EAGER = "the eager rewrite"  # the model the rewriting passes made, timed beside the engines' forms
EAGER_CL = "the eager rewrite in channels_last"  # the same in channels_last, where the layout is raced there too
TUNE_REACH = 1.1  # the eager rewrite's kernels are tuned where it runs within this of the fastest form (the
# tuning keeps a kernel only where it is 10% faster on its layer; on whole models it gained 0-4%)
ONE_THREAD_BELOW = 2e-3  # seconds a call: below, onnxruntime on one thread is weighed too (handing so short
# a call to a second thread and waking it can cost more than the thread gives)


@dataclasses.dataclass
class Context:
    """What the passes share: the model given (never changed), the example, the options and the report;
    ``folded`` (the model after ``fold``) and ``forms`` (snapshots for ``torch.compile``) are what the
    ``engines`` pass weighs."""

    model: nn.Module
    x: object
    report: RewriteReport
    tol: float = 1e-4
    dtype: torch.dtype | None = None
    dtype_tol: float = BF16_TOL
    channels_last: bool | None = None
    compile: bool = False
    passes: tuple = ()  # the names of the passes that run
    folded: nn.Module | None = None
    forms: dict = dataclasses.field(default_factory=dict)
    timed: tuple | None = None  # (seconds a call by label, the label of the model the last pass returned)
    tune_later: bool = False  # the kernels pass left the tuning to the engines pass
    layouts: dict = dataclasses.field(default_factory=dict)  # {EAGER_CL: the rewrite in channels_last} where
    # the channels_last pass left the choice of layout to the engines pass
    call_seconds: float = float("inf")  # the rewrite's call on the example in the check pass (a first call)
    given_outputs: object = None  # the model given's outputs on the example (``reference``)

    def reference(self):
        """The model given's outputs on the whole example, computed once: the passes compare with them."""
        if self.given_outputs is None:
            with torch.no_grad():
                self.given_outputs = call(self.model, self.x)
        return self.given_outputs


def reparameterize(model: nn.Module, ctx: Context) -> nn.Module:
    """Fold norms and merge parallel branches until nothing changes (``onebyone.torch.reparameterize``, whose
    outputs the ``check`` pass checks): the engines do not merge branches, so this runs ahead of their race; a
    model it cannot take is copied as it is and the reason is said."""
    try:
        work, report = reparameterized(copy.deepcopy(model), first_sample(ctx.x), RewriteReport("reparameterize"))
    except OneByOneError as e:
        ctx.report.skipped.append(("reparameterize", str(e)))
        return copy.deepcopy(model)
    ctx.report.changed += report.changed  # what it leaves, the fold pass reads again and says
    return work


def fold(model: nn.Module, ctx: Context) -> nn.Module:
    """Fold eval BatchNorms into the convs before them and merge linear pairs (``merge_pointwise``, whose
    outputs the ``check`` pass checks with the other passes'); a model it cannot take is copied as it is
    (the module passes still work) and the reason is said."""
    try:
        work, merged = merged_pointwise(model, first_sample(ctx.x))
        ctx.report.changed += merged.changed
        ctx.report.skipped += merged.skipped
    except OneByOneError as e:
        work = copy.deepcopy(model)
        ctx.report.skipped.append(("fold_batchnorm / merge_pointwise", str(e)))
    ctx.folded = copy.deepcopy(work)  # the engines fuse convs and pick layouts themselves: they start from here
    if ctx.compile:
        ctx.forms["torch.compile"] = ctx.folded
    return work


def chains(model: nn.Module, ctx: Context) -> nn.Module:
    """``passes.fuse_chains``; with ``compile=True`` a snapshot with the chains in place for the engines."""
    model = fuse_chains(model, ctx)
    if ctx.compile and any(isinstance(m, FusedPointwiseChain) for m in model.modules()):
        ctx.forms["torch.compile around the fused chains"] = copy.deepcopy(model)
    return model


def channels_last(model: nn.Module, ctx: Context) -> nn.Module:
    """The model (weights and 4-D inputs) in channels_last memory where it has convs and ``channels_last``
    is True, or None and it times faster on the example. In float32 with the ``engines`` pass to come (and
    no ``compile``), that pass races both layouts beside the engines' forms instead."""
    images = [v for v in example_values(ctx.x) if isinstance(v, torch.Tensor) and v.dim() == 4]  # ChannelsLast moves
    has_conv = images and any(isinstance(m, (nn.Conv2d, ConvAct)) or getattr(m, "channel_dim", None) == 1
                              for m in model.modules())
    if not has_conv or ctx.channels_last is False:
        return model
    cl = ChannelsLast(copy.deepcopy(model).to(memory_format=torch.channels_last))
    if ctx.channels_last is None and ctx.dtype is None and "engines" in ctx.passes and not ctx.compile:
        ctx.layouts[EAGER_CL] = cl  # one race for both layouts and the engines' forms: less time timing
        return model
    t = time_models({"channels_last": cl, "as given": model}, ctx.x) if ctx.channels_last is None else {}
    if t and t["channels_last"] >= t["as given"]:
        ctx.report.notes.append("channels_last was timed and ran slower: kept the input's layout")
        return model
    name = "torch.compile around the fused chains"
    if name in ctx.forms:
        ctx.forms[name] = ChannelsLast(ctx.forms[name].to(memory_format=torch.channels_last))
    ctx.report.changed.append("model and input moved to channels_last")
    return cl


def check(model: nn.Module, ctx: Context) -> nn.Module:
    """The outputs against the original's, each within ``tol`` of the output scale: in float64 on the
    example's first sample (``finish``, which also counts the costs per sample; the weights' algebra does
    not depend on the batch) and in the model's own dtype on the whole example, on the fast path."""
    model, ctx.report = finish(ctx.report, ctx.model, model, first_sample(ctx.x), ctx.tol, inplace=False)
    with torch.no_grad():
        t0 = time.perf_counter()
        got = call(model, ctx.x)
        ctx.call_seconds = time.perf_counter() - t0
    diff, scale = output_difference(outputs(ctx.reference()), outputs(got), "the rewrite")
    own = str(input_kw(ctx.model)["dtype"]).removeprefix("torch.")
    if diff > ctx.tol * max(scale, 1.0):
        raise OneByOneError(f"optimize changed the {own} outputs by {diff:.3g} "
                            f"(> tolerance {ctx.tol * max(scale, 1.0):.3g})")
    ctx.report.notes.append(f"checked in {own} on the fast path too: max abs diff {diff:.3g}")
    return model


def kernels(model: nn.Module, ctx: Context) -> nn.Module:
    """Time each fast layer's kernels on the input it gets from the example and store the choice in the
    layer (``report.layers`` lists each); a layer the example does not reach keeps its default. In float32
    with the ``engines`` pass to come, that pass tunes instead, after timing the engines' forms against the
    untuned rewrite, and only where the rewrite can still win: tuning changes little (a kernel is kept only
    where it is clearly faster than the default), and a rewrite the engines beat by far is not returned."""
    if ctx.dtype is None and "engines" in ctx.passes:
        ctx.tune_later = True
    else:
        _tune(model, ctx)
    return model


def _tune(model: nn.Module, ctx: Context) -> bool:
    """``choose_kernels`` and the report's table and notes; True where a layer chose other than its default."""
    changed = choose_kernels(model, ctx.x)
    ctx.report.layers = kernel_table(model)
    _kernel_notes(ctx.report)
    ctx.tune_later = False
    return changed


def choose_kernels(model: nn.Module, x) -> bool:
    """Each ``ConvAct`` / ``MaxPool`` / ``FusedPointwiseChain`` in ``model`` tuned (``tune``) on the first
    input it gets when ``model`` runs ``x``, with ``timing.fastest`` choosing; True where any layer chose
    other than its default (the first candidate, which ``fastest`` keeps unless another is clearly faster),
    so that the model now runs otherwise."""
    changed = []

    def pick(cands: dict) -> str:
        name = fastest(cands)
        changed.append(name != next(iter(cands)))
        return name

    fast = [m for m in model.modules() if isinstance(m, (ConvAct, MaxPool, FusedPointwiseChain))]
    first, _ = calls_of(model, x, fast)
    with torch.no_grad():
        for m, (args, _, _) in first.items():
            if args and isinstance(args[0], torch.Tensor):
                m.tune(args[0], pick)
    return any(changed)


def kernel_table(model: nn.Module) -> list:
    """[{name, layer, input_shape, dtype, kernel}]: what each fast layer runs on each input it was tuned on."""
    return [KernelChoice(name=n, layer=type(m).__name__, input_shape=list(shape), dtype=dtype, kernel=k)
            for n, m in model.named_modules() if isinstance(m, (ConvAct, MaxPool, FusedPointwiseChain))
            for (shape, dtype), k in m.kernel_names().items()]


def _kernel_notes(report: RewriteReport) -> None:
    convs = [r["kernel"] for r in report.layers if r["layer"] == "ConvAct"]
    pools = [r["kernel"] for r in report.layers if r["layer"] == "MaxPool"]
    if convs:
        report.notes.append(f"kernels chosen on the example: {convs.count('matmul over rows')} of {len(convs)} convs "
                            "run as oneDNN's matmul over rows, the rest as its conv (report.layers lists each)")
    if pools:
        report.notes.append(f"{pools.count('max of views')} of {len(pools)} max pools run as a max of strided views "
                            "(no index tensor), the rest as F.max_pool2d")


def bfloat16(model: nn.Module, ctx: Context) -> nn.Module:
    """With ``dtype=torch.bfloat16`` and a CPU with bfloat16 products: ``model`` in bfloat16 behind a
    ``CastIO``, its error against the float32 original measured on the example (within ``dtype_tol`` of
    the output scale), its kernels chosen again in bfloat16, both precisions timed (a warning where
    bfloat16 runs no faster). On a CPU without bfloat16 products float32 is kept, with a warning."""
    if ctx.dtype != torch.bfloat16:
        return model
    report = ctx.report
    if not private.capabilities().bf16:
        why = f"this CPU has no bfloat16 products ({private.capabilities().describe()}): emulated, they run slower"
        report.notes.append(f"dtype=bfloat16 asked, float32 kept: {why}")
        warnings.warn(f"optimize(dtype=torch.bfloat16) kept float32: {why}", stacklevel=3)
        return model
    low = CastIO(copy.deepcopy(model), ctx.dtype)
    with torch.no_grad():
        diff, scale = output_difference(outputs(ctx.reference()), outputs(call(low, ctx.x)), "bfloat16")
    report.precision = {"dtype": "bfloat16", "max_abs_diff": diff, "relative": diff / max(scale, 1e-30),
                        "tolerance": ctx.dtype_tol}
    if diff > ctx.dtype_tol * max(scale, 1e-30):
        raise OneByOneError(f"in bfloat16 the outputs moved by {diff:.3g}, {diff / max(scale, 1e-30):.3g} of their "
                            f"scale (> dtype_tol {ctx.dtype_tol:.3g}); keep float32, or accept more with dtype_tol")
    report.notes.append(f"runs in bfloat16: max abs diff {diff:.3g} against the float32 model, "
                        f"{report.precision['relative']:.3g} of the output scale (tolerance {ctx.dtype_tol:.3g})")
    choose_kernels(low, ctx.x)
    t = time_models({"float32": model, "bfloat16": low}, ctx.x)
    report.precision["ms"] = {k: v * 1e3 for k, v in t.items()}
    if t["bfloat16"] >= t["float32"]:  # kept as asked (memory may be the point), but said
        why = (f"bfloat16 was timed and ran no faster than float32 ({t['bfloat16'] * 1e3:.3g} against "
               f"{t['float32'] * 1e3:.3g} ms a call); dtype=None is the faster choice for this input")
        report.notes.append(why)
        warnings.warn(f"optimize: {why}", stacklevel=3)
    report.layers = kernel_table(low.model)
    ctx.forms = {k: CastIO(m, ctx.dtype) for k, m in ctx.forms.items()}
    ctx.tol = ctx.dtype_tol  # the forms weighed next are held to the bfloat16 tolerance
    return low


def engines(model: nn.Module, ctx: Context) -> nn.Module:
    """The engines users deploy, weighed against ``model``: in float32, the folded model exported once to
    ONNX and run by onnxruntime (``OnnxRuntime``; on a call under ``ONE_THREAD_BELOW`` seconds, on one
    thread too) and by OpenVINO (``OpenVino``), each where installed; with ``compile=True``, ``Compiled``
    (Inductor with freezing) of the folded model and of the model with its chains. The fastest on the
    example of these and ``model`` is kept (the report gives each one's time, and where the pass's time
    went); an engine not installed, a form that fails, or one that moves the outputs past the tolerance
    is named in ``report.skipped`` with the reason."""
    forms = {**ctx.layouts, **{k: Compiled(m) for k, m in ctx.forms.items()}}
    if isinstance(model, CastIO):
        ctx.report.notes.append("onnxruntime and OpenVINO were not weighed: they run float32 only here")
    else:
        exports, folded = {}, copy.deepcopy(ctx.folded or ctx.model)  # one ONNX export for every engine
        for cls in (OnnxRuntime, OpenVino):
            try:
                cls.require()
                forms[cls.engine] = cls(folded, tol=ctx.tol, exports=exports)
            except OneByOneError as e:  # not installed, or a model it does not run (float64)
                ctx.report.skipped.append((cls.engine, f"not weighed: {e}"))
                continue
            if cls is OnnxRuntime and torch.get_num_threads() > 1 and ctx.call_seconds < ONE_THREAD_BELOW:
                forms["onnxruntime, one thread"] = OnnxRuntime(folded, tol=ctx.tol, exports=exports, threads=1)
    kept = _fastest_form(model, forms, ctx)
    if isinstance(kept, Exported):
        kept.exports = None  # its session is made: the shared export is not kept with the model
    return kept


def _fastest_form(work, forms: dict, ctx: Context):
    """The fastest on the example of ``work`` and the ``forms`` whose outputs stay within ``ctx.tol``; where
    the kernels pass left its tuning here, ``work`` tuned first if it can still win (``_race``)."""
    fine, report, t0 = {}, ctx.report, time.perf_counter()
    for label, form in forms.items():
        try:
            with torch.no_grad():
                if isinstance(form, Exported):  # exports (once for all), compiles, checks against the model given
                    form.prepare(ctx.x, ctx.reference())
                    fine[label] = form
                    continue
                got = outputs(call(form, ctx.x))  # compiles
        except Exception as e:  # noqa: BLE001 (dynamo, inductor and the exporter raise many kinds: name it, go on)
            report.skipped.append((label, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            continue
        diff, scale = output_difference(outputs(ctx.reference()), got, label)
        if diff > ctx.tol * max(scale, 1.0):
            report.skipped.append((label, f"it moved the outputs by {diff:.3g} (> {ctx.tol * max(scale, 1.0):.3g})"))
        else:
            fine[label] = form
    made = time.perf_counter() - t0
    if not fine:
        if ctx.tune_later:
            _tune(work, ctx)
        return work
    race = {EAGER: work, **fine, GIVEN: ctx.model}
    t = _race(race, ctx)
    best = min((k for k in t if k != GIVEN), key=t.get)
    ctx.timed = (t, best)
    timed = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in t.items() if k != GIVEN)
    report.notes.append(f"engines: their forms made and checked in {made:.2g} s (the ONNX export among it), "
                        f"raced (any tuning of the rewrite included) in {time.perf_counter() - t0 - made:.2g} s")
    if best != EAGER:
        engine = "Inductor, freezing" if isinstance(race[best], Compiled) else "its ONNX export, float32 on the CPU"
        report.changed.append(f"{best} ({engine}) kept: {timed} a call")
        report.layers = []  # the fast layers' kernels are not what runs
    else:
        if EAGER_CL in fine and race[EAGER] is fine[EAGER_CL]:
            report.changed.append("model and input moved to channels_last")
        if len(t) > 2:  # an engine's or Inductor's form was timed beside it and the model given
            report.notes.append(f"the engines' forms were timed and ran slower ({timed} a call): kept the eager "
                                "rewrite")
    return race[best]


def _race(race: dict, ctx: Context) -> dict:
    """{label: seconds a call} of the models in ``race`` (each just run on the example), timed side by side,
    the slow ones leaving early (``time_models``). Where the channels_last pass left the layout here, the
    faster layout goes on as ``EAGER`` (``race`` changed in place) and the other leaves. Where the kernels
    pass left its tuning here: the eager rewrite tuned if it ran within ``TUNE_REACH`` of the fastest, and
    the close ones (if more than the rewrite) timed again where a kernel changed; otherwise the report says
    why it was not tuned."""
    t = time_models(race, ctx.x)
    if EAGER_CL in t:  # both layouts raced: the faster goes on as the eager rewrite, the other leaves
        cl, model = t.pop(EAGER_CL), race.pop(EAGER_CL)
        ctx.report.notes.append(f"channels_last {'ran faster' if cl < t[EAGER] else 'was timed and ran slower'}: "
                                f"{cl * 1e3:.3g} against {t[EAGER] * 1e3:.3g} ms a call in the input's layout "
                                "(timed beside the engines' forms)")
        if cl < t[EAGER]:
            t[EAGER], race[EAGER] = cl, model
    if not ctx.tune_later:
        return t
    lead = max(min(t.values()), 1e-9)
    if t[EAGER] > TUNE_REACH * lead:
        ctx.tune_later = False
        ctx.report.notes.append(f"kernels not tuned: the eager rewrite ran {t[EAGER] / lead:.2f}x the fastest "
                                "form's time untuned, further behind than tuning could bring it")
        return t
    close = {k: m for k, m in race.items() if t[k] <= TUNE_REACH * lead}
    if _tune(race[EAGER], ctx) and len(close) > 1:  # it runs otherwise now: the close ones again (where it was
        t |= time_models(close, ctx.x)  # alone in reach, it led untuned, and tuning keeps only faster kernels)
    return t


def keep_faster(model: nn.Module, ctx: Context) -> nn.Module:
    """The model given (a copy) where it runs the example faster than the result: ``optimize`` never hands
    back a slower model; the report says so, with both times, and a warning is raised. Where the
    ``engines`` pass timed the result beside the model given, those times are used (timed once)."""
    if ctx.timed is not None:
        t, label = ctx.timed
        mine, given = t[label], t[GIVEN]
    else:
        t = time_models({"optimized": model, GIVEN: ctx.model}, ctx.x)
        mine, given = t["optimized"], t[GIVEN]
    ctx.report.notes.append(f"on the example: {mine * 1e3:.3g} ms a call against {given * 1e3:.3g} "
                            "for the model given")
    if mine <= given:
        return model
    why = (f"the rewritten model ran slower on the example ({mine * 1e3:.3g} against "
           f"{given * 1e3:.3g} ms a call): the model given is returned unchanged")
    ctx.report.notes.append(why)
    ctx.report.layers = []
    warnings.warn(f"optimize: {why}", stacklevel=3)
    return copy.deepcopy(ctx.model)


PASSES = {"reparameterize": reparameterize, "fold": fold, "chains": chains, "conv_acts": fuse_conv_acts,
          "pools": swap_max_pools,
          "channels_last": channels_last, "check": check, "kernels": kernels, "bfloat16": bfloat16,
          "engines": engines, "keep_faster": keep_faster}


def optimize(model: nn.Module, example=None, *, input_size=None, tol: float = 1e-4, channels_last=None, dtype=None,
             dtype_tol: float = BF16_TOL, compile: bool = False, passes=None):
    """An eval model rewritten for speed, with the same outputs; returns (model, RewriteReport).

    Never slower on ``example`` than the model given: where the rewrite times slower, the model given is
    returned (a copy) with a warning and a note (the ``keep_faster`` pass).

    The model returned holds its own copies of the weights (folded, merged), none of which wants a gradient:
    it is an inference model, and it runs the form that was timed (under ``no_grad`` or not) unless an input
    wants a gradient. The model given is never changed.

    Args:
        example: an input batch to trace, time and check on (or ``input_size``, one sample's shape).
        tol: allowed max |difference| relative to the output scale, checked in float64 on the example's
            first sample and in the model's dtype on the whole example.
        channels_last: True / False to force; None times both on ``example``.
        dtype: ``torch.bfloat16`` runs the products in bfloat16 (accumulating in float32, as oneDNN does)
            with the weights converted once; inputs and outputs stay in the caller's dtype. The float32
            rewrite is checked at ``tol`` first; the bfloat16 model's error against the original float32
            one must stay within ``dtype_tol`` of the output scale (``report.precision`` gives it, and both
            precisions' times; a warning where bfloat16 runs no faster). On a CPU without bfloat16 products
            float32 is kept, with a warning and a note.
        compile: also weigh ``torch.compile`` (``Compiled``: Inductor with freezing), which takes seconds
            to minutes and needs a C++ compiler. Whatever ``compile`` says, in float32 the engines that are
            installed are weighed: onnxruntime (``OnnxRuntime``, ``pip install onebyone[onnx]``) and
            OpenVINO (``OpenVino``, ``pip install onebyone[openvino]``), from one ONNX export. The fastest
            form on ``example`` is kept (the report gives each one's time); an engine not installed, a form
            that fails or one that moves the outputs past the tolerance is named in ``report.skipped``.
            An engine's form, where kept, is returned as that engine's module: it runs the model itself
            under autograd, and exports and checks again on the first call with another input shape.
        passes: the names of the passes to run, a subset of ``PASSES`` in any order (they run in
            ``PASSES``' order); ``check`` always runs. ``report.passes`` gives each one's seconds.
    """
    if not isinstance(compile, bool):
        raise OneByOneError(f"compile must be True or False, got {compile!r}")
    if channels_last is not None and type(channels_last).__name__ not in ("bool", "bool_"):
        raise OneByOneError(f"channels_last must be None (timed), True or False, got {channels_last!r}")
    channels_last = None if channels_last is None else bool(channels_last)
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise OneByOneError(f"dtype must be None, torch.float32 or torch.bfloat16, got {dtype!r}")
    tol, dtype_tol = check_tolerance(tol, "tol"), check_tolerance(dtype_tol, "dtype_tol")
    names = _pass_names(passes)
    if check_module(model).training:
        raise OneByOneError(f"optimize needs an eval-mode model (BatchNorm folding uses running statistics); "
                            f"call {type(model).__name__}.eval() first")
    ctx = Context(model, probe_input(model, example, input_size), RewriteReport("optimize"), tol,
                  dtype if dtype == torch.bfloat16 else None, dtype_tol, channels_last, compile, tuple(names))
    work = model if names[0] in ("reparameterize", "fold") else copy.deepcopy(model)  # they copy; the others
    # work in place
    for name in names:
        t0, before = time.perf_counter(), len(ctx.report.changed)
        work = PASSES[name](work, ctx)
        ctx.report.passes.append({"pass": name, "seconds": time.perf_counter() - t0,
                                  "changes": len(ctx.report.changed) - before})
    return work.requires_grad_(False), ctx.report  # its own copies of the weights: an inference model


def _pass_names(passes) -> list:
    """The passes to run in ``PASSES``' order, ``check`` included; unknown names refused."""
    if passes is None:
        return list(PASSES)
    if isinstance(passes, (str, bytes)) or not hasattr(passes, "__iter__"):
        raise OneByOneError(f"passes must be a list of pass names from {list(PASSES)}, got {passes!r}")
    passes = list(passes)  # any iterable, read once (a generator is used up by reading it)
    if not all(isinstance(p, str) for p in passes):
        raise OneByOneError(f"passes must be a list of pass names from {list(PASSES)}, got {passes!r}")
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise OneByOneError(f"unknown pass(es) {unknown}: optimize's passes are {list(PASSES)}")
    return [p for p in PASSES if p in passes or p == "check"]
