"""``pointwise``: the 1x1 conv as a function, on one fixed kernel per input layout.

``y[:, o] = sum_c W[o, c] x[:, c] + b[o]`` at every position. The kernel depends only on the input's
rank and ``channel_dim`` (no timing, no state), so a model runs the same ops in every process and
exports with dynamic shapes. The weight has channels_last strides (the layout of the gradient the fast
kernels return), so, as from an ``nn.Conv2d`` moved to channels_last, a (B, C, L) or (B, C, H, W) input
gives a channels_last output whatever its own format: flatten it with ``reshape``, not ``view``.

====================================  =================================================================
input                                 kernel
====================================  =================================================================
(B, C, H, W), either memory format    ``F.conv2d``
(B, C, L)                             ``F.conv2d`` on a channels_last (B, C, L, 1) view
(B, C) and (..., C) (channel_dim=-1)  ``F.linear``; grouped: ``F.conv2d`` on a (1, C, M, 1) view
(B, C, D, H, W) and higher            channel-last, as the row above
====================================  =================================================================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import OneByOneError


def strided(x, stride: int, dims):
    """Every ``stride``-th position along ``dims`` (a 1x1 conv with a stride only subsamples)."""
    if stride == 1:
        return x
    return x[tuple(slice(None, None, stride) if a in dims else slice(None) for a in range(x.dim()))]


def _channel_last(x, w, b, groups):  # (..., C) -> (..., O)
    if groups == 1:
        return F.linear(x, w.flatten(1), b)
    if not x.numel():  # no rows: the grouped weight as one block-diagonal (O, C) matrix (a conv takes none)
        return F.linear(x, torch.block_diag(*w.flatten(1).view(groups, -1, w.shape[1]).unbind(0)), b)
    lead = x.shape[:-1]
    x4 = x.reshape(1, -1, 1, x.shape[-1]).permute(0, 3, 1, 2)  # (M, C) -> (1, C, M, 1), channels_last strides
    y = F.conv2d(x4, w, b, 1, 0, 1, groups)  # (1, O, M, 1)
    return y.permute(0, 2, 3, 1).reshape(*lead, w.shape[0])  # -> (..., O)


def _check(x, weight, groups: int, channel_dim: int) -> None:
    """A clear error for a weight that is not (O, C/groups, 1, 1) or an input without its C channels."""
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise OneByOneError(f"pointwise takes a weight of shape (O, C/groups, 1, 1), as nn.Conv2d(kernel_size=1) "
                            f"holds it, got {tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight!r}"
                            " (an (O, C) matrix: weight[:, :, None, None])")
    if x.dim() < (1 if channel_dim == -1 else 2) or x.shape[channel_dim] != weight.shape[1] * groups:
        raise OneByOneError(f"pointwise: the weight {tuple(weight.shape)} (groups={groups}) takes "
                            f"{weight.shape[1] * groups} channels on dim {channel_dim}, got input of shape "
                            f"{tuple(x.shape)}")


def pointwise(x, weight, bias=None, stride: int = 1, groups: int = 1, channel_dim: int = 1):
    """The 1x1 conv of ``x`` with ``weight`` (O, C/g, 1, 1) and ``bias`` (O,) or None.

    >>> pointwise(torch.ones(2, 3, 4, 4), torch.ones(5, 3, 1, 1)).shape
    torch.Size([2, 5, 4, 4])
    >>> pointwise(torch.ones(2, 7, 3), torch.ones(5, 3, 1, 1), channel_dim=-1).shape
    torch.Size([2, 7, 5])
    """
    if not torch.jit.is_tracing():  # a traced shape is a tensor: torch checks the shapes then
        _check(x, weight, groups, channel_dim)
    if channel_dim == -1:
        return _channel_last(strided(x, stride, range(1, x.dim() - 1)), weight, bias, groups)
    if x.dim() == 4:
        return F.conv2d(x, weight, bias, stride, 0, 1, groups)
    if x.dim() == 3:  # (B, C, L) as a channels_last (B, C, L, 1) image, where oneDNN's conv is fast
        x4 = x.unsqueeze(-1).contiguous(memory_format=torch.channels_last)
        return F.conv2d(x4, weight, bias, (stride, 1), 0, 1, groups).squeeze(-1)
    if x.dim() == 2:
        return _channel_last(x, weight, bias, groups)
    y = _channel_last(strided(x, stride, range(2, x.dim())).movedim(1, -1), weight, bias, groups)  # (B, *S, O)
    return y.movedim(-1, 1)  # (B, O, *S)
