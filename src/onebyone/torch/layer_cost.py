"""The kind and cost of one call of a torch layer, from ``onebyone.cost``.

A module outside this file (the fast path's ``ConvAct`` and ``FusedPointwiseChain``) describes itself
through a ``cost_of_call(x, dtype) -> (kind, Cost)`` method, so that the analyzer needs no import of it.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import cost
from ..stats import conv_kind
from .layer_kinds import CONVS
from .layers import Pointwise


def counts_products(m: nn.Module) -> bool:
    """Is ``m`` a layer whose call ``layer_cost`` can count?"""
    return isinstance(m, CONVS + (nn.Linear, Pointwise)) or hasattr(m, "cost_of_call")


def layer_cost(m: nn.Module, x: torch.Tensor, dtype=None) -> tuple[str, cost.Cost] | None:
    """(kind, cost) of one call of a Conv / Linear / Pointwise module, or of a module with
    ``cost_of_call``, on input x (None for other modules); bytes at ``dtype`` (default: x's dtype)."""
    shape, dtype = tuple(x.shape), dtype or str(x.dtype).removeprefix("torch.")
    if hasattr(m, "cost_of_call"):
        return m.cost_of_call(x, dtype)
    if isinstance(m, Pointwise):
        kw = dict(stride=m.stride, groups=m.groups, bias=m.bias is not None, dtype=dtype)
        if m.channel_dim == 1 and x.dim() >= 3:
            return "pointwise", cost.conv1x1_cost(shape, m.out_channels, **kw)
        # channels on the last axis (or (B, C)): padded to the (N, *S, C) form cost expects
        cl = shape if len(shape) >= 3 else (1,) * (3 - len(shape)) + shape
        return "pointwise", cost.conv1x1_cost(cl, m.out_channels, layout="NHWC", **kw)
    if isinstance(m, CONVS):
        return conv_kind(m.kernel_size, m.groups, m.in_channels), conv_cost(m, x, dtype)
    if isinstance(m, nn.Linear):
        return "dense", cost.dense_cost(shape, m.out_features, bias=m.bias is not None, dtype=dtype)
    return None


def conv_cost(m: nn.Module, x: torch.Tensor, dtype: str) -> cost.Cost:
    """The cost of a conv-like module (``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups``,
    ``out_channels``, ``bias`` as nn.Conv2d has them) on x."""
    return cost.conv_cost(tuple(x.shape), m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                          dilation=m.dilation, groups=m.groups, bias=m.bias is not None, dtype=dtype)
