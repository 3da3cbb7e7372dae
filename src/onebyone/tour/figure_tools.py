"""The lesson figures' type and the drawing helpers they share (``figures_basics``, ``figures_forms``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..plots import ACCENT, INK, show_image

BLUE = "#1c7ed6"
DIVERGING = dict(cmap="RdBu_r")


@dataclass(frozen=True)
class Figure:
    """A lesson's figure: ``draw(arrays, fig)`` draws the lesson's kept arrays on a matplotlib figure of
    ``width`` x ``height`` inches (matplotlib is imported when a figure is drawn, never by a figures module)."""
    draw: Callable
    width: float = 10
    height: float = 3.4


def figure(width: float = 10, height: float = 3.4):
    """``@figure(width, height)``: the drawing function becomes a ``Figure`` of that size, which a lesson
    declares with ``@lesson(..., figure=...)``."""
    return lambda draw: Figure(draw, width, height)


def mark(ax, i, j, size=1, color=ACCENT):
    """Outline the ``size`` x ``size`` block of cells whose top-left cell is (row i, column j)."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((j - 0.5, i - 0.5), size, size, fill=False, edgecolor=color, linewidth=2.2))


def symmetric(a) -> dict:
    """imshow limits centred at zero, so that the sign of a value reads as its colour."""
    lim = float(np.abs(a).max()) or 1.0
    return dict(vmin=-lim, vmax=lim, **DIVERGING)


def write_values(ax, a, lim, fmt="{:.2f}", fontsize=7):
    """Write each cell's value on it, in white where the cell is dark."""
    for (r, c), v in np.ndenumerate(np.asarray(a)):
        ax.text(c, r, fmt.format(v), ha="center", va="center", fontsize=fontsize,
                color="white" if abs(v) > 0.6 * lim else INK)


def column(ax, values, title):
    """A vector drawn as a column of coloured cells with their values written in."""
    v = np.asarray(values, dtype=float).reshape(-1, 1)
    style = symmetric(v)
    show_image(ax, v, title, **style)
    write_values(ax, v, style["vmax"])
