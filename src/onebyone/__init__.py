"""onebyone: the 1x1 convolution, understood and used.

A 1x1 convolution is a matrix product over the channels, applied at every pixel::

    y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]

Importing onebyone imports NumPy and nothing heavier; the PyTorch and Keras parts load only
when asked for.
"""
from . import cost, forms, layout, ops
from .analyzer import analyze
from .cost import Cost
from .errors import OneByOneError
from .ops import conv1x1, conv2d, dense

__version__ = "0.1.0"
__all__ = ["Cost", "analyze", "OneByOneError", "conv1x1", "conv2d", "cost", "dense", "forms", "layout", "ops"]
