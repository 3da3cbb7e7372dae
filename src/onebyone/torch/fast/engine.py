"""``Engine``: what ``Compiled`` and ``Exported`` (``OnnxRuntime``, ``OpenVino``) share: a model run by another
engine when no gradient is wanted, rebuilt after any in-place edit of its weights, and the model itself under
autograd."""
from __future__ import annotations

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
        grad = torch.is_grad_enabled()
        if private.function_mode_on() or grad and (
                any(p.requires_grad for p in self.model.parameters())
                or any(isinstance(v, torch.Tensor) and v.requires_grad for v in [*args, *kwargs.values()])):
            return self.model(*args, **kwargs)  # a TorchFunctionMode (the analyzer's) watches torch calls
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
            self._stamp = _Stamp(self.model)
        return self._built

    def __getstate__(self):
        return {**self.__dict__, "_built": None, "_stamp": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"


_PLAIN = (bool, int, float, str, tuple, type(None))


class _Stamp:
    """A model as an engine read it: its modules, tensors (each with its memory, kept alive so that an
    address seen again is the same memory, and its version) and plain attributes."""

    def __init__(self, model: nn.Module):
        self.modules = list(model.modules())
        self.tensors = [t for m in self.modules for t in [*m._parameters.values(), *m._buffers.values()]
                        if t is not None]
        self.memory = [t.data for t in self.tensors]  # holds each tensor's memory as it was
        self.versions = [version(t) for t in self.tensors]
        self.attrs = [(m, k) for m in self.modules for k, v in vars(m).items()
                      if not k.startswith("_") and isinstance(v, _PLAIN)]
        self.values = [getattr(m, k) for m, k in self.attrs]

    def holds(self, model: nn.Module) -> bool:
        """Is ``model`` still what was read?"""
        modules = list(model.modules())
        if len(modules) != len(self.modules) or any(a is not b for a, b in zip(modules, self.modules)):
            return False
        tensors = [t for m in modules for t in [*m._parameters.values(), *m._buffers.values()] if t is not None]
        return (len(tensors) == len(self.tensors)
                and all(a is b and version(a) == v and a.data_ptr() == d.data_ptr()
                        for a, b, v, d in zip(tensors, self.tensors, self.versions, self.memory))
                and all(getattr(m, k) == v for (m, k), v in zip(self.attrs, self.values)))
