"""What kind of layer a torch module is: the predicates and type tables that the rewrites, the fast
paths and the analyzer share (each meaning has one name here)."""
from __future__ import annotations

import torch.ao.nn.quantized as nnq
from torch import nn

from . import activations
from .capture import weight_hook
from .layers import ChannelBatchNorm, Pointwise

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)  # weights (I, O / groups, *k)
INT8_CONVS = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)  # torch's int8 layers (FX quantization's, and their fused
INT8_LINEARS = (nnq.Linear,)  # ConvReLU / LinearReLU subclasses): weights packed, no parameters
INT8_LAYERS = INT8_CONVS + INT8_LINEARS
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
CHANNEL_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, ChannelBatchNorm)  # a per-channel affine map in eval mode
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
ELEMENTWISE = activations.MODULES + (nn.Dropout, nn.Identity)  # no mixing across channels or positions
ACTIVATION_LIKE = activations.MODULES + (nn.Softmax, nn.LogSoftmax, nn.PReLU)  # the analyzer's "activation" rows
WEIGHT_READERS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)  # hand their
# Linears' weights to torch's fused kernels themselves: a Linear of theirs replaced breaks them


def read_by_parent(root: nn.Module, name: str, calls=None) -> str:
    """Why the layer at ``name`` in ``root`` cannot be replaced, or its weights changed: its parent reads its
    weight itself (``WEIGHT_READERS``; with ``calls``, an eager run's ``record.Calls``, any forward that ran
    a torch function on its parameters); "" where it can."""
    parent = root.get_submodule(name.rpartition(".")[0]) if name else None  # ("": the root, no parent)
    if isinstance(parent, WEIGHT_READERS):
        return f"inside nn.{type(parent).__name__}, which hands its weight to torch's own kernels"
    hooked = weight_hook(root.get_submodule(name))
    if hooked:
        return hooked
    read = calls.params_read(root.get_submodule(name)) if calls is not None else ""
    if read:
        return (f"its parameters are read by {read}, not through a call of the layer: another layer in its "
                "place, or other weights, would change what that reads")
    return ""


def groups(m) -> int:
    return getattr(m, "groups", 1)


def channel_axis(m) -> str:
    """'first' when the layer reads channels on dim 1, 'last' when on the last dim."""
    if isinstance(m, nn.Linear) or (isinstance(m, (Pointwise, ChannelBatchNorm)) and m.channel_dim == -1):
        return "last"
    return "first"


def own_forward(m) -> bool:
    """Is ``m`` a torch conv, Linear or Pointwise subclass with a forward of its own (timm's ``StdConv2d``
    standardizes its weight each call, ``Conv2dSame`` pads by the input's size)? Its weight is then not what
    a rewrite would take it for: no rewrite folds into it, swaps it, merges or factorizes it. A subclass
    that computes what its base does (only checking its input, say) says so with ``computes_as_base = True``;
    ``AS_BASE`` names library classes known to."""
    base = next((b for b in (*CONVS, *CONV_TRANSPOSES, nn.Linear, Pointwise) if isinstance(m, b)), None)
    return (base is not None and type(m).forward is not base.forward
            and not getattr(type(m), "computes_as_base", False)
            and f"{type(m).__module__}.{type(m).__qualname__}" not in AS_BASE)


AS_BASE = ("timm.layers.linear.Linear",)  # forwards known to compute what their base does (F.linear, with a cast
# of the weight to the input's dtype when scripted)


def is_pointwise(m) -> bool:
    """A layer whose output at each position depends only on the input at that position: a Linear, a
    Pointwise, or a Conv with a 1x1 kernel and no padding (any stride or groups); none with a forward of its
    own (``own_forward``)."""
    if own_forward(m):
        return False
    return isinstance(m, (nn.Linear, Pointwise)) or is_unpadded_conv(m) and all(k == 1 for k in m.kernel_size)


def is_unpadded_conv(m) -> bool:
    """A conv (any kernel, stride, dilation, groups) with no padding: every window lies inside its input, so
    an affine map of its input folds into it exactly; none with a forward of its own."""
    return (isinstance(m, CONVS) and not own_forward(m)
            and (m.padding == "valid" or not isinstance(m.padding, str) and all(p == 0 for p in m.padding)))


def is_pointwise_conv(m) -> bool:
    """A pointwise layer that reads its channels as a conv does (on dim 1, or a Pointwise): not a Linear."""
    return m is not None and is_pointwise(m) and not isinstance(m, nn.Linear)


def is_plain_pointwise(m) -> bool:
    """A pointwise layer that is one (O, C) matrix applied at every position: ungrouped, stride 1, no dilation."""
    return (is_pointwise(m) and groups(m) == 1 and all(s == 1 for s in _tuple(getattr(m, "stride", 1)))
            and all(d == 1 for d in _tuple(getattr(m, "dilation", 1))))


def _tuple(v) -> tuple:
    return (v,) if isinstance(v, int) else tuple(v)
