"""The engines' int8 forms: the float model's ONNX export quantized by onnxruntime (``quantize_static``, QDQ,
per-channel weights) or by NNCF for OpenVINO, on the calibration inputs ``optimize(dtype=torch.int8)`` observes;
each checked against the float model like any export."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
import warnings
from pathlib import Path

import torch

from ...errors import OneByOneError
from ..tensors import example_values
from . import private
from .exported import require_engine
from .onnx_runtime import OnnxRuntime, require_onnxruntime
from .openvino import OpenVino, require_openvino

INT8_TOL = 5e-2  # default dtype_tol for int8, of the output scale: 8 bits keep about 0.4% a value
ADVICE = (": its int8 ranges are those of the calibration inputs, which these may leave; calibrate on more inputs "
          "like these, or allow more with dtype_tol")


class _Int8Form:
    """What the engines' int8 forms share: the calibration inputs ``observe``, and the check of each new input
    shape within ``tol`` of the output scale (as optimize measures each int8 form's error), past which a
    warning and the float model (``Exported.falls_back``)."""

    advice, falls_back = ADVICE, True

    def __init__(self, model, observe: list, tol: float = INT8_TOL, **kw):
        super().__init__(model, tol=tol, **kw)
        self.observe = observe

    def bound(self, scale: float) -> float:
        return self.tol * max(scale, 1e-30)


class OnnxRuntimeInt8(_Int8Form, OnnxRuntime):
    """``OnnxRuntime`` on the export quantized to int8 (QDQ, per-channel weights, activation ranges from
    ``observe``, onnxruntime's MinMax calibration); checked against ``model`` within ``tol`` like any export."""

    engine = "onnxruntime int8 (QDQ)"

    def compile(self, onnx: bytes):
        return super().compile(quantize_onnx(onnx, self.observe))


class OpenVinoInt8(_Int8Form, OpenVino):
    """``OpenVino`` on the export quantized by NNCF (``nncf.quantize``: OpenVINO's own post-training int8, on
    the activation ranges of ``observe``); checked against ``model`` within ``tol`` like any export."""

    engine = "OpenVINO int8 (NNCF)"

    def compile(self, onnx: bytes):
        ov = require_openvino()
        nncf = require_engine("nncf", "OpenVINO int8", "openvino")
        model = ov.Core().read_model(model=onnx, weights=b"")
        names = [p.get_any_name() for p in model.inputs]
        _same_size(self.observe, names, [[d.get_length() if d.is_static else None for d in p.get_partial_shape()]
                                         for p in model.inputs])
        feeds = _feeds(names, self.observe, _export_batch(model.inputs[0].get_partial_shape()))
        with warnings.catch_warnings(), _root_log_quiet(), _nncf_quiet(nncf):
            warnings.simplefilter("ignore")
            # without VNNI, every layer's weights to 7 bits (NNCF's default: the first layer's alone)
            fix = nncf.OverflowFix.FIRST_LAYER if private.capabilities().vnni else nncf.OverflowFix.ENABLE
            quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                      advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix))
        return self.compile_model(ov, quantized)


def _export_batch(shape) -> int:
    """The batch size an OpenVINO model's first input fixes (0: dynamic)."""
    return shape[0].get_length() if shape.rank.is_static and len(shape) and shape[0].is_static else 0


_QUIET = threading.Lock()


@contextlib.contextmanager
def _nncf_quiet(nncf):
    """NNCF logs its steps and draws progress bars on the process's stdout: kept out of the caller's output.
    The streams are the process's own, so one quantization at a time holds them (what another thread prints
    meanwhile is dropped too)."""
    from nncf.common.logging.logger import nncf_logger

    with _QUIET:
        level = nncf_logger.level
        nncf_logger.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            nncf_logger.setLevel(level)


def quantize_onnx(onnx: bytes, observe: list) -> bytes:
    """ONNX bytes quantized by ``onnxruntime.quantization.quantize_static`` on the inputs ``observe``."""
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, feeds):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    import onnx as onnx_lib

    graph = onnx_lib.load_from_string(onnx)
    inputs = list(graph.graph.input)
    names = [i.name for i in inputs]
    batch = inputs[0].type.tensor_type.shape.dim[0].dim_value if inputs else 0  # 0: not fixed by the export
    _same_size(observe, names, [[d.dim_value or None for d in i.type.tensor_type.shape.dim] for i in inputs])
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _root_log_quiet():
        warnings.simplefilter("ignore")
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx)
        quantize_static(src, dst, Reader(_feeds(names, observe, batch)), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=not private.capabilities().vnni)  # without VNNI, 8-bit weights can saturate
        return dst.read_bytes()


def _same_size(observe: list, names: list, shapes: list) -> None:
    """Refuse (naming both) to quantize an export whose inputs ``names`` are ``shapes`` (per input, its dims;
    None: open) on calibration batches of another size per sample: the engines calibrate on the export's own
    shapes. Inputs are matched as ``_feeds`` matches them: keyword batches by name."""
    for b in observe:
        got = [tuple(_input(b, name, i).shape) for i, name in enumerate(names)]
        if any(len(g) != len(w) or any(d is not None and d != n for d, n in zip(w[1:], g[1:]))
               for g, w in zip(got, shapes)):
            raise OneByOneError(f"int8 was calibrated on inputs of {got} (the batch first); inputs of another "
                                f"size per sample ({[tuple(w) for w in shapes]}) need calibration batches of that "
                                "size: optimize(dtype=torch.int8) again with them")


def _input(batch, name: str, i: int) -> torch.Tensor:
    """The export's input ``name`` (its ``i``-th) in a calibration batch: keyword inputs by name, as the export
    names them; positional ones by place."""
    return batch[name] if isinstance(batch, dict) and name in batch else example_values(batch)[i]


def _feeds(names: list, observe: list, batch: int) -> list:
    """The calibration inputs as onnxruntime feeds; where the export fixed its batch size, every sample
    regrouped into batches of that size (repeated to fill one where there are fewer samples)."""
    columns = [torch.cat([_input(b, name, i) for b in observe]) for i, name in enumerate(names)]
    if batch:
        n = columns[0].shape[0]
        if n < batch:
            columns = [c.repeat(-(-batch // n), *([1] * (c.dim() - 1)))[:batch] for c in columns]
        columns = [c[: (c.shape[0] // batch) * batch] for c in columns]
        return [dict(zip(names, [c[i:i + batch].numpy() for c in columns])) for i in range(0, columns[0].shape[0],
                                                                                            batch)]
    return [dict(zip(names, [t.numpy() for t in example_values(b)])) for b in observe]


@contextlib.contextmanager
def _root_log_quiet():
    """onnxruntime.quantization logs advice on the root logger: kept out of the caller's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
