"""Drawing helpers shared by the lesson figures (``figures_basics``, ``figures_forms``)."""
from __future__ import annotations

import numpy as np

from ..plots import ACCENT, INK, show_image

BLUE = "#1c7ed6"
DIVERGING = dict(cmap="RdBu_r")


def registry():
    """(figures, figure): an empty dict of lesson id -> (draw(arrays, fig), (width, height) in inches),
    and the decorator ``@figure(lesson_id, width, height)`` that fills it."""
    figures = {}

    def figure(lesson_id: str, width: float = 10, height: float = 3.4):
        def wrap(fn):
            figures[lesson_id] = (fn, (width, height))
            return fn
        return wrap
    return figures, figure


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
