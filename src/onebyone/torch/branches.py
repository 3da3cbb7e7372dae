"""``merge_branches``: parallel linear branches of a model folded into one convolution (the structural
re-parameterization of RepVGG, ACNet, Diverse Branch Block and MobileOne, found in the traced graph rather
than written per block class); ``expand_branches``: one convolution split into branches that sum to it.

A branch is a linear map of a tensor ``x``: a Conv2d (any kernel up to the largest, centred by its
padding), optionally after a bias-free 1x1 conv or before an eval BatchNorm; an average pool (which counts
its padding), optionally after a 1x1 conv; a BatchNorm of ``x``; or ``x`` itself. The kernel algebra is
``onebyone.reparam``'s.
"""
from __future__ import annotations

import dataclasses
import functools
import operator

import numpy as np
import torch
from torch import fx, nn

from .. import reparam
from ..activations import REGISTRY
from ..checks import as_pair, check_int
from ..errors import OneByOneError
from . import activations as acts
from . import graph as G
from . import norms
from . import record as R
from .capture import gc_paused, trace
from .layer_kinds import own_forward
from .rewrite_report import RewriteReport, finish
from .rewrites import _check_eval, _original_name
from .tensors import copy_model, numpy64, probe_input, tensor

ADDS = {operator.add, torch.add}
SUBS = {operator.sub, torch.sub}
MULS = {operator.mul, torch.mul}


@dataclasses.dataclass
class Term:
    """One branch as a convolution of ``src``: its kernel for a number of groups, bias, stride, padding."""

    src: fx.Node
    kernel: object  # groups -> (O, C/g, kh, kw) float64
    bias: np.ndarray
    stride: tuple
    padding: tuple
    size: tuple  # (kh, kw)
    groups: int | None  # None: the same map under any groups (an identity, a pool, a BatchNorm)
    what: str
    modules: tuple = ()  # the paths of the modules it takes in (convs, norms, pools, Linears)


def _is_node(v) -> bool:
    return isinstance(v, (fx.Node, R.Node))


def _is_add(node) -> bool:
    """A plain ``a + b`` (no ``alpha``), as fx traces it or an eager run records it."""
    plain = not node.kwargs and len(node.args) == 2
    return plain and ((node.op == "call_function" and node.target in ADDS)
                      or (node.op == "call_method" and node.target == "add"))


def _is_sub(node) -> bool:
    plain = not node.kwargs and len(node.args) == 2
    return plain and ((node.op == "call_function" and node.target in SUBS)
                      or (node.op == "call_method" and node.target == "sub"))


def _leaves(gm, add, scale=1.0) -> list:
    """The terms of a sum as (value, scale): an add's or a subtraction's operands, through inner sums and
    per-channel scalings (``x * gamma``, timm's LayerScale) that feed only it; ``scale`` is a number or a
    float64 vector over the output channels."""
    out = []
    for a, s in zip(add.args[:2], (scale, -scale if _is_sub(add) else scale)):
        inner = a
        while _is_node(inner) and _passes_on(inner) and len(inner.users) == 1:  # drop_path as nn.Identity
            inner = inner.args[0]
        scaled = _channel_scale(gm, inner) if _is_node(inner) and len(inner.users) == 1 else None
        if scaled is not None:
            inner, s = scaled[0], s * scaled[1]
            while _is_node(inner) and _passes_on(inner) and len(inner.users) == 1:
                inner = inner.args[0]
            a = inner
        if _is_node(inner) and (_is_add(inner) or _is_sub(inner)) and len(inner.users) == 1:
            out += _leaves(gm, inner, s)
        else:
            out.append((a, s))
    return out


def _channel_scale(gm, node) -> tuple | None:
    """(value, float64 vector or number) where ``node`` multiplies one value by a constant per channel: a
    number, or a parameter or buffer of shape (C, 1, 1) / (1, C, 1, 1) on a (B, C, H, W) map, (C,) / (1, C) on
    a (B, C) vector; else None."""
    if not (len(node.args) == 2 and not node.kwargs and ((node.op == "call_function" and node.target in MULS)
                                                          or (node.op == "call_method" and node.target == "mul"))):
        return None
    for value, const in (node.args, node.args[::-1]):
        if not _is_node(value) or G.shape(value) is None or len(G.shape(value)) not in (2, 4):
            continue
        if isinstance(const, (int, float)) and not isinstance(const, bool):
            return value, float(const)
        t = _constant(gm, const) if _is_node(const) else None
        c, rank = G.shape(value)[1], len(G.shape(value))
        ok = {4: ((c, 1, 1), (1, c, 1, 1)), 2: ((c,), (1, c))}[rank]
        if t is not None and tuple(t.shape) in ok and t.is_floating_point():
            return value, numpy64(t).reshape(-1)
    return None


def _constant(gm, node) -> torch.Tensor | None:
    """The parameter or buffer a node stands for: an fx ``get_attr``, or a value the eager record saw no call
    make that is one of the model's own tensors."""
    if isinstance(node, fx.Node) and node.op == "get_attr":
        try:
            return functools.reduce(getattr, node.target.split("."), gm)
        except AttributeError:
            return None
    if isinstance(node, R.Node) and node.op == "placeholder" and node.key is not None:
        return next((t for t in (*gm.parameters(), *gm.buffers()) if id(t) == node.key[0]), None)
    return None


def _source(node):
    """The value ``node`` hands on: itself, or through Identity and eval dropout calls the tensor they read."""
    while _is_node(node) and _passes_on(node):
        node = node.args[0]
    return node


def _passes_on(node) -> bool:
    """A node that hands its one input on unchanged: an ``nn.Identity`` or eval dropout call (fx or record)."""
    m = node.graph.owning_module.get_submodule(node.target) if isinstance(node, fx.Node) and \
        node.op == "call_module" else getattr(node.source, "module", None) if isinstance(node, R.Node) else None
    return isinstance(m, nn.Identity) or (isinstance(m, nn.modules.dropout._DropoutNd) and not m.training)


def _conv_term(gm, node, m: nn.Conv2d) -> Term | str:
    """A Conv2d branch (after a bias-free 1x1 conv, if one feeds only it)."""
    padding = _explicit_padding(m)
    if m.padding_mode != "zeros" or as_pair(m.dilation) != (1, 1) or padding is None:
        return f"`{node.target}` has dilation, 'same' padding of an even kernel or a non-zero padding mode"
    w, b = numpy64(m.weight), numpy64(m.bias) if m.bias is not None else np.zeros(m.out_channels)
    src, inner = node.args[0], G.module(gm, node.args[0])
    what, modules = f"{m.kernel_size[0]}x{m.kernel_size[1]} conv", (node.target,)
    if (isinstance(inner, nn.Conv2d) and not own_forward(inner) and inner.kernel_size == (1, 1)
            and as_pair(inner.stride) == (1, 1) and as_pair(inner.padding) == (0, 0) and inner.groups == 1
            and m.groups == 1 and len(src.users) == 1):
        b1 = numpy64(inner.bias) if inner.bias is not None else np.zeros(inner.out_channels)
        if np.any(b1) and any(padding):
            return f"`{src.target}` adds a bias that `{node.target}`'s zero padding would not see"
        w, b = reparam.compose(numpy64(inner.weight), w), b + w.sum(axis=(2, 3)) @ b1
        src, what, modules = src.args[0], "1x1 conv -> " + what, (src.target, node.target)
    return Term(src, lambda g, w=w: w, b, as_pair(m.stride), padding, tuple(m.kernel_size), m.groups, what, modules)


def _explicit_padding(m: nn.Conv2d) -> tuple | None:
    """A conv's padding as a pair of numbers: "valid" is none, "same" half an odd kernel (stride 1, as torch
    requires of it); None for "same" on an even kernel (torch pads one side more: no centred window)."""
    if not isinstance(m.padding, str):
        return as_pair(m.padding)
    if m.padding == "valid":
        return 0, 0
    return None if any(k % 2 == 0 for k in m.kernel_size) else tuple(k // 2 for k in m.kernel_size)


def _pool_term(gm, node, m: nn.AvgPool2d) -> Term | str:
    """An average pool branch (after a 1x1 conv, if one feeds only it)."""
    k, s, p = as_pair(m.kernel_size), as_pair(m.stride or m.kernel_size), as_pair(m.padding)
    if m.ceil_mode or (any(p) and not m.count_include_pad) or m.divisor_override:
        return f"`{node.target}` ceil_mode, divisor_override or a padding it does not count"
    c = G.shape(node)[1]
    src, inner = node.args[0], G.module(gm, node.args[0])
    if (isinstance(inner, nn.Conv2d) and not own_forward(inner) and inner.kernel_size == (1, 1) and inner.groups == 1
            and len(src.users) == 1 and as_pair(inner.stride) == (1, 1) and as_pair(inner.padding) == (0, 0)
            and inner.padding_mode == "zeros"):
        b1 = numpy64(inner.bias) if inner.bias is not None else np.zeros(inner.out_channels)
        if np.any(b1) and any(p):
            return f"`{src.target}` adds a bias that `{node.target}`'s zero padding would not see"
        w = reparam.compose(numpy64(inner.weight), reparam.average_kernel(c, 1, k))
        return Term(src.args[0], lambda g, w=w: w, b1.copy(), s, p, k, 1, f"1x1 conv -> {k[0]}x{k[1]} average pool",
                    (src.target, node.target))
    return Term(src, lambda g: reparam.average_kernel(c, g, k), np.zeros(c), s, p, k, None,
                f"{k[0]}x{k[1]} average pool", (node.target,))


def _term(gm, leaf) -> Term | str:
    """The branch ending at ``leaf`` as a convolution of the tensor it reads, or why it is not one. A leaf
    that is no conv, pool or BatchNorm output is the identity of itself (through ``nn.Identity``)."""
    while isinstance(G.module(gm, leaf), nn.Identity) and len(leaf.users) == 1:
        leaf = leaf.args[0]
    if G.shape(leaf) is None:
        return f"`{leaf.name}`'s shape is not known (the trace measured no tensor there): branches merge on maps"
    if len(G.shape(leaf)) not in (2, 4):
        return f"`{leaf.name}` is a {G.shape(leaf)} tensor: branches merge on (B, C, H, W) maps or (B, C) vectors"
    m, bn = G.module(gm, leaf), None
    if isinstance(m, nn.BatchNorm2d):
        if m.running_mean is None:
            return f"`{leaf.target}` keeps no running statistics"
        bn, bn_path, inner = m, leaf.target, leaf.args[0]
        if not (isinstance(G.module(gm, inner), (nn.Conv2d, nn.AvgPool2d)) and len(inner.users) == 1):
            return _identity(inner, G.shape(inner)[1], bn, bn_path)  # a BatchNorm of the input: a scaled identity
        leaf, m = inner, G.module(gm, inner)
    if own_forward(m):
        return f"`{leaf.target}` ({type(m).__name__}) has a forward of its own"
    if isinstance(m, nn.Conv2d):
        t = _conv_term(gm, leaf, m)
    elif isinstance(m, nn.AvgPool2d):
        t = _pool_term(gm, leaf, m)
    elif isinstance(m, nn.Linear) and G.shape(leaf) is not None and len(G.shape(leaf)) == 2:
        w = numpy64(m.weight)[:, :, None, None]  # (O, C) -> (O, C, 1, 1): a Linear on (B, C) is a 1x1 conv
        b = numpy64(m.bias) if m.bias is not None else np.zeros(m.out_features)
        t = Term(leaf.args[0], lambda g, w=w: w, b, (1, 1), (0, 0), (1, 1), 1, "linear", (leaf.target,))
    elif G.shape(leaf) is not None and len(G.shape(leaf)) == 2:
        return _identity(leaf, G.shape(leaf)[1])
    elif G.shape(leaf) is None or len(G.shape(leaf)) != 4:
        return f"`{leaf.name}` is not a (B, C, H, W) or (B, C) tensor"
    else:
        return _identity(leaf, G.shape(leaf)[1])
    return t if isinstance(t, str) or bn is None else _with_bn(t, bn, bn_path)


def _with_bn(t: Term, bn: nn.BatchNorm2d, path: str) -> Term:
    scale, shift = norms.affine(bn)
    kernel = lambda g, k=t.kernel: k(g) * scale[:, None, None, None]  # noqa: E731
    return dataclasses.replace(t, kernel=kernel, bias=t.bias * scale + shift, what=t.what + " + BatchNorm",
                               modules=t.modules + (path,))


def _scaled(t: Term, s) -> Term:
    """The branch ``t`` times a number or a vector over its output channels (minus: a subtracted branch)."""
    v = np.asarray(s, dtype=np.float64)
    kernel = lambda g, k=t.kernel: k(g) * (v[:, None, None, None] if v.ndim else v)  # noqa: E731
    what = (f"scaled {t.what}" if v.ndim else t.what if v == 1 else f"minus {t.what}" if v == -1
            else f"{float(v):g} x {t.what}")
    return dataclasses.replace(t, kernel=kernel, bias=t.bias * v, what=what)


def _identity(src, channels: int, bn=None, bn_path: str = "") -> Term:
    t = Term(src, lambda g: reparam.identity_kernel(channels, g), np.zeros(channels), (1, 1), (0, 0), (1, 1), None,
             "identity")
    return t if bn is None else _with_bn(t, bn, bn_path)


def _plan(gm, add) -> tuple | str:
    """(the tensor the branches read, the merged kernel, bias, stride, padding, groups, the branches' names, the
    paths of the modules they take in) of the sum at ``add``, or why it cannot be one convolution."""
    leaves = [(v, s) for v, s in _leaves(gm, add) if _is_node(v) or v != 0]  # Python's sum() starts from 0
    terms = [_term(gm, leaf) if _is_node(leaf) else "a constant term" for leaf, _ in leaves]
    bad = [t for t in terms if isinstance(t, str)]
    if bad:
        return bad[0]
    terms = [t if isinstance(s, float) and s == 1.0 else _scaled(t, s) for t, (_, s) in zip(terms, leaves)]
    terms = [dataclasses.replace(t, src=_source(t.src)) for t in terms]
    if len({id(t.src) for t in terms}) != 1:
        return (f"the branches read different tensors ({', '.join(sorted({t.src.name for t in terms}))}): a branch "
                "holding anything but convs, average pools, BatchNorms and identities (a nonlinearity, a flip, a "
                "mean...) is not one the merge folds")
    fixed = {t.groups for t in terms if t.groups is not None}
    if not fixed:
        return "no convolution among the branches"
    if len(fixed) > 1 or len({t.stride for t in terms}) > 1:
        return f"the branches differ in groups ({sorted(fixed)}) or stride ({sorted({t.stride for t in terms})})"
    size = tuple(max(t.size[i] for t in terms) for i in range(2))
    pads = {tuple(p + (k - s) // 2 for p, k, s in zip(t.padding, size, t.size)) for t in terms}
    if len(pads) > 1 or any((k - s) % 2 for t in terms for k, s in zip(size, t.size)):
        return f"the branches' windows are not centred alike (kernels {[t.size for t in terms]}, paddings " \
               f"{[t.padding for t in terms]}): they cannot be aligned exactly"
    groups = fixed.pop()
    kernel, bias = reparam.merge([t.kernel(groups) for t in terms], [t.bias for t in terms], size)
    return (terms[0].src, kernel, bias, terms[0].stride, pads.pop(), groups, [t.what for t in terms],
            [p for t in terms for p in t.modules])


@gc_paused
def merge_branches(model: nn.Module, example=None, input_size=None, tol: float = 1e-4, *, inplace=False):
    """Fold every sum of parallel linear branches of one tensor into one ``nn.Conv2d``; returns (model,
    RewriteReport). Each sum (an ``add``, or adds of adds) whose terms are all linear maps of the same
    tensor, with one stride and windows that centre alike, becomes one conv (its activation stays after it).
    The sums are found in torch.fx's graph; for a model fx cannot trace, in one eager run
    (``record.record_calls``), where a merge replaces the innermost module whose call computes exactly that
    sum of its input (and the activation after it) and whose own ``forward`` reads no shape (Python could
    branch on it); a sum no such module computes is skipped, said why.
    ``report.changed`` names each merge and its branches; every other sum is in ``report.skipped`` with the
    reason. Checked in float64 within ``tol`` of the output scale.

    Merges found in fx's graph give a ``torch.fx.GraphModule``: the same ``forward``, but not the class's other
    methods (timm's ``forward_features``, ``reset_classifier``) nor its state_dict names; ``inplace=True`` then
    warns and leaves the model given unchanged."""
    _check_eval(model)
    x = probe_input(model, example, input_size)
    report, work = RewriteReport("merge_branches"), copy_model(model)  # the model given is not touched
    work, report = merged_branches(work, x, report)
    return finish(report, model, work, x, tol, inplace)


def merged_branches(work: nn.Module, x, report: RewriteReport) -> tuple[nn.Module, RewriteReport]:
    """``merge_branches``' rewrite of ``work`` itself (traced on ``x``), not yet checked; norms that compute an
    eval batch norm under another class (``norms``) are read as ``nn.BatchNormNd`` (those no merge takes
    keep their own module where no fx graph was built)."""
    swapped = norms.canonical(work, x, report)
    try:
        site = _FxSums(trace(work, x))
    except OneByOneError as e:
        site = _EagerSums(work, x)
        report.notes.append(f"{e}; the sums were read from one eager run instead")
    removed = set()  # nodes of sums merged already
    for add in reversed([n for n in site.nodes if _is_add(n) or _is_sub(n)]):  # the outermost sum first
        if add in removed:
            continue
        plan = _plan(site.root, add)
        gone = plan if isinstance(plan, str) else site.apply(add, plan[0], _conv(plan, next(work.parameters())))
        if isinstance(gone, str):
            report.skipped.append((G.where(add), gone))
            continue
        removed |= gone
        kernel, groups, whats = plan[1], plan[5], plan[6]
        paths = [_original_name(p, swapped) for p in plan[7]]  # timm's `a.bn`, not its plain form's `a.bn.bn`
        one = "Linear" if " + ".join(whats).count("linear") else f"{kernel.shape[2]}x{kernel.shape[3]} conv"
        report.changed.append(f"{G.where(add)}: {' + '.join(whats)} -> one {one}"
                              + (f" (groups {groups})" if groups > 1 else "") + f", from {', '.join(paths)}")
    if not removed:
        return norms.restore(work, swapped), report  # nothing merged: the model keeps its own class
    done = site.done()
    if isinstance(done, fx.GraphModule) and swapped:
        kinds = ", ".join(sorted({type(m).__name__ for m, _ in swapped.values()}))
        report.notes.append(f"{len(swapped)} norm(s) of other classes ({kinds}) run as eval nn.BatchNormNd in the "
                            "traced model")
        return done, report
    return norms.restore(done, swapped), report


def _conv(plan, like) -> nn.Module:
    """The merged layer: an ``nn.Conv2d``, or an ``nn.Linear`` where the branches read a (B, C) tensor."""
    src, kernel, bias, stride, padding, groups, *_ = plan
    if G.shape(src) is not None and len(G.shape(src)) == 2:
        lin = nn.Linear(kernel.shape[1], kernel.shape[0]).to(like)
        with torch.no_grad():
            lin.weight.copy_(tensor(kernel[:, :, 0, 0], like)), lin.bias.copy_(tensor(bias, like))
        return lin
    conv = nn.Conv2d(kernel.shape[1] * groups, kernel.shape[0], kernel.shape[2:], stride, padding,
                     groups=groups).to(like)
    with torch.no_grad():
        conv.weight.copy_(tensor(kernel, like)), conv.bias.copy_(tensor(bias, like))
    return conv


class _FxSums:
    """The sums of a traced graph; a merge puts the conv in the graph in place of the sum."""

    def __init__(self, gm: fx.GraphModule):
        self.root, self.nodes = gm, list(gm.graph.nodes)

    def apply(self, add, src, conv) -> set:
        gm = self.root
        gm.add_submodule(f"merged_{add.name}", conv)
        with gm.graph.inserting_before(add):
            new = gm.graph.call_module(f"merged_{add.name}", (src,))
        add.replace_all_uses_with(new)
        gone, todo = set(), [add]  # what only the sum read, back to the branches' input: no longer needed
        while todo:
            n = todo.pop()
            if n in gone or n.users or n.op in ("placeholder", "output") or n.is_impure():
                continue
            todo += n.all_input_nodes
            gm.graph.erase_node(n)
            gone.add(n)
        return gone

    def done(self) -> nn.Module:
        self.root.graph.lint()
        self.root.recompile()
        self.root.delete_all_unused_submodules()
        return self.root


class _EagerSums:
    """The sums of one eager run (a model fx cannot trace); a merge replaces the module whose call computes
    exactly the sum of its input's branches (and the activation after it) with the conv (and activation)."""

    def __init__(self, work: nn.Module, x):
        self.root, self.record = work, R.record_calls(work, x)
        self.nodes = R.nodes(self.record)

    def apply(self, add, src, conv) -> set | str:
        group, todo = set(), [add]  # every node from the branches' input (excluded) to the sum
        while todo:
            n = todo.pop()
            if n is not src and n not in group and n.op != "placeholder":  # a placeholder here: a layer scale
                group.add(n)
                todo += R.tensor_nodes(n.args, n.kwargs)
        user = G.only_user(add)
        act = _activation(self.root, user) if user is not None else None
        why = ("fx could not trace the model, and no module's call computes exactly this sum of its input "
               "(a merge found in an eager run replaces a whole module, called at one place)")
        for i, c in reversed(list(enumerate(self.record.containers))):  # the innermost module first
            if c.input != src.key or self.record.counts[id(c.module)] != 1:
                continue
            inside = {n for n in self.nodes if n.source is not None and i in n.source.scope}
            if c.output == add.key and inside == group:
                new = conv
            elif act is not None and c.output == user.key and inside == group | {user}:
                new = nn.Sequential(conv, act)
            else:
                continue
            if i in self.record.queried:
                why = (f"`{c.name or '(the model)'}` computes this sum but its forward reads a shape or a tensor's "
                       "truth (Python may branch on it): replacing the module would drop that")
                continue
            self.root = G.replace_module(self.root, c.name, new)
            return inside
        return why

    def done(self) -> nn.Module:
        return self.root


def _activation(root, node) -> nn.Module | None:
    """What ``node`` applies to its single input, as a module: an activation or other elementwise module,
    or a registered activation called as a function with its defaults; None for anything else."""
    if not G.is_elementwise(root, node):
        return None
    if node.op == "call_module":
        return G.module(root, node)
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    found = [n for n, a in REGISTRY.items() if a.torch_function == name]
    if found and len(node.args) == 1 and set(node.kwargs) <= {"inplace"}:
        return acts.module(found[0])
    return None


class Branches(nn.Module):
    """Parallel branches whose outputs are summed: what ``expand_branches`` returns."""

    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        out = self.branches[0](x)
        for b in self.branches[1:]:
            out = out + b(x)
        return out


def expand_branches(conv: nn.Conv2d, into=("kxk", "1x1", "identity"), seed: int = 0) -> Branches:
    """``conv`` as parallel branches that sum to it, RepVGG's over-parameterization for training: "kxk" (a
    conv of ``conv``'s own size and padding, holding what the others do not), "1x1" (a 1x1 conv, small
    seeded weights, no bias) and "identity" (where in and out channels match and the stride is 1).
    ``merge_branches`` of the result gives ``conv``'s outputs back."""
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str) \
            or as_pair(conv.dilation) != (1, 1):
        raise OneByOneError(f"expand_branches takes an nn.Conv2d with numeric zero padding and dilation 1, "
                            f"got {conv!r}")
    check_int(seed, "seed", 0)
    unknown = [b for b in into if b not in ("kxk", "1x1", "identity")]
    if unknown or "kxk" not in into:
        raise OneByOneError(f"into names branches among 'kxk' (required), '1x1', 'identity'; got {tuple(into)}")
    (kh, kw), (ph, pw), g = conv.kernel_size, as_pair(conv.padding), conv.groups
    if (kh - 1) // 2 > ph or (kw - 1) // 2 > pw or kh % 2 == 0 or kw % 2 == 0:
        raise OneByOneError(f"{conv!r}: a 1x1 or identity branch needs an odd kernel centred by its padding")
    w = numpy64(conv.weight)  # (O, C/g, kh, kw)
    branches = []
    if "1x1" in into:
        gen = torch.Generator().manual_seed(seed)
        pw1 = nn.Conv2d(conv.in_channels, conv.out_channels, 1, conv.stride, (ph - (kh - 1) // 2, pw - (kw - 1) // 2),
                        groups=g, bias=False).to(conv.weight)
        with torch.no_grad():
            pw1.weight.copy_(torch.randn(pw1.weight.shape, generator=gen) * 0.1)
        w = w - reparam.center_pad(numpy64(pw1.weight), (kh, kw))
        branches.append(pw1)
    if "identity" in into:
        if conv.in_channels != conv.out_channels or as_pair(conv.stride) != (1, 1) or (ph, pw) != ((kh - 1) // 2,
                                                                                            (kw - 1) // 2):
            raise OneByOneError(f"{conv!r}: an identity branch needs as many output channels as input, stride 1 "
                                "and 'same' padding")
        w = w - reparam.identity_kernel(conv.in_channels, g, (kh, kw))
        branches.append(nn.Identity())
    main = nn.Conv2d(conv.in_channels, conv.out_channels, (kh, kw), conv.stride, (ph, pw), groups=g,
                     bias=conv.bias is not None).to(conv.weight)
    with torch.no_grad():
        main.weight.copy_(tensor(w, conv.weight))
        if conv.bias is not None:
            main.bias.copy_(conv.bias)
    return Branches([main, *branches])
