"""``Pointwise`` (the 1x1 conv as a layer), ``ChannelBatchNorm`` and ``SharedMLP``."""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import activations
from ..checks import check_choice, check_int
from ..errors import OneByOneError
from . import activations as acts
from .functional import pointwise

torch.fx.wrap("pointwise")  # a Pointwise traced by torch.fx: one call (it branches on the input's rank and layout)


def _check_channel_dim(channel_dim) -> int:
    if channel_dim not in (1, -1):
        raise OneByOneError(f"channel_dim must be 1 (channels-first) or -1 (channels-last), got {channel_dim!r}")
    return channel_dim


class Pointwise(nn.Module):
    """A 1x1 convolution: ``y[:, o] = sum_c W[o, c] x[:, c] + b[o]`` at every position.

    Its state_dict equals ``nn.Conv2d(in_channels, out_channels, kernel_size=1)``'s (weight
    (O, I/g, 1, 1), bias (O,)) and so does its default init. Inputs: (B, C, H, W) in either memory
    format, (B, C, L), (B, C) and (B, C, D, H, W) with ``channel_dim=1``; any (..., C) with
    ``channel_dim=-1``. The kernel is fixed by the input's layout (``functional.pointwise``): the same
    ops in every process, and exportable with dynamic shapes.

    >>> Pointwise(8, 16, bias=False, channel_dim=-1)
    Pointwise(8, 16, bias=False, channel_dim=-1)
    >>> Pointwise(8, 16)(torch.zeros(2, 8, 5, 5)).shape
    torch.Size([2, 16, 5, 5])
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, groups: int = 1, stride: int = 1,
                 channel_dim: int = 1, device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels = (
            check_int(in_channels, "in_channels"),
            check_int(out_channels, "out_channels"),
        )
        self.groups, self.stride = check_int(groups, "groups"), check_int(stride, "stride")
        self.channel_dim = _check_channel_dim(channel_dim)
        if in_channels % groups or out_channels % groups:
            raise OneByOneError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise OneByOneError(f"Pointwise holds floating-point weights; dtype must be a floating torch.dtype "
                                f"(torch.float32, torch.bfloat16, ...), got {dtype!r}")
        kw = {"device": device, "dtype": dtype}
        # channels_last strides: the layout of the gradient the fast conv kernels return (DDP buckets match it)
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, 1, 1, memory_format=torch.channels_last, **kw)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's default init: Kaiming-uniform weights, bias uniform in +-1/sqrt(fan_in)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels // self.groups)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if torch.jit.is_scripting():  # TorchScript compiles this branch alone (torch checks the shapes)
            return _scripted_pointwise(x, self.weight, self.bias, self.stride, self.groups, self.channel_dim)
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x):
        if not isinstance(x, torch.fx.Proxy):  # torch.fx: no shapes to check
            self._check_input(x)
        return pointwise(x, self.weight, self.bias, self.stride, self.groups, self.channel_dim)

    @torch.jit.unused
    def _check_input(self, x) -> None:
        """A clear error for an input this layer cannot take (TorchScript skips it: torch checks the shapes)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise OneByOneError(f"{self!r} takes a floating-point tensor, got "
                                f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.dim() < (1 if self.channel_dim == -1 else 2) or (  # a traced shape is a tensor: torch checks it then
                not torch.jit.is_tracing() and x.shape[self.channel_dim] != self.in_channels):
            where = "last" if self.channel_dim == -1 else "1"
            raise OneByOneError(f"{self!r} expects {self.in_channels} channels on dim {where}, "
                                f"got input of shape {tuple(x.shape)}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        w = state_dict.get(prefix + "weight")
        want = tuple(self.weight.shape)
        if isinstance(w, torch.Tensor) and tuple(w.shape) != want:
            raise OneByOneError(f"{self!r} loads a weight of shape {want} (a 1x1 conv's, as nn.Conv2d(kernel_size=1) "
                                f"holds it), got {tuple(w.shape)} under {prefix}weight")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __repr__(self) -> str:
        extra = [
            f"{k}={v}"
            for k, v, default in (
                ("bias", self.bias is not None, True),
                ("groups", self.groups, 1),
                ("stride", self.stride, 1),
                ("channel_dim", self.channel_dim, 1),
            )
            if v != default
        ]
        return f"Pointwise({', '.join([str(self.in_channels), str(self.out_channels)] + extra)})"


def _scripted_pointwise(x, weight, bias: torch.Tensor | None, stride: int, groups: int, channel_dim: int):
    """A Pointwise in TorchScript (``torch.jit.script`` compiles this in its ``forward``): torch's 1-, 2- or
    3-D conv on the channels-first form of ``x`` ((B, C) to (B, C, D, H, W), or the same with channels last)."""
    if channel_dim == 1:
        return _scripted_first(x, weight, bias, stride, groups)
    if x.dim() == 1:  # (C,)
        return _scripted_first(x.unsqueeze(0), weight, bias, stride, groups).squeeze(0)
    return _scripted_first(x.movedim(-1, 1), weight, bias, stride, groups).movedim(1, -1)


def _scripted_first(x, weight, bias: torch.Tensor | None, stride: int, groups: int):
    """(B, C, *S) with S of none to three axes, through ``conv1d`` / ``conv2d`` / ``conv3d``."""
    if x.dim() == 4:
        return torch.nn.functional.conv2d(x, weight, bias, stride, 0, 1, groups)
    if x.dim() == 3:
        return torch.nn.functional.conv1d(x, weight.squeeze(-1), bias, stride, 0, 1, groups)
    if x.dim() == 5:
        return torch.nn.functional.conv3d(x, weight.unsqueeze(-1), bias, stride, 0, 1, groups)
    if x.dim() == 2:  # (B, C): no positions to stride over
        return torch.nn.functional.conv1d(x.unsqueeze(-1), weight.squeeze(-1), bias, 1, 0, 1, groups).squeeze(-1)
    raise RuntimeError("a scripted Pointwise takes (B, C) to (B, C, D, H, W) inputs")  # (TorchScript raises no
    # OneByOneError)


class ChannelBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the channel axis of an input of any rank (``channel_dim`` 1 or -1).

    Same parameters and buffers as nn.BatchNorm1d/2d, so checkpoints load either way.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, channel_dim: int = 1, **kw):
        super().__init__(num_features, eps, momentum, **kw)
        self.channel_dim = _check_channel_dim(channel_dim)

    def _check_input_dim(self, x):
        if not isinstance(x, torch.fx.Proxy) and x.dim() < 2:  # torch.fx: no shape to check
            raise OneByOneError(f"ChannelBatchNorm expects (B, C, ...) or (..., C) input, got shape {tuple(x.shape)}")

    def forward(self, x):
        if torch.jit.is_scripting():  # TorchScript compiles this branch alone
            return self._scripted_norm(x)
        return self._forward(x)

    @torch.jit.unused
    def _forward(self, x):
        if self.channel_dim == -1:
            return super().forward(x.movedim(-1, 1)).movedim(1, -1)
        if not isinstance(x, torch.fx.Proxy) and (  # torch.fx traces the plain path (the same numbers)
            x.dim() == 3 and x.stride(1) == 1 and x.shape[2] > 1
        ):  # channels-last strided (B, C, L): run as a channels_last 4-D image, where oneDNN's kernel applies
            return super().forward(x.unsqueeze(-1)).squeeze(-1)
        return super().forward(x)

    def _scripted_norm(self, x):
        """torch's BatchNorm forward (TorchScript has no ``super()``) over the channel axis."""
        if self.channel_dim == -1:
            x = x.movedim(-1, 1)  # (..., C) -> (B, C, ...)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative average
                factor = 1.0 / float(self.num_batches_tracked)
        stats = not self.training or self.track_running_stats
        y = torch.nn.functional.batch_norm(
            x, self.running_mean if stats else None, self.running_var if stats else None, self.weight, self.bias,
            self.training or (self.running_mean is None and self.running_var is None), factor, self.eps)
        return y.movedim(1, -1) if self.channel_dim == -1 else y


def _points_in(x):
    """(B, C, N) -> a channels_last (B, C, N, 1) image; other ranks as they are."""
    return x.unsqueeze(-1).contiguous(memory_format=torch.channels_last) if x.dim() == 3 else x


def _points_out(y, x):
    """``y`` back to ``x``'s rank where ``_points_in`` made ``x`` an image: (B, C, N, 1) -> (B, C, N)."""
    return y.squeeze(-1) if x.dim() == 3 else y


def _pool(x, how: str, dim: int):
    """The max or the mean of ``x`` over ``dim``. The max keeps its indices where a gradient may be wanted (a
    cheap backward; and always under ``torch.jit.trace``, whose check runs with another grad mode); otherwise
    ``amax``, many times quicker over the points of a channels_last (B, C, N)."""
    if how == "avg":
        return x.mean(dim=dim)
    if torch.jit.is_tracing() or (torch.is_grad_enabled() and x.requires_grad):
        return x.max(dim=dim).values
    return x.amax(dim)


# torch.fx traces through a SharedMLP's layers and keeps these as calls (each branches on its input)
torch.fx.wrap("_points_in")
torch.fx.wrap("_points_out")
torch.fx.wrap("_pool")


class SharedMLP(nn.Module):
    """PointNet's shared MLP: the same small MLP at every point (or pixel), as 1x1 convs.

    Args:
        widths: channel widths, input first, e.g. (3, 64, 64, 128, 1024).
        activation: after every layer; a name from ``onebyone.activations.REGISTRY`` (relu, gelu, ...).
        norm: None or "batch" (BatchNorm after each conv, before the activation).
        pool: None, "max" or "avg" over all points/pixels at the end: (B, C_out).
        channel_dim: 1 for (B, C, N) / (B, C, H, W), -1 for (B, N, C).

    >>> SharedMLP((3, 64, 128), pool="max")(torch.zeros(2, 3, 100)).shape
    torch.Size([2, 128])
    """

    def __init__(self, widths, activation="relu", norm=None, pool=None, channel_dim: int = 1):
        super().__init__()
        widths = [check_int(w, "widths entries") for w in widths]
        if len(widths) < 2:
            raise OneByOneError(f"widths must list at least an input and an output width, got {widths}")
        activations.get(activation)  # a clear error for an unknown name
        self.norm, self.pool = (
            check_choice(norm, (None, "batch"), "norm"),
            check_choice(pool, (None, "max", "avg"), "pool"),
        )
        self.widths, self.activation, self.channel_dim = tuple(widths), activation, _check_channel_dim(channel_dim)
        layers = []
        for cin, cout in zip(widths, widths[1:]):
            layers.append(Pointwise(cin, cout, bias=norm is None, channel_dim=channel_dim))
            if norm == "batch":
                layers.append(ChannelBatchNorm(cout, channel_dim=channel_dim))
            layers.append(acts.module(activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        if not torch.jit.is_scripting():  # (TorchScript compiles the rest alone: torch checks the shapes)
            self._check_input(x)
        if self.channel_dim == 1:  # (B, C, N) runs as a channels_last (B, C, N, 1) image: oneDNN's conv and
            x = _points_out(self.layers(_points_in(x)), x)  # BatchNorm are fast there; (B, C_out, *S)
        else:
            x = self.layers(x)  # (B, *S, C_out)
        if self.pool is None:
            return x
        if self.channel_dim == 1:
            return _pool(x.flatten(2), self.pool, 2)  # (B, C, *S) -> (B, C, P) -> (B, C)
        return _pool(x.flatten(1, -2), self.pool, 1)  # (B, *S, C) -> (B, P, C) -> (B, C)

    @torch.jit.unused
    def _check_input(self, x) -> None:
        """A clear error, naming the input as given, for one without the first width's channels on
        ``channel_dim`` or, with a pool, without positions to pool over (torch.fx and tracing: no shapes)."""
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing():
            return
        c, least = self.widths[0], 3 if self.pool else 2 if self.channel_dim == 1 else 1
        if not isinstance(x, torch.Tensor) or x.dim() < least or x.shape[self.channel_dim] != c:
            form = (f"(B, {c}, N...)" if self.channel_dim == 1 else f"(B, N..., {c})") + (
                f": positions to {self.pool}-pool over" if self.pool else "")
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise OneByOneError(f"{self!r} takes {form}, got {got}")

    def __repr__(self) -> str:
        args = [repr(self.widths)] + [
            f"{k}={v!r}"
            for k, v, d in (
                ("activation", self.activation, "relu"),
                ("norm", self.norm, None),
                ("pool", self.pool, None),
                ("channel_dim", self.channel_dim, 1),
            )
            if v != d
        ]
        return f"SharedMLP({', '.join(args)})"
