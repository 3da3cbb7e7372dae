"""``convolutionalize``: Flatten -> Linear (-> act -> Linear ...) heads become convolutions.

The first Linear reads a flattened (C, H, W) map: it becomes a conv with one H x W kernel per unit
(``forms.dense_to_full_kernel``); the Linears after it become 1x1 convs (``forms.dense_to_conv1x1``).
At ``input_size`` the model gives the same logits, as a (B, K, 1, 1) grid; on a larger input it
slides the whole classifier and returns (B, K, h, w), one score vector per window position, at the
trunk's total stride. A global-average-pool head (pool -> flatten -> Linear) becomes 1x1 class maps
followed by the pool, and keeps returning (B, K).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import forms
from ..errors import OneByOneError
from . import graph as G
from .capture import gc_paused, trace
from .layers import Pointwise
from .rewrite_report import ConvolutionalizedHead, ConvolutionalizeReport, finish
from .rewrites import is_flatten, pointwise_from
from .tensors import copy_model, evaluating, numpy64, probe_input, tensor

SPATIAL = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool2d, nn.AvgPool2d, Pointwise)


def _head(gm, flat):
    """The chain after a flatten: [('linear' | 'elem', node), ...], and why it stops (None at the output)."""
    chain, cur = [], flat
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return chain, f"`{cur.name}` feeds {len(users)} nodes"
        u = users[0]
        if u.op == "output":
            return chain, None
        if isinstance(G.module(gm, u), nn.Linear):
            chain.append(("linear", u))
        elif G.is_elementwise(gm, u):
            chain.append(("elem", u))
        else:
            return (
                chain,
                f"the head continues into `{u.name}` "
                f"({u.target if u.op != 'call_module' else type(G.module(gm, u)).__name__}), "
                "which would receive a (B, K, h, w) grid",
            )
        cur = u


def predicted_grid(head: dict, size) -> tuple:
    """The (h, w) grid of windows a converted head returns on an (H, W) input, from its entry in
    ``report.layers``: ``((H - window + offset) // stride + 1, ...)``."""
    return tuple((a - b + o) // c + 1 for a, b, c, o in zip(size, head["window"], head["stride"],
                                                             head.get("offset", (0, 0))))


def _fixed_pool(gm, node):
    """For an adaptive pool (not a global one) feeding the head: (its replacement, why), where the
    replacement is Identity if the pool is the identity at ``input_size`` or the fixed pool it equals
    there, which slides over a larger input as the rest of the trunk does; a reason string if it can
    be neither; None for any other node."""
    m = G.module(gm, node)
    if not isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or G.is_gap(gm, node):
        return None
    _, _, h, w = G.shape(node.args[0])
    size = (m.output_size,) * 2 if isinstance(m.output_size, int) or m.output_size is None else m.output_size
    oh, ow = (h if size[0] is None else size[0]), (w if size[1] is None else size[1])
    if (oh, ow) == (h, w):
        return nn.Identity(), f"{type(m).__name__}({m.output_size}) is the identity on the {h}x{w} map: dropped"
    if h % oh or w % ow:
        return (f"{type(m).__name__}({m.output_size}) squeezes a {h}x{w} map with uneven windows: it is no fixed "
                "pool, so the head cannot slide over larger inputs")
    k = (h // oh, w // ow)
    fixed = nn.AvgPool2d(k, k) if isinstance(m, nn.AdaptiveAvgPool2d) else nn.MaxPool2d(k, k)
    return fixed, f"{type(m).__name__}({m.output_size}) on the {h}x{w} map is {fixed!r}: replaced, so it slides"


def _trunk(gm, node):
    """(total stride, padded?) of the feature extractor that feeds ``node``."""
    stride, padded = {}, {}
    for n in gm.graph.nodes:
        ins = [a for a in n.all_input_nodes]
        s = max((stride.get(a, (1, 1)) for a in ins), default=(1, 1))
        p = any(padded.get(a, False) for a in ins)
        m = G.module(gm, n)
        if isinstance(m, SPATIAL):
            st = (m.stride,) if isinstance(m.stride, int) else tuple(m.stride)
            st = (st * 2)[-2:]  # (s,) -> (s, s); (sh, sw) stays
            s = (s[0] * st[0], s[1] * st[1])
            pad = getattr(m, "padding", 0)
            p = (
                p
                or pad == "same"
                or (pad != "valid" and any(v != 0 for v in ((pad,) if isinstance(pad, int) else pad)))
            )
            p = p or bool(getattr(m, "ceil_mode", False))
        stride[n], padded[n] = s, p
        if n is node:
            return s, p
    return (1, 1), False


class WindowConv(nn.Conv2d):
    """A head's first Linear as a conv over the trunk's feature map (an ``nn.Conv2d``); ``window``, the
    model's input size, is the smallest input it takes: a smaller one is refused, named."""

    fx_leaf = True  # traced as one module, as nn.Conv2d is
    computes_as_base = True  # its forward checks the input's size, then is nn.Conv2d's

    def __init__(self, *args, window=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.window = window

    def forward(self, x):
        small = x.shape[-2] < self.kernel_size[0] or x.shape[-1] < self.kernel_size[1]
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing() and small:
            raise OneByOneError(f"this convolutionalized model slides a {self.window} window: an input must be at "
                                f"least {self.window[1:]} (its feature map here is {tuple(x.shape[-2:])}, smaller "
                                f"than the head's {tuple(self.kernel_size)} kernel)")
        return super().forward(x)


@dataclasses.dataclass
class HeadPlan:
    """What one Flatten -> Linear head becomes: ``kind`` "gap" (a Linear after a global average pool:
    1x1 class maps before the pool) or "window" (a Linear on a flattened (C, H, W) map: an H x W conv, the
    Linears after it 1x1 convs), with the graph nodes it reads."""

    kind: str
    flat: object  # the flatten node
    src: object  # the node the flatten reads
    linears: list  # the Linear nodes of the head, in order
    fmap: tuple  # (C, H, W) of the flattened map
    pooled: tuple | None  # an adaptive pool before the head: (the fixed pool it equals, why), or None


def plan_head(gm, counts, flat) -> HeadPlan | tuple:
    """The plan for the head after ``flat``, or (name, reason) when it cannot be converted."""
    src = flat.args[0]
    chain, stop = _head(gm, flat)
    linears = [n for kind, n in chain if kind == "linear"]
    if not linears:
        return flat.name, "flatten not followed by a Linear"
    if stop is not None:
        return linears[0].target, stop
    if any(counts[id(G.module(gm, n))] > 1 for n in linears):
        return linears[0].target, "a Linear of this head is called at several places"
    fmap = G.shape(src)
    if fmap is None or len(fmap) != 4:
        return linears[0].target, f"the flatten reads a {fmap} tensor, not a (B, C, H, W) map"
    pooled = _fixed_pool(gm, src)  # an adaptive pool in front of the head: the fixed pool it equals here
    if isinstance(pooled, str):
        return linears[0].target, pooled
    gap = G.is_gap(gm, src) and isinstance(G.module(gm, src), nn.AdaptiveAvgPool2d) and chain[0][1] is linears[0]
    return HeadPlan("gap" if gap else "window", flat, src, linears, tuple(fmap[1:]), pooled)


def _apply_gap(work, gm, plan: HeadPlan, report):
    """A Linear after a global average pool -> 1x1 class maps before the pool (the rest stays Linear)."""
    first = G.module(gm, plan.linears[0])
    maps = pointwise_from(numpy64(first.weight), numpy64(first.bias), first.weight)
    work = G.replace_module(work, plan.src.target, nn.Sequential(maps, G.module(gm, plan.src)))
    work = G.replace_module(work, plan.linears[0].target, nn.Identity())
    report.changed.append(f"{plan.linears[0].target}: Linear after global average pool -> "
                          f"1x1 class maps ({plan.src.target}.0) before the pool")
    if len(plan.linears) > 1:
        report.notes.append(f"{[n.target for n in plan.linears[1:]]} stay Linear: they follow a nonlinearity after "
                            "the pool")
    return work


def _apply_window(work, gm, plan: HeadPlan, report, input_size):
    """The first Linear -> an H x W conv, the others -> 1x1 convs; a module flatten -> Identity (a
    functional one is returned for the caller to drop from the graph, else None); the window recorded."""
    first, (c, h, w) = G.module(gm, plan.linears[0]), plan.fmap
    conv = WindowConv(c, first.out_features, (h, w), bias=first.bias is not None, window=tuple(input_size)
                      ).to(first.weight)
    conv.weight.data.copy_(tensor(forms.dense_to_full_kernel(numpy64(first.weight), (c, h, w)), first.weight))
    if first.bias is not None:
        conv.bias.data.copy_(first.bias.data)
    work = G.replace_module(work, plan.linears[0].target, conv)
    for n in plan.linears[1:]:
        lin = G.module(gm, n)
        work = G.replace_module(work, n.target, pointwise_from(numpy64(lin.weight), numpy64(lin.bias), lin.weight))
    functional = None
    if isinstance(G.module(gm, plan.flat), nn.Flatten):
        work = G.replace_module(work, plan.flat.target, nn.Identity())
    else:
        functional = plan.flat.name
    stride, padded = _trunk(gm, plan.src.args[0] if plan.pooled is not None else plan.src)
    if plan.pooled is not None:
        fixed, why = plan.pooled
        work = G.replace_module(work, plan.src.target, fixed)
        k = (1, 1) if isinstance(fixed, nn.Identity) else fixed.kernel_size
        stride = (stride[0] * k[0], stride[1] * k[1])
        report.changed.append(f"{plan.src.target}: {why}")
    names = [n.target for n in plan.linears]
    report.layers.append(ConvolutionalizedHead(head=names, window=tuple(input_size[1:]), stride=stride, padded=padded))
    report.changed.append(f"{', '.join(names)}: Linear head on a {c}x{h}x{w} map -> {h}x{w} conv"
                          + (f" + {len(names) - 1} 1x1 conv(s)" if len(names) > 1 else ""))
    return work, functional


@gc_paused
def convolutionalize(model: nn.Module, input_size, *, inplace=False, tol=1e-6):
    """Turn the model's fully connected head(s) into convolutions (see the module docstring): each head is
    planned (``plan_head``: what it becomes, or why not), then applied.

    Args:
        input_size: (C, H, W), the size the model was built for.

    Returns:
        (model, report). ``report.notes`` give the total stride and what each output cell equals: the
        original model run on the matching crop, exactly, where the trunk does not pad; where it pads, the
        head on the matching window of the large input's feature map, and ``report.layers`` gives each
        head's ``crop_difference``: how far the cells of a 2 x 2 grid are from the model on their crops.
    """
    if not isinstance(input_size, (tuple, list)) or len(input_size) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_size):
        raise OneByOneError(f"input_size must be one sample's shape (C, H, W) of integers >= 1, got {input_size!r}")
    x = probe_input(model, None, input_size)  # refuses, with the shapes, an input_size the model cannot run on
    report, work = ConvolutionalizeReport("convolutionalize"), copy_model(model)
    gm = trace(work, x)
    counts, functional_flatten = G.call_counts(work, gm), []
    for flat in [n for n in gm.graph.nodes if is_flatten(gm, n)]:
        plan = plan_head(gm, counts, flat)
        if isinstance(plan, tuple):
            report.skipped.append(plan)
        elif plan.kind == "gap":
            work = _apply_gap(work, gm, plan, report)
        else:
            work, functional = _apply_window(work, gm, plan, report, input_size)
            functional_flatten += [functional] if functional else []
    if not report.changed:
        raise OneByOneError(
            f"no convertible Flatten -> Linear head found in {type(model).__name__}; skipped: {report.skipped}"
        )
    result = _drop_nodes(work, functional_flatten) if functional_flatten else work
    out, report = finish(report, model, result, x, tol, inplace, reshape=lambda t, ref: t.reshape(ref.shape))
    for head in report.layers:  # the geometry as it runs: the stride measured, the grid checked, crops compared
        with evaluating(model, out):  # (as the check runs them: no dropout, no batch statistics)
            head["stride"], head["offset"] = _measured_stride(out, input_size, head["stride"])
            head["crop_difference"] = _crop_difference(model, out, input_size, head["stride"])
        head["padded"] = head["crop_difference"] > CROP_TOL
        (h, w), (sh, sw), (oh, ow) = input_size[1:], head["stride"], head["offset"]
        report.notes.append(f"window {(h, w)}, total stride {(sh, sw)} (measured): an input of H x W gives a grid of "
                            f"((H - {h - oh}) // {sh} + 1) x ((W - {w - ow}) // {sw} + 1)")
        if not head["padded"]:
            report.notes.append("each cell equals the original model run on its crop (measured on a 2 x 2 grid of a "
                                f"random input: within {head['crop_difference']:.2g} of the output scale)")
        else:
            report.notes.append(
                "the feature extractor pads, so what holds is: each cell equals the head applied to the matching "
                "window of the large input's feature map (exactly, as computed); it is not the model run on the "
                "matching crop alone, whose border is padded where the large input has real neighbours. On a 2 x 2 "
                f"grid of a random input the cells differ from their crops by up to {head['crop_difference']:.3g} "
                "of the output scale")
    return out, report


CROP_TOL = 1e-5  # of the output scale: cells within this of their crops equal them (float32 rounding)
MAX_STRIDE = 256  # a trunk's total stride is searched up to this


def _grid(model, input_size, extra: tuple) -> tuple | None:
    """The (h, w) grid ``model`` returns on a seeded random input ``extra`` pixels larger than ``input_size``,
    or None where it does not run on it (or returns no (B, K, h, w) grid)."""
    like = next(model.parameters())
    x = torch.randn(1, input_size[0], input_size[1] + extra[0], input_size[2] + extra[1],
                    generator=torch.Generator().manual_seed(0)).to(like)
    try:
        with torch.no_grad():
            y = model(x)
    except Exception:  # noqa: BLE001 - a size the trunk does not take: no answer at this size
        return None
    return tuple(y.shape[2:]) if isinstance(y, torch.Tensor) and y.dim() == 4 else None


def _measured_stride(model, input_size, guess: tuple) -> tuple:
    """(stride, offset) of the converted ``model``, per axis, as it runs: the input growth that adds each
    further cell (the trunk's layers as counted give ``guess``, tried first), and how much sooner than one
    stride the first cell is added (floors and paddings in the trunk): an H-pixel input gives
    ``(H - window + offset) // stride + 1`` cells. Checked on an input three strides larger; a trunk whose
    grid follows no stride within ``MAX_STRIDE`` pixels is refused."""
    stride, offset = [], []
    for axis in range(2):
        def cells(d, axis=axis):
            g = _grid(model, input_size, (d, 0) if axis == 0 else (0, d))
            return 0 if g is None else g[axis]

        def first(n, lo=1):  # the smallest growth >= lo giving at least n cells (the grid grows with the input)
            hi = lo
            while cells(hi) < n:
                if hi > MAX_STRIDE * n:
                    raise OneByOneError(f"the converted model's grid does not grow along axis {axis + 2} within "
                                        f"{MAX_STRIDE * n} extra pixels: its trunk has no stride to slide by")
                lo, hi = hi + 1, hi * 2
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if cells(mid) >= n else (mid + 1, hi)
            return lo

        s = guess[axis]
        one = first(2)  # the growth that adds the second cell; the third comes exactly one stride later
        if not (s >= 1 and cells(one + s - 1) == 2 and cells(one + s) == 3):
            s = first(3, one) - one
        stride.append(s)
        offset.append(s - one)
    got = _grid(model, input_size, (3 * stride[0], 3 * stride[1]))
    if got != (4, 4):
        raise OneByOneError(f"the converted model gives a {got} grid on an input 3 strides {tuple(stride)} larger "
                            f"than {tuple(input_size[1:])}, where its geometry predicts (4, 4): its trunk does not "
                            "slide evenly")
    return tuple(stride), tuple(offset)


def _drop_nodes(work, names):
    """``work`` traced, with the named pass-through nodes (functional flattens) taken out of its graph."""
    result = trace(work)  # the traced graph holds the swapped modules; drop the flatten nodes
    for node in list(result.graph.nodes):
        if node.name in names:
            node.replace_all_uses_with(node.args[0])
            result.graph.erase_node(node)
    result.recompile()
    return result


def _crop_difference(model, converted, input_size, stride) -> float:
    """Max |cell - model(crop)| / max |model(crop)| over the cells of a 2 x 2 grid (a seeded random input
    one stride larger than the window each way)."""
    c, h, w = input_size
    g = torch.Generator().manual_seed(0)
    like = next(model.parameters())
    x = torch.randn(1, c, h + stride[0], w + stride[1], generator=g).to(like)
    with torch.no_grad():
        grid = converted(x)  # (1, K, 2, 2)
        diff = scale = 0.0
        for i in range(2):
            for j in range(2):
                crop = model(x[..., i * stride[0]:i * stride[0] + h, j * stride[1]:j * stride[1] + w])
                diff = max(diff, float((grid[..., i, j].reshape(crop.shape) - crop).abs().max()))
                scale = max(scale, float(crop.abs().max()))
    return diff / max(scale, 1e-30)

