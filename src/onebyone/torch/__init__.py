"""PyTorch adapters: the ``Pointwise`` layer, ``SharedMLP`` and exact model rewrites.

Importing this module imports torch; ``import onebyone`` alone does not.
"""
from .layers import ChannelBatchNorm, Pointwise, SharedMLP

__all__ = ["ChannelBatchNorm", "Pointwise", "SharedMLP"]
