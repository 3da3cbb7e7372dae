"""``Exported``: what ``OnnxRuntime`` and ``OpenVino`` share: a model exported to ONNX (``torch.onnx.export``
through ``torch.export``) and run by an inference engine, one compiled model per input signature, each
checked against the model on the call that made it."""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import threading
import warnings

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ...checks import check_int, check_tolerance
from ...errors import OneByOneError, reason
from ..rewrite_report import output_difference, weight_rounding
from ..tensors import arguments, describe
from .engine import Engine

# dtypes that cross to NumPy without a copy (bfloat16 does not): other inputs run the model itself
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool)


class Exported(Engine):
    """``model`` exported to ONNX and run by ``self.compile``'s engine whenever no gradient is wanted; under
    autograd, ``model`` itself. A subclass names its ``engine`` and defines ``require`` and ``compile``.

    One compiled model per input signature (each tensor's shape and dtype, and the value of each other
    argument), exported on the first call with it; at most ``sessions`` are kept (the oldest goes first).
    Each is checked on the call that made it: its outputs must stay within ``tol`` of ``model``'s, relative
    to the output scale (``OneByOneError`` otherwise; with ``falls_back``, as the int8 forms have it, a
    warning, and ``model`` itself runs inputs of that signature from then on, as it does where their export
    or quantization fails). ``torch.export`` refuses a model whose control flow depends on its inputs'
    values, so an export never replays a branch taken for other data. A model in training mode, and inputs
    the engine cannot take (a tensor off the CPU, in bfloat16, with no values, or an unhashable argument),
    run ``model`` itself (and, as for every ``Engine``, inputs holding NaN or inf). The outputs keep
    ``model``'s structure (a tensor, tuples, dicts, a ``transformers`` ``ModelOutput``). An in-place edit of
    any weight or buffer drops every session.

    ``exports``: a dict (signature -> ONNX bytes, or the error the export raised) that engines over the
    same model may share, so that ``optimize`` exports once for both; None keeps nothing beyond the
    sessions."""

    engine = "an engine"
    advice = ""  # what a subclass tells the caller to do where its outputs move past ``tol``
    falls_back = False  # past ``tol`` on a new input signature: ``model`` runs it, with a warning (not an error)

    def __init__(self, model, tol: float = 1e-4, sessions: int = 8, exports: dict | None = None):
        if type(self) is Exported:
            raise OneByOneError("Exported is what the engines share; use one: OnnxRuntime(model) or OpenVino(model)")
        if not isinstance(model, torch.nn.Module):
            raise OneByOneError(f"{type(self).__name__} expected a torch.nn.Module, got {type(model).__name__}")
        kinds = {p.dtype for p in [*model.parameters(), *model.buffers()] if p.is_floating_point()}
        if torch.float64 in kinds:
            raise OneByOneError(f"{type(self).__name__} runs float32 and float16 models (the engines' CPU kernels have "
                                "no float64 convolution); this one holds float64 weights: call model.float() first "
                                "(nothing was cast here)")
        super().__init__(model)
        self.tol, self.sessions = check_tolerance(tol, "tol"), check_int(sessions, "sessions")
        self.tol = max(self.tol, weight_rounding(model))  # float16 weights: their rounding is no error
        self.exports = exports

    @staticmethod
    def require():
        """The engine's module, or a OneByOneError that says what to install."""
        raise NotImplementedError

    def compile(self, onnx: bytes):
        """(a function from the inputs as NumPy arrays to the outputs as NumPy arrays, how many inputs it takes)."""
        raise NotImplementedError

    def bound(self, scale: float) -> float:
        """How far the outputs may move: ``tol`` of their scale, or ``tol`` itself where the scale is under 1."""
        return self.tol * max(scale, 1.0)

    def build(self) -> dict:
        self.require()  # a clear error now rather than at the first export
        kinds = {p.dtype for p in [*self.model.parameters(), *self.model.buffers()] if p.is_floating_point()}
        self.__dict__["_weights"] = kinds.pop() if len(kinds) == 1 else None
        return {}  # input signature -> (the compiled model's function, the outputs' structure)

    def _torch_runs(self, args: tuple, kwargs: dict) -> bool:
        """Inputs the engine is not for, run by the torch model as given: weights moved to float64 since
        (``.double()``: the engines run no float64 convolution), or a floating input of another dtype than the
        weights (the torch model raises its own error, or computes as it would)."""
        w = self.__dict__.get("_weights")
        return w == torch.float64 or any(isinstance(v, torch.Tensor) and v.is_floating_point() and w is not None
                                         and v.dtype != w for v in [*args, *kwargs.values()])

    def run(self, sessions: dict, args: tuple, kwargs: dict):
        key = None if self.model.training or self._torch_runs(args, kwargs) else _signature(args, kwargs)
        if key is None:  # training mode (batch statistics, dropout), or inputs NumPy cannot hold
            return self.model(*args, **kwargs)
        made, first = sessions.get(key), None
        if made is None:
            with MAKING:  # one export at a time: it sets process-wide logging, warnings and stdout
                made = sessions.get(key)  # (made meanwhile by another thread?)
                if made is None:
                    first = self._made(sessions, key, args, kwargs)
                    made = sessions[key]
        fn, spec = made
        if fn is None:  # its check failed and it falls back: the model itself (its outputs, where just checked)
            return self.model(*args, **kwargs) if first is None else first
        outs = fn(_arrays(args, kwargs))
        if spec is None:  # one tensor
            return torch.from_numpy(outs[0])
        return tree_unflatten([torch.from_numpy(o) for o in outs], spec)

    def _made(self, sessions: dict, key, args: tuple, kwargs: dict):
        """Makes and keeps the session for ``key``; returns the model's outputs where it ran them. An int8
        form whose export or quantization fails falls back to the model, with a warning; others raise."""
        try:
            fn, spec, first = self._session(key, args, kwargs)
        except Exception as e:  # noqa: BLE001 - named in the warning, or raised
            if not self.falls_back:
                raise
            warnings.warn(f"{self.engine} could not make a form for inputs {_described(args, kwargs)}: "
                          f"{reason(e)}; the float model runs inputs like these from now on", stacklevel=6)
            fn, spec, first = None, None, None
        _keep(sessions, key, (fn, spec), self.sessions)
        return first

    def prepare(self, example, expected) -> None:
        """Export, compile and check now the session for ``example`` (a tensor, a tuple of positional tensors
        or a dict of keyword tensors), against ``expected``: ``model``'s outputs on ``example``, which the
        caller already has (``model`` is not run again). Raises as the first call with ``example`` would."""
        args, kwargs = arguments(example)
        key = None if self.model.training else _signature(args, kwargs)
        if key is None:
            raise OneByOneError(f"{type(self).__name__} runs the model itself on inputs {describe(example)} "
                                "(training mode, or tensors NumPy cannot hold): nothing to prepare")
        with MAKING:
            _keep(self.built(), key, self._session(key, args, kwargs, expected)[:2], self.sessions)

    def _session(self, key, args: tuple, kwargs: dict, expected=None):
        """(the compiled model's function, the outputs' structure, the model's outputs where it ran them) for
        inputs like these, checked on them against ``expected`` (the model's outputs on them; None: the model
        is run). Past ``tol``, with ``falls_back``: (None, None, the model's outputs)."""
        inputs = _described(args, kwargs)
        onnx = self.exports.get(key) if self.exports is not None else None
        if isinstance(onnx, OneByOneError):  # the engine beside this one could not export it either
            raise onnx
        if onnx is None:
            try:
                onnx = export(self.model, args, kwargs, inputs)
            except OneByOneError as e:
                if self.exports is not None:
                    self.exports[key] = e
                raise
            if self.exports is not None:
                self.exports[key] = onnx
        fn, n_inputs = self.compile(onnx)
        first = self.model(*args, **kwargs) if expected is None else None
        want, spec = tree_flatten(first if expected is None else expected)
        if not want or not all(isinstance(t, torch.Tensor) for t in want):
            raise OneByOneError(f"{type(self).__name__} needs a model whose outputs are tensors (in tuples, lists "
                                f"or dicts), got {[type(t).__name__ for t in want]}")
        arrays = _arrays(args, kwargs)
        if n_inputs != len(arrays):
            raise OneByOneError(f"the ONNX export takes {n_inputs} inputs, the call gives {len(arrays)} tensors")
        diff, scale = output_difference(want, [torch.from_numpy(g) for g in fn(arrays)], self.engine)
        if not diff <= self.bound(scale):  # (a NaN difference too)
            why = (f"{self.engine} moved the outputs by {diff:.3g} (> tolerance {self.bound(scale):.3g}) "
                   f"on inputs {inputs}{self.advice}")
            if expected is not None or not self.falls_back:  # (``prepare``: the caller weighs the form)
                raise OneByOneError(why)
            warnings.warn(f"{why}; the float model runs inputs like these from now on", stacklevel=7)
            return None, None, first
        return fn, None if spec.is_leaf() else spec, first


MAKING = threading.RLock()  # held while a session is exported, compiled and checked


def require_engine(module: str, who: str, extra: str):
    """The engine's ``module``, or a OneByOneError naming what to install (``onnxscript`` with it: the
    export through ``torch.export`` needs it)."""
    try:
        import onnxscript  # noqa: F401

        return importlib.import_module(module)
    except ImportError as e:
        raise OneByOneError(f"{who} needs {module}, onnx and onnxscript (pip install onebyone[{extra}]): {e}") from None


RUN_TIME_CONSTANTS = ("Shape", "CastLike")  # ONNX ops the exporter's optimizer folds and onnxruntime does not


def export(model, args: tuple, kwargs: dict, inputs: str) -> bytes:
    """``model``'s ONNX export (through ``torch.export``) on these inputs, as bytes.

    The exporter's graph optimizer runs where the graph computes constants at run time
    (``RUN_TIME_CONSTANTS``, as the exporter writes some batch norms and pads sized from the input's
    shape): onnxruntime does not fold those, so it cannot fuse the batch norm or pad into its conv.
    Elsewhere it is skipped: the engines' own graph optimizers do that work."""
    try:
        import onnxscript  # noqa: F401 (torch.onnx.export through torch.export needs it)
    except ImportError as e:
        raise OneByOneError(f"exporting to ONNX needs onnx and onnxscript (pip install onebyone[onnx]): {e}") from None
    try:
        with _quiet():
            program = torch.onnx.export(model, args, kwargs=kwargs or None, dynamo=True, verbose=False,
                                        optimize=False)  # the engines optimize the graph themselves, but:
            if any(node.op_type in RUN_TIME_CONSTANTS for node in program.model.graph):
                program.optimize()  # folded here: onnxruntime keeps them, and the pad or batch norm after them
    except Exception as e:  # noqa: BLE001 (torch.export raises many kinds: name the first cause)
        cause = e.__cause__ or e
        raise OneByOneError(f"torch.onnx.export (through torch.export) could not export "
                            f"{type(model).__name__} on inputs {inputs}: {reason(cause, 10_000)}") from e
    return program.model_proto.SerializeToString()


def _keep(sessions: dict, key, made, most: int):
    """``sessions[key] = made``, the oldest sessions dropped first to keep at most ``most``; returns ``made``."""
    sessions.pop(key, None)
    while len(sessions) >= most:
        sessions.pop(next(iter(sessions)))
    sessions[key] = made
    return made


def _signature(args: tuple, kwargs: dict):
    """What a session depends on: each tensor's shape and dtype, each other argument's type and value; None
    where the engine cannot take the inputs."""
    key = []
    for name, v in [*enumerate(args), *kwargs.items()]:
        if isinstance(v, torch.Tensor):
            if not v.is_cpu or v.dtype not in _NUMPY_DTYPES or not v.numel():  # (nothing to compute: the model)
                return None
            key.append((name, v.shape, v.dtype))
        else:
            try:
                hash(v)
            except TypeError:
                return None
            key.append((name, type(v), v))
    return tuple(key)


def _described(args: tuple, kwargs: dict) -> str:
    inputs = describe(args[0] if len(args) == 1 and not kwargs else args)
    return inputs + (f" and {describe(kwargs)}" if kwargs else "")


def _arrays(args: tuple, kwargs: dict) -> list:
    """The call's tensors as NumPy arrays, in the order ``torch.export`` takes them (positional, then keyword)."""
    return [v.detach().contiguous().numpy() for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)]


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log records (its own and its graph optimizer's, onnxscript's),
    silenced (a failure still raises)."""
    logs = [logging.getLogger(name) for name in EXPORT_LOGS]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


EXPORT_LOGS = ("torch.onnx", "onnxscript")
