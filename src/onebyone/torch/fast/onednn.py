"""What the oneDNN fast paths (``ConvAct``, ``FusedPointwiseChain``) share: the fused post-op of an
activation, weights packed once into oneDNN's blocked layout, the matmul over channels_last rows, and
the test for "tracing, exporting or compiling", when they run plain torch ops instead."""
from __future__ import annotations

import torch

from ...activations import FUSABLE, get
from ...errors import OneByOneError


def post_op(act: str) -> tuple:
    """oneDNN's ``(attr, scalars, algorithm)`` for an activation fused after a product."""
    if act not in FUSABLE:
        raise OneByOneError(f"oneDNN fuses only the activations {FUSABLE} into a product, got {act!r}")
    return get(act).onednn


def available(x: torch.Tensor, weight: torch.Tensor | None = None) -> bool:
    """Can ``x`` (and ``weight``, of the same dtype) take oneDNN's CPU path: float32, or bfloat16 where the
    processor has bfloat16 products?"""
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available() or (weight is not None
                                                                              and weight.dtype != x.dtype):
        return False
    return x.dtype == torch.float32 or x.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()


class PackedWeights(dict):
    """Weights reordered once into oneDNN's blocked layout, keyed by what they were packed for (input
    shape, the weights' pointers and versions, so an in-place edit repacks); at most ``size`` entries.
    Not module state: copies and pickles start empty (oneDNN tensors have no storage to copy)."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size

    def get_or_make(self, key, make):
        if key not in self:
            if len(self) >= self.size:
                self.clear()
            self[key] = make()
        return self[key]

    def __deepcopy__(self, memo):
        return PackedWeights(self.size)

    def __reduce__(self):
        return PackedWeights, (self.size,)


def rows_linear(x, w, b, act: str = "identity"):
    """A stride-1 1x1 conv of a channels_last (B, C, H, W) ``x`` as oneDNN's matmul over its rows
    (B*H*W, C) @ (C, O), the bias and activation fused; returns channels_last (B, O, H, W)."""
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # a view: channels_last memory is row-major (B, H, W, C)
    w = w if w.dim() == 2 else w.flatten(1)  # (O, C, 1, 1) -> (O, C); a packed (O, C) oneDNN weight as it is
    y = torch.ops.mkldnn._linear_pointwise(rows, w, b, *post_op(act))
    return y.view(x.shape[0], x.shape[2], x.shape[3], -1).permute(0, 3, 1, 2)  # (B, H, W, O) -> (B, O, H, W)


def _onnx_exporting():
    """``torch.onnx.is_in_onnx_export`` without its two imports per call."""
    global _onnx_exporting
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        _onnx_exporting = lambda: GLOBALS.in_onnx_export or _flags._is_onnx_exporting  # noqa: E731
    except ImportError:  # another torch layout: the public function
        _onnx_exporting = torch.onnx.is_in_onnx_export
    return _onnx_exporting()


def tracing() -> bool:
    """True while tracing, exporting or compiling: the fast paths run plain torch ops then."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or _onnx_exporting()
