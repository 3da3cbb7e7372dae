"""The speed machinery, kept apart from the layers: ``optimize()`` and the modules it puts in a model
(``ConvAct``, ``FusedPointwiseChain``, ``MaxPool``), which run oneDNN's fused ops with packed weights and pick
between kernels by timing them once per input shape. Nothing in the layers, the rewrites or the
analyzer imports this package."""
from .chain import FusedPointwiseChain
from .compiled import Compiled, fold_pads, own_compile
from .convact import ConvAct
from .onnx_runtime import OnnxRuntime
from .optimize import optimize
from .pool import MaxPool

__all__ = [
    "Compiled", "ConvAct", "FusedPointwiseChain", "MaxPool", "OnnxRuntime", "fold_pads", "optimize", "own_compile",
]
