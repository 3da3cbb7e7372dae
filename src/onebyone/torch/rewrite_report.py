"""``RewriteReport``, what every rewrite returns next to the model, and ``finish``, the exactness check
they all run."""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TypedDict

import torch
from torch import nn

from ..cost import CONVENTION
from ..errors import OneByOneError
from .collect import analyze
from .tensors import call, cast, copy_model, example_values, outputs, params_dtype, random_like


class FactorizedLayer(TypedDict):
    """A row of ``factorize``'s ``report.layers``: one layer replaced by its rank-r pair (MACs per sample)."""

    name: str
    rank: int
    energy_kept: float
    params_before: int
    params_after: int
    macs_saved: int
    relative_error: float


class ConvolutionalizedHead(TypedDict, total=False):
    """A row of ``convolutionalize``'s ``report.layers``: one head turned into convolutions; ``crop_difference``
    only where the trunk pads."""

    head: list
    window: tuple
    stride: tuple
    padded: bool
    crop_difference: float
    offset: tuple  # the first cell comes this many pixels sooner than one stride (floors in the trunk)


class KernelChoice(TypedDict):
    """A row of ``optimize``'s ``report.layers``: the kernel a fast layer runs on an input shape and dtype."""

    name: str
    layer: str
    input_shape: list
    dtype: str
    kernel: str


@dataclass
class RewriteReport:
    """What a rewrite changed and skipped, how far the outputs moved, and the cost before and after: what
    every rewrite reports. A rewrite with more to say returns a subclass with its own typed rows
    (``FactorizeReport``, ``ConvolutionalizeReport``, ``OptimizeReport``)."""

    rewrite: str
    changed: list = field(default_factory=list)  # "name: what happened"
    skipped: list = field(default_factory=list)  # (name, reason)
    max_abs_diff: float = 0.0
    tolerance: float = 0.0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0  # per sample, as analyze counts them
    macs_after: int = 0
    notes: list = field(default_factory=list)
    sample: str = ""  # one sample's shape(s), the input the costs were counted on, e.g. "(3, 224, 224)"

    def to_dict(self) -> dict:
        return asdict(self)

    def _repr_html_(self) -> str:
        """Jupyter's view: what changed and was skipped, the outputs' drift and the costs (``onebyone.notebook``)."""
        from ..notebook import report_html

        return report_html(self)

    def __str__(self) -> str:
        lines = [
            f"{self.rewrite}: {len(self.changed)} change(s), {len(self.skipped)} skipped; "
            f"max abs diff {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})",
            f"  params {self.params_before:,} -> {self.params_after:,}; "
            f"MACs {self.macs_before:,} -> {self.macs_after:,} per sample{f' of {self.sample}' * bool(self.sample)} "
            f"({CONVENTION})",
        ]
        lines += [f"  changed  {c}" for c in self.changed]
        lines += [f"  skipped  {n}: {r}" for n, r in self.skipped]
        lines += [f"  note     {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class FactorizeReport(RewriteReport):
    """``factorize``'s report: a row per layer replaced, and the whole model's output error."""

    layers: list[FactorizedLayer] = field(default_factory=list)
    output_relative_error: float | None = None  # ||y' - y|| / ||y|| of the whole model's output


@dataclass
class ConvolutionalizeReport(RewriteReport):
    """``convolutionalize``'s report: a row per head turned into convolutions."""

    layers: list[ConvolutionalizedHead] = field(default_factory=list)


@dataclass
class OptimizeReport(RewriteReport):
    """``optimize``'s report: the kernel each fast layer runs, the lower precision's error and time (with
    ``dtype=``), and each pass's seconds."""

    layers: list[KernelChoice] = field(default_factory=list)
    precision: dict | None = None  # the lower precision's error against float32, ms a call
    passes: list = field(default_factory=list)  # {pass, seconds, changes} for each pass it ran

    def __str__(self) -> str:
        """As a rewrite's, its headline difference named the float32 rewrite's where a lower precision is kept,
        with the kept form's own error after it."""
        text, p = super().__str__(), self.precision or {}
        kept = p.get("kept") or p.get("form") or (p.get("dtype") if "relative" in p else None)
        if not kept:
            return text
        err = p["forms"][p["kept"]]["relative_error"] if p.get("kept") else p["relative"]
        head, _, rest = text.partition("\n")
        return (f"{head}, of the exact float32 rewrite\n  {kept} kept: error {err:.3g} of the output scale "
                f"(dtype_tol {p['tolerance']:.3g})\n{rest}")


def max_difference(
    before: nn.Module, after: nn.Module, example, reshape=None, dtype=torch.float64, cast_each: bool = False
) -> tuple[float, float]:
    """(max abs difference, max abs output) of the two models on ``example`` and on a seeded random probe of
    its shapes and dtypes (``random_like``: a zero or constant example proves nothing), in ``dtype`` on copies
    (``dtype=None``: the models and the example as they are; ``cast_each``: each model's floating inputs in
    the dtype of its own parameters, the outputs compared in float64)."""
    a, b = before, after
    if dtype is not None:
        a, b = copy_model(before, dtype).eval(), copy_model(after, dtype).eval()
    probe = random_like(example)
    if isinstance(example, torch.Tensor) and example.dim() > 0:
        try:  # one call on the example and the probe as one batch: half the calls
            return _difference(a, b, torch.cat([example, probe]), reshape, dtype, cast_each)
        except Exception:  # noqa: BLE001 - a model whose batch is fixed, or an unbatched example: one at a time
            pass
    (d1, s1), (d2, s2) = (_difference(a, b, x, reshape, dtype, cast_each) for x in (example, probe))
    return max(d1, d2), max(s1, s2)


def _difference(a, b, x, reshape, dtype, cast_each=False) -> tuple[float, float]:
    x = cast(x, dtype) if dtype is not None else x
    with torch.no_grad():
        if cast_each:
            ya, yb = ([t.double() if t.is_floating_point() else t for t in outputs(call(m, cast(x, params_dtype(m))))]
                      for m in (a, b))
        else:
            ya, yb = outputs(call(a, x)), outputs(call(b, x))
    if reshape is not None:
        yb = [reshape(t, ref) for t, ref in zip(yb, ya)]
    return output_difference(ya, yb, "the rewrite")


def output_difference(want: list, got: list, what: str) -> tuple[float, float]:
    """(max abs difference, max abs finite value of ``want``) between two lists of output tensors (an empty
    tensor counts 0); a OneByOneError naming ``what`` where their number or shapes differ. NaN and inf count
    as values: where both hold the same one, no difference; where they differ (one finite, or NaN against
    inf, or inf of the other sign), an infinite one."""
    if len(want) != len(got) or any(p.shape != q.shape for p, q in zip(want, got)):
        raise OneByOneError(f"{what} changed the output shapes: {[tuple(t.shape) for t in want]} -> "
                            f"{[tuple(t.shape) for t in got]}")
    diff = max((_gap(p.detach(), q.detach()) for p, q in zip(want, got)), default=0.0)
    scale = max((largest_finite(p.detach()) for p in want), default=0.0)
    return diff, scale


def _gap(p: torch.Tensor, q: torch.Tensor) -> float:
    """max |p - q| over the values finite in both; inf where their NaN or inf differ (0 for no values)."""
    if not p.numel():
        return 0.0
    if p.is_complex() or q.is_complex():
        return float((p - q).abs().max())
    if not p.is_floating_point() and not q.is_floating_point():  # integers, bools
        return float((p.long() - q.long()).abs().max())
    fin = torch.isfinite(p)
    if not torch.equal(fin, torch.isfinite(q)):
        return math.inf
    if not bool(fin.all()):
        a, b = p[~fin], q[~fin]
        if not (torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0).sign(), b.nan_to_num(0.0).sign())):
            return math.inf
        p, q = p[fin], q[fin]
    return float((p - q).abs().max()) if p.numel() else 0.0


def largest_finite(p: torch.Tensor) -> float:
    """The largest finite magnitude in ``p`` (0 where none)."""
    if not p.numel():
        return 0.0
    if not p.is_floating_point():  # integers, bools, complex
        return float((p if p.is_complex() else p.long()).abs().max())
    p = p if bool(torch.isfinite(p).all()) else p[torch.isfinite(p)]
    return float(p.abs().max()) if p.numel() else 0.0


def weight_rounding(model: nn.Module) -> float:
    """The relative output error that new weights stored in ``model``'s half precision bring: 4 machine epsilons
    of it (float16: 3.9e-3, bfloat16: 3.1e-2); 0 for a model in float32 or float64."""
    kinds = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return max((4 * torch.finfo(k).eps for k in kinds if k in (torch.float16, torch.bfloat16)), default=0.0)


def finish(report: RewriteReport, original: nn.Module, rewritten: nn.Module, example, tol: float, inplace: bool,
           reshape=None, check: bool = True) -> tuple[nn.Module, RewriteReport]:
    """Check exactness (relative to the output scale, in float64: ``tol``, or where the rewritten model's weights
    are float32 and the original itself moves further run in float32, that; in half precision their
    rounding; for a model that does not run in float64, in its own dtype), fill the costs, and honour
    ``inplace``."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
        raise OneByOneError(f"tol must be a number >= 0 (a fraction of the output scale), got {tol!r}")
    low = weight_rounding(rewritten)
    if low > tol:  # new weights rounded to float16 / bfloat16 move the outputs by about this much: not an error
        report.notes.append(f"tolerance {tol:g} raised to {low:g}: the rewritten weights are rounded to the model's "
                            "own dtype")
        tol = low
    if not report.changed and reshape is None and same_model(original, rewritten):
        before = after = analyze(original, example=example)  # nothing changed, down to every weight: diff 0
        with torch.no_grad():
            scale = max((float(t.abs().max()) for t in outputs(call(original, example)) if t.numel()), default=0.0)
        report.tolerance = tol * max(scale, 1.0)
    else:
        (diff, scale), low = _difference_checked(report, original, rewritten, example, reshape)
        report.max_abs_diff, report.tolerance = diff, max(tol, low) * max(scale, 1.0)
        if check and diff > report.tolerance and _float32(rewritten) and not low:  # (checked in float64)
            _within_float32(report, original, example, diff, scale)
        if check and diff > report.tolerance:
            raise OneByOneError(f"{report.rewrite} changed the outputs by {diff:.3g} (> tolerance "
                                f"{report.tolerance:.3g}); changes: {report.changed}")
        before, after = analyze(original, example=example), analyze(rewritten, example=example)
    report.params_before, report.macs_before = before.params, before.macs // before.batch_size  # per sample,
    report.params_after, report.macs_after = after.params, after.macs // after.batch_size  # as analyze counts
    report.sample = ", ".join(str(tuple(v.shape[1:])) for v in example_values(example) if isinstance(v, torch.Tensor))
    keep_frozen(original, rewritten)
    keep_modes(original, rewritten)
    report.notes += untied(original, rewritten)
    if report.params_after > report.params_before and report.rewrite != "factorize":  # (its own notes say)
        report.notes.append(f"parameters grew from {report.params_before:,} to {report.params_after:,}: a rewrite "
                            "can hold more than it replaces (a bias where a norm folded into a layer without one, a "
                            "kernel padded to its merged size, a layer called in several places held once for each)")
    report.skipped = list(dict.fromkeys(report.skipped))  # (a norm called at two places is one skip)
    if inplace and type(rewritten) is type(original):
        _adopt(original, rewritten)
        return original, report
    if inplace:
        not_in_place(report, "the rewrite needed a traced GraphModule (a new class)")
    return rewritten, report


def not_in_place(report: RewriteReport, why: str, stacklevel: int = 5) -> None:
    """Say, in the notes and a warning, that ``inplace=True`` could not be honoured: the model given is unchanged
    (a caller that drops the returned model would keep the old one, unsaid)."""
    note = f"inplace=True: {why}, so the model given is unchanged: use the model returned"
    report.notes.append(note)
    warnings.warn(f"{report.rewrite}: {note}", UserWarning, stacklevel=stacklevel)  # (the caller, past gc_paused)


FLOAT32_TOL = 1e-4  # the least tolerance of a check that runs in float32 (as optimize's on the fast path)


def _difference_checked(report: RewriteReport, original, rewritten, example, reshape) -> tuple:
    """(``max_difference`` in float64, 0.0); where the original model itself does not run in float64 (it makes
    float32 tensors of its own: Hugging Face's FastSpeech2Conformer), (``max_difference`` in its own dtype, the
    least tolerance there: ``FLOAT32_TOL``), said in ``report.notes``. A rewritten model that fails where the
    original runs is a OneByOneError naming the error."""
    try:
        return max_difference(original, rewritten, example, reshape), 0.0
    except OneByOneError:
        raise
    except Exception as e:  # noqa: BLE001 - which model failed decides what it means
        own = params_dtype(original)
        try:  # the original alone, on the same inputs (the example and the probe)
            max_difference(original, original, example)
        except Exception as first:  # noqa: BLE001 - the model's own: checked in its dtype instead
            if own == torch.float64:
                raise
            report.notes.append(f"checked in {str(own).removeprefix('torch.')} (tolerance at least {FLOAT32_TOL:g}): "
                                f"the model does not run in float64 ({type(first).__name__}: "
                                f"{str(first).splitlines()[0][:120]})")
            return max_difference(original, rewritten, example, reshape, dtype=own), FLOAT32_TOL
        raise OneByOneError(f"{report.rewrite}: the rewritten model fails in float64 where the original runs: "
                            f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e


def _float32(model: nn.Module) -> bool:
    kinds = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return kinds == {torch.float32}


def own_float32_error(model: nn.Module, example) -> float:
    """How far ``model`` run in float32 is from itself run in float64 on ``example`` (and the probe): the max
    abs difference of their outputs. A deep net with norms far from 1 amplifies float32's rounding."""
    in64, in32 = (copy_model(model, d).eval() for d in (torch.float64, torch.float32))
    return max_difference(in64, in32, example, dtype=None, cast_each=True)[0]


def _within_float32(report: RewriteReport, original: nn.Module, example, diff: float, scale: float) -> None:
    """Where a rewrite moved the outputs (in float64) past the tolerance, but by less than the original model
    itself moves them when run in float32 rather than float64 (a deep net with norms far from 1 amplifies
    float32's rounding to 1e-5 of its scale) and by at most ``FLOAT32_TOL`` of the scale: the tolerance
    becomes that own error, said in ``report.notes``. float32 cannot tell such a rewrite from the model."""
    own = own_float32_error(original, example)
    own = min(own, FLOAT32_TOL * max(scale, 1.0)) if math.isfinite(own) else 0.0  # (an overflow proves nothing)
    if diff <= own:
        report.notes.append(f"tolerance raised to {own / max(scale, 1.0):.3g} of the output scale, the original "
                            f"model's own error in float32 (against float64): the rewrite moved the outputs "
                            f"{diff / max(scale, 1.0):.3g}, which float32 cannot tell from the model")
        report.tolerance = own


def same_model(a: nn.Module, b: nn.Module) -> bool:
    """Do ``a`` and ``b`` have the same modules (paths, classes and plain settings such as ``eps`` or
    ``stride``) and equal state, tensor for tensor?"""
    if [(n, type(m), _settings(m)) for n, m in a.named_modules()] != [
            (n, type(m), _settings(m)) for n, m in b.named_modules()]:
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def _settings(m: nn.Module) -> dict:
    return {k: v for k, v in vars(m).items() if isinstance(v, (bool, int, float, str, tuple, type(None)))}


def _adopt(original: nn.Module, rewritten: nn.Module) -> None:
    """Make ``original`` the rewritten model in place: its children, own parameters and buffers become
    the rewritten model's (a rewrite swaps modules by name and never removes one)."""
    for name, child in rewritten.named_children():
        setattr(original, name, child)
    for name, p in rewritten.named_parameters(recurse=False):
        setattr(original, name, p)
    for name, b in rewritten.named_buffers(recurse=False):
        setattr(original, name, b)


def keep_frozen(original: nn.Module, rewritten: nn.Module) -> None:
    """Each parameter of ``rewritten`` wants a gradient as the original's did: the one of the same name, else
    those under its nearest enclosing module (wanted where any did): a frozen layer stays frozen."""
    old = dict(original.named_parameters(remove_duplicate=False))
    if all(p.requires_grad for p in old.values()):
        return  # (nothing frozen: the new parameters' default)
    for name, p in rewritten.named_parameters(remove_duplicate=False):
        prefix = name
        while name not in old and prefix:
            prefix = prefix.rpartition(".")[0]
            near = [q for n, q in old.items() if not prefix or n.startswith(prefix + ".")]
            if near:
                p.requires_grad_(any(q.requires_grad for q in near))
                break
        if name in old:
            p.requires_grad_(old[name].requires_grad)


def keep_modes(original: nn.Module, rewritten: nn.Module) -> None:
    """Each module of ``rewritten`` in the mode (train / eval) of the original's of the same name, else of its
    nearest enclosing one: a new layer of an eval model is in eval mode (``nn.Conv2d`` starts in training)."""
    old = dict(original.named_modules())
    for name, m in rewritten.named_modules():
        prefix = name
        while prefix not in old:
            prefix = prefix.rpartition(".")[0]
        m.training = old[prefix].training


def untied(original: nn.Module, rewritten: nn.Module) -> list:
    """Notes naming each parameter the original shares between places (a tied embedding and head) that the
    rewritten model holds as separate copies (equal values: training would now move them apart)."""
    places = {}
    for name, p in original.named_parameters(remove_duplicate=False):
        places.setdefault(id(p), []).append(name)
    new = dict(rewritten.named_parameters(remove_duplicate=False))
    notes = []
    for names in (n for n in places.values() if len(n) > 1):
        kept = [n for n in names if n in new]
        if len({id(new[n]) for n in kept}) > 1 or 0 < len(kept) < len(names):
            notes.append(f"{' and '.join(names)} were one shared parameter; the rewritten model holds each as its "
                         "own copy (equal values, no longer tied: training would move them apart)")
    return notes
