"""PyTorch adapters: the ``Pointwise`` layer, ``SharedMLP``, exact model rewrites and the analyzer.

Importing this module imports torch; ``import onebyone`` alone does not. Every rewrite returns
``(new_model, RewriteReport)`` and leaves the given model untouched unless ``inplace=True``.
``optimize`` and the modules it builds live in ``onebyone.torch.fast`` and are re-exported here.
"""
from .branches import expand_branches, merge_branches
from .convolutionalize import convolutionalize
from .factorize import factorize
from .fast import ConvAct, FusedPointwiseChain, optimize
from .functional import pointwise
from .layers import ChannelBatchNorm, Pointwise, SharedMLP
from .reparameterize import reparameterize
from .rewrite_report import ConvolutionalizeReport, FactorizeReport, OptimizeReport, RewriteReport
from .rewrites import conv1x1_to_linear, fold_batchnorm, linear_to_conv1x1, merge_pointwise

__all__ = ["ChannelBatchNorm", "ConvAct", "ConvolutionalizeReport", "FactorizeReport", "FusedPointwiseChain",
           "OptimizeReport", "Pointwise", "RewriteReport", "SharedMLP",
           "conv1x1_to_linear", "convolutionalize", "expand_branches", "factorize", "fold_batchnorm",
           "linear_to_conv1x1", "merge_branches", "merge_pointwise", "optimize", "pointwise", "reparameterize"]
