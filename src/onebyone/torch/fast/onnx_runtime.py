"""``OnnxRuntime``: a model's ONNX export run by onnxruntime's CPU provider; a form ``optimize`` weighs.
Needs ``onnxruntime``, ``onnx`` and ``onnxscript`` (``pip install onebyone[onnx]``)."""
from __future__ import annotations

import torch

from ...errors import OneByOneError
from .exported import Exported, require_engine


class OnnxRuntime(Exported):
    """``model`` exported to ONNX and run by onnxruntime (CPU provider, all graph optimizations, ``threads``
    threads: None is this process's torch thread count) whenever no gradient is wanted; under autograd,
    ``model`` itself. Sessions, checks and refusals are ``Exported``'s.

    Its threads stop spin-waiting when a call returns (``spin=True``: they go on spinning for the next
    one, onnxruntime's default, which makes back-to-back calls of a small model a little faster but, on a
    machine with few cores, slows the torch code that runs next).

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU()).eval()
    >>> fast = OnnxRuntime(model)
    >>> with torch.no_grad():
    ...     y = fast(torch.randn(2, 3, 4, 4))  # exported, checked against model, then run
    >>> tuple(y.shape)
    (2, 8, 4, 4)
    """

    engine = "onnxruntime"

    def __init__(self, model, tol: float = 1e-4, sessions: int = 8, spin: bool = False, exports: dict | None = None,
                 threads: int | None = None):
        super().__init__(model, tol, sessions, exports)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise OneByOneError(f"threads must be None or an int >= 1, got {threads!r}")
        self.spin, self.threads = spin, threads

    @staticmethod
    def require():
        return require_onnxruntime()

    def compile(self, onnx: bytes):
        ort = require_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = self.threads or torch.get_num_threads()
        opts.log_severity_level = 4  # fatal only: a failing run raises (and is named), its log line kept from stderr
        if not self.spin:  # spin-wait inside a call, stop when it returns
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return (lambda arrays: session.run(None, dict(zip(names, arrays)))), len(names)


def require_onnxruntime():
    """The onnxruntime module, or a OneByOneError that says what to install."""
    return require_engine("onnxruntime", "OnnxRuntime", "onnx")
