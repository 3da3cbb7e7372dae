"""``Engine``: what ``Compiled`` and ``Exported`` (``OnnxRuntime``, ``OpenVino``) share: a model run by another
engine when no gradient is wanted, rebuilt after any in-place edit of its weights, and the model itself under
autograd."""
from __future__ import annotations

import torch
from torch import nn

from . import private


class Engine(nn.Module):
    """``model`` run by ``self.run(self.build(), args, kwargs)`` whenever no gradient is wanted; under
    autograd (grad mode on, and a parameter or an input tensor that wants one), and under a
    ``TorchFunctionMode`` (``onebyone.analyze`` counts what it sees called), ``model`` itself.

    What ``build`` makes is kept until an in-place edit of any parameter or buffer of ``model`` (their
    versions are compared on each call): then it is built again, so stale weights never run. A copy or a
    pickle holds only ``model`` and builds again; ``state_dict`` is ``model``'s, under ``model.``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)
        self._built, self._versions = None, None  # what build() made; the weights' versions it read
        self._tensors = None  # the model's parameters and buffers, listed when it was built

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
        if not grad:  # under no_grad or inference_mode already
            return self.run(self.built(), args, kwargs)
        with torch.no_grad():  # nothing wants a gradient: the same outputs, and one compiled entry serves
            return self.run(self.built(), args, kwargs)  # calls made with and without no_grad

    def built(self):
        """What ``build`` made, made again first where a weight or buffer was edited in place since."""
        if self._built is None or [t._version for t in self._tensors] != self._versions:
            self.__dict__["_built"] = self.build()
            self._tensors = [*self.model.parameters(), *self.model.buffers()]
            self._versions = [t._version for t in self._tensors]
        return self._built

    def __getstate__(self):
        return {**self.__dict__, "_built": None, "_versions": None, "_tensors": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
