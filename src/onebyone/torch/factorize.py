"""``factorize``: a layer W (O x K) becomes two, B (O x r) after A (r x K), by truncated SVD.

A 1x1 conv or Linear becomes two 1x1 convs or Linears; a k x k conv becomes a k x k conv to r
channels followed by a 1x1 conv. The change to the outputs is by design: what is guaranteed is the
energy kept, ||W_r||_F^2 / ||W||_F^2 >= ``energy`` (so the relative weight error is at most
sqrt(1 - energy)). The report gives each layer's own relative output error (the pair against the
layer, both on the original model's input to it) and the whole model's (``output_relative_error``).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import algebra
from ..checks import check_choice
from ..errors import OneByOneError
from . import graph as G
from .capture import calls_of, gc_paused
from .layer_cost import layer_cost
from .layer_kinds import CONVS, is_pointwise, own_forward, read_by_parent
from .layers import Pointwise
from .record import record_calls
from .rewrite_report import FactorizedLayer, FactorizeReport, finish, not_in_place
from .rewrites import pointwise_layer
from .tensors import (
    batch_size,
    call,
    cast,
    copy_model,
    numpy64,
    outputs,
    precise_dtype,
    probe_input,
    tensor,
)

KINDS = ("pointwise", "dense", "conv")


def _kind(m) -> str | None:
    if own_forward(m):
        return None
    if isinstance(m, nn.Linear):
        return "dense"
    if isinstance(m, (Pointwise,) + CONVS):
        return "pointwise" if is_pointwise(m) else "conv"
    return None


class Factorized(nn.Sequential):
    """The two layers that replace one: ``first`` (to rank r) then ``second``. It keeps the replaced layer's
    shape attributes (``in_channels``, ``stride``, ``kernel_size``, ``in_features``...), so that code which
    reads them from the layer it calls (as TensorFlow-style "same" padding does) reads the same values."""

    ATTRIBUTES = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                  "padding_mode", "in_features", "out_features")

    def __init__(self, first: nn.Module, second: nn.Module, like: nn.Module):
        super().__init__(first, second)
        for name in self.ATTRIBUTES:
            if hasattr(like, name):
                setattr(self, name, getattr(like, name))


def _rank_pair(m, a, b) -> nn.Sequential:
    """(first, second) modules for W ~= b @ a, a (r, K) and b (O, r)."""
    return Factorized(*_layers(m, a, b), like=m)


def _layers(m, a, b) -> tuple:
    r = a.shape[0]
    bias = numpy64(m.bias) if m.bias is not None else 0.0 * b[:, 0]
    if isinstance(m, nn.Linear) or is_pointwise(m):
        first = pointwise_layer(m, a, 0.0 * a[:, 0])
        first.bias = None
        return first, pointwise_layer(m, b, bias, stride=1)
    first = type(m)(m.in_channels, r, m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                    bias=False, padding_mode=m.padding_mode).to(m.weight)
    first.weight = nn.Parameter(tensor(a, m.weight).reshape(first.weight.shape))
    second = (
        type(m)(r, m.out_channels, 1).to(m.weight)
        if not isinstance(m, nn.Conv2d)
        else Pointwise(r, m.out_channels).to(m.weight)
    )
    second.weight = nn.Parameter(tensor(b, m.weight).reshape(second.weight.shape))
    second.bias = nn.Parameter(tensor(bias, m.weight))
    return first, second


def _layer_io(model, names, x):
    """Each named layer's input and output on x (its first call), and its number of calls."""
    layers = {model.get_submodule(n): n for n in names}
    first, counts = calls_of(model, x, layers)
    return ({layers[m]: (args[0], out) for m, (args, _, out) in first.items()},
            {layers[m]: k for m, k in counts.items()})


@gc_paused
def factorize(model_or_layer: nn.Module, rank=None, energy=None, kinds=KINDS, *, example=None, input_size=None,
              inplace=False):
    """Factorize every layer of the given kinds ("pointwise", "dense", "conv") by truncated SVD.

    Exactly one of ``rank`` (the same rank for every layer) or ``energy`` (0 < energy <= 1, the
    smallest rank per layer that keeps that share of the squared Frobenius norm) is given. Layers
    that a factorization would not make smaller are skipped under ``energy``; an explicit ``rank``
    above min(O, K) is an error. A single layer comes back as ``nn.Sequential(first, second)``.
    """
    for k in kinds:
        check_choice(k, KINDS, "kinds entries")
    algebra.check_rank_energy(rank, energy)  # (before any layer: the arguments, not a layer, are wrong)
    single = _kind(model_or_layer) is not None
    model = nn.Sequential(model_or_layer) if single else model_or_layer
    x = probe_input(model, example, input_size)
    work, report = copy_model(model), FactorizeReport("factorize")
    names = [n for n, m in work.named_modules() if _kind(m) in kinds and getattr(m, "groups", 1) == 1]
    skipped_groups = [n for n, m in work.named_modules() if _kind(m) in kinds and getattr(m, "groups", 1) != 1]
    report.skipped += [(n, "grouped conv: factorize each group separately") for n in skipped_groups]
    hi = precise_dtype(work, x)  # float64, unless the model does not run in it
    io_before, calls = _layer_io(copy_model(work, hi).eval(), names, cast(x, hi))
    record = record_calls(work, x)
    unused = "not called as a layer on the example: left as it is"
    left = {n: read_by_parent(work, n, record) or (n not in io_before and unused) for n in names}
    del record  # (it holds every tensor of a forward pass)
    report.skipped += [(n, why) for n, why in left.items() if why]
    names = [n for n in names if not left[n]]
    work, done = _replace(work, names, rank, energy, calls, report)
    work64 = copy_model(work, hi).eval()
    for name, m, r, kept in done:
        report.layers.append(_row(name, m, r, kept, work, work64, io_before[name], calls.get(name, 1), batch_size(x)))
        report.changed.append(f"{name}: {type(m).__name__} -> rank {r} pair (energy kept {kept:.4f})")
    if energy is not None:
        report.notes.append(f"relative weight error <= sqrt(1 - energy) = {(1 - energy) ** 0.5:.4f} per layer")
    out, report = finish(report, model, work, x, tol=float("inf"), inplace=inplace and not single, check=False)
    if inplace and single:
        not_in_place(report, "a single layer comes back as a new pair (one module cannot become two in place)", 4)
    with torch.no_grad():  # the whole model's output error, all the layers' errors together
        x64 = cast(x, hi)
        y0 = _flat(call(copy_model(model, hi).eval(), x64))
        y1 = _flat(call(copy_model(out, hi).eval(), x64))
    report.output_relative_error = float((y1 - y0).norm() / y0.norm()) if y0.norm() > 0 else 0.0
    report.notes.append(f"relative error of the whole model's output: {report.output_relative_error:.4g} "
                        "(each layer's relative_error is its own, on the original model's input to it)")
    return (out[0] if single else out), report


def _replace(work, names, rank, energy, calls, report) -> tuple:
    """Each named layer replaced, under every name it is registered with, by its factorized pair (unless
    ``energy`` picks a rank that saves nothing); returns (work, [(name, layer, rank, energy kept)])."""
    aliases = {}  # a module registered under several names: every one of them gets the pair
    for n, m in work.named_modules(remove_duplicate=False):
        aliases.setdefault(id(m), []).append(n)
    done = []
    for name in names:
        m = work.get_submodule(name)
        w = numpy64(m.weight).reshape(m.weight.shape[0], -1)  # (O, K)
        try:
            a, b, r, kept = algebra.truncated_svd(w, rank=rank, energy=energy)
        except OneByOneError as e:
            raise OneByOneError(f"layer `{name}` ({type(m).__name__}, weight {tuple(m.weight.shape)}): {e}") from None
        o, k = w.shape
        if energy is not None and r * (o + k) >= o * k:
            report.skipped.append(
                (name, f"rank {r} keeps {energy:.0%} of the energy but saves nothing ({r}*({o}+{k}) >= {o}*{k})")
            )
            continue
        pair = _rank_pair(m, a, b)
        for alias in aliases[id(m)]:
            work = G.replace_module(work, alias, pair)
        done.append((name, m, r, kept))
        uses = calls.get(name, 0)
        if uses > 1 or len(aliases[id(m)]) > 1:
            also = f", also registered as {', '.join(aliases[id(m)][1:])}" if len(aliases[id(m)]) > 1 else ""
            report.notes.append(f"{name} is shared ({uses} calls on the example{also}): every use now runs the "
                                "factorized pair")
    return work, done


def _row(name, m, r, kept, work, work64, io, calls: int, batch: int) -> dict:
    """The report row of one factorized layer: its rank, energy, params, MACs saved per sample over every
    call, and its own relative error (the pair on the original model's input to the layer)."""
    xin, y = io
    with torch.no_grad():
        y_new = work64.get_submodule(name)(xin)
    before = layer_cost(m, xin)[1]
    after = sum(layer_cost(s, t)[1].macs for s, t in _chain_inputs(work.get_submodule(name), xin))
    return FactorizedLayer(name=name, rank=r, energy_kept=kept, params_before=before.params,
                           params_after=sum(p.numel() for p in work.get_submodule(name).parameters()),
                           macs_saved=(before.macs - after) * calls // batch,  # per sample, every call
                           relative_error=float((y_new - y).norm() / y.norm()))


def _flat(y) -> torch.Tensor:
    """Every floating-point output tensor (in tuples, lists, dicts, a ``ModelOutput``) as one vector."""
    return torch.cat([t.flatten() for t in outputs(y) if t.is_floating_point()])


def _chain_inputs(seq: nn.Sequential, x):
    """(module, input) for the two layers of a factorized pair, to cost them."""
    with torch.no_grad():
        h = seq[0](x.to(seq[0].weight.dtype))
    return [(seq[0], x), (seq[1], h)]
