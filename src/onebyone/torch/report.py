"""What every rewrite returns next to the model, and the exactness check they all run."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..cost import CONVENTION
from ..errors import OneByOneError
from .layers import Pointwise


@dataclass
class RewriteReport:
    """What a rewrite changed and skipped, how far the outputs moved, and the cost before and after."""

    rewrite: str
    changed: list = field(default_factory=list)  # "name: what happened"
    skipped: list = field(default_factory=list)  # (name, reason)
    max_abs_diff: float = 0.0
    tolerance: float = 0.0
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    notes: list = field(default_factory=list)
    layers: list = field(default_factory=list)  # per-layer details (factorize: ranks; convolutionalize: window, stride)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"{self.rewrite}: {len(self.changed)} change(s), {len(self.skipped)} skipped; "
                 f"max abs diff {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g})",
                 f"  params {self.params_before:,} -> {self.params_after:,}; MACs {self.macs_before:,} -> {self.macs_after:,} "
                 f"({CONVENTION})"]
        lines += [f"  changed  {c}" for c in self.changed]
        lines += [f"  skipped  {n}: {r}" for n, r in self.skipped]
        lines += [f"  note     {n}" for n in self.notes]
        return "\n".join(lines)


def input_kw(model: nn.Module) -> dict:
    """The dtype and device an input of ``model`` should have: its first parameter's (float32 on the CPU without one)."""
    p = next(model.parameters(), None)
    return {"dtype": p.dtype if p is not None and p.is_floating_point() else torch.float32, "device": p.device if p is not None else "cpu"}


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


def _outputs(y) -> list:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (tuple, list)):
        return [t for v in y for t in _outputs(v)]
    if isinstance(y, dict):
        return [t for v in y.values() for t in _outputs(v)]
    raise OneByOneError(f"model outputs must be tensors, tuples, lists or dicts of them, got {type(y).__name__}")


def max_difference(before: nn.Module, after: nn.Module, example, reshape=None, dtype=torch.float64) -> tuple[float, float]:
    """(max abs difference, max abs output) of the two models on ``example``, in ``dtype`` on copies
    (``dtype=None``: the models and the example as they are)."""
    a, b, x = before, after, example
    if dtype is not None:
        a, b = copy.deepcopy(before).to(dtype).eval(), copy.deepcopy(after).to(dtype).eval()
        x = example.to(dtype)
    with torch.no_grad():
        ya, yb = _outputs(a(x)), _outputs(b(x))
    if reshape is not None:
        yb = [reshape(t, ref) for t, ref in zip(yb, ya)]
    if len(ya) != len(yb) or any(p.shape != q.shape for p, q in zip(ya, yb)):
        raise OneByOneError(f"the rewrite changed the output shapes: {[tuple(t.shape) for t in ya]} -> {[tuple(t.shape) for t in yb]}")
    diff = max(float((p - q).abs().max()) for p, q in zip(ya, yb))
    scale = max(float(p.abs().max()) for p in ya)
    return diff, scale


def finish(report: RewriteReport, original: nn.Module, rewritten: nn.Module, example, tol: float, inplace: bool,
           reshape=None, check: bool = True) -> tuple[nn.Module, RewriteReport]:
    """Check exactness (relative to the output scale), fill the costs, and honour ``inplace``."""
    diff, scale = max_difference(original, rewritten, example, reshape)
    report.max_abs_diff, report.tolerance = diff, tol * max(scale, 1.0)
    if check and diff > report.tolerance:
        raise OneByOneError(f"{report.rewrite} changed the outputs by {diff:.3g} (> tolerance {report.tolerance:.3g}); "
                            f"changes: {report.changed}")
    from .analyze import analyze

    before, after = analyze(original, example=example), analyze(rewritten, example=example)
    report.params_before, report.macs_before = before.params, before.macs
    report.params_after, report.macs_after = after.params, after.macs
    if inplace and type(rewritten) is type(original):
        original.__dict__.update(rewritten.__dict__)
        return original, report
    if inplace:
        report.notes.append("inplace=True: the rewrite needed a traced GraphModule, so a new model was returned")
    return rewritten, report


def tensor(array, like: torch.Tensor) -> torch.Tensor:
    """A NumPy result back to a torch parameter's dtype and device."""
    return torch.as_tensor(array).to(dtype=like.dtype, device=like.device)


def numpy64(t: torch.Tensor | None):
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()
