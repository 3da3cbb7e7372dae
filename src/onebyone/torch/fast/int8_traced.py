"""``Traced``: torch's int8 form (an FX graph of quantized layers) run as a TorchScript trace per input
signature: the same kernels on the same packed weights in the same order, without the Python of each module
call between them (about 20 us a layer: on a 2-core Xeon at batch 8, squeezenet1_1's int8 call 8.3 -> 7.3 ms,
nin_cifar's 3.0 -> 2.8). A trace is kept only where its output equals the graph's, to the bit, on the call
that made it and on other values of the same shapes, and where tracing read no tensor's value into Python;
elsewhere, and where ``torch.jit`` refuses or is gone, the graph runs.
"""
from __future__ import annotations

import threading
import warnings

import torch
from torch import nn

from ..capture import watched
from . import private

TRACES = 8  # input signatures traced; calls of any other run the graph
_LOCK = threading.Lock()  # one trace made at a time


class Traced(nn.Module):
    """``graph`` (an int8 form whose forward is straight-line tensor code: FX's), each call whose arguments are
    all tensors run by the trace made on the first call with their shapes, strides, dtypes and devices (at most
    ``TRACES`` of them); other calls, calls in training mode, under autograd or while tracing, compiling or
    watched (the analyzer), run ``graph``. Its state is ``graph``'s (under ``graph.``); loading a state_dict,
    ``.to()``, a copy or pickling drop the traces, made again from the layers as they are then."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph
        self.train(graph.training)
        self.forget()
        self.register_load_state_dict_post_hook(lambda m, _: m.forget())

    def forget(self) -> None:
        """Drop every trace (after the graph's layers change: repacked weights, new values)."""
        self.__dict__["_traces"] = {}

    def forward(self, *args, **kwargs):
        if (kwargs or not args or self.training or not all(isinstance(a, torch.Tensor) for a in args)
                or torch.is_grad_enabled() and any(a.requires_grad for a in args) or private.tracing() or watched()):
            return self.graph(*args, **kwargs)
        key = tuple((a.shape, a.stride(), a.dtype, a.device) for a in args)
        traces = self.__dict__["_traces"]
        if key in traces:
            return (traces[key] or self.graph)(*args)
        with _LOCK:
            out = self.graph(*args)
            if len(traces) < TRACES:
                traces[key] = _trace(self.graph, args, out)
        return out

    def _apply(self, fn, recurse=True):
        self.forget()
        return super()._apply(fn, recurse)

    def __getstate__(self):
        return {**self.__dict__, "_traces": {}}


def _trace(graph: nn.Module, args: tuple, want):
    """``graph`` traced on ``args``, or None where tracing fails, where torch warns that the trace may be wrong
    (a tensor's value read into Python: a branch or a number frozen into it), or where its output differs from
    the graph's to the bit, or in structure: on ``args`` (``want``; twice, as TorchScript optimizes after a
    first run) and on other values of the same signature (each tensor reversed along its last axis)."""
    try:
        with warnings.catch_warnings(record=True) as said, torch.no_grad():
            warnings.simplefilter("always")  # kept from the caller: the deprecation notice, TracerWarnings
            traced = torch.jit.trace(graph, args, check_trace=False)
            if any(issubclass(w.category, torch.jit.TracerWarning) for w in said):
                return None
            other = tuple(a.flip(-1) if a.dim() else a for a in args)
            same = all(_same(traced(*args), want) for _ in range(2)) and _same(traced(*other), graph(*other))
            return traced if same else None
    except Exception:  # noqa: BLE001 - torch.jit refusing the graph (or gone): the graph runs
        return None


def _same(got, want) -> bool:
    if isinstance(want, torch.Tensor):
        return (isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
                and torch.equal(got.nan_to_num(), want.nan_to_num()))
    if type(want) in (tuple, list):
        return type(got) is type(want) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return False
