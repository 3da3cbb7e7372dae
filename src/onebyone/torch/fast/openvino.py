"""``OpenVino``: a model's ONNX export run by OpenVINO's CPU plugin in float32; a form ``optimize`` weighs.
Needs ``openvino``, ``onnx`` and ``onnxscript`` (``pip install onebyone[openvino]``)."""
from __future__ import annotations

import torch

from ...errors import OneByOneError
from .exported import Exported, require_engine


class OpenVino(Exported):
    """``model`` exported to ONNX and compiled by OpenVINO for the CPU (``precision``: float32 products by
    default, asked for explicitly, as on CPUs with bfloat16 products OpenVINO's own default is bfloat16;
    ``"bf16"`` asks for those, and ``ran_in`` then says what OpenVINO compiled for; the latency hint; this
    process's torch thread count) whenever no gradient is wanted; under autograd, ``model`` itself.
    Sessions, checks and refusals are ``Exported``'s.

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU()).eval()
    >>> fast = OpenVino(model)
    >>> with torch.no_grad():
    ...     y = fast(torch.randn(2, 3, 4, 4))  # exported, compiled, checked against model, then run
    >>> tuple(y.shape)
    (2, 8, 4, 4)
    """

    engine = "OpenVINO"

    def __init__(self, model, tol: float = 1e-4, sessions: int = 8, exports: dict | None = None,
                 precision: str = "f32"):
        super().__init__(model, tol, sessions, exports)
        if precision not in ("f32", "bf16"):
            raise OneByOneError(f"precision must be 'f32' or 'bf16' (OpenVINO's inference precision hint), "
                                f"got {precision!r}")
        self.precision = precision
        self.ran_in = None  # the precision OpenVINO reports it compiled for (a CPU without bf16 runs f32)

    @staticmethod
    def require():
        return require_openvino()

    def compile(self, onnx: bytes):
        ov = require_openvino()
        return self.compile_model(ov, ov.Core().read_model(model=onnx, weights=b""))

    def compile_model(self, ov, model):
        """(a function from NumPy inputs to NumPy outputs, how many inputs) for an OpenVINO model on the CPU."""
        compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.ran_in = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        request = compiled.create_infer_request()
        return (lambda arrays: list(request.infer(arrays).values())), len(compiled.inputs)


def require_openvino():
    """The openvino module, or a OneByOneError that says what to install."""
    return require_engine("openvino", "OpenVino", "openvino")
