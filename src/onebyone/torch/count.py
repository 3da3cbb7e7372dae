"""The cost of one call of a torch layer, from ``onebyone.cost``."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import cost
from .convact import ConvAct
from .fused import FusedPointwiseChain
from .layers import Pointwise


def layer_cost(m: nn.Module, x: torch.Tensor, dtype=None) -> cost.Cost | None:
    """The cost of one call of a Conv / Linear / Pointwise / ConvAct / FusedPointwiseChain module on input x (None for others);
    bytes at ``dtype`` (default: x's dtype)."""
    shape, dtype = tuple(x.shape), dtype or str(x.dtype).removeprefix("torch.")
    if isinstance(m, Pointwise):
        kw = dict(stride=m.stride, groups=m.groups, bias=m.bias is not None, dtype=dtype)
        if m.channel_dim == 1 and x.dim() >= 3:
            return cost.conv1x1_cost(shape, m.out_channels, **kw)
        # channels on the last axis (or (B, C)): padded to the (N, *S, C) form cost expects
        cl = shape if len(shape) >= 3 else (1,) * (3 - len(shape)) + shape
        return cost.conv1x1_cost(cl, m.out_channels, layout="NHWC", **kw)
    if isinstance(m, FusedPointwiseChain):  # every layer at every point; reads the input, writes the (pooled) output
        widths = m.plan.widths
        points = x.numel() // widths[0]
        out = (x.shape[0], widths[-1]) if m.plan.pool else (points, widths[-1])
        w, b = m.plan.macs_per_point(), sum(widths[1:])  # weights (one per MAC of a point), biases
        size = cost.itemsize(dtype)
        return cost.Cost(out, w, b, points * w, 2 * points * w, math.prod(out), (x.numel() + w + b) * size, math.prod(out) * size)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, ConvAct)):
        return cost.conv_cost(shape, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                              dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
                              dtype=dtype)
    if isinstance(m, nn.Linear):
        return cost.dense_cost(shape, m.out_features, bias=m.bias is not None, dtype=dtype)
    return None
