"""PyTorch adapters: the ``Pointwise`` layer, ``SharedMLP`` and exact model rewrites.

Importing this module imports torch; ``import onebyone`` alone does not. Every rewrite returns
``(new_model, RewriteReport)`` and leaves the given model untouched unless ``inplace=True``.
"""
from .convact import ConvAct
from .convolutionalize import convolutionalize
from .engine import hold_freed_memory
from .factorize import factorize
from .fused import FusedPointwiseChain
from .layers import ChannelBatchNorm, Pointwise, SharedMLP
from .report import RewriteReport
from .optimize import optimize
from .rewrites import conv1x1_to_linear, fold_batchnorm, linear_to_conv1x1, merge_pointwise

__all__ = ["ChannelBatchNorm", "ConvAct", "FusedPointwiseChain", "Pointwise", "RewriteReport", "SharedMLP", "conv1x1_to_linear", "convolutionalize",
           "factorize", "fold_batchnorm", "hold_freed_memory", "linear_to_conv1x1", "merge_pointwise", "optimize"]
