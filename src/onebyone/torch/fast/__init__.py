"""The speed machinery, kept apart from the layers: ``optimize()`` and the modules it puts in a model
(``ConvAct``, ``FusedPointwiseChain``, ``MaxPool``), which run oneDNN's fused ops with weights packed once,
each on the kernels ``optimize()`` chose for it by timing (a layer built by hand runs fixed defaults and
never times anything). Every question about the CPU goes through ``capabilities()``. Nothing in the
layers, the rewrites or the analyzer imports this package."""
from .chain import FusedPointwiseChain
from .compiled import Compiled, fold_pads, own_compile
from .convact import ConvAct
from .onnx_runtime import OnnxRuntime
from .openvino import OpenVino
from .passes import optimize
from .pool import MaxPool
from .private import Capabilities, capabilities
from .wrappers import CastIO, ChannelsLast

__all__ = [
    "Capabilities", "CastIO", "ChannelsLast", "Compiled", "ConvAct", "FusedPointwiseChain", "MaxPool", "OnnxRuntime",
    "OpenVino",
    "capabilities", "fold_pads", "optimize", "own_compile",
]
