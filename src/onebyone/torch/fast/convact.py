"""``ConvAct``: a 2-D conv and the activation after it as one oneDNN call, its weights packed once.

This is what ``torch.compile`` emits on CPUs for a frozen eval model: ``mkldnn._convolution_pointwise``
with the bias and the activation fused into the conv, and (for channels_last inputs) the weight
reordered once per input shape into oneDNN's blocked layout, where eager ``F.conv2d`` reorders it on
every call and writes the conv's output before the activation reads it back. A stride-1 1x1 conv
on a channels_last input may instead run as oneDNN's matmul over rows, where its ``kernels`` say so
(``optimize()`` times both and records the faster). Under autograd, while tracing, on other devices or
dtypes, it runs ``F.conv2d`` and the activation: the same numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ... import cost
from ...activations import FUSABLE
from ...errors import OneByOneError
from ...stats import conv_kind
from .. import activations as acts
from ..functional import pointwise
from ..layer_cost import conv_module_cost, pointwise_cost
from ..layers import Pointwise
from . import private
from .packed import Kernels, Packed, input_key


def _packed_conv(x, w, b, geom, act):  # geom: (padding, stride, dilation, groups)
    return private.convolution_pointwise(x, w, b, geom, act)


def _rows_linear(x, w, b, geom, act):  # a stride-1 1x1 conv of a channels_last x as oneDNN's matmul over its rows
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view: channels_last memory is row-major (B, H, W, C)
    y = private.linear_pointwise(rows, w if w.dim() == 2 else w.flatten(1), b, act)  # (B*H*W, C) -> (B*H*W, O)
    return y.view(x.shape[0], x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)  # (B, H, W, O) -> (B, O, H, W)


KERNELS = {"conv": _packed_conv, "matmul over rows": _rows_linear}


class ConvAct(nn.Module):
    """A Conv2d or Pointwise layer and the activation that follows it (relu, relu6, gelu or identity).

    >>> ConvAct(nn.Conv2d(3, 8, 3, padding=1), "relu")
    ConvAct(3, 8, kernel=(3, 3), stride=(1, 1), padding=(1, 1), act='relu')
    """

    def __init__(self, conv: nn.Module, act: str = "identity"):
        super().__init__()
        if act not in FUSABLE:
            raise OneByOneError(f"act must be one of {FUSABLE}, got {act!r}")
        self.act = act
        if isinstance(conv, Pointwise) and conv.channel_dim == 1:
            self.stride, self.padding, self.dilation = (conv.stride,) * 2, (0, 0), (1, 1)
        elif isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros":
            self.stride, self.dilation = tuple(conv.stride), tuple(conv.dilation)
            self.padding = _padding(conv)
        else:
            raise OneByOneError(
                f"ConvAct takes an nn.Conv2d with zero padding or a channels-first Pointwise, got {conv!r}"
            )
        self.groups, self.any_rank = (
            conv.groups,
            isinstance(conv, Pointwise),
        )  # Pointwise also takes (B, C), (B, C, L)...
        self.out_channels, self.in_channels = (
            conv.weight.shape[0],
            conv.weight.shape[1] * conv.groups,
        )  # as nn.Conv2d's,
        self.kernel_size = tuple(conv.weight.shape[2:])  # for the analyzer
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=conv.weight.requires_grad)
        self.bias = (
            None
            if conv.bias is None
            else nn.Parameter(conv.bias.detach().clone(), requires_grad=conv.bias.requires_grad)
        )
        self.kernels = Kernels()  # input key -> "conv" or "matmul over rows" (see tune); else "conv"
        self._packed = Packed()  # (input key, kernel) -> the weight packed for it
        self._geom = (
            list(self.padding),
            list(self.stride),
            list(self.dilation),
            self.groups,
        )  # as the oneDNN ops take it

    def plain(self, x):
        if self.any_rank and x.dim() != 4:
            y = pointwise(x, self.weight, self.bias, self.stride[0], self.groups)
        else:
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return acts.function(self.act)(y)

    def forward(self, x):
        w = self.weight
        wants_grad = x.requires_grad or w.requires_grad or (self.bias is not None and self.bias.requires_grad)
        fast = (not private.tracing() and x.dim() == 4 and x.shape[1] == w.shape[1] * self.groups
                and private.onednn_runs(x, w) and not (torch.is_grad_enabled() and wants_grad))  # (channels that
        # do not fit: torch's conv names them)
        if not fast or private.loses_nan((self.act,), x):  # NaN carried as torch does
            return self.plain(x)
        if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():  # NCHW: packing would
            return KERNELS["conv"](x, w, self.bias, self._geom, self.act)  # return channels_last; fuse the act only
        kernel = self.kernels.for_input(x, "conv") if self.timed else "conv"
        return KERNELS[kernel](x, self._pack(x, kernel), self.bias, self._geom, self.act)

    def _pack(self, x, kernel: str):
        """The weight packed for ``kernel`` on inputs like ``x`` (made once, kept while the weight stays)."""
        def make():
            w = self.weight.detach()
            if kernel == "conv":
                return private.reorder_convolution_weight(w, self._geom, x.shape)
            return private.reorder_linear_weight(w.flatten(1), x.numel() // x.shape[1])
        return self._packed.get([self.weight], (input_key(x), kernel), make)

    def tune(self, x, pick) -> None:
        """Record the kernel for inputs like ``x``: for a stride-1 unpadded ungrouped 1x1 conv on a
        channels_last input, the one ``pick({name: call})`` returns (``optimize`` passes a timer); for any
        other input the fast path takes, "conv" (the only one)."""
        if x.dim() != 4 or not private.onednn_runs(x, self.weight):
            return  # the plain path: F.conv2d and the activation
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if not (self.timed and channels_last):
            self.kernels[input_key(x)] = "conv"
            return
        b, geom, act = self.bias, self._geom, self.act
        cands = {k: (lambda k=k, p=self._pack(x, k): KERNELS[k](x, p, b, geom, act)) for k in KERNELS}
        self.kernels[input_key(x)] = pick(cands)

    @property
    def timed(self) -> bool:
        """Has this layer a choice of kernels (a stride-1, ungrouped, unpadded 1x1 conv)?"""
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.groups == 1 and self.padding == (0, 0)

    def kernel_names(self) -> dict:
        """{input key: kernel}: the kernel recorded (``tune``) for each input shape and dtype."""
        return dict(self.kernels)

    def cost_of_call(self, x, dtype: str) -> tuple[str, cost.Cost]:
        """(kind, the cost of one call on x), as for the nn.Conv2d or Pointwise it replaced."""
        if self.any_rank and x.dim() != 4:  # a Pointwise on (B, C, N), (B, C) or (B, C, D, H, W)
            return pointwise_cost(self, x, self.stride[0], 1, dtype)
        c = conv_module_cost(self, x, dtype)
        return conv_kind(self.kernel_size, self.groups, self.in_channels, math.prod(c.output_shape[2:])), c

    def __repr__(self) -> str:
        extra = f", groups={self.groups}" if self.groups != 1 else ""
        return (
            f"ConvAct({self.in_channels}, {self.out_channels}, kernel={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
            f"{extra}, act={self.act!r})"
        )


def _padding(conv: nn.Conv2d) -> tuple:
    """Symmetric (top, left) padding of a Conv2d; 'same' with an even effective kernel pads unevenly: refused."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):
            raise OneByOneError(
                f"{conv!r}: padding='same' with an even kernel pads one side more; ConvAct pads both alike"
            )
        return tuple(t // 2 for t in total)
    return tuple(conv.padding)
