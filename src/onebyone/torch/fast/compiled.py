"""``Compiled``: a model under ``torch.compile`` (Inductor, with freezing), what ``optimize(compile=True)``
weighs against its eager rewrite; and ``fold_pads``, the graph pass it runs first."""
from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import fx

from . import private
from .engine import Engine


class Compiled(Engine):
    """``model`` run through ``torch.compile`` (Inductor, with freezing: weights read as constants, each conv
    fused with its activation) whenever no gradient is wanted; under autograd, ``model`` itself.

    Each ``FusedPointwiseChain`` inside stays one opaque operator (``onebyone::pointwise_chain``) that
    Inductor schedules among the kernels it generates, and a zero pad read only by a conv becomes that
    conv's padding (``fold_pads``: a model with TensorFlow-style "same" padding pads before every conv).

    Compiled on the first call for each input shape and dtype (``dynamic=False``; past dynamo's
    ``recompile_limit``, 8 by default, further shapes run eagerly), through ``own_compile``, so that other
    compiled models in the process, of this class or not, neither share nor use up its cache. An in-place
    edit of any weight or buffer makes the next call compile afresh, so a compiled model never runs stale
    weights. A copy or a pickle holds only ``model`` and compiles again."""

    def build(self):  # frozen weights are guarded by identity, not value: after an edit, a new function
        # (with an empty cache) compiles afresh
        return own_compile(self.model, backend=_inductor, dynamic=False)

    def run(self, compiled, args, kwargs):
        with _freezing():  # read by dynamo and Inductor whenever this call (re)compiles
            return compiled(*args, **kwargs)


def own_compile(model, **options):
    """``torch.compile(**options)`` of a function that calls ``model``, with a code object of its own.

    Dynamo keeps compiled code and its guards per code object, and every instance of a module class shares
    its ``forward``'s: a later compile of the class runs an earlier entry whose guards pass (parameters are
    guarded by shape, not by the settings, such as freezing, that the entry was compiled with), or compiles
    another entry, and past ``torch._dynamo.config.recompile_limit`` entries silently runs the model eagerly.
    Here each call gets a cache of its own."""
    def run(*args, **kwargs):
        return model(*args, **kwargs)

    code = run.__code__.replace()  # a copy: dynamo's cache lives on the code object
    return torch.compile(types.FunctionType(code, run.__globals__, run.__name__, None, run.__closure__), **options)


@contextlib.contextmanager
def _freezing():
    """Inductor's ``freezing`` set while a Compiled call (re)compiles, and put back after. Inductor's
    settings are per thread, so the value put back is this thread's own."""
    inductor = private.inductor_config()
    before, inductor.freezing = inductor.freezing, True
    try:
        yield
    finally:
        inductor.freezing = before


def _inductor(gm: fx.GraphModule, example_inputs):
    """The dynamo backend of ``Compiled``: ``fold_pads``, then Inductor (freezing is set around each call)."""
    return private.compile_fx(fold_pads(gm), example_inputs)


_PADS = private.PADS
_CONVS = (torch.conv2d, F.conv2d)
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def fold_pads(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold each constant zero pad of the last two dims, the same on both sides, whose only reader is a
    conv2d's input, into that conv's padding (in place; the outputs are unchanged: the conv reads the same
    zeros). A pad that differs between sides, another mode or value, or a conv with string padding stays."""
    for pad in list(gm.graph.nodes):
        if pad.op != "call_function" or pad.target not in _PADS or len(pad.users) != 1:
            continue
        conv = next(iter(pad.users))
        widths, zero = _zero_pad(pad)
        if not zero or conv.op != "call_function" or conv.target not in _CONVS or len(widths) != 4:
            continue
        args = dict(zip(_CONV_ARGS, conv.args)) | dict(conv.kwargs)
        left, right, top, bottom = widths
        padding = args.get("padding", 0)
        padding = (0, 0) if padding == "valid" else (padding, padding) if isinstance(padding, int) else padding
        if args.get("input") is not pad or left != right or top != bottom or isinstance(padding, str):
            continue
        args["input"], args["padding"] = pad.args[0], (padding[0] + top, padding[1] + left)
        conv.args, conv.kwargs = tuple(args.get(k, d) for k, d in zip(_CONV_ARGS, (None, None, None, 1, 0, 1, 1))), {}
        gm.graph.erase_node(pad)
    gm.recompile()
    return gm


def _zero_pad(node) -> tuple[tuple, bool]:
    """(the pad widths, whether it pads with constant zeros) of an F.pad / constant_pad_nd call."""
    names = ("input", "pad", "value") if node.target is torch.constant_pad_nd else ("input", "pad", "mode", "value")
    args = dict(zip(names, node.args)) | dict(node.kwargs)  # constant_pad_nd(input, pad, value=0); F.pad(...)
    widths, mode, value = args.get("pad"), args.get("mode", "constant"), args.get("value")
    ok = mode == "constant" and value in (None, 0, 0.0) and isinstance(widths, (tuple, list))
    return (tuple(widths) if ok else ()), ok and all(isinstance(w, int) and w >= 0 for w in widths)
