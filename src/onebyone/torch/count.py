"""The cost of one call of a torch layer, from ``onebyone.cost``."""
from __future__ import annotations

import torch
from torch import nn

from .. import cost
from .layers import Pointwise


def layer_cost(m: nn.Module, x: torch.Tensor, dtype=None) -> cost.Cost | None:
    """The cost of one call of a Conv / Linear / Pointwise module on input x (None for other modules);
    bytes at ``dtype`` (default: x's dtype)."""
    shape, dtype = tuple(x.shape), dtype or str(x.dtype).removeprefix("torch.")
    if isinstance(m, Pointwise):
        kw = dict(stride=m.stride, groups=m.groups, bias=m.bias is not None, dtype=dtype)
        if m.channel_dim == 1 and x.dim() >= 3:
            return cost.conv1x1_cost(shape, m.out_channels, **kw)
        # channels on the last axis (or (B, C)): padded to the (N, *S, C) form cost expects
        cl = shape if len(shape) >= 3 else (1,) * (3 - len(shape)) + shape
        return cost.conv1x1_cost(cl, m.out_channels, layout="NHWC", **kw)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return cost.conv_cost(shape, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                              dilation=m.dilation, groups=m.groups, bias=m.bias is not None,
                              dtype=dtype)
    if isinstance(m, nn.Linear):
        return cost.dense_cost(shape, m.out_features, bias=m.bias is not None, dtype=dtype)
    return None
