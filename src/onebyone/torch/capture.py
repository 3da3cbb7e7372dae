"""The one place that watches a model: every other module reads a model through what this one gives.

Two views of a forward pass:
- ``watch(model, example, *listeners)``: one eager run with a hook before and after every module call and
  a torch-function mode around every torch function, each event handed to every listener in order (a
  ``Listener``: ``pre`` / ``post`` around a module call, ``before`` / ``after`` around a function). The
  analyzer (``collect``) and the rewrites' record (``record``) are listeners, and can share one run. What
  the listeners' own hooks read (a shape, say) is never reported as the model's.
- ``trace(model, example)``: torch.fx's graph, each node's output shape filled from one run on the example.
``calls_of`` is the small listener for what one-off readers need: each module's first inputs and output,
and how many times it was called. ``around_each_call`` gives a model hooks it keeps (``optimize``'s look at
its inputs), so that hooks are registered here alone.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import gc

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.overrides import TorchFunctionMode

from ..errors import OneByOneError
from .layers import ChannelBatchNorm, Pointwise
from .tensors import call, evaluating


class Listener:
    """What a ``watch`` hands events to; each method does nothing unless a listener overrides it."""

    def pre(self, m: nn.Module, args: tuple, kwargs: dict) -> None:
        """Before module ``m`` runs on ``args`` / ``kwargs``."""

    def post(self, m: nn.Module, args: tuple, kwargs: dict, out) -> None:
        """After module ``m`` returned ``out``."""

    def before(self, func, args: tuple, kwargs: dict) -> None:
        """Before the torch function ``func`` runs (outside every listener's hooks)."""

    def after(self, func, args: tuple, kwargs: dict, out) -> None:
        """After ``func`` returned ``out``; always paired with the ``before`` just before it."""


class _Functions(TorchFunctionMode):
    def __init__(self, listeners, state):
        super().__init__()
        self.listeners, self.state = listeners, state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.state["in_hook"]:  # a listener reading a shape in its hook: not the model's doing
            return func(*args, **kwargs)
        for li in self.listeners:
            li.before(func, args, kwargs)
        out = func(*args, **kwargs)
        for li in self.listeners:
            li.after(func, args, kwargs, out)
        return out


def watch(model: nn.Module, example, *listeners: Listener, modules=None):
    """Run ``model`` once on ``example`` (a tensor, a tuple of them, or a dict of keyword tensors) under
    ``no_grad``, handing every module call (of ``modules``, default all) and every torch function call to
    each listener; returns the model's output. Hooks are removed when the run ends, however it ends."""
    state = {"in_hook": False}

    def pre(m, args, kwargs):
        state["in_hook"] = True
        try:
            for li in listeners:
                li.pre(m, args, kwargs)
        finally:
            state["in_hook"] = False

    def post(m, args, kwargs, out):
        state["in_hook"] = True
        try:
            for li in listeners:
                li.post(m, args, kwargs, out)
        finally:
            state["in_hook"] = False

    hooks, token = [], _WATCHED.set(True)
    watching = [li for li in listeners if type(li).before is not Listener.before or type(li).after is not
                Listener.after]  # no mode where no listener reads functions: it would slow every torch call
    try:
        for m in (model.modules() if modules is None else modules):
            hooks += [m.register_forward_pre_hook(pre, with_kwargs=True),
                      m.register_forward_hook(post, with_kwargs=True)]
        with torch.no_grad(), _Functions(watching, state) if watching else contextlib.nullcontext():
            return call(model, example)
    finally:
        _WATCHED.reset(token)
        for h in hooks:
            h.remove()


_WATCHED = contextvars.ContextVar("onebyone_watched", default=False)  # a ``watch`` run under way (per thread)


def watched() -> bool:
    """Is a ``watch`` run (the analyzer's count, a rewrite's record) under way in this thread or task?"""
    return _WATCHED.get()


def weight_hook(m: nn.Module) -> str:
    """Why ``m``'s weight is not what it holds, where an old-style ``torch.nn.utils.weight_norm`` or
    ``spectral_norm`` hook recomputes it before each call; "" where none does."""
    for h in m._forward_pre_hooks.values():
        kind = {"WeightNorm": "weight_norm", "SpectralNorm": "spectral_norm"}.get(type(h).__name__)
        if kind is not None and type(h).__module__.startswith("torch.nn.utils"):
            return (f"its {getattr(h, 'name', 'weight')} is recomputed before each call by torch.nn.utils.{kind}'s "
                    f"hook: call torch.nn.utils.remove_{kind}(layer) first (the weight stays as computed)")
    return ""


def around_each_call(model: nn.Module, before=None, after=None) -> nn.Module:
    """``model`` with ``before(module, args, kwargs)`` called at the start of each of its calls and
    ``after(module, args, kwargs, output)`` at the end, also of a call that raises (what it returns, if not
    None, is the call's output); kept with the model. Hooks the model holds already are not added again."""
    if before is not None and before not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(before, with_kwargs=True)
    if after is not None and after not in model._forward_hooks.values():
        model.register_forward_hook(after, with_kwargs=True, always_call=True)
    return model


class _Calls(Listener):
    def __init__(self):
        self.first, self.counts = {}, {}

    def post(self, m, args, kwargs, out):
        self.first.setdefault(m, (args, kwargs, out))
        self.counts[m] = self.counts.get(m, 0) + 1


def calls_of(model: nn.Module, example, modules) -> tuple[dict, dict]:
    """({module: (args, kwargs, output) of its first call}, {module: calls}) for each of ``modules`` that ran
    on ``example`` (one ``watch``)."""
    c = _Calls()
    watch(model, example, c, modules=list(modules))
    return c.first, c.counts


# --- torch.fx ---------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return (isinstance(m, (Pointwise, ChannelBatchNorm)) or getattr(m, "fx_leaf", False)
                or super().is_leaf_module(m, qualname))


def trace(model: nn.Module, example=None) -> fx.GraphModule:
    """Trace ``model`` (its submodules kept by reference) and record each node's output shape
    when an ``example`` is given (a tensor, a tuple of them, or a dict keyed by ``forward``'s argument names)."""
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - fx raises many kinds
        raise OneByOneError(f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}") from e
    if example is not None:
        args = example if isinstance(example, (tuple, list)) else (example,)
        if isinstance(example, dict):
            names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
            if set(names) - set(example):
                raise OneByOneError(f"the traced graph of {type(model).__name__} takes {names}; "
                                    f"example has {sorted(example)}")
            args = [example[n] for n in names]
        try:
            with torch.no_grad(), evaluating(gm):  # (a training BatchNorm would update its statistics)
                ShapeProp(gm).propagate(*args)
        except Exception as e:  # noqa: BLE001 - a graph that runs differently from the model (fx's limits)
            raise OneByOneError(f"torch.fx traced {type(model).__name__}, but its graph does not run on the example "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    return gm


def gc_paused(fn):
    """``fn`` with Python's cyclic garbage collector paused while it runs (and restored as it was after).
    Reading and copying a model creates and drops tens of thousands of small objects; each automatic
    collection then walks every object the process holds (a few hundred thousand once torch and timm are
    imported): on MobileOne-S0 a fold spent a fifth of its time there. Nothing is leaked: the cycles made
    meanwhile are collected by the next collection after the call."""
    @functools.wraps(fn)
    def paused(*args, **kwargs):
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return paused
