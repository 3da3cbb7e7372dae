"""The figures of lessons 1-8 (shapes, channels, weights, parameters, nonlinearity), drawn with matplotlib
from the arrays each lesson computed (``Lesson.arrays``). Nothing here computes a claim: every number
drawn was computed, and verified, by the lesson. Each is a ``Figure`` (its drawing and its size), which its
lesson declares (``@lesson(..., figure=...)`` in ``lessons_basics``)."""
from __future__ import annotations

import numpy as np

from ..plots import ACCENT, INK, show_image
from .figure_tools import BLUE, column, figure, mark, symmetric, write_values


@figure(11, 3.2)
def shapes(a, fig):
    grid = fig.add_gridspec(2, 10, width_ratios=[2.2, 0.3] + [1] * 8)
    show_image(fig.add_subplot(grid[:, 0]), a["x"], "input: 1 x 28 x 28 x 1")
    for i in range(16):
        show_image(fig.add_subplot(grid[i // 8, 2 + i % 8]), a["y"][..., i], f"ch {i}", **symmetric(a["y"][..., i]))
    fig.suptitle("16 filters of size 1x1: the same 28 x 28 grid, now 16 channels deep (1 x 28 x 28 x 16)", fontsize=10)


@figure()
def one_channel(a, fig):
    grid = fig.add_gridspec(1, 6, width_ratios=[1, 1, 1, 1, 1, 1.5])
    show_image(fig.add_subplot(grid[0]), a["x"], "input x")
    for k in range(4):  # each on its own grey scale, flipped for a negative weight: a rescaled copy looks the same
        cmap = "gray_r" if a["alpha"][k] >= 0 else "gray"
        show_image(fig.add_subplot(grid[k + 1]), a["y"][..., k], f"ch {k} = {a['alpha'][k]:+.2f} x {a['b'][k]:+.2f}",
                   cmap=cmap)
    ax = fig.add_subplot(grid[5])
    for k in range(4):
        ax.plot(a["x"].ravel(), a["y"][..., k].ravel(), ".", ms=3, label=f"ch {k}")
    ax.set_xlabel("input value at a pixel", fontsize=8)
    ax.set_ylabel("output value at that pixel", fontsize=8)
    ax.set_title("each channel: one straight line", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("one input channel: each output channel is the input times one weight, plus a bias\n"
                 "(each map on its own grey scale, flipped where the weight is negative: the same picture)",
                 fontsize=10)


@figure(11, 4.6)
def many_channels(a, fig):
    i, j = a["pixel"]
    x, y, w = a["x"], a["y"], a["w"]  # (3, 16, 16), (8, 16, 16), (8, 3)
    grid = fig.add_gridspec(3, 8, width_ratios=[1.3, 0.5, 0.5, 1.4, 0.5, 1.3, 1.3, 1.3])
    for c in range(3):
        ax = fig.add_subplot(grid[c, 0])
        show_image(ax, x[c], f"input ch {c}", **symmetric(x[c]))
        mark(ax, i, j)
    column(fig.add_subplot(grid[:, 2]), x[:, i, j], "x[:, p]")
    show_image(fig.add_subplot(grid[:, 3]), w, "W (8 x 3)", **symmetric(w))
    column(fig.add_subplot(grid[:, 4]), y[:, i, j], "y[:, p]")
    for o in range(8):
        ax = fig.add_subplot(grid[o // 3, 5 + o % 3])
        show_image(ax, y[o], f"output ch {o}", **symmetric(y[o]))
        mark(ax, i, j)
    fig.suptitle(
        f"at pixel p = ({i}, {j}): 3 channel values in, W (8 x 3), 8 channel values out; the same W at every pixel",
        fontsize=10,
    )


@figure()
def full_depth(a, fig):
    x, w, y = a["x"], a["w"], a["y"]  # (32, 32, 3), (3, 4), (32, 32, 4)
    grid = fig.add_gridspec(1, 9, width_ratios=[1.3, 1, 1, 1, 0.9, 1, 1, 1, 1])
    show_image(fig.add_subplot(grid[0]), np.moveaxis(x, -1, 0), "RGB input")
    for c, name in enumerate("RGB"):
        show_image(fig.add_subplot(grid[c + 1]), x[..., c], f"{name} channel", cmap="gray")
    ax = fig.add_subplot(grid[4])
    ax.bar(range(3), w[:, 0], color=["#e03131", "#2f9e44", BLUE])
    ax.set_xticks(range(3), list("RGB"))
    ax.set_title("filter 0: 3 weights", fontsize=9)
    for f in range(4):
        show_image(fig.add_subplot(grid[5 + f]), y[..., f], f"map {f}", **symmetric(y[..., f]))
    fig.suptitle(
        "each 1x1 filter reaches through all 3 channels: one dot product per pixel, one map per filter", fontsize=10
    )


@figure(9, 4.6)
def weight_layout(a, fig):
    grid = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 1.35])
    for c in range(3):
        show_image(
            fig.add_subplot(grid[0, c]), a["w_keras"][:, :, c], f"Keras kernel[:, :, {c}, 0]", **symmetric(a["w_keras"])
        )
        show_image(fig.add_subplot(grid[1, c]), a["w_torch"][c], f"PyTorch weight[0, {c}]", **symmetric(a["w_keras"]))
    diff = float(np.abs(a["y_keras"] - a["y_torch"]).max())
    show_image(fig.add_subplot(grid[0, 3]), a["y_keras"], "output ch 0\n(Keras layout)", **symmetric(a["y_keras"]))
    show_image(
        fig.add_subplot(grid[1, 3]), a["y_torch"], f"(PyTorch layout)\nmax diff {diff:.0e}", **symmetric(a["y_keras"])
    )
    fig.suptitle(
        "filter 0 of 128: (kH, kW, C_in, C_out) and (C_out, C_in, kH, kW) hold the same 27 numbers", fontsize=10
    )


@figure(10, 3.6)
def params(a, fig):
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.2])
    for k, (key, name) in enumerate((("y3", "3x3"), ("y1", "1x1"))):
        y = a[key][..., 0]
        ax = fig.add_subplot(grid[k])
        show_image(ax, y, f"{name} conv, filter 0: {y.shape[0]}x{y.shape[1]} = {y.size} ReLUs", cmap="Greens")
        write_values(ax, y, float(y.max()) or 1.0, "{:.1f}")
    ax = fig.add_subplot(grid[2])
    bars = ax.bar(["3x3 conv", "1x1 conv"], a["params"], color=[INK, ACCENT])
    ax.bar_label(bars, fontsize=9)
    ax.set_title("parameters of 2 filters on 6x6x3", fontsize=9)
    fig.suptitle("3x3 versus 1x1 on a 6x6x3 image: outputs after ReLU, and parameter counts", fontsize=10)


@figure()
def channel_reduction(a, fig):
    grid = fig.add_gridspec(1, 4, width_ratios=[1, 1, 1, 1.3])
    for k, (key, name) in enumerate((("x", "input"), ("y", "1x1 conv 64 -> 16"), ("p", "2x2 max pool"))):
        arr = a[key]
        show_image(fig.add_subplot(grid[k]), arr[0], f"{name}\n{' x '.join(map(str, arr.shape))}", **symmetric(arr[0]))
    ax = fig.add_subplot(grid[3])
    names = ["input", "after 1x1", "after pool"]
    chans = [a[k].shape[0] for k in ("x", "y", "p")]
    pix = [a[k].shape[1] * a[k].shape[2] for k in ("x", "y", "p")]
    pos = np.arange(3)
    ax.bar(pos - 0.2, chans, 0.4, label="channels", color=ACCENT)
    ax.bar(pos + 0.2, pix, 0.4, label="pixels per channel", color=INK)
    ax.set_xticks(pos, names, fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle("a 1x1 conv changes the channel count and keeps the map; pooling does the reverse", fontsize=10)


@figure(9, 3.8)
def nonlinearity(a, fig):
    for k, (x, y, title) in enumerate(((a["linear"], a["merged"], "no activation: two 1x1 layers vs one merged"),
                                       (a["mlp"], a["fit"], "ReLU between: the MLP vs its best linear fit"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.plot(x, y, ".", ms=2, color=ACCENT if k else BLUE)
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax.plot(lim, lim, color=INK, lw=0.8)
        ax.set_xlabel("output of the stack", fontsize=8)
        ax.set_ylabel("single linear 1x1 layer", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(
        "on the diagonal: a single linear map reproduces the stack; off it, the ReLU added something", fontsize=10
    )
