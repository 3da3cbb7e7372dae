"""Runtime wrappers that ``optimize()`` puts around a model: ``ChannelsLast`` (inputs moved to channels_last
memory) and ``CastIO`` (the model run in a lower precision behind the caller's dtype)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from ..tensors import cast


class ChannelsLast(nn.Module):
    """Runs ``model`` (its weights already channels_last) with every 4-D input tensor, positional or
    keyword, in channels_last memory format."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # a new Module starts in training mode; keep the model's

    def forward(self, *args, **kwargs):
        return self.model(*(_channels_last(a) for a in args), **{k: _channels_last(v) for k, v in kwargs.items()})


def _channels_last(v):
    return v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) and v.dim() == 4 else v


class CastIO(nn.Module):
    """Runs ``model`` (its parameters in ``dtype``) on its inputs cast to ``dtype``; its floating-point
    outputs come back in the dtype the input had, so a caller sees the model it gave."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model.to(dtype), dtype
        self.train(model.training)

    def _apply(self, fn, recurse=True):
        """``.float()``, ``.to(dtype)`` and the like move ``dtype`` with the model's weights: the inputs are cast
        to what the weights now hold."""
        super()._apply(fn, recurse)
        self.dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), self.dtype)
        return self

    def forward(self, *args, **kwargs):
        given = next((t.dtype for t in tree_leaves((args, kwargs))
                      if isinstance(t, torch.Tensor) and t.is_floating_point()), None)
        out = self.model(*cast(args, self.dtype), **cast(kwargs, self.dtype))
        return out if given is None else cast(out, given)

    def __repr__(self) -> str:
        return f"CastIO({str(self.dtype).removeprefix('torch.')}, {self.model!r})"
