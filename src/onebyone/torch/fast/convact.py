"""``ConvAct``: a 2-D conv and the activation after it as one oneDNN call, its weights packed once.

This is what ``torch.compile`` emits on CPUs for a frozen eval model: ``mkldnn._convolution_pointwise``
with the bias and the activation fused into the conv, and (for channels_last inputs) the weight
reordered once per input shape into oneDNN's blocked layout, where eager ``F.conv2d`` reorders it on
every call and writes the conv's output before the activation reads it back. A stride-1 1x1 conv
on a channels_last input may instead run as oneDNN's matmul over rows (timed once per shape, kept
only when clearly faster). Under autograd, while tracing, on other devices or dtypes, it runs
``F.conv2d`` and the activation: the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ... import cost
from ...activations import FUSABLE
from ...errors import OneByOneError
from ...stats import conv_kind
from .. import activations as acts
from ..functional import pointwise
from ..layer_cost import conv_cost
from ..layers import Pointwise
from . import onednn
from .timing import fastest


def _packed_conv(x, w, b, geom, act):  # geom: (padding, stride, dilation, groups)
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, *geom, *onednn.post_op(act))


def _rows_linear(x, w, b, geom, act):  # a stride-1 1x1 conv as oneDNN's matmul over channels_last rows
    return onednn.rows_linear(x, w, b, act)


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
        self._packed = onednn.PackedWeights()  # (input shape, weight pointer, version) -> (kernel, its weight)
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
        fast = (not onednn.tracing() and x.dim() == 4 and onednn.available(x, w)
                and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)))
        if not fast:
            return self.plain(x)
        if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():  # NCHW: packing would
            return _packed_conv(x, w, self.bias, self._geom, self.act)  # return channels_last; fuse the act only
        fn, packed = self._packed.get_or_make((tuple(x.shape), w.data_ptr(), w._version), lambda: self._choose(x))
        return fn(x, packed, self.bias, self._geom, self.act)

    def _choose(self, x):
        """(kernel, its packed weight): the conv, or for a stride-1 1x1 conv oneDNN's matmul on rows if
        clearly faster."""
        geom = self._geom
        packed = torch.ops.mkldnn._reorder_convolution_weight(self.weight.detach(), *geom, list(x.shape))
        if not self.timed:
            return _packed_conv, packed
        lin = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach().flatten(1), x.numel() // x.shape[1])
        b, act = self.bias, self.act
        runs = {(lambda: _packed_conv(x, packed, b, geom, act)): (_packed_conv, packed),
                (lambda: _rows_linear(x, lin, b, geom, act)): (_rows_linear, lin)}
        return runs[fastest(list(runs))]

    @property
    def timed(self) -> bool:
        """Does this layer choose its kernel by timing (a stride-1, ungrouped, unpadded 1x1 conv)?"""
        return self.kernel_size == (1, 1) and self.stride == (1, 1) and self.groups == 1 and self.padding == (0, 0)

    def kernels(self) -> dict:
        """The kernel timed and chosen for each channels_last input shape seen so far: 'conv' or 'matmul
        over rows' (empty unless ``timed``)."""
        if not self.timed:
            return {}
        return {k[0]: "conv" if fn is _packed_conv else "matmul over rows" for k, (fn, _) in self._packed.items()}

    def cost_of_call(self, x, dtype: str) -> tuple[str, cost.Cost]:
        """(kind, the cost of one call on x), as for the nn.Conv2d it replaced."""
        return conv_kind(self.kernel_size, self.groups, self.in_channels), conv_cost(self, x, dtype)

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
