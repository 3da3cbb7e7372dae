"""``Engine``: what ``Compiled`` and ``Exported`` (``OnnxRuntime``, ``OpenVino``) share: a model run by another
engine when no gradient is wanted, rebuilt after any in-place edit of its weights, and the model itself under
autograd."""
from __future__ import annotations

import operator
import warnings

import torch
from torch import nn

from . import private
from .packed import version


class Engine(nn.Module):
    """``model`` run by ``self.run(self.build(), args, kwargs)`` whenever no gradient is wanted; under
    autograd (grad mode on, and a parameter or an input tensor that wants one), and under a
    ``TorchFunctionMode`` (``onebyone.analyze`` counts what it sees called), ``model`` itself; and on inputs
    holding NaN or inf too (an engine's fused ReLU or int8 quantization would turn them into numbers).

    What ``build`` makes freezes ``model`` as it was: its submodules, every parameter and buffer, and each
    module's plain attributes (numbers, strings, tuples: ``LeakyReLU.negative_slope``, a conv's padding).
    Each call compares them with what was built, and builds again where any changed: a weight edited in place
    (its version), a new ``nn.Parameter`` set on a module or a ``.data`` swapped in (the tensor or its memory),
    a submodule replaced, an attribute set. So stale weights never run, but for writes that bypass torch's
    version counter (through a weight's ``.data`` or a NumPy view), which are not seen. A copy or a pickle holds only
    ``model`` and builds again; ``state_dict`` is ``model``'s, under ``model.``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)
        self._built, self._stamp = None, None  # what build() made; the model as it read it (``_stamp``)

    def build(self):
        raise NotImplementedError

    def run(self, built, args: tuple, kwargs: dict):
        raise NotImplementedError

    def forward(self, *args, **kwargs):
        grad, tracing = torch.is_grad_enabled(), private.tracing()
        if tracing and "int8" in getattr(self, "engine", ""):
            warnings.warn(f"{self.engine}: a tracer records the float model this form holds, not the engine's int8 "
                          "graph", stacklevel=2)
        if private.function_mode_on() or tracing or grad and (
                any(p.requires_grad for p in self.model.parameters())
                or any(isinstance(v, torch.Tensor) and v.requires_grad for v in [*args, *kwargs.values()])):
            return self.model(*args, **kwargs)  # the analyzer's TorchFunctionMode watches torch calls, or a
            # tracer (torch.jit.trace, torch.export, torch.compile) records them: the torch model it traces
        if private.inputs_finite(args, kwargs) is False:  # NaN or inf: an engine's fused ReLU or int8
            return self.model(*args, **kwargs)  # quantization would turn them into numbers
        if not grad:  # under no_grad or inference_mode already
            return self.run(self.built(), args, kwargs)
        with torch.no_grad():  # nothing wants a gradient: the same outputs, and one compiled entry serves
            return self.run(self.built(), args, kwargs)  # calls made with and without no_grad

    def built(self):
        """What ``build`` made, made again first where the model changed since (see the class docstring)."""
        if self._built is None or not self._stamp.holds(self.model):
            self.__dict__["_built"] = self.build()
            self._stamp = Stamp(self.model)
        return self._built

    def __getstate__(self):
        return {**self.__dict__, "_built": None, "_stamp": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


_PLAIN = (bool, int, float, str, tuple, type(None))


class Stamp:
    """A model as it was read: each module's children, parameters and buffers (the same objects), its plain
    attributes (numbers, strings, tuples: equal values) and the torch objects it holds (oneDNN's and fbgemm's
    packed int8 weights: the same objects); each tensor's memory (kept alive, so that an address seen again is
    the same memory) and version. ``holds(model)`` asks whether it still is: one pass over the modules, each
    compared in C (squeezenet1_1's quantized graph, 43 modules and 379 attributes: about 30 us)."""

    def __init__(self, model: nn.Module):
        self.root, self.modules = model, []
        for m in model.modules():
            d = m.__dict__
            plain = tuple(k for k, v in d.items() if not k.startswith("_") and isinstance(v, _PLAIN))
            objects = tuple(k for k, v in d.items() if isinstance(v, torch.ScriptObject))
            get, held = _getter(plain), _getter(objects)
            self.modules.append((d, tuple(map(dict, _members(d))), get, get(d), held, tuple(map(id, held(d)))))
        self.tensors = [t for m in model.modules() for t in [*m._parameters.values(), *m._buffers.values()]
                        if t is not None]
        self.memory = [t.data for t in self.tensors]  # holds each tensor's memory as it was
        self.versions = [version(t) for t in self.tensors]

    def holds(self, model: nn.Module) -> bool:
        """Is ``model`` still what was read?"""
        try:  # (dicts compare their values as the same object first: a tensor swapped in compares by value and
            # raises, or differs)
            if model is not self.root or not all(
                    _members(d) == members and get(d) == values and tuple(map(id, held(d))) == ids
                    for d, members, get, values, held, ids in self.modules):
                return False
        except Exception:  # noqa: BLE001 - an attribute deleted, a tensor swapped in: not what was read
            return False
        return all(version(a) == v and a.data_ptr() == d.data_ptr()
                   for a, v, d in zip(self.tensors, self.versions, self.memory))


def _members(d: dict) -> tuple:
    """A module's children, parameters and buffers (``d``: its ``__dict__``): the dicts themselves (a stamp
    keeps copies)."""
    return d["_modules"], d["_parameters"], d["_buffers"]


def _getter(keys: tuple):
    """A function from a module's ``__dict__`` to the tuple of its values at ``keys``, in C."""
    if not keys:
        return _nothing
    get = operator.itemgetter(*keys)
    return get if len(keys) > 1 else lambda d: (get(d),)


def _nothing(d: dict) -> tuple:
    return ()
