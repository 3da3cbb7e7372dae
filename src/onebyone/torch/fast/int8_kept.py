"""The int8 form ``optimize`` keeps, checked wherever its measured error does not reach: activation ranges
observed on calibration inputs of one size hold for inputs of that size; on a map of another size (a sum
over positions, a resolution-dependent scale) they may clip. Each new per-sample shape is checked once
against the float model, as the engines' forms check each new input signature."""
from __future__ import annotations

import contextlib
import io
import sys
import warnings

import torch
from torch import nn
from torch.nn.modules import module as _module
from torch.utils._pytree import tree_leaves

from ...errors import OneByOneError, reason
from ..capture import watched
from ..rewrite_report import output_difference
from ..tensors import outputs
from . import private


def per_sample(args: tuple, kwargs: dict) -> tuple:
    """What an int8 form's error depends on in a call: each tensor's shape past the batch axis and its dtype,
    each other argument's value (a float's type alone: a timestep or a scale that changes each call would
    otherwise make every call new)."""
    return tuple((tuple(t.shape[1:]), t.dtype) if isinstance(t, torch.Tensor) else
                 float if isinstance(t, float) else repr(t) for t in tree_leaves((args, kwargs)))


CHECKED = 256  # the most per-sample shapes a form remembers its check of


class ShapeChecked(nn.Module):
    """``model``, an int8 form within ``tol`` of ``reference`` (the float model, a copy of its own) on inputs
    whose per-sample shapes are in ``measured`` (``per_sample`` keys), checked on the first call with any
    other: within ``tol`` of the output scale (at least ``scale``, the calibration outputs') it runs such
    inputs from then on; past it, a warning, and ``reference`` runs them (one float call more per new shape,
    the last ``CHECKED`` remembered; a batch of another size is the same shape). Inputs holding NaN or inf,
    or constant (a warm-up with zeros), are not checked on. Inputs ``model`` raises on at their first call
    (another channel count, float64) go to ``reference``: its error where it refuses them too, else its
    outputs and a warning. A call with an input that wants a gradient runs ``reference`` (int8 codes carry
    none), refused where there is no ``reference``.

    ``reference`` is not a submodule: the state_dict is ``model``'s, under ``model.``; ``.to()``, ``.train()``
    and the like reach it all the same, and pickling the form carries it (torch's own int8 graph may refuse
    pickling: ``Traced``). Loading a state_dict drops it (the weights loaded were not checked against it):
    every size then runs ``model``, said in a warning. With no ``reference``, ``model`` runs every input."""

    def __init__(self, model: nn.Module, reference: nn.Module | None = None, tol: float = 0.0,
                 measured: tuple = (), scale: float = 0.0):
        super().__init__()
        self.model, self.tol, self.scale = model, tol, scale
        self.__dict__["reference"] = reference  # (the float model: its weights are not this form's state)
        self.checked = dict.fromkeys(measured, True)  # per-sample key -> does ``model`` run such inputs
        self.register_load_state_dict_pre_hook(_same_weights)
        self.register_load_state_dict_post_hook(_forget_reference)

    def forward(self, *args, **kwargs):
        reference, tracing = self.__dict__.get("reference"), private.tracing()
        if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                           for t in tree_leaves((args, kwargs))):
            return _with_gradient(reference, args, kwargs)
        if reference is None or tracing or watched():  # (the analyzer counts the form alone)
            out = self.model(*args, **kwargs)
        else:
            key = per_sample(args, kwargs)
            ok = self.checked.get(key)
            out = (self._check(key, reference, args, kwargs) if ok is None else
                   (self.model if ok else reference)(*args, **kwargs))
        return out if tracing else self.marked(args, kwargs, out)

    def marked(self, args: tuple, kwargs: dict, out):
        """``out`` as the caller gets it (a subclass marks what the form cannot compute)."""
        return out

    def _apply(self, fn, recurse=True):
        reference = self.__dict__.get("reference")
        if reference is not None:  # (``.to()``, ``.double()``: the float model moves with the form)
            reference._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        reference = self.__dict__.get("reference")
        if reference is not None:
            reference.train(mode)
        return super().train(mode)

    def _check(self, key: tuple, reference: nn.Module, args: tuple, kwargs: dict):
        floats = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t.is_floating_point()]
        measured = private.inputs_finite(args, kwargs) is True and not all(bool(t.min() == t.max()) for t in floats)
        want = reference(*args, **kwargs) if measured else None  # (first: where the inputs are wrong for the
        said = io.StringIO()  # model, its own error says why)
        try:  # (fx prints a failing graph's whole traceback to stderr before raising: said only on success)
            with contextlib.redirect_stderr(said):
                got = self.model(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - the float model runs what the int8 form cannot, or says why
            failed = e
        else:
            failed = None
            sys.stderr.write(said.getvalue())
        if failed is not None:  # (out of the except: the float model's own error is raised alone)
            return self._refused(key, reference, args, kwargs, failed, want)
        if want is None:
            return got  # (NaN, or no variation in the inputs: nothing to measure on)
        diff, scale = output_difference(outputs(want), outputs(got), "the int8 form")
        scale = max(scale, self.scale, 1e-30)
        ok = self._remember(key, diff <= self.tol * scale)  # (a NaN difference is past it)
        if not ok:
            shapes = [tuple(t.shape) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            warnings.warn(f"the int8 form moved the outputs by {diff / scale:.3g} of their scale (> dtype_tol "
                          f"{self.tol:g}) on inputs of shape {', '.join(map(str, shapes))}, a size its calibration "
                          "did not cover: the float model runs inputs like these from now on (calibrate on "
                          "batches of this size for int8 there)", stacklevel=_callers_level())
        return got if ok else want

    def _remember(self, key: tuple, ok: bool) -> bool:
        if len(self.checked) >= CHECKED:  # inputs of ever new sizes (clouds of any N): the oldest answer goes
            self.checked.pop(next(iter(self.checked)))
        self.checked[key] = ok
        return ok

    def _refused(self, key: tuple, reference: nn.Module, args: tuple, kwargs: dict, failed: Exception, want=None):
        """The float model's outputs (``want``, or run now) on inputs the int8 form raised on (its error where it
        refuses them too: it names what is wrong, as the model given would), run for inputs like these from now
        on."""
        want = reference(*args, **kwargs) if want is None else want
        self._remember(key, False)
        shapes = [f"{tuple(t.shape)} {t.dtype}" for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        warnings.warn(f"the int8 form failed on inputs of {', '.join(shapes)}, which its float model runs "
                      f"({reason(failed)}): the float model runs inputs like these from now on",
                      stacklevel=_callers_level())
        return want


def _with_gradient(reference: nn.Module | None, args: tuple, kwargs: dict):
    """An input wants a gradient: int8 codes carry none, so the float model runs the call (as an engine's
    form runs its model under autograd); refused where the form no longer holds it."""
    if reference is None:
        raise OneByOneError("this int8 form runs inference only (int8 codes carry no gradient) and an input wants "
                            "one; its float model, which would run such calls, was dropped when weights were "
                            "loaded into it: call it under torch.no_grad(), or use the float model")
    return reference(*args, **kwargs)


def _same_weights(module: ShapeChecked, state_dict, prefix, *args) -> None:
    """(before a load) Refuse a state that lacks the form's own keys (torch's quantized layers raise a bare
    KeyError on one, even with strict=False); note whether it equals what the form holds (its own state_dict
    loaded back): then the float model still answers for it, and is kept."""
    mine = module.state_dict(prefix=prefix)
    missing = [k for k in mine if k not in state_dict]
    if missing:
        raise OneByOneError(f"this int8 form's state_dict holds {len(mine)} entries ({', '.join(list(mine)[:2])}, "
                            f"...) and the state given lacks {len(missing)} of them: an int8 form loads its own "
                            "state_dict only (for other weights, optimize the model they belong to)")
    try:
        same = all(_equal(v, state_dict[k]) for k, v in mine.items())
    except Exception:  # noqa: BLE001 - anything not comparable is new weights
        same = False
    module.__dict__["_same_load"] = same


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.is_quantized or b.is_quantized:
            a, b = a.dequantize() if a.is_quantized else a, b.dequantize() if b.is_quantized else b
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and bool(a == b)


def _forget_reference(module: ShapeChecked, incompatible_keys) -> None:
    if module.__dict__.pop("_same_load", False):
        return  # (its own weights back: nothing new to check)
    if module.__dict__.get("reference") is not None:
        module.__dict__["reference"] = None
        warnings.warn("the int8 form's new weights were not checked against its float model, which its state does "
                      "not hold: inputs of any size now run int8, unchecked (optimize the model these weights "
                      "came from for the check)", stacklevel=3)


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame past this file and torch's module call (whose frames a hook adds
    to): the line that called the form."""
    f, level = sys._getframe(1), 1
    while f.f_back is not None and f.f_code.co_filename in (__file__, _module.__file__):
        f, level = f.f_back, level + 1
    return level
