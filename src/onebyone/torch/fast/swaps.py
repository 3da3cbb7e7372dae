"""The structural passes of ``optimize()``: each ``pass(model, x, report) -> model`` swaps modules for the
fast layers (in place) and says what it changed in ``report``; none of them times anything."""
from __future__ import annotations

from torch import nn

from ...activations import FUSABLE
from ...errors import OneByOneError, reason
from .. import activations as acts
from .. import graph as G
from ..layer_kinds import CHANNEL_BATCHNORMS, is_plain_pointwise, is_pointwise_conv, own_forward
from ..layers import Pointwise, SharedMLP
from ..record import Call, branching, record_calls, strided_reader
from ..rewrite_report import RewriteReport
from .chain import FusedPointwiseChain
from .convact import ConvAct
from .pool import MaxPool


def _chain_conv(m, linear: bool = False) -> bool:
    """A 1x1 conv a chain can hold: one (O, C) matrix at every position, channels on dim 1 (with ``linear``,
    an ``nn.Linear`` too: channels last)."""
    return is_plain_pointwise(m) and (is_pointwise_conv(m) or linear and isinstance(m, nn.Linear))


def _in_chain(m, linear: bool = False) -> bool:
    """May ``m`` sit inside a fused chain: a plain 1x1 conv, an eval BatchNorm, or an activation oneDNN fuses?"""
    return _chain_conv(m, linear) or isinstance(m, CHANNEL_BATCHNORMS) or acts.name_of(m) in FUSABLE


def _runs(seq: nn.Sequential, linear: bool = False):
    """(start, stop) of each run: a 1x1 conv (a Linear only with ``linear``), then 1x1 convs, norms,
    activations, dropout."""
    mods, i = list(seq), 0
    while i < len(mods):
        if _chain_conv(mods[i], linear):
            j = i + 1
            while j < len(mods) and _in_chain(mods[j], linear):
                j += 1
            yield i, j
            i = j
        else:
            i += 1


def fuse_chains(model: nn.Module, x, report: RewriteReport, linear: bool = False) -> nn.Module:
    """Swap each SharedMLP, and each run of two or more 1x1 convs (with the BatchNorm / activation / dropout
    between them) inside an ``nn.Sequential``, for a ``FusedPointwiseChain`` (in place; a SharedMLP that is
    the model itself is returned as the chain). ``linear``: runs of ``nn.Linear`` too (in float32 one
    oneDNN call each already; in int8 a chain keeps their intermediates 8-bit). Then ``leave_rows``."""
    gone, root = (), model  # names of replaced SharedMLPs: their old insides are no longer in the model
    for name, m in list(model.named_modules()):
        if name.startswith(gone):
            continue
        if isinstance(m, SharedMLP):
            try:
                chain = FusedPointwiseChain.from_shared_mlp(m)
            except OneByOneError as e:
                report.skipped.append((name, str(e)))
                continue
            root = G.replace_module(root, name, chain)
            gone += (name + ".",)
            report.changed.append(f"{name}: SharedMLP {m.widths} -> FusedPointwiseChain (tile {chain.plan.tile})")
        elif isinstance(m, nn.Sequential):
            for i, j in list(_runs(m, linear)):
                if sum(_chain_conv(layer, linear) for layer in list(m)[i:j]) < 2:
                    continue  # one 1x1 conv is one oneDNN call already: tiling it would only add Python calls
                try:
                    chain = FusedPointwiseChain.from_layers(list(m)[i:j])
                except OneByOneError as e:
                    report.skipped.append((f"{name}[{i}:{j}]", str(e)))
                    continue
                m[i] = chain
                for k in range(i + 1, j):
                    m[k] = nn.Identity()
                report.changed.append(
                    f"{name or 'model'}[{i}:{j}]: {j - i} layers -> FusedPointwiseChain {chain.plan.widths}"
                )
    return leave_rows(root, x, report)


READ_ANY_STRIDES = (FusedPointwiseChain, nn.Conv1d)  # and lay out their own output (contiguous, on (B, C, N))
KEEP_STRIDES = (nn.Identity, nn.Dropout, nn.ReLU, nn.ReLU6, nn.BatchNorm1d)  # (in eval) out laid out as in


def leave_rows(model: nn.Module, x, report: RewriteReport) -> nn.Module:
    """Each chain on (B, C, N) points with no pool whose output every reader in one eager run on ``x`` takes
    with any strides (``record.strided_reader``: another chain, a Conv1d, ``bmm`` after a transpose; not the
    model's output, nor ``view``) leaves it as its rows lie (``rows_out``): a (B, O, N) view of (B, N, O)
    rows, no transpose into a contiguous tensor (nor back again in the next chain). Chains on images keep
    torch's layout: their rows are channels_last, which torch's convs and pools hand on."""
    chains = [(n, m) for n, m in model.named_modules() if isinstance(m, FusedPointwiseChain)
              and m.plan.pool is None and m.channel_dim == 1 and m.unbatched in (None, 2)]  # (not Conv2d / 3d)
    if not chains:
        return model
    try:
        record = record_calls(model, x)
    except Exception as e:  # noqa: BLE001 - a run the record cannot watch: every chain keeps torch's layout
        report.skipped.append(("chain output layouts", f"torch's kept: the readers could not be recorded: {reason(e)}"))
        return model
    for name, m in chains:
        made = [c for c in record.calls + record.containers if c.module is m]  # each call of it: (B, O, N) out,
        if made and all(len(c.output_shape or ()) == 3 and not strided_reader(  # read with any strides
                record, c.output, READ_ANY_STRIDES, KEEP_STRIDES) for c in made):
            m.rows_out = True
            report.changed.append(f"{name or 'model'}: output left as its rows lie (its readers take any strides)")
    return model


def fuse_conv_acts(model: nn.Module, x, report: RewriteReport) -> nn.Module:
    """Swap every Conv2d / Pointwise for a ``ConvAct`` (in place), then take into each the activation that
    alone reads its output, wherever the model's ``forward`` calls it: one eager run on ``x`` shows what
    feeds what (Identity and eval Dropout pass their input through). An activation module called at
    several places is taken in only where every one of its calls alone reads a conv's output (a conv
    called more than once takes none). What ConvAct cannot run is skipped; a model that is itself a
    Conv2d / Pointwise is returned as its ConvAct."""
    model, swapped = _swap(model, lambda m: isinstance(m, (nn.Conv2d, Pointwise)) and not own_forward(m), ConvAct,
                           report)
    if not swapped:
        return model
    calls = record_calls(model, x)
    found, readers = [], {}  # (conv call, its name, kind, the activation call alone reading it or None)
    for c in calls.calls:
        if id(c.module) not in swapped or c.output is None:
            continue
        name, kind = swapped.pop(id(c.module))
        value, users = c.output, calls.uses[c.output]
        while len(users) == 1 and _passes_through(users[0]):  # past Identity and eval Dropout
            value, users = users[0].output, calls.uses[users[0].output]
        act = users[0] if len(users) == 1 and isinstance(users[0], Call) else None
        act_name = acts.name_of(act.module) if act is not None else None
        fusable = (act_name in FUSABLE and act_name != "identity" and act.input == value
                   and calls.counts[id(c.module)] == 1  # a conv called twice would apply it to both calls
                   and not branching(calls, c, act))  # nor where Python may take another path for other inputs
        found.append((c, name, kind, act if fusable else None))
        if fusable:
            readers.setdefault(id(act.module), []).append(act)
    for c, name, kind, act in found:  # an activation module is taken into convs only where each of its
        # calls follows a conv of its own (Fire modules share one ReLU among three convs); it becomes Identity
        if act is not None and len(readers[id(act.module)]) == calls.counts[id(act.module)]:
            c.module.act = acts.name_of(act.module)
            model = G.replace_module(model, act.name, nn.Identity())
            report.changed.append(f"{name or '(the model)'} + {act.name}: {kind} + {type(act.module).__name__} "
                                  "-> ConvAct (one oneDNN call, packed weights)")
        else:
            report.changed.append(f"{name or '(the model)'}: {kind} -> ConvAct (one oneDNN call, packed weights)")
    for name, kind in swapped.values():  # never called on the example
        report.changed.append(f"{name}: {kind} -> ConvAct (one oneDNN call, packed weights; not called on the example)")
    return model


def swap_max_pools(model: nn.Module, x, report: RewriteReport) -> nn.Module:
    """Swap every nn.MaxPool2d for a ``MaxPool`` (in place; the same values); one with dilation or indices
    is skipped, said in the report."""
    model, swapped = _swap(model, lambda m: type(m) is nn.MaxPool2d, MaxPool, report)
    report.changed += [f"{name or '(the model)'}: MaxPool2d -> MaxPool (no index tensor where timed faster)"
                       for name, _ in swapped.values()]
    return model


def _swap(model: nn.Module, match, make, report: RewriteReport) -> tuple:
    """Each module for which ``match`` holds (the model itself included) replaced, in place, by ``make(it)``;
    what ``make`` refuses is named in ``report.skipped``. Returns (model, {id(new): (name, old class name)})."""
    swapped = {}
    for name, m in [("", model)] if match(model) else list(model.named_modules()):
        if not match(m):
            continue
        try:
            new = make(m)
        except OneByOneError as e:
            report.skipped.append((name or "(the model)", str(e)))
            continue
        model = G.replace_module(model, name, new)
        swapped[id(new)] = (name, type(m).__name__)
    return model, swapped


def _passes_through(use) -> bool:
    """A call that hands its input on unchanged: Identity, or Dropout in eval mode."""
    return isinstance(use, Call) and acts.name_of(use.module) == "identity" and use.output is not None
