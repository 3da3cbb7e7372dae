"""Moving numbers between torch and the NumPy core, and the input a rewrite or the analyzer runs on."""
from __future__ import annotations

import contextlib
import copy
import itertools
import random
import weakref
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from ..checks import check_int
from ..errors import OneByOneError
from .layers import Pointwise


def tensor(array, like: torch.Tensor) -> torch.Tensor:
    """A NumPy result back to a torch parameter's dtype and device."""
    return torch.as_tensor(array).to(dtype=like.dtype, device=like.device)


def numpy64(t: torch.Tensor | None):
    """A tensor as a float64 NumPy array (None stays None)."""
    return None if t is None else t.detach().to("cpu", torch.float64).numpy()


def copy_model(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy of ``model`` (with its floating parameters and buffers in ``dtype``, if given): what
    ``copy.deepcopy(model).to(dtype)`` gives, each tensor copied once (straight to ``dtype``). Modules that keep
    ``nn.Module``'s own pickling are copied attribute by attribute (a few times faster than ``deepcopy``'s
    generic path on models of hundreds of modules); anything else goes through ``copy.deepcopy``."""
    memo = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if dtype is not None and t.is_floating_point() and id(t) not in memo:
            new = t.detach().to(dtype, copy=True)
            memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
    return _copy(model, memo)


_PLAIN = (int, float, complex, str, bytes, bool, type(None), type, torch.dtype, torch.device)


def _copy(obj, memo: dict):
    if id(obj) in memo:
        return memo[id(obj)]
    kind = type(obj)
    if kind in _PLAIN:
        return obj
    if isinstance(obj, nn.Module) and _plain_module(kind):
        new = object.__new__(kind)
        memo[id(obj)] = new
        new.__dict__.update({k: _copy(v, memo) for k, v in obj.__dict__.items() if k != "_compiled_call_impl"})
        _keep_alive(obj, memo)
        return new
    if kind in (dict, OrderedDict):
        new = memo[id(obj)] = kind()
        new.update((k if type(k) in _PLAIN else _copy(k, memo), _copy(v, memo)) for k, v in obj.items())
        _keep_alive(obj, memo)
        return new
    if kind in (tuple, frozenset) and all(type(v) in _PLAIN for v in obj):
        return obj
    if kind is set and all(type(v) in _PLAIN for v in obj):
        new = memo[id(obj)] = set(obj)
        _keep_alive(obj, memo)
        return new
    if kind is list:
        new = memo[id(obj)] = []
        new.extend(_copy(v, memo) for v in obj)
        _keep_alive(obj, memo)
        return new
    return copy.deepcopy(obj, memo)


_PLAIN_MODULES = weakref.WeakKeyDictionary()  # class -> _plain_module's answer (fx makes a class a GraphModule)


def _plain_module(kind: type) -> bool:
    """A module class that copies as its ``__dict__``: nn.Module's own ``__new__`` and ``__getstate__``, and a
    ``__setstate__`` that only fills in attributes that old pickles lack (``COMPAT_SETSTATE``; RNNs rebuild
    weak references); no ``__deepcopy__`` or reduce of its own."""
    if kind not in _PLAIN_MODULES:
        _PLAIN_MODULES[kind] = (
            kind.__new__ is object.__new__ and kind.__getstate__ is nn.Module.__getstate__
            and kind.__setstate__ in COMPAT_SETSTATE and kind.__reduce_ex__ is object.__reduce_ex__
            and kind.__reduce__ is object.__reduce__ and getattr(kind, "__deepcopy__", None) is None)
    return _PLAIN_MODULES[kind]


COMPAT_SETSTATE = {k.__setstate__ for k in (
    nn.Module, nn.modules.conv._ConvNd, nn.AvgPool3d, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.MultiheadAttention,
    nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Upsample)}


def _keep_alive(obj, memo: dict) -> None:
    """As ``copy.deepcopy`` does: originals stay referenced while the memo lives, so no id is reused."""
    memo.setdefault(id(memo), []).append(obj)


def input_kw(model: nn.Module) -> dict:
    """The dtype and device an input of ``model`` should have: its first parameter's (float32 on the CPU
    without one)."""
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return {"dtype": dtype, "device": p.device if p is not None else "cpu"}


def call(model: nn.Module, example):
    """Run ``model`` on an example: a tensor, a tuple of positional tensors, or a dict of keyword tensors."""
    args, kwargs = arguments(example)
    return model(*args, **kwargs)


def arguments(example) -> tuple[tuple, dict]:
    """(positional, keyword) arguments of a call on ``example`` (see ``call``)."""
    if isinstance(example, dict):
        return (), example
    return (tuple(example) if isinstance(example, (tuple, list)) else (example,)), {}


def outputs(y, strict: bool = True) -> list:
    """The tensors of a model's output (a tensor, or tuples, lists and dicts of them: a ``ModelOutput`` too),
    in order. Any other leaf is refused, or with ``strict=False`` passed over (``None`` always is)."""
    if y is None:
        return []
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (tuple, list, dict)):
        return [t for v in (y.values() if isinstance(y, dict) else y) for t in outputs(v, strict)]
    if not strict:
        return []
    raise OneByOneError(f"model outputs must be tensors, tuples, lists or dicts of them, got {type(y).__name__}")


def tensor_args(args, kwargs) -> list:
    """The tensors among a call's arguments, one level into lists and tuples (``torch.cat([a, b])``)."""
    out = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [t for t in a if isinstance(t, torch.Tensor)]
    return out


def describe(example, top: bool = True) -> str:
    """``of shape (1, 3, 8, 8)`` for a tensor, ``{'left': (5, 4), ...}`` / ``((5, 4), ...)`` for the others."""
    if isinstance(example, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v, False)}" for k, v in example.items()) + "}"
    if isinstance(example, (tuple, list)):
        return "(" + ", ".join(describe(v, False) for v in example) + ")"
    if isinstance(example, torch.Tensor):
        return f"of shape {tuple(example.shape)}" if top else str(tuple(example.shape))
    return type(example).__name__


def example_values(example) -> list:
    """The values of an example: a dict's values, a tuple's items, or the one tensor."""
    return list(example.values()) if isinstance(example, dict) else list(example) if isinstance(
        example, (tuple, list)) else [example]


def check_example(example):
    """``example`` if it is a tensor, a non-empty tuple of tensors or a non-empty dict of tensors (values
    that are not tensors, such as flags, may sit beside them), else a clear error."""
    values = example_values(example)
    if not any(isinstance(v, torch.Tensor) and v.dim() > 0 for v in values):
        raise OneByOneError(f"example must be a tensor, a tuple of tensors or a dict of tensors, "
                            f"got {describe(example)}")
    return example


def batch_size(example) -> int:
    """The batch of an example: the first dimension of its first tensor."""
    first = next(v for v in example_values(check_example(example)) if isinstance(v, torch.Tensor) and v.dim() > 0)
    return int(first.shape[0])


def cast(value, dtype):
    """``value`` (an example, a model's outputs: tensors in tuples, namedtuples, lists and dicts, nested) with
    its floating-point tensors in ``dtype``; token ids and masks stay integers, other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    return _map(value, lambda v: cast(v, dtype)) if isinstance(value, (dict, tuple, list)) else value


def precise_dtype(model: nn.Module, example) -> torch.dtype:
    """float64 where a float64 copy of ``model`` runs on ``example``; else the dtype of its parameters (a model
    that makes float32 tensors of its own, as Hugging Face's FastSpeech2Conformer does, runs in that alone)."""
    try:
        with torch.no_grad():
            call(copy_model(model, torch.float64).eval(), cast(example, torch.float64))
        return torch.float64
    except Exception:  # noqa: BLE001 - whatever it raises, float64 is not for it
        return params_dtype(model)


def params_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter (float32 where it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def random_like(example, seed: int = 0):
    """The example with each floating-point tensor replaced by seeded standard-normal values of its shape and
    dtype (token ids and masks stay as given): a probe that an all-zero or constant example cannot fool."""
    gen = torch.Generator().manual_seed(seed)
    return _map(example, lambda v: torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v)
                if isinstance(v, torch.Tensor) and v.is_floating_point() else v)


def first_sample(example):
    """The example's first sample (each tensor's ``[:1]``) where every tensor in it has the same batch size
    above 1, else the example as it is."""
    sizes = {v.shape[0] if v.dim() else None for v in example_values(example) if isinstance(v, torch.Tensor)}
    if len(sizes) != 1 or None in sizes or sizes.pop() < 2:
        return example
    return _map(example, lambda v: v[:1] if isinstance(v, torch.Tensor) else v)


def another_size(example):
    """The example's first sample at another size: each floating-point tensor of three or more axes with every
    axis past the channels (from axis 2) half as long again, made odd (8 -> 13, 224 -> 337), seeded random
    values; None where no tensor has such axes. A forward that branches on its input's size (a threshold, an
    odd length) takes its other path; an image costs 2.3 times the pixels, a clip 3.4 times the voxels."""
    x, gen = first_sample(example), torch.Generator().manual_seed(1)

    def grows(v) -> bool:
        return isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() >= 3

    if not any(grows(v) for v in example_values(x)):
        return None
    return _map(x, lambda v: torch.randn((*v.shape[:2], *((n + n // 2) | 1 for n in v.shape[2:])), generator=gen,
                                         dtype=torch.float64).to(v) if grows(v) else v)


def samples_apart(model: nn.Module, example) -> bool:
    """Does ``model`` compute each sample of ``example`` on its own, the batch on axis 0 of every tensor with
    axes, in and out? Probed on the example twice over (2n samples): with the second half's floating-point
    values changed, is each output of the first half as it was (within 1e-5 of that output's scale)? False
    where that cannot be told: tensors of different batch sizes, no floating-point input, an output without
    that batch axis, a model refusing the probe (a sequence-first transformer's (L, N, E) fails it: its
    axis 0 mixes)."""
    batched = [v for v in example_values(example) if isinstance(v, torch.Tensor) and v.dim()]
    sizes = {v.shape[0] for v in batched}
    if len(sizes) != 1 or not any(v.is_floating_point() for v in batched):
        return False
    n = sizes.pop()

    def twice(change):
        return _map(example, lambda v: torch.cat([v, change(v)]) if isinstance(v, torch.Tensor) and v.dim() else v)

    try:
        with torch.no_grad(), evaluating(model):
            same = outputs(call(model, twice(lambda v: v)))
            other = outputs(call(model, twice(lambda v: v * 2 + 1 if v.is_floating_point() else v)))
    except Exception:  # noqa: BLE001 - a model refusing the probe's values: not known to compute samples apart
        return False
    if not same or any(t.dim() == 0 or t.shape[0] != 2 * n for t in same):
        return False
    return all(float((a[:n] - b[:n]).nan_to_num().abs().max()) <= 1e-5 * (float(a[:n].nan_to_num().abs().max()) or 1.0)
               for a, b in zip(same, other))


def _map(example, one):
    """``one`` applied to each value of an example (a dict's values, a tuple's items, or the one value)."""
    if isinstance(example, dict):
        mapped = {k: one(v) for k, v in example.items()}
        try:
            return type(example)(mapped)  # (an OrderedDict, a Hugging Face ModelOutput: its own kind)
        except TypeError:
            return mapped
    if isinstance(example, (tuple, list)):
        values = [one(v) for v in example]
        return type(example)(*values) if hasattr(example, "_fields") else type(example)(values)  # (a namedtuple)
    return one(example)


def probe_input(model: nn.Module, example=None, input_size=None, batch: int = 2):
    """The input the rewrite is traced and checked on: ``example`` (a tensor, a tuple or a dict of them),
    else a seeded random tensor of ``(batch, *input_size)``, else one guessed from the first Linear /
    Conv / Pointwise."""
    meta = next((n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None) \
        if isinstance(model, nn.Module) else None
    if meta is not None:
        raise OneByOneError(f"{type(model).__name__} is on the meta device ({meta} has a shape but no data): a rewrite "
                            "reads and checks weights; materialize it first (model.to_empty(device='cpu'), then "
                            "load the weights)")
    return _runs(check_module(model), _probe(model, example, input_size, batch))


def check_module(model) -> nn.Module:
    """``model`` if it is a torch module a rewrite can read, else a clear error: the module of a
    ``torch.export`` program is refused (its graph calls aten ops, not the layers a rewrite replaces)."""
    if not isinstance(model, nn.Module):
        raise OneByOneError(f"expected a torch.nn.Module, got {type(model).__name__}")
    graph = getattr(model, "graph", None)
    nodes = graph.nodes if isinstance(graph, torch.fx.Graph) else ()
    op = next((n.target for n in nodes if getattr(n.target, "namespace", None) == "aten"), None)
    if op is not None:
        raise OneByOneError(f"{type(model).__name__} calls aten ops ({op}...), as the module of a torch.export "
                            "program does: its layers are no modules a rewrite can replace. Rewrite the model "
                            "before exporting it (fold_batchnorm or reparameterize, then torch.export.export), or "
                            "optimize the eager model; analyze() takes it as it is")
    return model


def _runs(model: nn.Module, x):
    """``x`` after one trial run of a copy of ``model`` on it (eval mode, no grad), so that an input the
    model cannot take is named here rather than deep inside a rewrite."""
    import copy

    trial = model if not any(m.training for m in model.modules()) else copy.deepcopy(model).eval()  # eval: as is
    try:
        with torch.no_grad():
            call(trial, x)
    except Exception as e:  # noqa: BLE001 - whatever the model raises, said with the input's shapes
        raise OneByOneError(f"{type(model).__name__} cannot run on an input {describe(x)}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return x


def _probe(model, example, input_size, batch):
    kw = input_kw(model)
    if example is not None:
        return check_example(example)
    gen = torch.Generator().manual_seed(0)
    if input_size is not None:
        if not isinstance(input_size, (tuple, list)):
            raise OneByOneError(f"input_size must be one sample's shape, a tuple of ints, got {input_size!r}")
        size = tuple(check_int(s, "input_size entries") for s in input_size)
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


@contextlib.contextmanager
def evaluating(*models: nn.Module):
    """The ``models`` with every module in eval mode, each module given its own mode back after (a frozen
    BatchNorm in a training model stays frozen, a dropout left on stays on). A model whose mode cannot be set
    (a ``torch.export`` program's module refuses ``eval()``) is left as it is."""
    modes = {}
    for model in models:
        was = {m: m.training for m in model.modules()}
        try:
            model.eval()
        except NotImplementedError:
            continue
        modes |= was
    try:
        yield models
    finally:
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def random_kept():
    """The global random states (torch's CPU generator, Python's ``random``, NumPy's) as they were, after the
    block: what runs inside (calibration tools, samplers) leaves a caller's seeded sequence where it was.
    Draws other threads make meanwhile are rewound with it; CUDA's generators are not touched."""
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.random.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
