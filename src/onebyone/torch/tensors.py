"""Moving numbers between torch and the NumPy core, and the input a rewrite or the analyzer runs on."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import OneByOneError
from .layers import Pointwise


def tensor(array, like: torch.Tensor) -> torch.Tensor:
    """A NumPy result back to a torch parameter's dtype and device."""
    return torch.as_tensor(array).to(dtype=like.dtype, device=like.device)


def numpy64(t: torch.Tensor | None):
    """A tensor as a float64 NumPy array (None stays None)."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def input_kw(model: nn.Module) -> dict:
    """The dtype and device an input of ``model`` should have: its first parameter's (float32 on the CPU
    without one)."""
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return {"dtype": dtype, "device": p.device if p is not None else "cpu"}


def probe_input(model: nn.Module, example=None, input_size=None, batch: int = 2) -> torch.Tensor:
    """The input the rewrite is traced and checked on: ``example``, else a seeded random tensor of
    ``(batch, *input_size)``, else one guessed from the first Linear / Conv / Pointwise."""
    kw = input_kw(model)
    if example is not None:
        if not isinstance(example, torch.Tensor):
            raise OneByOneError(f"example must be a torch.Tensor, got {type(example).__name__}")
        return example
    gen = torch.Generator().manual_seed(0)
    if input_size is not None:
        size = tuple(int(s) for s in input_size)
        return torch.randn((batch, *size), generator=gen).to(**kw)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return torch.randn((batch, m.in_features), generator=gen).to(**kw)
        if isinstance(m, Pointwise):
            size = (16, m.in_channels) if m.channel_dim == -1 else (m.in_channels, 8, 8)
            return torch.randn((batch, *size), generator=gen).to(**kw)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            spatial = (16,) * (m.weight.dim() - 2)
            return torch.randn((batch, m.in_channels, *spatial), generator=gen).to(**kw)
    raise OneByOneError(f"cannot guess an input for {type(model).__name__}: pass example= or input_size=")
