"""Batch norms recognised by what they compute, not by their class.

In eval mode a batch norm maps channel c to ``(x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c]``.
Models carry it as ``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``, torchvision's ``FrozenBatchNorm2d`` (no
``_BatchNorm`` at all), timm's ``BatchNormAct2d`` / ``FrozenBatchNormAct2d`` (the norm, then the module's own
dropout and activation) or a user's module calling ``F.batch_norm`` on its buffers. ``canonical`` swaps each
module that holds running statistics and computes exactly that (then its children, in order), checked in
float64 on a seeded random input of the shape it is called with, for plain modules: an eval
``nn.BatchNormNd`` followed by those children. The rewrites then read one kind of norm; ``restore`` puts
back the original of every norm a rewrite did not fold, so a model keeps its frozen norms frozen.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from .. import algebra
from . import graph as G
from .capture import calls_of
from .tensors import numpy64

BY_RANK = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _vector(v, c) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() == 1 and v.numel() == c and v.is_floating_point()


def _statistics(m: nn.Module):
    """(mean, var, weight, bias, eps) when ``m`` holds batch-norm state (weight, bias may be None), else None."""
    mean, var, eps = getattr(m, "running_mean", None), getattr(m, "running_var", None), getattr(m, "eps", None)
    if not (isinstance(mean, torch.Tensor) and mean.dim() == 1 and _vector(var, mean.numel())):
        return None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        return None
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    if any(v is not None and not _vector(v, mean.numel()) for v in (w, b)):
        return None
    return mean, var, w, b, float(eps)


def _computes_norm(m: nn.Module, stats, shape) -> bool:
    """Does ``m`` compute the eval batch norm of ``stats`` and then its children, on a random input of ``shape``?"""
    mean, var, w, b, eps = (s.detach().double() if isinstance(s, torch.Tensor) else s for s in stats)
    shape = (min(shape[0], 2), shape[1], *(min(s, 3) for s in shape[2:]))  # a norm acts per value: a few suffice
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tail = nn.Sequential(*m.children())
    try:  # in float64 without a copy: ``m`` belongs to the rewrite's working copy of the model
        with torch.no_grad():
            want = functional_call(tail, _float64_state(tail), (F.batch_norm(x, mean, var, w, b, False, 0.0, eps),))
            got = functional_call(m, _float64_state(m), (x,))
    except Exception:  # noqa: BLE001 - a module that does not run on this input is simply not a norm
        return False
    return isinstance(got, torch.Tensor) and got.shape == want.shape and bool(
        (got - want).abs().max() <= 1e-9 * max(1.0, float(want.abs().max())))


def _float64_state(m: nn.Module) -> dict:
    return {k: t.double() if t.is_floating_point() else t for k, t in
            [*m.named_parameters(remove_duplicate=False), *m.named_buffers(remove_duplicate=False)]}


def _plain(m: nn.Module, stats, rank: int) -> nn.Module:
    """An eval ``nn.BatchNormNd`` with ``m``'s statistics, followed by ``m``'s children (if any)."""
    mean, var, w, b, eps = stats
    bn = BY_RANK[rank](mean.numel(), eps=eps).to(device=mean.device, dtype=(w if w is not None else mean).dtype)
    with torch.no_grad():
        bn.running_mean.copy_(mean), bn.running_var.copy_(var)
        bn.weight.copy_(w if w is not None else torch.ones_like(mean))
        bn.bias.copy_(b if b is not None else torch.zeros_like(mean))
    bn.weight.requires_grad_(bool(getattr(w, "requires_grad", False)))
    bn.bias.requires_grad_(bool(getattr(b, "requires_grad", False)))
    bn.eval()
    kids = list(m.named_children())
    return nn.Sequential(OrderedDict([("bn", bn)] + kids)) if kids else bn


def _input_shapes(model: nn.Module, example, wanted: set) -> dict:
    """id(module) -> the shape of the first tensor each module in ``wanted`` was called with (one run)."""
    first, _ = calls_of(model, example, [m for m in model.modules() if id(m) in wanted])
    return {id(m): tuple(args[0].shape) for m, (args, _, _) in first.items()
            if args and isinstance(args[0], torch.Tensor)}


def canonical(work: nn.Module, example, report) -> dict:
    """Swap, in place on ``work``, every module computing an eval batch norm (see the module's docstring) that
    is not already a ``_BatchNorm`` without children (which every rewrite reads as it is) for plain modules;
    returns {path: (original, plain)} for ``restore``. A module holding running statistics that does not compute
    the norm from them (a batch-statistics norm in training mode, or something else) is named in
    ``report.skipped``."""
    found = {}
    for name, m in work.named_modules():
        stats = _statistics(m)
        if stats is not None and name and not (isinstance(m, _BatchNorm) and not list(m.children())):
            found[name] = (m, stats)
    if not found:
        return {}
    shapes = _input_shapes(work, example, {id(m) for m, _ in found.values()})
    swapped = {}
    for name, (m, stats) in found.items():
        shape = shapes.get(id(m))
        if shape is None:
            continue  # not called on this input: nothing of it runs, nothing to fold
        if len(shape) not in BY_RANK or shape[1] != stats[0].numel() or not _computes_norm(m, stats, shape):
            report.skipped.append((name, f"{type(m).__name__} holds running statistics but does not compute an "
                                         f"eval batch norm from them on its {shape} input"))
            continue
        plain = _plain(m, stats, len(shape))
        G.replace_module(work, name, plain)
        swapped[name] = (m, plain)
    return swapped


def affine(bn: nn.Module) -> tuple:
    """(scale, shift) of an eval ``_BatchNorm``, float64 NumPy vectors: ``y[:, c] = scale[c] * x[:, c] + shift[c]``
    (a norm without affine parameters has weight 1, bias 0)."""
    ones = np.ones(bn.num_features)
    return algebra.batchnorm_affine(numpy64(bn.running_mean), numpy64(bn.running_var),
                                    numpy64(bn.weight) if bn.affine else ones,
                                    numpy64(bn.bias) if bn.affine else 0 * ones, bn.eps)


def norm_of(plain: nn.Module) -> nn.Module:
    """The ``nn.BatchNormNd`` of a plain form (itself, or the first module of its Sequential)."""
    return plain.bn if isinstance(plain, nn.Sequential) else plain


def restore(work: nn.Module, swapped: dict) -> nn.Module:
    """Put back the original module of every norm in ``swapped`` that is still in ``work`` unfolded; a folded one
    leaves only the children it ran after the norm (or nothing: ``nn.Identity``)."""
    for name, (original, plain) in swapped.items():
        try:
            now = work.get_submodule(name)
        except AttributeError:
            continue  # a rewrite replaced a module around it
        if now is not plain:
            continue
        if not isinstance(norm_of(plain), nn.Identity):
            work = G.replace_module(work, name, original)
        elif isinstance(plain, nn.Sequential):
            kids = [(n, c) for n, c in plain.named_children() if n != "bn"]
            work = G.replace_module(work, name, nn.Sequential(OrderedDict(kids)))
        else:
            work = G.replace_module(work, name, nn.Identity())
    return work
