"""Figures of the equivalent forms, the trained class maps, the shared MLP and the costs: each a ``Figure``,
which its lesson declares (``@lesson(..., figure=...)`` in ``lessons_forms``)."""
from __future__ import annotations

import numpy as np

from ..plots import ACCENT, INK, draw_class_maps, show_image
from .figure_tools import BLUE, column, figure, mark, symmetric


@figure(11, 3.4)
def kxk_sliding(a, fig):
    x, w, y = a["x"], a["w"], a["y"]  # (28, 28), (3, 3), (26, 26)
    i, j = 9, 6  # the output position shown; its window is x[i:i+3, j:j+3]
    patch = x[i:i + 3, j:j + 3]
    grid = fig.add_gridspec(1, 5, width_ratios=[1.6, 0.5, 1, 0.5, 1.6])
    ax = fig.add_subplot(grid[0])
    show_image(ax, x, "input 28 x 28", **symmetric(x))
    mark(ax, i, j, 3)
    column(fig.add_subplot(grid[1]), patch.ravel(), "9 inputs")
    show_image(fig.add_subplot(grid[2]), w, "the 9 weights", **symmetric(w))
    value = float(np.dot(w.ravel(), patch.ravel()) + a["b"])
    column(fig.add_subplot(grid[3]), [value], "1 output")
    ax = fig.add_subplot(grid[4])
    show_image(ax, y, "output 26 x 26", **symmetric(y))
    mark(ax, i, j)
    fig.suptitle(f"one 9-input dense unit, slid over the image: sum(w * patch) + b = {value:.3f} = output[{i}, {j}]",
                 fontsize=10)


@figure(11, 3.2)
def fc_as_conv(a, fig):
    outs = {
        "dense layer": a["dense"],
        "(a) 784 kernels of 28 x 28": a["full"],
        "(b) reshape, then 1x1 conv": a["pointwise"],
    }
    show_image(fig.add_subplot(1, 4, 1), a["x"], "input 28 x 28")
    lim = symmetric(a["dense"])
    for k, (name, out) in enumerate(outs.items()):
        err = float(np.abs(out - a["dense"]).max())
        show_image(fig.add_subplot(1, 4, k + 2), out.reshape(28, 28), f"{name}\nmax diff from dense {err:.1e}", **lim)
    fig.suptitle(
        "three writings of one fully connected layer: the 784 outputs, drawn as 28 x 28, are the same", fontsize=10
    )


@figure(10, 4.2)
def class_maps(a, fig):
    draw_class_maps(fig, a["image"], a["maps"], a["probs"])
    fig.suptitle(f"a digits model trained in NumPy ({a['accuracy']:.1%} on held-out digits): its 1x1 head's class maps",
                 fontsize=10, color=INK)


@figure(11, 3.8)
def shared_mlp(a, fig):
    pts, feats = a["points"], a["features"]  # (N, 3), (N, 128)
    grid = fig.add_gridspec(1, 3, width_ratios=[1.2, 1.4, 1.4])
    ax = fig.add_subplot(grid[0], projection="3d")
    best = int(np.argmax(feats.var(axis=0)))  # the feature that varies most over the cloud
    ax.scatter(*pts.T, c=feats[:, best], s=9, cmap="viridis", depthshade=False)
    ax.view_init(elev=55, azim=30)
    ax.set_box_aspect((1, 1, 0.6))
    ax.set_title(f"256 points, coloured by feature {best}", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    ax = fig.add_subplot(grid[1])
    show_image(ax, feats[:64].T, "features: 128 per point (first 64 points)", cmap="viridis", aspect="auto")
    ax.set_xlabel("point", fontsize=8)
    ax.set_ylabel("feature", fontsize=8)
    ax = fig.add_subplot(grid[2])
    ax.plot(a["pooled"], color=BLUE, lw=2.5, label="max over points")
    ax.plot(a["pooled_shuffled"], color=ACCENT, lw=1, ls="--", label="the same, points shuffled")
    ax.set_xlabel("feature", fontsize=8)
    ax.set_title("the pooled 128-vector ignores the point order", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("one MLP (3 -> 64 -> 128) on every point, the same weights: a Conv1d with kernel size 1", fontsize=10)


@figure(9, 2.8)
def bottleneck(a, fig):
    ax = fig.add_subplot()
    direct, reduce, after = a["direct"], a["reduce"], a["after"]
    ax.barh(1, direct, color=INK)
    ax.barh(0, reduce, color=ACCENT, label="1x1 conv 192 -> 16")
    ax.barh(0, after, left=reduce, color=BLUE, label="5x5 conv 16 -> 32")
    ax.text(direct, 1, f"  {direct / 1e6:.1f}M MACs", va="center", fontsize=9)
    ax.text(
        reduce + after,
        0,
        f"  {(reduce + after) / 1e6:.1f}M MACs ({direct / (reduce + after):.2f}x fewer)",
        va="center",
        fontsize=9,
    )
    ax.set_yticks([0, 1], ["1x1 bottleneck,\nthen 5x5 conv", "5x5 conv\n192 -> 32"])
    ax.set_xlim(0, direct * 1.3)
    ax.set_xlabel("multiply-accumulates on a 28 x 28 x 192 input", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("same 28 x 28 x 32 output, about a tenth of the work", fontsize=10)


@figure(10, 3.6)
def blocks(a, fig):
    ax = fig.add_subplot()
    names = [b[0] for b in a["bars"]]
    pos = np.arange(len(names))
    ax.barh(pos + 0.2, [b[2] / 1e6 for b in a["bars"]], 0.4, color=INK, label="the plain alternative")
    ax.barh(pos - 0.2, [b[1] / 1e6 for b in a["bars"]], 0.4, color=ACCENT, label="the block with its 1x1 convs")
    for p, (_, ours, plain, what) in zip(pos, a["bars"]):
        ax.text(plain / 1e6, p + 0.2, f"  {what}", va="center", fontsize=7)
        ax.text(
            ours / 1e6,
            p - 0.2,
            f"  {ours / plain:.2f}x the MACs of the alternative",
            va="center",
            fontsize=7,
            color=ACCENT,
        )
    ax.set_yticks(pos, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(b[2] for b in a["bars"]) / 1e6 * 30)
    ax.set_xlabel("millions of MACs (log scale)", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("four classic blocks, run on real arrays: MACs with and without their 1x1 convolutions", fontsize=10)


@figure(10, 2.6)
def branches(a, fig):
    k3, k1 = np.asarray(a["k3"]), float(a["k1"])
    one = np.zeros((3, 3))
    one[1, 1] = k1  # the 1x1 kernel drawn as a 3x3 with a zero border
    ident = np.zeros((3, 3))
    ident[1, 1] = 1.0
    merged = k3 + one + ident
    lim = symmetric(np.stack([k3, one, ident, merged]))
    for i, (k, title) in enumerate(((k3, "3x3 branch"), (one, "1x1 branch, as 3x3"), (ident, "identity, as 3x3"),
                                    (merged, "= one 3x3 kernel"))):
        show_image(fig.add_subplot(1, 4, i + 1), k, title, **lim)
    fig.suptitle("three parallel branches, summed: one convolution whose kernel is the sum of theirs", fontsize=10)


@figure(10, 3.0)
def int8(a, fig):
    errors = a["errors"]
    ax = fig.add_subplot(1, 1, 1)
    bits = [8, 6, 4]
    for i, (rule, color) in enumerate((("per channel", BLUE), ("per tensor", ACCENT))):
        ax.bar([j + 0.38 * i for j in range(3)], [100 * errors[f"{k} {rule}"] for k in bits], 0.36, color=color,
               label=f"one scale {rule}")
    ax.set_xticks([j + 0.19 for j in range(3)], [f"{k} bits" for k in bits])
    ax.set_ylabel("max output error, % of scale")
    ax.legend(frameon=False)
    fig.suptitle("a 1x1 conv as an integer product: the error comes from rounding the operands, not from the sum",
                 fontsize=10)
