"""Class maps: what a 1x1-conv head says at every pixel, and a classifier slid over a larger canvas.

A head made of a 1x1 conv to K channels and a global average pool scores the image as the mean of K
maps, one per class; the maps themselves show where each class is read. ``class_maps`` returns them.
``canvas_scores`` runs a classifier over every window of a larger canvas in one pass: for such a
head, a K-channel average over each window-sized patch of the maps; for a Flatten -> Linear head,
the ``convolutionalize``-d model. With padding in the trunk, a window sees its real neighbours
where a lone crop saw zeros, so scores near window borders differ a little from cropping.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import OneByOneError
from . import graph as G
from .capture import trace
from .convolutionalize import _measured_stride, convolutionalize
from .layer_kinds import is_pointwise_conv
from .layers import ChannelBatchNorm
from .rewrites import is_flatten
from .tensors import evaluating

_PASS_THROUGH = (nn.BatchNorm2d, ChannelBatchNorm)


class _Grab(fx.Interpreter):
    """Runs the graph and keeps the value of one node."""

    def __init__(self, gm, node):
        super().__init__(gm)
        self.node, self.value = node, None

    def run_node(self, n):
        out = super().run_node(n)
        if n is self.node:
            self.value = out
        return out


def _map_node(gm):
    """The node holding the class maps: the input of a global average pool that a 1x1 conv feeds
    (through BatchNorm / elementwise layers), and the pool's only path to the output is a flatten."""
    for node in gm.graph.nodes:
        if not G.is_gap(gm, node):
            continue
        src, cur = node.args[0], node.args[0]
        while cur.op != "placeholder" and not is_pointwise_conv(G.module(gm, cur)):
            if not (G.is_elementwise(gm, cur) or isinstance(G.module(gm, cur), _PASS_THROUGH)):
                break
            cur = cur.args[0]
        if is_pointwise_conv(G.module(gm, cur)) and _only_flattened(gm, node):
            return src
    return None


def _only_flattened(gm, node) -> bool:
    """Does ``node``'s value reach the output through flattens and elementwise layers alone (no Linear after
    a pooled 1x1 conv: its pool's input would be features, not one map per class)?"""
    while True:
        users = list(node.users)
        if len(users) != 1:
            return False
        node = users[0]
        if node.op == "output":
            return True
        if not (is_flatten(gm, node) or G.is_elementwise(gm, node)):
            return False


class _Slid(nn.Module):
    """The class maps averaged over each window's extent: one cell per window of the input size."""

    def __init__(self, gm, node, size: tuple):
        super().__init__()
        self.gm, self.node, self.size = gm, node, size

    def forward(self, x):
        return F.avg_pool2d(_grab(self.gm, self.node, x), self.size, stride=1)


def class_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The K class maps (B, K, h, w) that a model's global-average-pooled 1x1 head averages into its logits.

    >>> from onebyone.zoo import create_model
    >>> class_maps(create_model("nin_digits").eval(), torch.zeros(1, 1, 8, 8)).shape
    torch.Size([1, 10, 4, 4])
    """
    if x.dim() != 4:
        raise OneByOneError(f"class maps need a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
    gm = trace(model)
    node = _map_node(gm)
    if node is None:
        raise OneByOneError(f"{type(model).__name__} has no head of a 1x1 conv followed by a global average pool, "
                            "so it has no class maps (a Flatten -> Linear head can be slid with canvas_scores)")
    return _grab(gm, node, x)


def _grab(gm, node, x) -> torch.Tensor:
    """The value of ``node`` when the traced model runs on ``x`` (in eval mode: no batch statistics, no
    dropout; each layer's own mode given back)."""
    grab = _Grab(gm, node)
    with torch.no_grad(), evaluating(gm):
        grab.run(x)
    return grab.value


def canvas_scores(model: nn.Module, canvas: torch.Tensor, input_size) -> tuple[torch.Tensor, tuple[int, int]]:
    """The classifier's logits at every window of ``input_size`` (C, H, W) over a larger ``canvas``.

    Returns (scores (B, K, h, w), stride (sy, sx)): cell (i, j) scores the window whose top-left
    corner is at (i * sy, j * sx) in the canvas.
    """
    c, h, w = input_size
    if canvas.dim() != 4 or canvas.shape[1] != c or canvas.shape[2] < h or canvas.shape[3] < w:
        raise OneByOneError(f"the canvas must be (B, {c}, H >= {h}, W >= {w}) for a model of input {c}x{h}x{w}, "
                            f"got shape {tuple(canvas.shape)}")
    model = model.eval()
    gm = trace(model)  # traced once for the runs below
    node = _map_node(gm)
    if node is None:
        conv, report = convolutionalize(model, input_size)
        if report.layers:  # a Flatten -> Linear head slid as a conv over the trunk's map
            with torch.no_grad():
                return conv.eval()(canvas), tuple(report.layers[0]["stride"])
        gm = trace(conv.eval())  # a pooled Linear head, now a 1x1 conv: its maps
        node = _map_node(gm)
        if node is None:
            raise OneByOneError(f"{type(model).__name__}'s head could not be slid: {report.skipped}")
    mh, mw = _grab(gm, node, torch.zeros(1, c, h, w, dtype=canvas.dtype)).shape[2:]  # one window's maps
    slid = _Slid(gm, node, (mh, mw))
    stride, _ = _measured_stride(slid, input_size, (h // mh, w // mw))  # (ceil-mode pools: not h // mh)
    with torch.no_grad():
        return slid(canvas), stride


def _image(image) -> torch.Tensor:
    """A finite (C, H, W) image as a float32 tensor, or a OneByOneError saying what it is instead."""
    x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if x.dim() != 3 or not bool(torch.isfinite(x).all()):
        raise OneByOneError(f"expected a finite (C, H, W) image, got shape {tuple(x.shape)}"
                            + ("" if x.dim() != 3 else " with NaN or infinite values"))
    return x


def draw_maps(model: nn.Module, image, path, labels=None):
    """Write a PNG of ``image`` (C, H, W) next to its class maps; returns (path, probabilities (K,))."""
    from ..plots import class_maps_figure

    x = _image(image)[None]  # (C, H, W) -> (1, C, H, W)
    model = model.eval()
    maps = class_maps(model, x)[0]  # (K, h, w)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]  # (K,)
    return class_maps_figure(image, maps.numpy(), probs.numpy(), path, labels), probs.numpy()


def draw_canvas(model: nn.Module, canvas, input_size, path, labels=None):
    """Write a PNG of ``canvas`` (C, H, W) with the classifier slid over it; returns (path, probabilities (K, h, w))."""
    from ..plots import canvas_figure

    scores, stride = canvas_scores(model, _image(canvas)[None], input_size)
    probs = scores[0].softmax(0).numpy()  # (K, h, w)
    return canvas_figure(canvas, probs, stride, tuple(input_size[1:]), path, labels), probs
