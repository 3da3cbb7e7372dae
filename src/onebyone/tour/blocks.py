"""The classic blocks built on 1x1 convs, run for real in NumPy with their costs counted two ways.

``Runner`` executes layers on actual arrays and counts parameters and MACs from the arrays it
used (weight sizes; output elements x weight fan-in). ``cost`` predicts the same numbers from
shapes alone. The tour checks that the two agree.
"""
from __future__ import annotations

import numpy as np

from .. import cost, ops


class Runner:
    """Runs NCHW layers with random weights, predicting each layer's cost and counting it from the arrays."""

    def __init__(self, rng):
        self.rng = rng
        self.counted_params = self.counted_macs = 0
        self.costs = []

    def conv(self, x, out: int, k: int = 1, *, stride=1, padding=0, groups=1, relu=True):
        c = x.shape[1]
        w = self.rng.standard_normal((out, c // groups, k, k)) * np.sqrt(2.0 / (c // groups * k * k))
        b = self.rng.standard_normal(out) * 0.01
        y = ops.conv1x1(x, w, b, stride=stride, groups=groups) if k == 1 else \
            ops.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
        self.costs.append(cost.conv_cost(x.shape, out, k, stride=stride, padding=padding, groups=groups))
        self.counted_params += w.size + b.size
        self.counted_macs += y.size * w[0].size  # each output value: one MAC per weight of its filter
        return np.maximum(y, 0) if relu else y

    def pool(self, x, k, *, stride=None, padding=0, op="max"):
        self.costs.append(cost.pool_cost(x.shape, k, stride=stride, padding=padding, op=op))
        return ops.pool2d(x, k, stride=stride, padding=padding, op=op)

    def total(self, output_shape) -> cost.Cost:
        return cost.add_costs(self.costs, output_shape)


def mlpconv(r: Runner, x):
    """Network in Network, first block on CIFAR: 5x5 conv 192, then two 1x1 convs (160, 96)."""
    x = r.conv(x, 192, 5, padding=2)
    x = r.conv(x, 160, 1)
    return r.conv(x, 96, 1)


SQUEEZENET_FIRES = ((16, 64, 64),) * 2 + ((32, 128, 128),) * 2 + ((48, 192, 192),) * 2 + ((64, 256, 256),) * 2
# SqueezeNet 1.0's fire2 ... fire9: (squeeze, expand 1x1, expand 3x3) channels, after a 96-channel 7x7 stem


def squeezenet_pointwise_inputs(stem: int = 96) -> list:
    """The input channels of each 1x1 conv of SqueezeNet 1.0, in order: each fire's squeeze (reading the layer
    before) and 1x1 expand (reading the squeeze), then the 1x1 classifier."""
    widths, c = [], stem
    for squeeze, e1, e3 in SQUEEZENET_FIRES:
        widths += [c, squeeze]
        c = e1 + e3
    return widths + [c]


def fire(r: Runner, x, squeeze=16, expand=64):
    """SqueezeNet fire module: 1x1 squeeze, then 1x1 and 3x3 expands, concatenated."""
    s = r.conv(x, squeeze, 1)
    return np.concatenate([r.conv(s, expand, 1), r.conv(s, expand, 3, padding=1)], axis=1)


def inception(r: Runner, x, c1=64, c3r=96, c3=128, c5r=16, c5=32, pp=32):
    """GoogLeNet inception (3a): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1."""
    b1 = r.conv(x, c1, 1)
    b2 = r.conv(r.conv(x, c3r, 1), c3, 3, padding=1)
    b3 = r.conv(r.conv(x, c5r, 1), c5, 5, padding=2)
    b4 = r.conv(r.pool(x, 3, stride=1, padding=1), pp, 1)
    return np.concatenate([b1, b2, b3, b4], axis=1)


def inception_naive(r: Runner, x, c1=64, c3=128, c5=32, pp=32):
    """The same four branches with no 1x1 reductions: 3x3 and 5x5 convs read all input channels."""
    b4 = r.conv(r.pool(x, 3, stride=1, padding=1), pp, 1)
    return np.concatenate([r.conv(x, c1, 1), r.conv(x, c3, 3, padding=1), r.conv(x, c5, 5, padding=2), b4], axis=1)


def separable(r: Runner, x, out=64, stride=1):
    """MobileNet depthwise-separable block: 3x3 depthwise conv, then a 1x1 pointwise conv."""
    x = r.conv(x, x.shape[1], 3, stride=stride, padding=1, groups=x.shape[1])
    return r.conv(x, out, 1)
