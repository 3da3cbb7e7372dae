"""``OnnxRuntime``: a model exported to ONNX (``torch.onnx.export`` through ``torch.export``) and run by
onnxruntime's CPU provider, one session per input signature; a form ``optimize(compile=True)`` weighs beside
``Compiled``. Needs ``onnxruntime``, ``onnx`` and ``onnxscript`` (``pip install onebyone[onnx]``)."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ...errors import OneByOneError
from ..rewrite_report import output_difference
from ..tensors import describe
from .engine import Engine

# dtypes that cross to NumPy without a copy (bfloat16 does not): other inputs run the model itself
_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool)


class OnnxRuntime(Engine):
    """``model`` exported to ONNX and run by onnxruntime (CPU provider, all graph optimizations, this
    process's torch thread count) whenever no gradient is wanted; under autograd, ``model`` itself.

    Its threads stop spin-waiting when a call returns (``spin=True``: they go on spinning for the next
    one, onnxruntime's default, which makes back-to-back calls of a small model a little faster but, on a
    machine with few cores, slows the torch code that runs next).

    One session per input signature (each tensor's shape and dtype, and the value of each other argument),
    exported on the first call with it; at most ``sessions`` are kept (the oldest goes first). Each new
    session is checked on the call that made it: its outputs must stay within ``tol`` of ``model``'s,
    relative to the output scale (``OneByOneError`` otherwise). ``torch.export`` refuses a model whose
    control flow depends on its inputs' values, so a session never replays a branch taken for other data.
    A model in training mode, and inputs onnxruntime cannot take (a tensor off the CPU, in bfloat16, or an
    unhashable argument), run ``model`` itself. The outputs keep ``model``'s structure (a tensor, tuples,
    dicts, a ``transformers`` ``ModelOutput``). An in-place edit of any weight or buffer drops every session.

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU()).eval()
    >>> fast = OnnxRuntime(model)
    >>> with torch.no_grad():
    ...     y = fast(torch.randn(2, 3, 4, 4))  # exported, checked against model, then run
    >>> tuple(y.shape)
    (2, 8, 4, 4)
    """

    def __init__(self, model, tol: float = 1e-4, sessions: int = 8, spin: bool = False):
        super().__init__(model)
        self.tol, self.sessions, self.spin = tol, sessions, spin

    def build(self) -> dict:
        require_onnxruntime()  # a clear error now rather than at the first export
        return {}  # input signature -> (session, its input names, the outputs' structure)

    def run(self, sessions: dict, args: tuple, kwargs: dict):
        key = None if self.model.training else _signature(args, kwargs)
        if key is None:  # training mode (batch statistics, dropout), or inputs NumPy cannot hold
            return self.model(*args, **kwargs)
        made = sessions.get(key)
        if made is None:
            while len(sessions) >= self.sessions:
                sessions.pop(next(iter(sessions)))
            made = sessions[key] = self._session(args, kwargs)
        session, names, spec = made
        outs = session.run(None, dict(zip(names, _arrays(args, kwargs))))
        if spec is None:  # one tensor
            return torch.from_numpy(outs[0])
        return tree_unflatten([torch.from_numpy(o) for o in outs], spec)

    def _session(self, args: tuple, kwargs: dict):
        """(session, its input names, the outputs' structure) for inputs like these, checked on them."""
        ort = require_onnxruntime()
        inputs = describe(args[0] if len(args) == 1 and not kwargs else args)
        inputs += f" and {describe(kwargs)}" if kwargs else ""
        try:
            with _quiet():
                program = torch.onnx.export(self.model, args, kwargs=kwargs or None, dynamo=True, verbose=False)
        except Exception as e:  # noqa: BLE001 (torch.export raises many kinds: name the first cause)
            cause = e.__cause__ or e
            raise OneByOneError(f"torch.onnx.export (through torch.export) could not export "
                                f"{type(self.model).__name__} on inputs {inputs}: {type(cause).__name__}: "
                                f"{str(cause).strip().splitlines()[0] if str(cause).strip() else ''}") from e
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        if not self.spin:  # spin-wait inside a call, stop when it returns
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        session = ort.InferenceSession(program.model_proto.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
        want, spec = tree_flatten(self.model(*args, **kwargs))
        if not want or not all(isinstance(t, torch.Tensor) for t in want):
            raise OneByOneError(f"OnnxRuntime needs a model whose outputs are tensors (in tuples, lists or "
                                f"dicts), got {[type(t).__name__ for t in want]}")
        names, arrays = [i.name for i in session.get_inputs()], _arrays(args, kwargs)
        if len(names) != len(arrays):
            raise OneByOneError(f"the ONNX export takes {len(names)} inputs ({names}), the call gives "
                                f"{len(arrays)} tensors")
        got = [torch.from_numpy(g) for g in session.run(None, dict(zip(names, arrays)))]
        diff, scale = output_difference(want, got, "onnxruntime")
        if diff > self.tol * max(scale, 1.0):
            raise OneByOneError(f"onnxruntime moved the outputs by {diff:.3g} (> tolerance "
                                f"{self.tol * max(scale, 1.0):.3g}) on inputs {inputs}")
        return session, names, None if spec.is_leaf() else spec


def require_onnxruntime():
    """The onnxruntime module, or a OneByOneError that says what to install."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401 (torch.onnx.export through torch.export needs it)
    except ImportError as e:
        raise OneByOneError(f"OnnxRuntime needs onnxruntime, onnx and onnxscript (pip install onebyone[onnx]): "
                            f"{e}") from None
    return onnxruntime


def _signature(args: tuple, kwargs: dict):
    """What a session depends on: each tensor's shape and dtype, each other argument's type and value; None
    where onnxruntime cannot take the inputs."""
    key = []
    for name, v in [*enumerate(args), *kwargs.items()]:
        if isinstance(v, torch.Tensor):
            if v.device.type != "cpu" or v.dtype not in _NUMPY_DTYPES:
                return None
            key.append((name, v.shape, v.dtype))
        else:
            try:
                hash(v)
            except TypeError:
                return None
            key.append((name, type(v), v))
    return tuple(key)


def _arrays(args: tuple, kwargs: dict) -> list:
    """The call's tensors as NumPy arrays, in the order ``torch.export`` takes them (positional, then keyword)."""
    return [v.detach().contiguous().numpy() for v in [*args, *kwargs.values()] if isinstance(v, torch.Tensor)]


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log records, silenced (a failure still raises)."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
