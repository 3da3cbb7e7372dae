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
  are kept in float32, where that measures better; each layer then runs fbgemm's kernels or oneDNN's,
  whichever ran it faster (``int8_kernels``, on a CPU with VNNI); the graph runs as a TorchScript trace per
  input signature where that gives its output to the bit (``int8_traced``); on a model torch.fx cannot trace,
  ``torch int8 (x86, layer by layer)``: each layer an ``Int8Layer``;
- ``onebyone int8 (fused chains)``: each chain of 1x1 convs (a SharedMLP, a run in an ``nn.Sequential``) an
  ``Int8PointwiseChain`` (oneDNN's int8 products tile by tile, 8 bits between layers), the other layers
  float32: for models whose work is in such chains (PointNet); ``... and Linear runs``, where a model has
  them (a classifier head), the runs of ``nn.Linear`` in int8 chains too;
- ``onnxruntime int8 (QDQ)``: the float model's ONNX export quantized by ``onnxruntime.quantization.
  quantize_static`` (QDQ, per-channel weights) on the same calibration data;
- ``OpenVINO int8 (NNCF)``: the same export quantized by ``nncf.quantize`` and compiled by OpenVINO.

Each form is checked against the float32 model on held-out calibration batches (the last quarter, at least
one; all of them where there is one batch, said in the report) and on a few of those its ranges were
observed on: its error is the largest. The form kept is checked again on the first call with each input of
another size per sample (``int8_kept``): past ``dtype_tol`` there, the float model runs such inputs, warned.
"""
from __future__ import annotations

import contextlib
import io
import math
import sys
import warnings

import torch
from torch import nn

from ...errors import OneByOneError, reason
from ..rewrite_report import OptimizeReport, RewriteReport, largest_finite, weight_rounding
from ..tensors import arguments, batch_size, call, copy_model, describe, example_values, outputs, samples_apart
from .exported import Exported
from .int8_chain import int8_chains
from .int8_engines import OnnxRuntimeInt8, OpenVinoInt8
from .int8_kept import ShapeChecked, per_sample
from .int8_kernels import fastest_kernels
from .int8_torch import (
    NanSamples,
    error,
    expected,
    layer_errors,
    plain_layers,
    quantizable,
    torch_int8,
    torch_int8_layers,
)
from .int8_traced import Traced
from .swaps import fuse_chains
from .timing import time_models

CHAINS, CHAINS_AND_LINEARS = "onebyone int8 (fused chains)", "onebyone int8 (fused chains and Linear runs)"
ACCURACY_TOL = 0.5  # points of top-1 accuracy int8 may lose before float32 is kept
FEW_SAMPLES = 16  # held-out samples below which the report says the errors measured are a small sample's
FALLBACK = (1, 2, 4)  # how many of the most sensitive layers torch's form tries in float32, in turn, past tolerance


def calibration_batches(calibration, example) -> list:
    """The calibration inputs as a list, each checked against ``example``: the same structure, and per
    tensor the same dtype and per-sample shape, finite. None: the example alone, with a warning."""
    if calibration is None:
        warnings.warn("optimize(dtype=torch.int8) without calibration data: activation ranges come from the "
                      "example alone; pass calibration=[batches of real inputs] for ranges that hold", stacklevel=6)
        return [example]
    if isinstance(calibration, (torch.Tensor, dict, str, bytes)) or not hasattr(calibration, "__iter__"):
        raise OneByOneError(f"calibration must be an iterable of inputs like the example (a list of batches), "
                            f"got {type(calibration).__name__}")
    batches, want = list(calibration), example_values(example)
    if not batches:
        used = " (an iterator yields its batches once: was it used up by a call before? pass a list)" if (
            iter(calibration) is calibration) else ""
        raise OneByOneError(f"calibration is empty{used}: give a list of input batches shaped like the example, "
                            f"{describe(example)}")
    for i, b in enumerate(batches):
        b = batches[i] = _keyed(b, example, i)
        got = example_values(b)
        differ = _difference(got, want)
        if differ:
            raise OneByOneError(f"calibration batch {i} is {describe(b)}; expected inputs like the example, "
                                f"{describe(example)} (any batch size): {differ}")
        if any(isinstance(g, torch.Tensor) and g.dim() and g.shape[0] == 0 for g in got):
            raise OneByOneError(f"calibration batch {i} holds no samples ({describe(b)}): give batches of one or "
                                "more inputs")
        if any(isinstance(g, torch.Tensor) and g.is_floating_point() and not bool(torch.isfinite(g).all())
               for g in got):
            raise OneByOneError(f"calibration batch {i} holds NaN or infinite values: ranges observed on it would "
                                "be meaningless")
    columns = zip(*(example_values(b) for b in batches))  # each input across the batches
    if all(len({float(t.min()) for t in ts} | {float(t.max()) for t in ts}) == 1 for ts in columns
           if all(isinstance(t, torch.Tensor) and t.numel() for t in ts)):
        raise OneByOneError("every calibration batch is constant (each of its tensors one value throughout, such "
                            "as zeros): ranges observed on them say nothing of real inputs, and the int8 forms "
                            "could not be checked on them; give batches of real inputs")
    return batches


def _keyed(batch, example, i: int):
    """``batch`` with its keys in the example's order where the example is a dict of keyword inputs (the
    engines' calibration feeds follow that order); a OneByOneError where the keys differ."""
    if not isinstance(example, dict) and not isinstance(batch, dict):
        return batch
    if not isinstance(batch, dict) or not isinstance(example, dict) or set(batch) != set(example):
        raise OneByOneError(f"calibration batch {i} is {_form(batch)}; the example is {_form(example)}: give "
                            "each batch in the example's form")
    return {k: batch[k] for k in example}


def _form(v) -> str:
    return f"a dict with keys {sorted(v)}" if isinstance(v, dict) else f"a {type(v).__name__}"


def _difference(got: list, want: list) -> str:
    """How a calibration batch's values (``example_values``) differ from the example's; "" where they match."""
    if len(got) != len(want):
        return (f"{len(got)} values where the example has {len(want)}" + (
            "; (inputs, labels) pairs from a DataLoader? pass the inputs alone: [x for x, _ in loader]"
            if len(got) > len(want) else ""))
    for j, (g, w) in enumerate(zip(got, want)):
        if isinstance(g, torch.Tensor) != isinstance(w, torch.Tensor):
            return f"value {j} is a {type(g).__name__}, the example's a {type(w).__name__}"
        if isinstance(g, torch.Tensor) and g.dtype != w.dtype:
            return f"tensor {j} is {g.dtype}, the example's {w.dtype}"
        if isinstance(g, torch.Tensor) and g.shape[1:] != w.shape[1:]:
            return f"tensor {j} holds samples of shape {tuple(g.shape[1:])}, the example's {tuple(w.shape[1:])}"
    return ""


def split(batches: list) -> tuple[list, list]:
    """(batches to observe ranges on, held-out batches to check on): the last quarter (at least one) held
    out; with a single batch, it serves both."""
    if len(batches) < 2:
        return batches, batches
    k = max(1, len(batches) // 4)
    return batches[:-k], batches[-k:]


def chains_int8(plain: nn.Module, x, observe: list, linear: bool = False) -> tuple:
    """(a copy of ``plain`` with each chain of 1x1 convs (each SharedMLP, each run of two or more in an
    ``nn.Sequential``; with ``linear``, each run of ``nn.Linear`` too) an ``Int8PointwiseChain``, every other
    layer left in float32 (their names)): the form for models whose work is in such chains (PointNet)."""
    work = int8_chains(fuse_chains(copy_model(plain), x, RewriteReport("int8 chains"), linear), observe)
    return work.eval(), tuple(quantizable(work))


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
    evaluate.in_points = True  # (a score under 1 point is a score, not a fraction)
    return evaluate


CAT_NOTICE = "All inputs of this cat operator must share the same quantization parameters"  # torch's, per cat


def int8(work: nn.Module, folded: nn.Module, x, report: OptimizeReport, given: nn.Module, calibration,
         tol: float, accuracy_tol: float, evaluate=None, labels=None, probed: bool = False) -> nn.Module:
    """The fastest int8 form of ``folded`` (the exactly rewritten float model) within ``tol`` of the output
    scale against ``given`` on held-out calibration batches and, with ``evaluate`` (model -> accuracy in
    points) or ``labels``, losing at most ``accuracy_tol`` points; ``work`` (the float32 rewrite) where no
    form qualifies or none runs faster. ``report.precision`` gives each form's error, time and accuracy, and
    for each layer (``layers``) the precision it runs in and the output error with that layer alone in int8.
    Each form's error on the example ``x`` (unless ``probed``: made up, not given) where no calibration batch is
    it, beside: the form kept past ``tol`` there is said in a warning (the calibration may not be like it)."""
    with warnings.catch_warnings():  # torch's notice at each quantized cat of each run (a dozen a call on
        warnings.filterwarnings("ignore", message=CAT_NOTICE)  # dla34): the requantizing is in each form's error
        kept = _int8(work, folded, x, report, given, calibration, tol, accuracy_tol, evaluate, labels, probed)
    _example_said(report, tol)
    return kept


def _int8(work: nn.Module, folded: nn.Module, x, report: OptimizeReport, given: nn.Module, calibration,
          tol: float, accuracy_tol: float, evaluate=None, labels=None, probed: bool = False) -> nn.Module:
    """``int8``'s work."""
    batches = calibration_batches(calibration, x)
    (observe, held), plain = split(batches), plain_layers(folded, x)
    layers = quantizable(plain)
    samples = sum(batch_size(b) for b in held)
    precision = report.precision = {"dtype": "int8", "tolerance": tol, "accuracy_tol": accuracy_tol,
                                    "calibration_batches": len(batches), "held_out": len(held),
                                    "held_out_samples": samples, "forms": {}}
    if held is observe:
        report.notes.append("int8: one calibration batch, used both to observe ranges and to check: give more")
    elif samples < FEW_SAMPLES:
        report.notes.append(f"int8: each form's error was checked on {samples} held-out samples (the last quarter "
                            "of the calibration batches) beside the observed ones: on other inputs it can be "
                            f"larger; give {FEW_SAMPLES} or more held-out samples for a firmer figure")
    if not layers:
        why = "int8: nothing to quantize (no conv or Linear): float32 kept"
        report.notes.append(why)
        warnings.warn(f"optimize: {why}", stacklevel=5)  # (the caller of optimize)
        return work
    if evaluate is None and labels is not None:
        evaluate = top1(labels, held)
    want = expected(given, held)
    precision["layers"] = _layer_rows(plain, observe, held, layers, report)
    alone = {n: r["int8_alone_error"] for n, r in precision["layers"].items()}
    forms = _worst(_forms(plain, x, observe, held, want, tol, report, _by_sensitivity(layers, alone)), given, x,
                   observe, held)
    on_example = {} if probed or any(b is x for b in batches) else _example_errors(forms, given, x)
    for label, (form, err, floats) in forms.items():
        precision["forms"][label] = {"relative_error": err, "float32_layers": list(floats)} | (
            {"example_error": on_example[label]} if label in on_example else {})
    fine = {k: f for k, (f, e, _) in forms.items() if e <= tol}
    for k in set(forms) - set(fine):
        report.skipped.append((k, f"its int8 error {forms[k][1]:.3g} of the output scale is over dtype_tol {tol:g}"))
    if evaluate is not None:
        fine = _accurate(fine, work, evaluate, accuracy_tol, report)
    if not fine:
        report.notes += [_forms_line(precision)] if forms else []
        report.notes.append("int8: no form within the tolerances: float32 kept" if forms else
                            "int8: no int8 form could be made (report.skipped says why, for each): float32 kept")
        return work
    t, among = _timed(work, fine, x)
    for k, v in t.items():
        (precision["forms"][k] if k in precision["forms"] else precision.setdefault("float32", {}))["ms"] = v * 1e3
    report.notes.append(_forms_line(precision))
    best = min(among, key=t.get)
    if t[best] >= t["float32"]:
        report.notes.append(f"int8 ran no faster than float32 on this CPU ({t[best] * 1e3:.3g} against "
                            f"{t['float32'] * 1e3:.3g} ms a call): float32 kept")
        return work
    checked = {"reference": folded.requires_grad_(False).eval(), "tol": max(tol, weight_rounding(plain)),
               "measured": (per_sample(*arguments(x)),), "scale": max(largest_finite(t) for w in want for t in w)}
    return _kept(best, fine[best], forms[best], layers, t, report, checked, x)


CLOSE = 1.15  # int8 forms within this of the fastest's time are timed again, on their own, at more rounds


def _timed(work: nn.Module, fine: dict, x) -> tuple[dict, list]:
    """({label: seconds a call} of float32 (``work``) and each int8 form of ``fine``, the labels of the int8
    forms the choice is among). All are timed side by side; where several forms ran within ``CLOSE`` of the
    fastest, those and float32 are timed again on their own (medians of up to 9 rounds): their times replace
    the first ones and the choice is among them alone (the others were ``CLOSE`` behind)."""
    t = time_models({"float32": work, **fine}, x)
    lead = min(t[k] for k in fine)
    close = [k for k in fine if t[k] <= CLOSE * lead]
    if len(close) > 1:
        t |= time_models({"float32": work, **{k: fine[k] for k in close}}, x, rounds=9, budget=2.0)
    return t, close


def _kept(best: str, form, made: tuple, layers: list, t: dict, report, checked: dict, x) -> nn.Module:
    """``form`` (``best``, as ``_forms`` ``made`` it), the int8 form kept: said in ``report``, each layer's
    precision set; each new input shape checked within ``checked["tol"]``: an engine's form against the model
    it exports (it was made with no bound), ours against the float model it quantizes on each per-sample shape
    other than the calibration's (``ShapeChecked``, given ``checked``)."""
    precision, floats = report.precision, made[2]
    precision["kept"] = best
    for n, row in precision["layers"].items():
        row["precision"] = "float32" if n in floats else "int8"
    report.changed.append(f"{best} kept (error {made[1]:.3g} of the output scale): {t[best] * 1e3:.3g} ms a call "
                          f"against float32's {t['float32'] * 1e3:.3g}; {len(layers) - len(floats)} of {len(layers)} "
                          "layers in int8" + (f" ({', '.join(floats)} kept in float32)" if floats else ""))
    report.layers = []  # the float kernels chosen are not what runs
    if isinstance(form, Exported):  # an engine's form quantizes again for each new input shape: checked then too
        form.tol = checked["tol"]
        return form
    if best.startswith("torch int8"):
        return NanSamples(form, precision.get("torch_kernels") if best == "torch int8 (x86)" else None, **checked,
                          apart=samples_apart(checked["reference"], x))
    return ShapeChecked(form, **checked)


WORST_BATCHES = 4  # observed batches each form's error is also measured on (beside the held-out ones)


def _worst(forms: dict, given: nn.Module, x, observe: list, held: list) -> dict:
    """``forms`` with each error the largest over the held-out batches and up to ``WORST_BATCHES`` observed ones
    (a held-out batch of a few samples can miss a form's worst by half: timm's resnet18 read 0.041 there and
    0.045 - 0.084 on most batches). An engine's form is measured on the batches shaped as one it has run (it
    exports anew for another shape); a form failing on one is infinitely off."""
    if held is observe:
        return forms
    ran = {_shapes(b) for b in [x, *held]}
    extra = observe[:WORST_BATCHES]
    want = expected(given, extra)  # (once for every form)
    out = {}
    for k, (f, e, floats) in forms.items():
        use = [i for i, b in enumerate(extra) if not isinstance(f, Exported) or _shapes(b) in ran]
        worst = _error_or_inf(f, [want[i] for i in use], [extra[i] for i in use]) if use else 0.0
        out[k] = (f, max(e, worst), floats)
    return out


def _example_errors(forms: dict, given: nn.Module, x) -> dict:
    """{label: each form's error on the example alone} (a form failing on it: infinitely off)."""
    want = expected(given, [x])
    return {k: _error_or_inf(f, want, [x]) for k, (f, _, _) in forms.items()}


def _error_or_inf(form, want: list, batches: list) -> float:
    """``error`` of ``form`` on ``batches``; infinitely off where it fails on them (measured, never raised)."""
    try:
        return error(form, want, batches)
    except Exception:  # noqa: BLE001 - a form that fails on these inputs is not kept
        return math.inf


def _example_said(report, tol: float) -> None:
    """A warning and a note where the int8 form kept errs past ``tol`` on the example (its calibration batches
    may not be like the inputs the caller gave as the example: a tenth of their scale, other data)."""
    p = report.precision
    kept = p.get("forms", {}).get(p.get("kept"), {})
    if kept.get("example_error", 0.0) > tol:
        said = (f"int8: {p['kept']} moves the example's outputs by {kept['example_error']:.3g} of their scale (> "
                f"dtype_tol {tol:g}), against {kept['relative_error']:.3g} on the calibration batches: are they "
                "like the inputs the model will see? Calibrate on such inputs")
        report.notes.append(said)
        warnings.warn(f"optimize: {said}", stacklevel=5)


def _shapes(batch) -> tuple:
    return tuple(tuple(t.shape) for t in example_values(batch) if isinstance(t, torch.Tensor))


def _forms_line(precision: dict) -> str:
    """A note: each int8 form's error on the calibration batches, its ms a call and its accuracy where measured."""
    rows = [f"{k} {f['relative_error']:.3g}" + (f", {f['ms']:.3g} ms" if f.get("ms") is not None else "")
            + (f", top-1 {f['accuracy']:.2f}" if "accuracy" in f else "") for k, f in precision["forms"].items()]
    top1 = f" (float32: top-1 {precision['float32_accuracy']:.2f})" if "float32_accuracy" in precision else ""
    return "int8 forms, largest error of the output scale on the calibration batches: " + "; ".join(rows) + top1


def _accurate(fine: dict, work, evaluate, accuracy_tol: float, report) -> dict:
    """The forms of ``fine`` whose accuracy (``evaluate``) is within ``accuracy_tol`` points of float32's (``work``);
    each measured in ``report.precision``, each left out named in ``report.skipped``."""
    precision = report.precision
    base = precision["float32_accuracy"] = _accuracy(evaluate, work, "the float32 model")
    kept = {}
    for k, form in fine.items():
        acc = precision["forms"][k]["accuracy"] = _accuracy(evaluate, form, k)
        if base - acc > accuracy_tol:
            report.skipped.append((k, f"top-1 {acc:.2f} against float32's {base:.2f}: loses more than "
                                      f"accuracy_tol {accuracy_tol:g} points"))
        else:
            kept[k] = form
    return kept


def _accuracy(evaluate, model, who: str) -> float:
    """``evaluate(model)`` as a number of points (0 - 100), or a OneByOneError naming what it gave instead; a
    fraction (every value in [0, 1] would pass ``accuracy_tol`` in points unseen) is refused too."""
    try:
        got = evaluate(model)
    except Exception as e:  # noqa: BLE001 - the user's function failed: named, with the form it ran on
        raise OneByOneError(f"evaluate failed on {who}: {reason(e)}") from e
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)) or not 0 <= got <= 100:
        raise OneByOneError(f"evaluate must return the top-1 accuracy in points (a number from 0 to 100), got {got!r} "
                            f"on {who}")
    if 0 < got < 1 and not getattr(evaluate, "in_points", False):
        raise OneByOneError(f"evaluate returned {got!r} on {who}: a fraction? it must return points (0 - 100), as "
                            "accuracy_tol is in points: multiply by 100")
    return float(got)


def _layer_rows(plain, observe, held, layers, report) -> dict:
    """{layer: its precision (float32 until an int8 form is kept) and its error alone in int8 (None where not
    measured: a measurement that fails is named in the notes; the forms stand on their own)}."""
    try:
        alone = layer_errors(plain, observe, held, layers)
    except Exception as e:  # noqa: BLE001 - named, not raised
        alone = {}
        report.notes.append(f"int8: each layer's error alone was not measured: {reason(e)}")
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
    _torch_forms(forms, plain, x, observe, held, want, tol, report, layers)
    made = set()  # the float32 layers each chain form left: a second form with no fewer is not made
    for label, linear in ((CHAINS, False), (CHAINS_AND_LINEARS, True)):
        try:  # each chain of 1x1 convs one int8 kernel call per layer, 8-bit between layers
            q, floats = chains_int8(plain, x, observe, linear)
            if floats not in made:
                made.add(floats)
                forms[label] = (q, error(q, want, held), floats)
        except Exception as e:  # noqa: BLE001 - no chain, or one oneDNN refuses: named, not raised
            if (CHAINS, reason(e)) not in report.skipped:  # the second form's reason, where not the first's again
                report.skipped.append((label, reason(e)))
    exports = {}  # one ONNX export for both engines
    for engine in (OnnxRuntimeInt8, OpenVinoInt8):
        try:
            form = engine(plain, observe, tol=math.inf, exports=exports)
            with torch.no_grad():
                form.prepare(x, call(plain, x))
            forms[engine.engine] = (form, error(form, want, held), ())
        except Exception as e:  # noqa: BLE001 - not installed, an export or a quantization that fails: named
            report.skipped.append((engine.engine, reason(e)))
    return forms


def _torch_forms(forms: dict, plain, x, observe, held, want, tol, report, layers) -> None:
    """torch's int8 form into ``forms`` (as ``_forms`` has them); where FX cannot trace or run the model, the
    layer-by-layer form; each failure named in ``report.skipped``."""
    try:
        with _fx_quiet():
            q, choice = torch_int8(plain, x, observe)
            err, floats = error(q, want, held), ()
            report.precision |= {"observers": choice, "all_int8_error": err}  # every layer int8, before fallbacks
            for k in FALLBACK:  # past the tolerance: the layers whose int8 error alone is largest in float32
                if err <= tol or k >= len(layers):
                    break
                keep = tuple(layers[:k])
                q2, _ = torch_int8(plain, x, observe, keep_float=keep, given=choice["bounds"])
                err2 = error(q2, want, held)
                if err2 < err:
                    q, err, floats = q2, err2, keep
            err = _kernels_chosen(q, x, want, held, report, err)
            forms["torch int8 (x86)"] = (Traced(q), err, floats)  # (the same kernels, less Python: timed so)
    except Exception as e:  # noqa: BLE001 - FX tracing and the quantizer raise many kinds: named, not raised
        report.skipped.append(("torch int8 (x86)", reason(e)))
        try:  # no graph: each layer quantizes its input, runs int8 and dequantizes on its own
            q, floats = torch_int8_layers(plain, observe, layers)
            forms["torch int8 (x86, layer by layer)"] = (q, error(q, want, held), floats)
        except Exception as e:  # noqa: BLE001 - a layer torch's quantized kernels refuse: named, not raised
            report.skipped.append(("torch int8 (x86, layer by layer)", reason(e)))


def _kernels_chosen(q, x, want, held, report, err: float) -> float:
    """Each layer of torch's form ``q`` on fbgemm's or oneDNN's kernels, whichever ran it faster
    (``report.precision["torch_kernels"]``); its error on ``held`` again where that changed anything. A choice
    that fails is named in the notes and leaves the form as torch packed it."""
    try:
        kernels = fastest_kernels(q, x)
    except Exception as e:  # noqa: BLE001 - a kernel refusing a layer: the form still stands
        report.notes.append(f"int8: torch's kernels were not chosen by timing: {reason(e)}")
        return err
    if kernels:
        report.precision["torch_kernels"] = kernels
        err = error(q, want, held)
    return err


@contextlib.contextmanager
def _fx_quiet():
    """torch.fx prints the generated code around an error to stderr before raising it: where the form fails
    (the error named in ``report.skipped``) that print is dropped; otherwise what was written passes on."""
    written = io.StringIO()
    with contextlib.redirect_stderr(written):
        yield
    if written.getvalue() and sys.stderr is not None:
        sys.stderr.write(written.getvalue())
