"""``MaxPool``: an ``nn.MaxPool2d`` that may run without writing the index tensor.

On CPUs ``F.max_pool2d`` always goes through ``max_pool2d_with_indices``: beside each output value it
writes an int64 index, 8 bytes against 2 for a bfloat16 value. A max over a window is a max over its rows
of a max over its columns, so the same values come from ``k`` strided views along H then ``k`` along W,
``torch.maximum`` of views, no indices. Which one runs on a channels_last input is the pool's ``kernels``
entry for the input's shape and dtype (``optimize()`` times both), "max_pool2d" without one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import as_pair
from ...errors import OneByOneError
from . import private
from .packed import Kernels, input_key


def _indexed(x, k, s, p, ceil):
    return F.max_pool2d(x, k, s, p, 1, ceil)


def _separable(x, k, s, p, ceil):  # x: (B, C, H, W)
    oh, ow = (_out_size(n, k[i], s[i], p[i], ceil) for i, n in enumerate(x.shape[2:]))
    extra = [max(0, (o - 1) * s[i] + k[i] - n - 2 * p[i]) for i, (o, n) in enumerate(zip((oh, ow), x.shape[2:]))]
    if any(p) or any(extra):  # the windows' reach past the input reads -inf, as max_pool2d's padding does
        x = F.pad(x, (p[1], p[1] + extra[1], p[0], p[0] + extra[0]), value=float("-inf"))
    rows = _max_of_views(x, 2, k[0], s[0], oh)  # (B, C, oh, W + pads)
    return _max_of_views(rows, 3, k[1], s[1], ow)  # (B, C, oh, ow)


def _max_of_views(x, dim: int, k: int, s: int, n: int):
    """max over i < k of x's views along ``dim`` starting at i with step s, n long each."""
    view = lambda i: x.narrow(dim, i, (n - 1) * s + 1)[(slice(None),) * dim + (slice(None, None, s),)]  # noqa: E731
    out = torch.maximum(view(0), view(1)) if k > 1 else view(0).clone()
    for i in range(2, k):
        torch.maximum(out, view(i), out=out)
    return out


def _out_size(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    """max_pool2d's output length: with ceil_mode a last window must start inside the input or left pad."""
    out = (n + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


KERNELS = {"max_pool2d": _indexed, "max of views": _separable}


class MaxPool(nn.MaxPool2d):
    """``nn.MaxPool2d`` (dilation 1, no indices returned) that, on a channels_last input outside autograd,
    tracing and export, runs the kernel its ``kernels`` name for the input's shape and dtype: "max_pool2d"
    (the default) or "max of views" (no index tensor). Both give the same values, NaN included.

    >>> MaxPool(nn.MaxPool2d(3, 2, ceil_mode=True))
    MaxPool(kernel_size=(3, 3), stride=(2, 2), padding=(0, 0), ceil_mode=True)
    """

    def __init__(self, pool: nn.MaxPool2d):
        if not isinstance(pool, nn.MaxPool2d) or as_pair(pool.dilation) != (1, 1) or pool.return_indices:
            raise OneByOneError(f"MaxPool takes an nn.MaxPool2d with dilation 1 that returns no indices, got {pool!r}")
        k = as_pair(pool.kernel_size)
        super().__init__(k, as_pair(pool.stride if pool.stride is not None else k), as_pair(pool.padding),
                         ceil_mode=pool.ceil_mode)
        self.kernels = Kernels()  # input key -> "max_pool2d" or "max of views" (see tune)

    def forward(self, x):
        if (x.dim() != 4 or not private.onednn_runs(x) or private.tracing() or not x.is_contiguous(
                memory_format=torch.channels_last) or torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        geom = (self.kernel_size, self.stride, self.padding, self.ceil_mode)
        return KERNELS[self.kernels.for_input(x, "max_pool2d")](x, *geom)

    def tune(self, x, pick) -> None:
        """Record the kernel for channels_last inputs like ``x``: the one ``pick({name: call})`` returns
        (``optimize`` passes a timer); "max_pool2d" for an input too small for one window (its own error
        names the sizes)."""
        geom = (self.kernel_size, self.stride, self.padding, self.ceil_mode)
        if x.dim() != 4 or not private.onednn_runs(x) or not x.is_contiguous(memory_format=torch.channels_last):
            return  # nn.MaxPool2d's own forward
        if min(_out_size(n, *g, self.ceil_mode) for n, *g in zip(x.shape[2:], *geom[:3])) < 1:
            self.kernels[input_key(x)] = "max_pool2d"
            return
        self.kernels[input_key(x)] = pick({k: (lambda fn=fn: fn(x, *geom)) for k, fn in KERNELS.items()})

    def kernel_names(self) -> dict:
        """{input key: kernel}: the kernel recorded (``tune``) for each channels_last input shape and dtype."""
        return dict(self.kernels)

    def __repr__(self) -> str:
        return (f"MaxPool(kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode})")
