"""Exact rewrites: Linear <-> 1x1 conv, fold BatchNorm, merge consecutive pointwise layers.

Each returns ``(new_model, RewriteReport)``. The graph is read with torch.fx; the changes are module
swaps by qualified name on a deep copy, so the model keeps its class and its ``forward``. Every
rewrite then checks itself on a probe input in float64 and raises if the outputs moved.
"""
from __future__ import annotations

import copy
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .. import algebra, forms
from ..errors import OneByOneError
from . import graph as G
from . import norms
from . import record as R
from .capture import gc_paused, trace
from .layer_kinds import (
    CONV_TRANSPOSES,
    CONVS,
    channel_axis,
    groups,
    is_pointwise,
    is_unpadded_conv,
    own_forward,
    read_by_parent,
)
from .layers import Pointwise
from .record import record_calls
from .rewrite_report import RewriteReport, finish
from .tensors import another_size, check_module, copy_model, describe, numpy64, probe_input, tensor


@torch.fx.wrap  # one call in any torch.fx graph: its check is Python that tracing cannot follow
def one_pixel_flatten(x: torch.Tensor) -> torch.Tensor:  # (B, C, 1, ..., 1) -> (B, C)
    one_pixel = x.dim() >= 3
    for n in x.shape[2:]:
        one_pixel = one_pixel and n == 1
    if not one_pixel:  # (written for TorchScript too)
        raise OneByOneError("this Linear replaced a 1x1 conv on a 1 x 1 map (conv1x1_to_linear); it got "
                            + str(list(x.shape)) + ": call the rewritten model at the input size it was made "
                            "at, or keep the conv (the original model) for larger inputs")
    return x.flatten(1)


class FlattenOnePixel(nn.Flatten):
    """``nn.Flatten(1)`` of a one-pixel map: what ``conv1x1_to_linear`` puts before the Linear of a 1x1 conv
    it found on a 1x1 map. A larger map (an input larger than the example) is refused: there the conv gave a
    value per pixel, which one Linear over the channels cannot. Traceable by torch.fx, scriptable."""

    def forward(self, x):  # (B, C, 1, ..., 1) -> (B, C)
        return one_pixel_flatten(x)


def traced(work: nn.Module, x, report: RewriteReport):
    """``work``'s fx graph with shapes, or None after reporting in ``report`` that the rewrite could not
    see what feeds what (so it changes nothing: the report says so, and the check still runs)."""
    try:
        return trace(work, x)
    except OneByOneError as e:
        report.skipped.append(("(the whole model)", f"{e}; without a graph of what feeds what, nothing was changed"))
        return None


def with_weights(m: nn.Module, w, b) -> nn.Module:
    """A copy of layer m holding the NumPy weights w (reshaped to m's weight shape) and bias b."""
    weight = nn.Parameter(tensor(w, m.weight).reshape(m.weight.shape), requires_grad=m.weight.requires_grad)
    bias = nn.Parameter(tensor(b, m.weight))
    memo = {id(m.weight): weight} | ({id(m.bias): bias} if m.bias is not None else {})
    new = copy.deepcopy(m, memo)  # the old weight and bias are not copied, only replaced
    new.weight, new.bias = weight, bias
    return new


def pointwise_layer(like: nn.Module, w2d, b, stride=None) -> nn.Module:
    """A pointwise layer of the same family as ``like`` (Linear, Pointwise or ConvNd) for an (O, I) matrix."""
    o, i = w2d.shape
    if isinstance(like, nn.Linear):
        new = nn.Linear(i, o)
    elif isinstance(like, Pointwise):
        new = Pointwise(i, o, stride=stride or like.stride, channel_dim=like.channel_dim)
    else:
        new = type(like)(i, o, 1, stride=stride or like.stride)
    new = new.to(device=like.weight.device, dtype=like.weight.dtype)
    return with_weights(new, w2d, b)


def _merged_stride(a: nn.Module, b: nn.Module):
    """The stride of ``a`` then ``b`` (1x1 layers: the strides multiply, axis by axis) in ``a``'s form: a tuple
    for a conv, an int for a Pointwise or a Linear (1); None where that form cannot hold it (a Linear with any
    stride, a Pointwise with a different one on each axis)."""
    sa, sb = getattr(a, "stride", 1), getattr(b, "stride", 1)
    n = max((len(s) for s in (sa, sb) if isinstance(s, tuple)), default=1)
    both = tuple(p * q for p, q in zip(*((s,) * n if isinstance(s, int) else tuple(s) for s in (sa, sb))))
    if isinstance(a, CONVS):
        return both
    return both[0] if len(set(both)) == 1 and (both[0] == 1 or isinstance(a, Pointwise)) else None


def pointwise_from(w2d, b, like, channel_dim: int = 1) -> Pointwise:
    """A Pointwise holding the (O, I) NumPy matrix ``w2d`` and bias ``b`` (None: no bias), in ``like``'s
    dtype and device."""
    o, i = w2d.shape
    p = Pointwise(i, o, bias=b is not None, channel_dim=channel_dim, device=like.device, dtype=like.dtype)
    p.weight.data.copy_(tensor(forms.dense_to_conv1x1(w2d), like))  # (O, I) -> (O, I, 1, 1)
    if b is not None:
        p.bias.data.copy_(tensor(b, like))
    return p


def _matrix(m):
    return numpy64(m.weight).reshape(m.weight.shape[0], -1)  # (O, I/g, 1, 1) -> (O, I/g)


# --- Linear <-> 1x1 ------------------------------------------------------------------------------


@gc_paused
def linear_to_conv1x1(model: nn.Module, *, example=None, input_size=None, inplace=False, tol=1e-6):
    """Every ``nn.Linear`` becomes a ``Pointwise(channel_dim=-1)``: the same map over the last axis."""
    x = probe_input(model, example, input_size)
    work, report = copy_model(model), RewriteReport("linear_to_conv1x1")
    done = {}
    calls = record_calls(work, x)  # (in eval mode: a training model's copy keeps its norm statistics)
    for name, m in list(work.named_modules(remove_duplicate=False)):
        if not isinstance(m, nn.Linear):
            continue
        why = read_by_parent(work, name, calls) or (
            own_forward(m) and f"{type(m).__module__}.{type(m).__qualname__} has a forward of its own")
        if why:
            report.skipped.append((name, why))
            continue
        if id(m) not in done:
            done[id(m)] = pointwise_from(numpy64(m.weight), numpy64(m.bias), m.weight, channel_dim=-1)
        work = G.replace_module(work, name, done[id(m)])
        report.changed.append(f"{name}: Linear({m.in_features}, {m.out_features}) -> {done[id(m)]!r}")
    del calls  # (it holds every tensor of a forward pass)
    return finish(report, model, work, x, tol, inplace)


def is_flatten(gm, node) -> bool:
    """A node that flattens (B, ...) to (B, features)."""
    m = G.module(gm, node)
    if isinstance(m, nn.Flatten):
        return m.start_dim == 1 and m.end_dim == -1
    args = list(node.args[1:]) + list(node.kwargs.values())
    if (
        node.op == "call_function"
        and node.target.__name__ == "flatten"
        or node.op == "call_method"
        and node.target == "flatten"
    ):
        return args[:1] == [1] and len(args) == 1
    if node.op == "call_method" and node.target in ("view", "reshape"):
        before, after = G.shape(node.args[0]), G.shape(node)
        return before is not None and after is not None and len(after) == 2 and after[0] == before[0]
    return False


@gc_paused
def conv1x1_to_linear(model: nn.Module, *, example=None, input_size=None, inplace=False, tol=1e-6):
    """1x1 convs become ``nn.Linear`` where that is valid.

    Valid: a channels-last ``Pointwise`` (same map over the last axis), and a 1x1 conv whose input is
    spatially 1 x 1 and whose output is flattened (it becomes Flatten -> Linear). Elsewhere the
    channels sit on dim 1 of a spatial map, where nn.Linear cannot act: skipped, with the reason.
    """
    x = probe_input(model, example, input_size)
    single = is_pointwise(model)  # the model is the layer: traced inside a Sequential, handed back alone
    work, report = copy_model(nn.Sequential(model) if single else model), RewriteReport("conv1x1_to_linear")
    gm = traced(work, x, report)
    counts = G.call_counts(work, gm) if gm else {}
    calls = record_calls(work, x) if gm else None
    for node in gm.graph.nodes if gm else ():
        m = G.module(gm, node)
        if isinstance(m, nn.Linear) or not (m is not None and is_pointwise(m)):
            continue
        if why := read_by_parent(work, node.target, calls):
            report.skipped.append((node.target, why))
            continue
        if groups(m) != 1:
            report.skipped.append(
                (node.target, f"groups={groups(m)}: a grouped 1x1 conv is block-diagonal, not one Linear")
            )
            continue
        if counts[id(m)] > 1:
            report.skipped.append((node.target, f"called at {counts[id(m)]} places with possibly different layouts"))
            continue
        w, b = _matrix(m), numpy64(m.bias)
        lin = pointwise_layer(nn.Linear(1, 1).to(m.weight), w, b if b is not None else 0 * w[:, 0])
        if channel_axis(m) == "last" and getattr(m, "stride", 1) == 1:
            work = G.replace_module(work, node.target, lin)
            report.changed.append(f"{node.target}: {m!r} -> Linear({w.shape[1]}, {w.shape[0]})")
            continue
        spatial = (G.shape(node.args[0]) or (0, 0, 0))[2:]
        user = G.only_user(node, batch_aside=True)  # (``y.view(y.shape[0], -1)`` reads its batch too)
        one_pixel = channel_axis(m) == "first" and spatial and all(s == 1 for s in spatial)
        if one_pixel and user is not None and is_flatten(gm, user):
            work = G.replace_module(work, node.target, nn.Sequential(FlattenOnePixel(), lin))
            report.changed.append(f"{node.target}: {type(m).__name__} on a 1x1 map, then flatten -> Flatten + Linear")
            continue
        report.skipped.append((node.target, _not_linear(m, node, one_pixel)))
    del calls  # (it holds every tensor of a forward pass)
    return finish(report, model, work[0] if single else work, x, tol, inplace)


def _not_linear(m, node, one_pixel: bool) -> str:
    """Why the 1x1 layer ``m`` (called at ``node``) is no ``nn.Linear``: a stride, channels on dim 1 of a map
    larger than one pixel, or a 1x1 map whose output is not then flattened."""
    if channel_axis(m) == "last":
        return f"stride {m.stride}: nn.Linear has none"
    if one_pixel:
        return "on a 1x1 map, but not then flattened alone (nn.Linear would give (B, O), not (B, O, 1, 1))"
    return (f"channels on dim 1 of a {G.shape(node.args[0])} tensor: nn.Linear acts on the last dim, so a swap "
            "is valid only on a 1x1 map that is then flattened")


# --- BatchNorm folding ------------------------------------------------------------------------


def _check_eval(model):
    for name, m in check_module(model).named_modules():
        if isinstance(m, _BatchNorm) and m.training:
            raise OneByOneError(
                f"BatchNorm `{name}` is in training mode: its output depends on the batch, so it cannot be "
                "folded; call model.eval() first"
            )


def _axis_why(site, layer, bn) -> str:
    """Why the norm does not fold into the layer before it for their axes ("" where they match, or where that
    layer is none a norm folds into)."""
    if not isinstance(layer, CONVS + CONV_TRANSPOSES + (nn.Linear, Pointwise)) or _axis_matches(
            layer, bn, site.before_shape, site.before_reshaped):
        return ""
    how = "reshaped to" if site.before_reshaped else "of shape"
    return f"it reads `{site.before}`'s output {how} {site.before_shape}: the axis it normalizes is not its channels"


def _axis_matches(layer, bn, in_or_out_shape, reshaped: bool = False) -> bool:
    """Does the layer's channel axis coincide with the BatchNorm's? (Through a reshape to rows, only a layer
    whose channels lie last keeps them on the rows' axis.)"""
    want, have = channel_axis(layer), channel_axis(bn)
    if reshaped and want != "last":
        return False
    if want == have:
        return True
    return want == "last" and have == "first" and in_or_out_shape is not None and len(in_or_out_shape) == 2


@dataclass
class _Site:
    """A BatchNorm call and its neighbours, as an eager run's record (``record.record_calls``) shows them: the
    layer whose output it alone reads (through reshapes that keep the channels last, as a Linear over tokens
    feeds ``BatchNorm1d`` on ``x.flatten(0, 1)``), and the layer that alone reads its output."""

    bn: str
    before: str | None  # the module whose output the BatchNorm reads
    before_single: bool  # ... and nothing else reads
    before_shape: tuple | None
    after: str | None  # the module that reads the BatchNorm's output as its first input
    after_single: bool  # ... and nothing else reads it
    after_shape: tuple | None
    before_what: str = ""  # what produces its input, for a reason: a module's path, or the function's name
    after_what: str = ""  # what reads its output, for a reason
    before_branch: str = ""  # a container whose forward may branch between the layer and the BatchNorm
    after_branch: str = ""  # ... between the BatchNorm and the layer after it
    before_reshaped: bool = False  # its input is the layer's output reshaped (channels last: tokens flattened)


_RESHAPES = {"flatten", "reshape", "view", "reshape_as", "view_as", "contiguous"}


def _producer(calls, ops, key, shape):
    """(the leaf call that made the value ``key``, whether each value on the way is read once, what made it)
    through reshapes that keep the last axis (for a BatchNorm over (N, C)); the call is None where a function
    other than such a reshape, or the model's input, made it."""
    single, reshaped = True, False
    while key not in calls.producer and key in ops:
        op = ops[key]
        name = getattr(op.func, "__name__", "")
        src = op.args[0] if op.args and isinstance(op.args[0], R.Ref) else None
        if name not in _RESHAPES or src is None or len(shape) != 2 or src.shape[-1] != shape[-1]:
            return None, False, f"`{name or op.func}`", reshaped
        single = single and len(calls.uses[src.key]) == 1
        key, reshaped = src.key, reshaped or src.shape != shape
    prev = calls.producer.get(key)
    return prev, single, (f"`{prev.name}`" if prev is not None else "the model's input" if key in calls.inputs
                          else f"a piece of `{calls.pieces[key]}`'s output" if key in calls.pieces
                          else "a tensor no layer made (a parameter or a buffer, say)"), reshaped


def _passes_through(call) -> bool:
    """A leaf call that hands its input on unchanged: ``nn.Identity``, or a dropout in eval mode."""
    m = getattr(call, "module", None)
    return isinstance(m, nn.Identity) or (isinstance(m, nn.modules.dropout._DropoutNd) and not m.training)


def _sites(calls) -> list:
    out = []
    ops = {op.output: op for op in calls.ops if op.output is not None}
    for c in calls.calls:
        if not isinstance(c.module, _BatchNorm):
            continue
        prev, single, before_what, reshaped = _producer(calls, ops, c.input, c.input_shape or ())
        users = calls.uses.get(c.output, [])
        nxt, value = (users[0] if len(users) == 1 and not isinstance(users[0], str) else None), c.output
        while _passes_through(nxt) and nxt.input == value and len(calls.uses.get(nxt.output, [])) == 1:
            users, value = calls.uses[nxt.output], nxt.output  # an eval dropout or an Identity in between
            nxt = users[0] if not isinstance(users[0], str) else None
        after_what = (f"`{nxt.name}`" if nxt else R.MODEL_OUTPUT if users == [R.MODEL_OUTPUT]
                      else f"`{users[0]}`" if len(users) == 1 else f"{len(users)} readers" if users else "nothing")
        out.append(_Site(c.name, prev.name if prev else None,
                         prev is not None and single and len(calls.uses[c.input]) == 1, c.input_shape,
                         nxt.name if nxt else None, nxt is not None and nxt.input == value, c.output_shape,
                         before_what, after_what, R.branching(calls, prev, c) if prev else "",
                         R.branching(calls, c, nxt) if nxt else "", reshaped))
    return out


def fold_all(work: nn.Module, x, report: RewriteReport) -> nn.Module:
    """Fold every eval batch norm (recognised by what it computes: ``norms``) that sits next to a layer it can
    fold into, in place on ``work``; returns ``work`` (the model itself where it was the norm). What feeds what
    comes from one eager run (every module call and every use of its output); norms that are not folded keep
    their original module."""
    swapped = norms.canonical(work, x, report)
    calls, (other, elsewhere) = record_calls(work, x), _sites_elsewhere(work, x)
    counts = defaultdict(lambda: 1, calls.counts)  # a layer a fold replaced was called at one place
    for site in _sites(calls):
        bn = work.get_submodule(site.bn)
        if bn.running_mean is None:
            report.skipped.append((site.bn, "track_running_stats=False: no running statistics to fold"))
            continue
        read = {n: f"`{n}`: {why}" if n and (why := read_by_parent(work, n, calls)) else ""
                for n in (site.bn, site.before, site.after)}
        if read[site.bn]:  # (a layer beside it read so matters only for the fold into that layer)
            report.skipped.append((_original_name(site.bn, swapped), read[site.bn]))
            continue
        moved = _moved(site, elsewhere, other) if counts[id(bn)] == 1 else ("", "")
        scale, shift = norms.affine(bn)
        layer = work.get_submodule(site.before) if site.before else None
        nxt = work.get_submodule(site.after) if site.after else None
        if (isinstance(layer, CONVS + CONV_TRANSPOSES + (nn.Linear, Pointwise)) and not own_forward(layer)
                and site.before_single and not site.before_branch and counts[id(layer)] == 1 and not read[site.before]
                and not moved[0]
                and counts[id(bn)] == 1 and _axis_matches(layer, bn, site.before_shape, site.before_reshaped)):
            w, b = (algebra.fold_affine_after_transposed(numpy64(layer.weight), numpy64(layer.bias), scale, shift,
                                                         layer.groups) if isinstance(layer, CONV_TRANSPOSES) else
                    algebra.fold_affine_after(numpy64(layer.weight), numpy64(layer.bias), scale, shift))
            work = G.replace_module(work, site.before, with_weights(layer, w, b))
            work = G.replace_module(work, site.bn, nn.Identity())
            report.changed.append(f"{site.before} + {site.bn}: {type(layer).__name__} + {type(bn).__name__} folded")
            continue
        if (nxt is not None and (is_pointwise(nxt) or is_unpadded_conv(nxt)) and site.after_single
                and not site.after_branch and counts[id(nxt)] == 1 and not read[site.after] and not moved[1]
                and counts[id(bn)] == 1 and _axis_matches(nxt, bn, site.after_shape)):
            w, b = algebra.fold_affine_before(numpy64(nxt.weight), numpy64(nxt.bias), scale, shift, groups(nxt))
            work = G.replace_module(work, site.after, with_weights(nxt, w, b))
            work = G.replace_module(work, site.bn, nn.Identity())
            report.changed.append(f"{site.bn} + {site.after}: {type(bn).__name__} folded into the "
                                  f"{type(nxt).__name__} after it")
            continue
        report.skipped.append((_original_name(site.bn, swapped), _why_not(site, layer, nxt, bn, read, moved, counts)))
    return norms.restore(work, swapped)


def _why_not(site, layer, nxt, bn, read: dict, moved: tuple, counts) -> str:
    """Why ``fold_all`` left the norm at ``site`` alone, the first reason that holds."""
    if read[site.before] or read[site.after] or moved[0] or moved[1]:
        return read[site.before] or read[site.after] or moved[0] or moved[1]
    if site.before_branch or site.after_branch:
        return (f"`{site.before_branch or site.after_branch}`'s forward reads a tensor's values between them "
                "(Python may branch on them: another input may take another path)")
    if layer is not None and counts[id(layer)] > 1:
        return f"`{site.before}` is called at {counts[id(layer)]} places: folding would change the other call too"
    if counts[id(bn)] > 1:
        return f"the BatchNorm itself is called at {counts[id(bn)]} places"
    if axis := _axis_why(site, layer, bn):
        return axis
    own = [f"`{n}` ({type(m).__name__})" for n, m in ((site.before, layer), (site.after, nxt)) if own_forward(m)]
    if own:
        return (f"{' and '.join(own)} computes its own forward (it may pad, or reshape its weight, on each call): "
                "its weights are not known to fold exactly")
    return (f"reads {site.before_what} and is read by {site.after_what}: no conv or linear that it alone "
            "follows, nor a conv without padding or a linear that alone reads it"
            + (" (a norm before a padded conv does not fold exactly: the padding would not see the norm's shift)"
               if isinstance(nxt, CONVS) else ""))


def _sites_elsewhere(work: nn.Module, x) -> tuple:
    """(the example at another size, {norm: its ``_Site`` there}); (None, None) where the model takes the
    example's size alone (or its inputs have no axis to grow)."""
    other = another_size(x)
    if other is None:
        return None, None
    try:
        sites = _sites(record_calls(work, other))
    except Exception:  # noqa: BLE001 - a model that runs at one size: nothing to compare
        return None, None
    called = Counter(s.bn for s in sites)  # (a norm called at two places there: no one site to compare with)
    return other, {s.bn: s if called[s.bn] == 1 else called[s.bn] for s in sites}


def _moved(site: _Site, elsewhere: dict | None, other) -> tuple:
    """(why a fold into the layer before, why one into the layer after, would hold at the example's size alone):
    at ``other`` the forward feeds the norm otherwise on that side (it branches on its input's size); "" for a
    side fed alike, or where nothing was compared."""
    if elsewhere is None:
        return "", ""
    there = elsewhere.get(site.bn)
    how = (f"the forward takes another path on an input {describe(other)} (it branches on its input's size): there "
           + ("the norm is not called" if there is None else f"it is called at {there} places"
              if isinstance(there, int) else f"it reads {there.before_what} and is read by {there.after_what}"))
    return tuple("" if isinstance(there, _Site) and all(getattr(there, k) == getattr(site, k) for k in side) else how
                 for side in (("before", "before_single", "before_branch"), ("after", "after_single", "after_branch")))


def _original_name(path: str, swapped: dict) -> str:
    """A norm's path in the user's model (``a.bn1`` for ``a.bn1.bn``, the plain form of timm's BatchNormAct2d)."""
    head = path.rpartition(".")[0]
    return head if path.endswith(".bn") and head in swapped else path


@gc_paused
def fold_batchnorm(model: nn.Module, *, example=None, input_size=None, inplace=False, tol=1e-6):
    """Fold eval-mode BatchNorms into the Conv1d/2d/3d, Linear or Pointwise before them, or into the
    1x1 conv / Linear after them. A BatchNorm in training mode is an error; a layer called at two
    places is left alone and reported."""
    _check_eval(model)
    x = probe_input(model, example, input_size)
    work, report = copy_model(model), RewriteReport("fold_batchnorm")
    work = fold_all(work, x, report)
    return finish(report, model, work, x, tol, inplace)


# --- merging ------------------------------------------------------------------------------------


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _next_through_identity(gm, node):
    user = G.only_user(node)
    while user is not None and isinstance(G.module(gm, user), nn.Identity):
        user = G.only_user(user)
    return user


@gc_paused
def merge_pointwise(model: nn.Module, force: bool = False, *, example=None, input_size=None, inplace=False, tol=1e-6):
    """Consecutive 1x1 convs / Linears with nothing nonlinear between them become one layer
    (eval BatchNorms between them are folded first). A pair whose merged layer would hold more
    parameters than the two (a bottleneck) is kept unless ``force=True``."""
    _check_eval(model)
    x = probe_input(model, example, input_size)
    work, report = merged_pointwise(model, x, force)
    return finish(report, model, work, x, tol, inplace)


def _merge_pair(a: nn.Module, b: nn.Module, counts: dict, force: bool):
    """(weight, bias, stride) of the 1x1 layers ``a`` then ``b`` as one layer, or why they are not merged."""
    if groups(a) != 1 or groups(b) != 1 or channel_axis(a) != channel_axis(b) or counts[id(a)] > 1 or counts[id(b)] > 1:
        return "grouped, called at several places, or reading channels on different axes"
    w, bias = algebra.merge_linear(_matrix(a), numpy64(a.bias), _matrix(b), numpy64(b.bias))
    if w.size + w.shape[0] > _params(a) + _params(b) and not force:
        return (f"a bottleneck: one merged layer would hold {w.size + w.shape[0]:,} params against "
                f"{_params(a) + _params(b):,} for the pair (force=True merges anyway)")
    stride = _merged_stride(a, b)
    if stride is None:
        return (f"their strides together ({getattr(a, 'stride', 1)} then {getattr(b, 'stride', 1)}) are more than "
                f"one {type(a).__name__} holds")
    return w, bias, stride


def merged_pointwise(model: nn.Module, x, force: bool = False) -> tuple[nn.Module, RewriteReport]:
    """``merge_pointwise``'s rewrite of a copy of ``model`` (traced on the input ``x``) and its report of
    what changed, not yet checked: for a caller that checks the outputs itself, later (``optimize``)."""
    work, report = copy_model(model), RewriteReport("merge_pointwise")
    seen = set()
    work = fold_all(work, x, report)
    while True:
        try:
            gm = trace(work, x)
        except OneByOneError as e:
            report.skipped.append(("(the whole model)", f"{e}: merging reads torch.fx's graph, so no further pair "
                                                        "was merged (the norms were folded from an eager run)"))
            break
        counts = G.call_counts(work, gm)
        merged = False
        for node in gm.graph.nodes:
            a = G.module(gm, node)
            user = _next_through_identity(gm, node) if a is not None else None
            b = G.module(gm, user) if user is not None else None
            if not (a is not None and b is not None and is_pointwise(a) and is_pointwise(b)):
                continue
            pair = f"{node.target} + {user.target}"
            made = _merge_pair(a, b, counts, force)
            if isinstance(made, str):  # why not
                if pair not in seen:
                    seen.add(pair)
                    report.skipped.append((pair, made))
                continue
            w, bias, stride = made
            work = G.replace_module(work, node.target, pointwise_layer(a, w, bias, stride=stride))
            work = G.replace_module(work, user.target, nn.Identity())
            report.changed.append(f"{pair}: merged into one {type(a).__name__} ({w.shape[1]} -> {w.shape[0]})")
            merged = True
            break
        if not merged:
            break
    return work, report
