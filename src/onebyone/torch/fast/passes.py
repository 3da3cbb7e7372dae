"""``optimize(model, example)``: the exact rewrites that make an eval model faster on this machine, as a
driver over named passes. Each pass is a function of the model, the user's ``Request`` and the inputs it
names; it returns the model (and, where a later pass needs something of it, a typed result) and writes what
it did in the report it is given. Only the driver (``optimize``) knows the order and hands results on:

- ``reparameterize``: fold norms and merge parallel branches until nothing changes (``reparameterize``);
- ``fold``: fold eval BatchNorms and merge linear pairs (``merge_pointwise``);
- ``chains``: each ``SharedMLP`` and each run of 1x1 convs in an ``nn.Sequential`` -> ``FusedPointwiseChain``;
- ``conv_acts``: each Conv2d / Pointwise and the activation after it -> one ``ConvAct`` (one oneDNN call);
- ``pools``: each MaxPool2d -> ``MaxPool``;
- ``channels_last``: the model and its input in channels_last memory, where that times faster (or, where
  the driver asks, the channels_last form handed on untimed, for the engines' race to weigh);
- ``check``: the outputs against the original's, in float64 and in the example's dtype (always runs);
- ``kernels``: each fast layer's kernel for the example's shapes, timed here and stored in the layer (or,
  where the driver asks, left to the engines' race, which tunes only where the eager rewrite can still win);
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
from ...errors import OneByOneError, reason
from ..capture import around_each_call, calls_of
from ..collect import analyze
from ..reparameterize import reparameterized
from ..rewrite_report import (
    KernelChoice,
    OptimizeReport,
    RewriteReport,
    finish,
    output_difference,
    own_float32_error,
    weight_rounding,
)
from ..rewrites import merged_pointwise
from ..tensors import (
    call,
    check_module,
    copy_model,
    example_values,
    first_sample,
    input_kw,
    outputs,
    probe_input,
    random_kept,
)
from . import private
from .chain import FusedPointwiseChain
from .compiled import Compiled
from .convact import ConvAct
from .exported import Exported
from .int8 import ACCURACY_TOL, int8
from .int8_chain import Int8PointwiseChain
from .int8_engines import INT8_TOL
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
COMPILED_CHAINS = "torch.compile around the fused chains"  # Inductor on the rewrite after the chains pass
TUNE_REACH = 1.1  # the eager rewrite's kernels are tuned where it runs within this of the fastest form (the
# tuning keeps a kernel only where it is 10% faster on its layer; on whole models it gained 0-4%)
ONE_THREAD_BELOW = 2e-3  # seconds a call: below, onnxruntime on one thread is weighed too (handing so short
# a call to a second thread and waking it can cost more than the thread gives)


@dataclasses.dataclass(frozen=True)
class Request:
    """What the user asked, checked once; no pass changes it."""

    model: nn.Module  # the model given: never changed
    x: object  # the example
    tol: float = 1e-4
    dtype: torch.dtype | None = None
    dtype_tol: float = BF16_TOL
    channels_last: bool | None = None
    compile: bool = False
    calibration: object = None  # int8: the inputs whose ranges are observed (and held out, checked)
    evaluate: object = None  # int8: model -> top-1 accuracy in points, or None
    labels: object = None  # int8: class indices of the held-out calibration samples, or None
    accuracy_tol: float = ACCURACY_TOL
    probed: bool = False  # ``x`` was made up (from input_size, or guessed), not given: nothing to check on it


class Reference:
    """The model given's outputs on the whole example, computed once when a pass first compares with them."""

    def __init__(self, req: Request):
        self.req, self.value = req, None

    def __call__(self):
        if self.value is None:
            with torch.no_grad():
                self.value = call(self.req.model, self.req.x)
        return self.value


def reparameterize(model: nn.Module, req: Request, report: OptimizeReport) -> nn.Module:
    """Fold norms and merge parallel branches until nothing changes (``onebyone.torch.reparameterize``, whose
    outputs the ``check`` pass checks): the engines do not merge branches, so this runs ahead of their race; a
    model it cannot take is copied as it is and the reason is said."""
    try:
        work, done = reparameterized(copy_model(model), first_sample(req.x), RewriteReport("reparameterize"))
    except OneByOneError as e:
        report.skipped.append(("reparameterize", str(e)))
        return copy.deepcopy(model)
    report.changed += done.changed  # what it leaves, the fold pass reads again and says
    return work


def fold(model: nn.Module, req: Request, report: OptimizeReport) -> tuple[nn.Module, nn.Module]:
    """Fold eval BatchNorms into the convs before them and merge linear pairs (``merge_pointwise``, whose
    outputs the ``check`` pass checks with the other passes'); a model it cannot take is copied as it is
    (the module passes still work) and the reason is said. Returns (model, a copy of it for the engines,
    which fuse convs and pick layouts themselves)."""
    try:
        work, merged = merged_pointwise(model, first_sample(req.x))
        report.changed += merged.changed
        report.skipped += merged.skipped
    except OneByOneError as e:
        work = copy.deepcopy(model)
        report.skipped.append(("fold_batchnorm / merge_pointwise", str(e)))
    return work, copy.deepcopy(work)


def chains(model: nn.Module, req: Request, report: OptimizeReport) -> nn.Module:
    """``swaps.fuse_chains``: each SharedMLP and each run of 1x1 convs -> ``FusedPointwiseChain``."""
    return fuse_chains(model, req.x, report)


def channels_last(model: nn.Module, req: Request, report: OptimizeReport, race_later: bool = False):
    """(model, form to race): the model (weights and 4-D inputs) in channels_last memory where it has convs
    and ``channels_last`` is True, or None and it times faster on the example. With ``race_later`` (and
    ``channels_last`` None) nothing is timed here: the model comes back as it was, with its channels_last
    form for a later race to weigh (else that form is None)."""
    images = [v for v in example_values(req.x) if isinstance(v, torch.Tensor) and v.dim() == 4]  # ChannelsLast moves
    has_conv = images and any(isinstance(m, (nn.Conv2d, ConvAct)) or getattr(m, "channel_dim", None) == 1
                              for m in model.modules())
    if not has_conv or req.channels_last is False:
        return model, None
    cl = ChannelsLast(images_last(copy.deepcopy(model)))
    if req.channels_last is None and race_later:
        return model, cl
    t = time_models({"channels_last": cl, "as given": model}, req.x) if req.channels_last is None else {}
    if t and t["channels_last"] >= t["as given"]:
        report.notes.append("channels_last was timed and ran slower: kept the input's layout")
        return model, None
    report.changed.append("model and input moved to channels_last")
    return cl, None


def images_last(model: nn.Module) -> nn.Module:
    """In place: ``model``'s 4-D parameters and buffers in channels_last memory (what
    ``.to(memory_format=torch.channels_last)`` does, which refuses a model holding a 5-D one: timm's
    LambdaLayer); returns ``model``."""
    for t in (*model.parameters(), *model.buffers()):
        if t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def check(model: nn.Module, req: Request, report: OptimizeReport, reference: Reference) -> tuple[nn.Module, float]:
    """(model, seconds of its first call on the example): the outputs against the original's, each within
    ``tol`` of the output scale: in float64 on the example's first sample (``finish``, which also counts the
    costs per sample into ``report``; the weights' algebra does not depend on the batch) and in the model's
    own dtype on the whole example, on the fast path."""
    model, _ = finish(report, req.model, model, first_sample(req.x), req.tol, inplace=False)
    with torch.no_grad():
        t0 = time.perf_counter()
        got = call(model, req.x)
        seconds = time.perf_counter() - t0
    diff, scale = output_difference(outputs(reference()), outputs(got), "the rewrite")
    own = str(input_kw(req.model)["dtype"]).removeprefix("torch.")
    tol = max(req.tol, weight_rounding(model)) * max(scale, 1.0)  # raised as ``finish`` raises it, and said
    if diff > tol:
        raise OneByOneError(f"optimize changed the {own} outputs by {diff:.3g} (> tolerance {tol:.3g})"
                            + _rounding_said(req, diff, scale))
    report.notes.append(f"checked in {own} on the fast path too: max abs diff {diff:.3g}")
    return model, seconds


def _rounding_said(req: Request, diff: float, scale: float) -> str:
    """Where the model given itself moves past ``tol`` between float32 and float64 on the example (norms far
    from 1 amplify rounding: no float32 form can be held to ``tol``), that, and a ``tol`` that accepts the
    rewrite; else ""."""
    if input_kw(req.model)["dtype"] != torch.float32:
        return ""
    try:
        own = own_float32_error(req.model, req.x)
    except Exception:  # noqa: BLE001 - a model that does not run in float64: nothing to say
        return ""
    if not own > req.tol * max(scale, 1.0):
        return ""
    rel = own / max(scale, 1.0)
    return (f"; the model itself moves by {own:.3g} ({rel:.3g} of its scale, past tol) between float32 and "
            f"float64 on the example: float32's rounding is amplified in it; tol={2 * diff / max(scale, 1.0):.1g} "
            "accepts this rewrite")


def kernels(model: nn.Module, req: Request, report: OptimizeReport) -> nn.Module:
    """Time each fast layer's kernels on the input it gets from the example and store the choice in the
    layer (``report.layers`` lists each; a layer the example does not reach keeps its default)."""
    tune(model, req.x, report)
    return model


def tune(model: nn.Module, x, report: OptimizeReport) -> bool:
    """``choose_kernels`` and the report's table and notes; True where a layer chose other than its default."""
    changed = choose_kernels(model, x)
    report.layers = kernel_table(model)
    _kernel_notes(report)
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


def _kernel_notes(report: OptimizeReport) -> None:
    convs = [r["kernel"] for r in report.layers if r["layer"] == "ConvAct"]
    pools = [r["kernel"] for r in report.layers if r["layer"] == "MaxPool"]
    if convs:
        report.notes.append(f"kernels chosen on the example: {convs.count('matmul over rows')} of {len(convs)} convs "
                            "run as oneDNN's matmul over rows, the rest as its conv (report.layers lists each)")
    if pools:
        report.notes.append(f"{pools.count('max of views')} of {len(pools)} max pools run as a max of strided views "
                            "(no index tensor), the rest as F.max_pool2d")


def bfloat16(model: nn.Module, req: Request, report: OptimizeReport, reference: Reference) -> nn.Module:
    """With ``dtype=torch.bfloat16`` and a CPU with bfloat16 products: ``model`` in bfloat16 behind a
    ``CastIO``, its error against the float32 original measured on the example (within ``dtype_tol`` of
    the output scale), its kernels chosen again in bfloat16, both precisions timed (a warning where
    bfloat16 runs no faster). On a CPU without bfloat16 products float32 is kept, with a warning."""
    if req.dtype != torch.bfloat16:
        return model
    if not private.capabilities().bf16:
        why = f"this CPU has no bfloat16 products ({private.capabilities().describe()}): emulated, they run slower"
        report.notes.append(f"dtype=bfloat16 asked, float32 kept: {why}")
        warnings.warn(f"optimize(dtype=torch.bfloat16) kept float32: {why}", stacklevel=3)
        return model
    low = CastIO(copy.deepcopy(model), req.dtype)
    with torch.no_grad():
        diff, scale = output_difference(outputs(reference()), outputs(call(low, req.x)), "bfloat16")
    report.precision = {"dtype": "bfloat16", "max_abs_diff": diff, "relative": diff / max(scale, 1e-30),
                        "tolerance": req.dtype_tol}
    if diff > req.dtype_tol * max(scale, 1e-30):
        raise OneByOneError(f"in bfloat16 the outputs moved by {diff:.3g}, {diff / max(scale, 1e-30):.3g} of their "
                            f"scale (> dtype_tol {req.dtype_tol:.3g}); keep float32, or accept more with dtype_tol")
    report.notes.append(f"runs in bfloat16: max abs diff {diff:.3g} against the float32 model, "
                        f"{report.precision['relative']:.3g} of the output scale (tolerance {req.dtype_tol:.3g})")
    choose_kernels(low, req.x)
    t = time_models({"float32": model, "bfloat16": low}, req.x)
    report.precision["ms"] = {k: v * 1e3 for k, v in t.items()}
    if t["bfloat16"] >= t["float32"]:  # kept as asked (memory may be the point), but said
        why = (f"the eager rewrite ran no faster in bfloat16 than in float32 ({t['bfloat16'] * 1e3:.3g} against "
               f"{t['float32'] * 1e3:.3g} ms a call); dtype=None may be the faster choice for this input (the "
               "engines' forms are timed apart)")
        report.notes.append(why)
        low.__dict__["_slower"] = why  # warned where this form is the one returned (``recount``)
    report.layers = kernel_table(low)  # named as in the model returned
    return low


@dataclasses.dataclass
class Race:
    """What the ``engines`` pass weighs beside the eager rewrite, as the driver hands it on: the folded
    model (the engines' start), ``torch.compile``'s snapshots, the channels_last form, the rewrite's first
    call, the tolerance the forms are held to, and whether the rewrite's kernels are still to be tuned."""

    folded: nn.Module | None = None
    compiled: dict = dataclasses.field(default_factory=dict)  # label -> a model for Compiled
    layouts: dict = dataclasses.field(default_factory=dict)  # {EAGER_CL: the rewrite in channels_last}
    call_seconds: float = float("inf")
    tol: float = 1e-4
    tune: bool = False
    spans: dict = dataclasses.field(default_factory=dict)  # pass -> (first, past last) of its report.changed lines
    checked: nn.Module | None = None  # the model ``check`` counted the costs of
    moved: int = 0  # report.changed lines ``set_aside`` moved to a note during the pass running

    def changes(self, report: OptimizeReport, before: int) -> int:
        """The lines the pass running added to ``report.changed`` (those of earlier passes it set aside not
        subtracted from them), counted once."""
        added, self.moved = len(report.changed) - before + self.moved, 0
        return added


EXACT = ("reparameterize", "fold")  # the passes whose changes every form is made from (``Race.folded``)


def set_aside(report: OptimizeReport, race: Race, kept: str) -> None:
    """The report.changed lines of the passes whose changes are not in ``kept`` (the form returned, made from
    the exact rewrite; Inductor around the fused chains holds those chains and their layout too) moved to a
    note: they were made and timed, and are not what runs."""
    keep = EXACT + (("chains", "channels_last") if kept == COMPILED_CHAINS else ())
    drop = {i for name, (a, b) in race.spans.items() if name not in keep for i in range(a, b)}
    lines = [line for i, line in enumerate(report.changed) if i in drop]
    if lines:
        report.changed = [line for i, line in enumerate(report.changed) if i not in drop]
        race.moved += len(lines)
        report.notes.append(f"{len(lines)} change(s) of the eager rewrite were made and timed, and are not in "
                            f"{kept}, which is made from the exact rewrite: {'; '.join(lines)[:300]}")


def engines(model: nn.Module, req: Request, report: OptimizeReport, reference: Reference, race: Race) -> tuple:
    """(model kept, (seconds a call by label, the kept one's label) or None where nothing was raced): the
    engines users deploy, weighed against ``model``: in float32, the folded model exported once to ONNX and
    run by onnxruntime (``OnnxRuntime``; on a call under ``ONE_THREAD_BELOW`` seconds, on one thread too) and
    by OpenVINO (``OpenVino``), each where installed; ``race.compiled`` as ``Compiled`` (Inductor with
    freezing); ``race.layouts``. The fastest on the example of these and ``model`` is kept (the report gives
    each one's time, and where the pass's time went); an engine not installed, a form that fails, or one
    that moves the outputs past the tolerance is named in ``report.skipped`` with the reason."""
    forms = {**race.layouts, **{k: Compiled(m) for k, m in race.compiled.items()}}
    exports, folded = {}, copy.deepcopy(race.folded or req.model)  # one ONNX export for every engine
    low = isinstance(model, CastIO)  # bfloat16: OpenVINO's bf16 is weighed, onnxruntime runs float32 only
    if low:
        report.notes.append("onnxruntime was not weighed: it runs float32 only here")
    for cls in ((OpenVino,) if low else (OnnxRuntime, OpenVino)):
        label = f"{cls.engine} bfloat16" if low else cls.engine
        try:
            cls.require()
            forms[label] = cls(folded, tol=race.tol, exports=exports, **({"precision": "bf16"} if low else {}))
        except OneByOneError as e:  # not installed, or a model it does not run (float64)
            report.skipped.append((label, f"not weighed: {e}"))
            continue
        if cls is OnnxRuntime and torch.get_num_threads() > 1 and race.call_seconds < ONE_THREAD_BELOW:
            forms["onnxruntime, one thread"] = OnnxRuntime(folded, tol=race.tol, exports=exports, threads=1)
    kept, timed = _fastest_form(model, forms, req, report, reference, race)
    if isinstance(kept, Exported):
        kept.exports = None  # its session is made: the shared export is not kept with the model
    return kept, timed


def _fastest_form(work, forms: dict, req: Request, report: OptimizeReport, reference: Reference, race: Race):
    """(the fastest on the example of ``work`` and the ``forms`` whose outputs stay within ``race.tol``, the
    times or None); with ``race.tune``, ``work`` tuned first if it can still win (``_race``)."""
    fine, t0 = {}, time.perf_counter()
    for label, form in forms.items():
        try:
            with torch.no_grad():
                if isinstance(form, Exported):  # exports (once for all), compiles, checks against the model given
                    form.prepare(req.x, reference())
                    fine[label] = form
                    continue
                got = outputs(call(form, req.x))  # compiles
        except Exception as e:  # noqa: BLE001 (dynamo, inductor and the exporter raise many kinds: name it, go on)
            report.skipped.append((label, reason(e, 10_000)))
            continue
        diff, scale = output_difference(outputs(reference()), got, label)
        if diff > race.tol * max(scale, 1.0):
            report.skipped.append((label, f"it moved the outputs by {diff:.3g} (> {race.tol * max(scale, 1.0):.3g})"))
        else:
            fine[label] = form
    made = time.perf_counter() - t0
    if not fine:
        if race.tune:
            tune(work, req.x, report)
        return work, None
    models = {EAGER: work, **fine, GIVEN: req.model}
    t = _race(models, req, report, race.tune)
    best = min((k for k in t if k != GIVEN), key=t.get)
    timed = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in t.items() if k != GIVEN)
    report.notes.append(f"engines: their forms made and checked in {made:.2g} s (the ONNX export among it), "
                        f"raced (any tuning of the rewrite included) in {time.perf_counter() - t0 - made:.2g} s")
    if best != EAGER:
        kept = models[best]
        set_aside(report, race, best)
        if req.dtype == torch.bfloat16:  # the error the report gives is the kept form's
            with torch.no_grad():  # (with gradients on, an engine's form runs its float model)
                diff, scale = output_difference(outputs(reference()), outputs(call(kept, req.x)), best)
            report.precision.update(form=best, max_abs_diff=diff, relative=diff / max(scale, 1e-30))
        engine = ("Inductor, freezing" if isinstance(kept, Compiled) else
                  f"its ONNX export, OpenVINO compiled it for {kept.ran_in}" if getattr(kept, "precision", "") == "bf16"
                  else "its ONNX export, float32 on the CPU")
        report.changed.append(f"{best} ({engine}) kept: {timed} a call")
        report.layers = []  # the fast layers' kernels are not what runs
    else:
        if EAGER_CL in fine and models[EAGER] is fine[EAGER_CL]:
            report.changed.append("model and input moved to channels_last")
        if len(t) > 2:  # an engine's or Inductor's form was timed beside it and the model given
            report.notes.append(f"the engines' forms were timed and ran slower ({timed} a call): kept the eager "
                                "rewrite")
    return models[best], (t, best)


def _race(models: dict, req: Request, report: OptimizeReport, tune_eager: bool) -> dict:
    """{label: seconds a call} of ``models`` (each just run on the example), timed side by side, the slow ones
    leaving early (``time_models``). Where a channels_last form is among them, the faster layout goes on as
    ``EAGER`` (``models`` changed in place) and the other leaves. With ``tune_eager``: the eager rewrite tuned
    if it ran within ``TUNE_REACH`` of the fastest, and the close ones (if more than the rewrite) timed again
    where a kernel changed; otherwise the report says why it was not tuned."""
    t = time_models(models, req.x)
    if EAGER_CL in t:  # both layouts raced: the faster goes on as the eager rewrite, the other leaves
        cl, model = t.pop(EAGER_CL), models.pop(EAGER_CL)
        report.notes.append(f"channels_last {'ran faster' if cl < t[EAGER] else 'was timed and ran slower'}: "
                            f"{cl * 1e3:.3g} against {t[EAGER] * 1e3:.3g} ms a call in the input's layout "
                            "(timed beside the engines' forms)")
        if cl < t[EAGER]:
            t[EAGER], models[EAGER] = cl, model
    if not tune_eager:
        return t
    lead = max(min(t.values()), 1e-9)
    if t[EAGER] > TUNE_REACH * lead:
        report.notes.append(f"kernels not tuned: the eager rewrite ran {t[EAGER] / lead:.2f}x the fastest "
                            "form's time untuned, further behind than tuning could bring it")
        return t
    close = {k: m for k, m in models.items() if t[k] <= TUNE_REACH * lead}
    if tune(models[EAGER], req.x, report) and len(close) > 1:  # it runs otherwise now: the close ones again
        t |= time_models(close, req.x)  # (alone in reach, it led untuned; tuning keeps only faster kernels)
    return t


def keep_faster(model: nn.Module, req: Request, report: OptimizeReport, timed=None) -> nn.Module:
    """The model given (a copy) where it runs the example faster than the result: ``optimize`` never hands
    back a slower model; the report says so, with both times, and a warning is raised. ``timed``: the
    engines pass's times (the result and the model given were timed side by side there): used, not re-timed."""
    if timed is not None:
        t, label = timed
        mine, given = t[label], t[GIVEN]
    else:
        t = time_models({"optimized": model, GIVEN: req.model}, req.x)
        mine, given = t["optimized"], t[GIVEN]
    report.notes.append(f"on the example: {mine * 1e3:.3g} ms a call against {given * 1e3:.3g} "
                        "for the model given")
    if mine <= given:
        return model
    why = (f"the rewritten model ran slower on the example ({mine * 1e3:.3g} against "
           f"{given * 1e3:.3g} ms a call): the model given is returned unchanged")
    report.notes.append(why)
    report.layers, report.max_abs_diff = [], 0.0  # (the rewrite's difference is not the returned model's)
    if report.changed:  # made and timed, but not in the model returned: said as such, not listed as changes
        report.notes.append(f"{len(report.changed)} change(s) were made and timed, and are not in the model "
                            f"returned: {'; '.join(report.changed)[:300]}")
        report.changed = []
    if report.precision is not None and report.precision.pop("kept", None):  # an int8 form, not handed back
        for row in report.precision.get("layers", {}).values():
            row["precision"] = "float32"
    warnings.warn(f"optimize: {why}", stacklevel=3)
    return copy.deepcopy(req.model)


PASSES = ("reparameterize", "fold", "chains", "conv_acts", "pools", "channels_last", "check", "kernels", "bfloat16",
          "int8", "engines", "keep_faster")  # the order they run in (``_run``)


def optimize(model: nn.Module, example=None, *, input_size=None, tol: float = 1e-4, channels_last=None, dtype=None,
             dtype_tol: float | None = None, compile: bool = False, passes=None, calibration=None, evaluate=None,
             labels=None, accuracy_tol: float = ACCURACY_TOL):
    """An eval model rewritten for speed, with the same outputs; returns (model, RewriteReport).

    Never slower on ``example`` than the model given: where the rewrite times slower, the model given is
    returned (a copy) with a warning and a note (the ``keep_faster`` pass). The model may come back wrapped
    (``ChannelsLast``, ``CastIO``, an engine's module): the rewritten model, with its attributes, is ``.model``.

    The model returned holds its own copies of the weights (folded, merged), none of which wants a gradient:
    it is an inference model, and it runs the form that was timed (under ``no_grad`` or not) unless an input
    wants a gradient. NaN or inf in its inputs reaches the outputs it reaches in the model given (it looks at
    its inputs once a call; where they hold either, its plain layers run). The model given is never changed.
    Its weights may be edited in place by torch ops or ``load_state_dict`` (its fast layers pack them again);
    writes that bypass torch's version counter (through ``.data`` or a NumPy view) are not seen: edit the
    model given and optimize it again. torch's CPU, Python's and NumPy's random states are left as they were.

    Args:
        example: an input batch to trace, time and check on (or ``input_size``, one sample's shape).
        tol: allowed max |difference| relative to the output scale, checked in float64 on the example's
            first sample and in the model's dtype on the whole example.
        channels_last: True / False to force; None times both on ``example``.
        dtype: ``torch.bfloat16`` runs the products in bfloat16 (accumulating in float32, as oneDNN does)
            with the weights converted once; inputs and outputs stay in the caller's dtype. The float32
            rewrite is checked at ``tol`` first; the bfloat16 model's error against the original float32
            one must stay within ``dtype_tol`` of the output scale (``report.precision`` gives it, and both
            precisions' times; a warning where bfloat16 runs no faster; oneDNN's bfloat16 convs may carry a
            NaN one position further). On a CPU without bfloat16 products float32 is kept, said.
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
        dtype=torch.int8: post-training static quantization of the exactly rewritten model (``fast.int8``):
            ``calibration`` (a list of input batches like ``example``, not all constant; None: the example
            alone, with a warning) gives the activation ranges; each int8 form is checked against the float32
            model on its last quarter (held out; a note where under 16 samples) and four observed batches,
            within ``dtype_tol`` (default 0.05 of the output scale; past it on the example, said); with
            ``evaluate`` (model -> top-1 accuracy in points) or ``labels`` (class indices of the held-out samples)
            a form losing over ``accuracy_tol`` points is refused. The fastest that qualifies is kept if it beats
            float32; else float32, said why. ``report.precision`` gives each form's error, accuracy, time. The form
            kept checks its first call with each new input size against the float model: past ``dtype_tol``,
            or at a size per sample an engine's calibration does not fit, a warning, and the float model runs it.
    """
    names = _pass_names(passes, dtype)
    req = _request(model, example, input_size, tol, channels_last, dtype, dtype_tol, compile, calibration, evaluate,
                   labels, accuracy_tol)
    report = OptimizeReport("optimize")
    work = model if names[0] in ("reparameterize", "fold") else copy.deepcopy(model)  # (the others: in place)
    with random_kept():  # (calibration and quantization tools draw from the global generators)
        work = _run(names, work, req, report).requires_grad_(False)  # its own weights: an inference model
    fused = any(isinstance(m, (ConvAct, FusedPointwiseChain, Int8PointwiseChain)) for m in work.modules())
    if fused:  # NaN in the inputs reaches the outputs, as in the model given (optimized twice: one pair of hooks)
        around_each_call(work, private.look_at_inputs, private.forget_inputs)
    return work, report


def _run(names: list, work: nn.Module, req: Request, report: OptimizeReport) -> nn.Module:
    """The passes ``names`` in order, each handed what the ones before it made: the only place that knows
    what flows from one pass to the next. In float32 with the engines to race, the layout and the kernels
    are left to that race (one race, less time timing; kernels tuned only where the rewrite can still win)."""
    reference, race = Reference(req), Race(tol=req.tol)
    race_later = "engines" in names and req.dtype is None
    quantized, timed = False, None
    for name in names:
        t0, before = time.perf_counter(), len(report.changed)
        if name == "reparameterize":
            work = reparameterize(work, req, report)
        elif name == "fold":
            work, race.folded = fold(work, req, report)
            race.compiled |= {"torch.compile": race.folded} if req.compile else {}
        elif name == "chains":
            work = chains(work, req, report)
            if req.compile and any(isinstance(m, FusedPointwiseChain) for m in work.modules()):
                race.compiled[COMPILED_CHAINS] = copy.deepcopy(work)
        elif name in ("conv_acts", "pools"):
            work = (fuse_conv_acts if name == "conv_acts" else swap_max_pools)(work, req.x, report)
        elif name == "channels_last":
            was = work
            work, cl = channels_last(work, req, report, race_later=race_later and not req.compile)
            if cl is not None:
                race.layouts[EAGER_CL] = cl
            elif work is not was and COMPILED_CHAINS in race.compiled:
                race.compiled[COMPILED_CHAINS] = ChannelsLast(images_last(race.compiled[COMPILED_CHAINS]))
        elif name == "check":
            work, race.call_seconds = check(work, req, report, reference)
            race.checked = work
        elif name == "kernels":
            race.tune = race_later
            if not race_later:
                work = kernels(work, req, report)
        elif name == "bfloat16":
            low = bfloat16(work, req, report, reference)
            if low is not work:  # the forms weighed next run in bfloat16 too, held to its tolerance
                race.compiled = {k: CastIO(copy.deepcopy(m), req.dtype) for k, m in race.compiled.items()}  # CastIO
                # casts what it wraps in place: race.folded stays float32 for the engines' export
                race.tol = req.dtype_tol
            work = low
        elif name == "int8":
            if req.dtype == torch.int8:
                was = work
                work = int8(work, race.folded or copy_model(req.model), req.x, report, req.model, req.calibration,
                            req.dtype_tol, req.accuracy_tol, req.evaluate, req.labels, req.probed)  # (a copy)
                quantized = work is not was
                if quantized:
                    set_aside(report, race, report.precision["kept"])
        elif name == "engines":
            if quantized:  # the float engines race float32 forms: an int8 form kept has beaten float32 already
                report.notes.append("the float32 engines were not weighed: an int8 form was kept")
            else:
                work, timed = engines(work, req, report, reference, race)
        else:
            work = keep_faster(work, req, report, timed)
        report.passes.append({"pass": name, "seconds": time.perf_counter() - t0,
                              "changes": race.changes(report, before)})
        race.spans[name] = (before, len(report.changed))
    return recount(work, race.checked, req, report)


def recount(model: nn.Module, checked, req: Request, report: OptimizeReport) -> nn.Module:
    """``model``, the model returned; where it is not the one ``check`` counted (an engine's or an int8 form,
    the model given kept), the report's params and MACs after counted on it (per sample, as ``check``); a
    bfloat16 form that ran no faster than float32 is warned of here, where it is the one returned."""
    if model.__dict__.get("_slower"):
        warnings.warn(f"optimize: {model.__dict__.pop('_slower')}", stacklevel=4)
    if checked is None or model is checked:
        return model
    try:
        after = analyze(model, example=first_sample(req.x))
    except Exception as e:  # noqa: BLE001 - a form the analyzer cannot run: said, the rewrite's counts kept
        report.notes.append(f"params and MACs after are the eager rewrite's: the model returned was not counted: "
                            f"{reason(e)}")
        return model
    report.params_after, report.macs_after = after.params, after.macs // after.batch_size
    return model


def _request(model, example, input_size, tol, channels_last, dtype, dtype_tol, compile, calibration, evaluate,
             labels, accuracy_tol) -> Request:
    """``optimize``'s arguments checked (a OneByOneError naming the first that is wrong), as a Request."""
    if not isinstance(compile, bool):
        raise OneByOneError(f"compile must be True or False, got {compile!r}")
    if channels_last is not None and type(channels_last).__name__ not in ("bool", "bool_"):
        raise OneByOneError(f"channels_last must be None (timed), True or False, got {channels_last!r}")
    channels_last = None if channels_last is None else bool(channels_last)
    if dtype not in (None, torch.float32, torch.bfloat16, torch.int8):
        raise OneByOneError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.int8, got {dtype!r}")
    if dtype is not torch.int8 and (calibration is not None or evaluate is not None or labels is not None):
        raise OneByOneError("calibration, evaluate and labels are for dtype=torch.int8")
    if evaluate is not None and labels is not None:
        raise OneByOneError("give evaluate (model -> top-1 accuracy in points) or labels (for the held-out "
                            "calibration samples), not both: one measures the accuracy")
    if evaluate is not None and not callable(evaluate):
        raise OneByOneError(f"evaluate must be a callable (model -> top-1 accuracy in points), got {evaluate!r}")
    dtype_tol = (INT8_TOL if dtype is torch.int8 else BF16_TOL) if dtype_tol is None else dtype_tol
    names = [n for n, m in check_module(model).named_modules() if m.training]
    training = [n or type(model).__name__ for n in names if not any(n.startswith(f"{t}.") or t == "" != n
                                                                      for t in names)]  # the outermost ones
    if training:  # (a submodule's too: its BatchNorms would update their statistics in the reference runs)
        more = f" (and {len(training) - 3} more)" if len(training) > 3 else ""
        raise OneByOneError(f"optimize needs an eval-mode model (BatchNorm folding uses running statistics), but "
                            f"{', '.join(f'`{n}`' for n in training[:3])}{more} are in training mode; call "
                            f"{type(model).__name__}.eval() first")
    return Request(model, probe_input(model, example, input_size), check_tolerance(tol, "tol"),
                   dtype if dtype != torch.float32 else None, check_tolerance(dtype_tol, "dtype_tol"), channels_last,
                   compile, calibration, evaluate, labels, check_tolerance(accuracy_tol, "accuracy_tol"),
                   probed=example is None)


def _pass_names(passes, dtype=None) -> list:
    """The passes to run in ``PASSES``' order, ``check`` included; unknown names refused, as is a list that
    leaves out the pass ``dtype`` asks for (it would come back float32, unsaid)."""
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
    want = {torch.bfloat16: "bfloat16", torch.int8: "int8"}.get(dtype) if isinstance(dtype, torch.dtype) else None
    if want is not None and want not in passes:
        raise OneByOneError(f"dtype={dtype} is made by the {want!r} pass, which passes={passes} leaves out: add it, "
                            "or leave dtype out for float32")
    return [p for p in PASSES if p in passes or p == "check"]
