"""``Traced``: torch's int8 form (an FX graph of quantized layers) run as a TorchScript trace per input
signature: the same kernels on the same packed weights in the same order, called from C++ instead of through
each layer's Python. A trace runs only while the graph's layers are those it was made from.
"""
from __future__ import annotations

import copy
import pickle
import threading
import warnings

import torch
from torch import nn

from ...errors import OneByOneError, reason
from ..capture import watched
from . import private
from .engine import Stamp

TRACES = 8  # input signatures traced; calls of any other run the graph


class Traced(nn.Module):
    """``graph_module`` (an int8 form whose forward is straight-line tensor code: FX's), each call whose
    arguments are all tensors run by the trace made on the first call with their shapes, strides, dtypes and
    devices (at most ``TRACES`` of them; making one runs the graph about five times). A trace is kept only
    where tracing read no tensor's value into Python and the trace gives the graph's outputs to the bit, in
    the same structure, on that call's inputs and on other values of their shapes; it runs only while the
    graph is what it was made from (``engine.Stamp``: its modules, tensors, packed weights and plain
    attributes such as each layer's output scale; else the traces are made again). Calls in training mode,
    under autograd, while tracing, compiling or watched (the analyzer), and of other signatures run
    ``graph_module``. Its state is the graph's, under ``graph_module.``; a copy or pickling carries no trace.
    Pickling is refused, naming the way to save it, where this torch could not load the graph back."""

    def __init__(self, graph_module: nn.Module):
        super().__init__()
        self.graph_module = graph_module
        self.train(graph_module.training)
        self.forget()
        self.register_load_state_dict_post_hook(_forget_after_load)

    def forget(self) -> None:
        """Drop every trace."""
        self.__dict__["_traces"], self.__dict__["_made_from"] = {}, None
        self.__dict__.setdefault("_lock", threading.Lock())

    def forward(self, *args, **kwargs):
        graph = self.graph_module
        if (kwargs or not args or self.training or not all(isinstance(a, torch.Tensor) for a in args)
                or torch.is_grad_enabled() and any(a.requires_grad for a in args) or private.tracing() or watched()):
            return graph(*args, **kwargs)
        if self._made_from is not None and not self._made_from.holds(graph):  # the graph edited since
            self.forget()
        key, traces = tuple((a.shape, a.stride(), a.dtype, a.device) for a in args), self._traces
        if key in traces:
            return (traces[key] or graph)(*args)
        out = graph(*args)
        if len(traces) < TRACES:
            with self._lock:  # (one trace made at a time for this form)
                if key not in traces and len(traces) < TRACES:
                    self.__dict__["_made_from"] = self._made_from or Stamp(graph)
                    traces[key] = _trace(graph, args, out)
        return out

    def _apply(self, fn, recurse=True):
        self.forget()
        return super()._apply(fn, recurse)

    def __getstate__(self):
        _unpickles(self.graph_module)
        return self._state()

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self._state(), memo))
        new.forget()
        return new

    def _state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_traces", "_made_from", "_lock")}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.forget()


def _unpickles(graph: nn.Module) -> None:
    """Refuse to pickle a graph that would not load back (torch's own unpickling of an FX graph of quantized
    layers fails in some versions: a checkpoint written so could never be read)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torch's notices on pickling storages: the caller's pickle says them)
            pickle.loads(pickle.dumps(graph))
    except Exception as e:  # noqa: BLE001 - whatever torch raises, the file would be unreadable
        raise OneByOneError(f"this torch cannot load its int8 graph back from a pickle ({reason(e)}), so the "
                            "form is not pickled whole: save its state_dict() "
                            "(torch.save(model.state_dict(), path)) and load it into the form optimize makes "
                            "from the same model") from None


def _forget_after_load(module: Traced, incompatible_keys) -> None:
    module.forget()


def _trace(graph: nn.Module, args: tuple, want):
    """``graph`` traced on ``args``, or None where tracing fails, where torch warns that the trace may be wrong
    (a tensor's value read into Python: a branch or a number frozen into it), or where its outputs differ
    from the graph's (``want`` on ``args``; twice, as TorchScript optimizes after a first run) or from the
    graph's on other values of the same shapes (each floating-point tensor plus half of itself rolled)."""
    try:
        with warnings.catch_warnings(record=True) as said, torch.no_grad():
            warnings.simplefilter("always")  # kept from the caller: the deprecation notice, TracerWarnings
            traced = torch.jit.trace(graph, args, check_trace=False)
            if any(issubclass(w.category, torch.jit.TracerWarning) for w in said):
                return None
            other = tuple(a + 0.5 * a.roll(1, -1) if a.is_floating_point() and a.dim() else a for a in args)
            same = all(_same(traced(*args), want) for _ in range(2)) and _same(traced(*other), graph(*other))
            return traced if same else None
    except Exception:  # noqa: BLE001 - torch.jit refusing the graph (or gone): the graph runs
        return None


def _same(got, want) -> bool:
    """The same values to the bit (NaN where NaN), shapes, dtypes and structure."""
    if isinstance(want, torch.Tensor):
        if not (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype):
            return False
        nan = want.isnan() if want.is_floating_point() else torch.zeros_like(want, dtype=torch.bool)
        return torch.equal(got.isnan() if got.is_floating_point() else nan, nan) and torch.equal(got[~nan], want[~nan])
    if type(want) in (tuple, list):
        return type(got) is type(want) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return False
