"""The kind and cost of one call of a torch layer, from ``onebyone.cost``.

A module outside this file (the fast path's ``ConvAct`` and ``FusedPointwiseChain``) describes itself
through a ``cost_of_call(x, dtype) -> (kind, Cost)`` method, so that the analyzer needs no import of it.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import cost
from ..stats import conv_kind, mix_kind
from .layer_kinds import CONV_TRANSPOSES, CONVS, INT8_CONVS, INT8_LAYERS, INT8_LINEARS
from .layers import Pointwise


def counts_products(m: nn.Module) -> bool:
    """Is ``m`` a layer whose call the analyzer counts as a whole (``layer_cost``, or for
    ``nn.MultiheadAttention`` ``multihead_attention_costs``)?"""
    return (isinstance(m, CONVS + CONV_TRANSPOSES + INT8_LAYERS + (nn.Linear, Pointwise, nn.MultiheadAttention))
            or hasattr(m, "cost_of_call"))


def layer_cost(m: nn.Module, x: torch.Tensor, dtype=None, output=None,
               mixes_channels: bool = True) -> tuple[str, cost.Cost] | None:
    """(kind, cost) of one call of a Conv / ConvTranspose / Linear / Pointwise module, or of a module with
    ``cost_of_call``, on input x (None for other modules); bytes at ``dtype`` (default: x's dtype).
    The kind of a channel product follows ``stats.mix_kind``: a Linear on an input with positions (any
    axis besides batch and features: tokens, pixels, points) is a 1x1 convolution, "pointwise", and a 1x1
    conv on one position per sample is "dense", as a Linear on (B, C) is; ``mixes_channels=False`` (the
    Linear's last axis holds positions, not channels) makes it "dense". A transposed conv needs ``output``.
    torch's int8 convs and Linears count as the float layers they stand for, every byte an int8 one."""
    shape, dtype = tuple(x.shape), dtype or str(x.dtype).removeprefix("torch.")
    dtype = "int8" if isinstance(m, INT8_LAYERS) and x.is_quantized else dtype  # (dynamic int8: float inputs)
    if hasattr(m, "cost_of_call"):
        return m.cost_of_call(x, dtype)
    if isinstance(m, Pointwise):
        return pointwise_cost(m, x, m.stride, m.channel_dim, dtype)
    if isinstance(m, CONVS + INT8_CONVS):
        c = conv_module_cost(m, x, dtype, output)
        return conv_kind(m.kernel_size, m.groups, m.in_channels, math.prod(c.output_shape[2:])), c
    if isinstance(m, CONV_TRANSPOSES):
        c = cost.conv_transpose_cost(shape, m.out_channels, m.kernel_size, tuple(output.shape), groups=m.groups,
                                     bias=m.bias is not None, dtype=dtype)
        return ("pointwise" if all(k == 1 for k in m.kernel_size) else "conv"), c
    if isinstance(m, (nn.Linear, *INT8_LINEARS)):
        kind = mix_kind(math.prod(shape[1:-1]), mixes_channels)
        return kind, cost.dense_cost(shape, m.out_features, bias=has_bias(m), dtype=dtype)
    return None


def multihead_attention_costs(m: nn.MultiheadAttention, q_shape, k_shape, v_shape, dtype: str):
    """(projections, attention) costs of one ``nn.MultiheadAttention`` call on query, key and value of
    these shapes ((L, N, E), or (N, L, E) with ``batch_first``, or unbatched (L, E)): the four
    projections are a Linear at every token; the attention products are counted over every key position
    (``add_bias_kv`` and ``add_zero_attn`` each add one), whatever the mask."""
    e, h = m.embed_dim, m.num_heads
    q_tokens, k_tokens = math.prod(q_shape[:-1]), math.prod(k_shape[:-1])  # (L*N), (S*N)
    batch = 1 if len(q_shape) == 2 else q_shape[0 if m.batch_first else 1]
    length_q, length_k = q_tokens // batch, k_tokens // batch
    weights = e * e + e * m.kdim + e * m.vdim + e * e  # q, k, v and out projections
    biases = (4 * e if m.in_proj_bias is not None else 0) + (2 * e if m.bias_k is not None else 0)
    macs = q_tokens * e * e + k_tokens * e * m.kdim + k_tokens * e * m.vdim + q_tokens * e * e
    size = cost.itemsize(dtype)
    moved = math.prod(q_shape) + math.prod(k_shape) + math.prod(v_shape)
    proj = cost.Cost(tuple(q_shape), weights, biases, macs, 2 * macs, math.prod(q_shape),
                     (moved + weights + biases) * size, math.prod(q_shape) * size)
    keys = length_k + (m.bias_k is not None) + m.add_zero_attn
    d = e // h
    attn = cost.attention_cost((batch, h, length_q, d), (batch, h, keys, d), (batch, h, keys, d), dtype)
    return proj, attn


def pointwise_cost(m: nn.Module, x: torch.Tensor, stride: int, channel_dim: int, dtype: str) -> tuple[str, cost.Cost]:
    """(kind, cost) of a 1x1 layer ``m`` (``in_channels``, ``out_channels``, ``groups``, ``bias``) reading the
    channels of ``x`` (any rank) on ``channel_dim`` (1 or -1) with ``stride``."""
    shape = tuple(x.shape)
    kw = dict(stride=stride, groups=m.groups, bias=m.bias is not None, dtype=dtype)
    if channel_dim == 1 and x.dim() >= 3:
        c = cost.conv1x1_cost(shape, m.out_channels, spatial_dims=len(shape) - 2, **kw)
        return conv_kind((1,), m.groups, m.in_channels, math.prod(c.output_shape[2:])), c
    # channels on the last axis (or (B, C)): padded to the (N, *S, C) form cost expects
    cl = shape if len(shape) >= 3 else (1,) * (3 - len(shape)) + shape
    c = cost.conv1x1_cost(cl, m.out_channels, layout="NHWC", spatial_dims=len(cl) - 2, **kw)
    return conv_kind((1,), m.groups, m.in_channels, math.prod(shape[1:-1])), c


def conv_module_cost(m: nn.Module, x: torch.Tensor, dtype: str, output=None) -> cost.Cost:
    """The cost of a conv-like module (``kernel_size``, ``stride``, ``padding``, ``dilation``, ``groups``,
    ``out_channels``, ``bias`` as nn.Conv2d has them) on x. A subclass whose own ``forward`` pads the input first
    (timm's ``Conv2dSame``: TensorFlow's "same", ``ceil(H / stride)`` outputs) is counted with "same" padding
    where that gives the ``output`` it produced."""
    kw = dict(stride=m.stride, dilation=m.dilation, groups=m.groups, bias=has_bias(m), dtype=dtype)
    if _pads_itself(m) and isinstance(output, torch.Tensor) and tuple(m.padding) == (0,) * len(m.kernel_size):
        same = cost.conv_cost(tuple(x.shape), m.out_channels, m.kernel_size, padding="same", **kw)
        if same.output_shape[2:] == tuple(output.shape[2:]):
            return same
    return cost.conv_cost(tuple(x.shape), m.out_channels, m.kernel_size, padding=m.padding, **kw)


def has_bias(m: nn.Module) -> bool:
    """Does the layer add a bias (an attribute, or for torch's int8 layers a method)?"""
    bias = m.bias() if isinstance(m, INT8_LAYERS) else m.bias
    return bias is not None


def _pads_itself(m: nn.Module) -> bool:
    """Does ``m``, a subclass of an nn.ConvNd, run a ``forward`` of its own (which may pad before the conv)?"""
    base = next((c for c in type(m).__mro__ if c in CONVS), None)
    return base is not None and type(m).forward is not base.forward
