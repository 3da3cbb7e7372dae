"""Keras 3 adapters. Importing this module imports keras; ``import onebyone`` alone does not."""
from .collect import analyze

__all__ = ["analyze"]
