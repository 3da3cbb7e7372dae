"""``optimize(model, example)``: the exact rewrites that make an eval model faster on this machine.

1. fold eval BatchNorms and merge linear pairs (``merge_pointwise``, which folds first);
2. replace every ``SharedMLP``, and every run of two or more 1x1 convs (with the BatchNorm /
   activation / dropout between them) inside an ``nn.Sequential``, by a ``FusedPointwiseChain``;
3. move the model and its input to channels_last when that runs faster on ``example`` (timed);
4. check the outputs against the original (float64, within ``tol`` of the output scale).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import OneByOneError
from . import engine
from . import graph as G
from .fused import FusedPointwiseChain, _is_1x1
from .layers import ChannelBatchNorm, SharedMLP
from .report import RewriteReport, finish, probe_input
from .rewrites import merge_pointwise

_BETWEEN = (nn.BatchNorm1d, nn.BatchNorm2d, ChannelBatchNorm, nn.ReLU, nn.ReLU6, nn.GELU, nn.Identity, nn.Dropout)


class ChannelsLast(nn.Module):
    """Runs ``model`` (its weights already channels_last) on a channels_last copy of a 4-D input."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a new Module starts in training mode; keep the model's

    def forward(self, x):
        return self.model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)


def _runs(seq: nn.Sequential):
    """(start, stop) of each run: a 1x1 conv (not Linear), then 1x1 convs, norms, activations, dropout."""
    mods, i = list(seq), 0
    while i < len(mods):
        if _is_1x1(mods[i]) and not isinstance(mods[i], nn.Linear):
            j = i + 1
            while j < len(mods) and (isinstance(mods[j], _BETWEEN) or _is_1x1(mods[j]) and not isinstance(mods[j], nn.Linear)):
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def fuse_chains(model: nn.Module, report: RewriteReport) -> nn.Module:
    """Swap SharedMLPs and 1x1 runs in Sequentials for FusedPointwiseChains (in place)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, SharedMLP):
            try:
                chain = FusedPointwiseChain.from_shared_mlp(m)
            except OneByOneError as e:
                report.skipped.append((name, str(e)))
                continue
            G.replace_module(model, name, chain)
            report.changed.append(f"{name}: SharedMLP {m.widths} -> FusedPointwiseChain (tile {chain.plan.tile})")
        elif isinstance(m, nn.Sequential):
            for i, j in list(_runs(m)):
                if sum(_is_1x1(layer) for layer in list(m)[i:j]) < 2:
                    continue  # one 1x1 conv: one oneDNN call already; tiling it only adds Python overhead (measured)
                try:
                    chain = FusedPointwiseChain.from_layers(list(m)[i:j])
                except OneByOneError as e:
                    report.skipped.append((f"{name}[{i}:{j}]", str(e)))
                    continue
                m[i] = chain
                for k in range(i + 1, j):
                    m[k] = nn.Identity()
                report.changed.append(f"{name or 'model'}[{i}:{j}]: {j - i} layers -> FusedPointwiseChain {chain.plan.widths}")
    return model


def optimize(model: nn.Module, example=None, *, input_size=None, tol: float = 1e-4, channels_last=None):
    """An eval model rewritten for speed, with the same outputs; returns (model, RewriteReport).

    Args:
        example: an input batch to trace, time and check on (or ``input_size``, one sample's shape).
        tol: allowed max |difference| relative to the output scale, checked in float64.
        channels_last: True / False to force; None times both on ``example``.
    """
    if model.training:
        raise OneByOneError(f"optimize needs an eval-mode model (BatchNorm folding uses running statistics); "
                            f"call {type(model).__name__}.eval() first")
    x = probe_input(model, example, input_size)
    report = RewriteReport("optimize")
    try:
        work, merged = merge_pointwise(model, example=x, tol=tol)
        report.changed += merged.changed
        report.skipped += merged.skipped
    except OneByOneError as e:  # e.g. a model fx cannot trace: fusing by module structure still works
        work = copy.deepcopy(model)
        report.skipped.append(("fold_batchnorm / merge_pointwise", str(e)))
    work = fuse_chains(work, report)
    has_conv = any(isinstance(m, nn.Conv2d) or getattr(m, "channel_dim", None) == 1 for m in work.modules()) and x.dim() == 4
    if has_conv and channels_last is not False:
        cl = ChannelsLast(copy.deepcopy(work).to(memory_format=torch.channels_last))
        with torch.no_grad():
            faster = channels_last or engine.seconds(cl, x) < engine.seconds(work, x)
        if faster:
            work = cl
            report.changed.append("model and input moved to channels_last")
        else:
            report.notes.append("channels_last was timed and ran slower: kept the input's layout")
    return finish(report, model, work, x, tol, inplace=False)
