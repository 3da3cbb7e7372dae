"""Figures drawn with matplotlib from computed arrays (NumPy in, PNG out; no framework imports).

Each function takes the arrays to draw and a path, writes a PNG and returns the path. matplotlib is
imported inside, through its object API (``matplotlib.figure.Figure``), so no GUI backend or global
pyplot state is touched.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import OneByOneError

INK = "#1f2933"
ACCENT = "#d9480f"


def new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise OneByOneError("figures need matplotlib: pip install 'onebyone[data]'") from e
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    return path


def show_image(ax, img, title="", cmap="gray_r", **kw):
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3):  # (C, H, W) -> (H, W[, C])
        img = img[0] if img.shape[0] == 1 else np.clip(np.moveaxis(img, 0, -1), 0, 1)
    im = ax.imshow(img, cmap=cmap, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9, color=INK)
    return im


def panel_grid(k: int, most: int = 5) -> tuple[int, int]:
    """(columns, rows) of a grid of k panels, at most ``most`` to a row."""
    cols = min(k, most)
    return cols, -(-k // cols)


def class_maps_figure(image, maps, probs, path, labels=None) -> Path:
    """The input next to its K class maps (K, h, w), one panel per class, on one colour scale
    centred at zero; each panel is titled with the class and its probability."""
    cols, rows = panel_grid(len(maps))
    fig = new_figure(2.0 + 1.6 * cols, 1.8 * rows + 0.4)
    draw_class_maps(fig, image, maps, probs, labels)
    return save(fig, path)


def draw_class_maps(fig, image, maps, probs, labels=None) -> None:
    """``class_maps_figure``'s panels, drawn into ``fig``."""
    maps, probs = np.asarray(maps, dtype=float), np.asarray(probs, dtype=float)
    k = maps.shape[0]
    labels = [str(i) for i in range(k)] if labels is None else list(labels)
    cols, rows = panel_grid(k)
    grid = fig.add_gridspec(rows, cols + 2, width_ratios=[1.6, 0.25] + [1] * cols)
    show_image(fig.add_subplot(grid[:, 0]), image, "input")
    lim = float(np.abs(maps).max()) or 1.0
    best = int(np.argmax(probs))
    for i in range(k):
        ax = fig.add_subplot(grid[i // cols, 2 + i % cols])
        im = show_image(ax, maps[i], f"{labels[i]}: {probs[i]:.0%}", cmap="RdBu_r", vmin=-lim, vmax=lim)
        if i == best:
            for side in ax.spines.values():
                side.set_edgecolor(ACCENT)
                side.set_linewidth(2.5)
    fig.colorbar(im, ax=fig.axes[1:], shrink=0.8, label="class score at each position")
    fig.suptitle(f"class maps: the 1x1 head's score for each class at every position (predicted {labels[best]})",
                 fontsize=10, color=INK)


def detections(canvas, probs, stride, window, threshold: float = 0.8, min_ink: float = 0.5) -> list:
    """Objects found on a canvas: [(class, probability, top, left), ...].

    A classifier with no background class names some class on every window, even an empty or
    half-filled one, so windows are ranked by how much input they hold (sum of |x|) and taken
    greedily (non-maximum suppression, at most an eighth of a window's area shared with a kept one);
    a window counts when it holds at least ``min_ink`` of the fullest window's input and its winning
    class has probability >= ``threshold``.
    """
    canvas, probs = np.asarray(canvas, dtype=float), np.asarray(probs, dtype=float)
    (sy, sx), (wh, ww) = stride, window
    k, gh, gw = probs.shape
    ink = np.abs(canvas).sum(0)  # (H, W)
    energy = np.array([[ink[i * sy:i * sy + wh, j * sx:j * sx + ww].sum() for j in range(gw)] for i in range(gh)])
    best, cls = probs.max(0), probs.argmax(0)  # (h, w) each
    kept, taken = [], []
    for flat in np.argsort(-energy, axis=None, kind="stable"):
        i, j = divmod(int(flat), gw)
        if energy[i, j] < min_ink * energy.max() or energy[i, j] == 0:
            break
        top, left = i * sy, j * sx
        overlap = lambda t, x: max(0, wh - abs(t - top)) * max(0, ww - abs(x - left))  # noqa: E731
        if any(overlap(t, x) > wh * ww / 8 for t, x in taken):
            continue
        taken.append((top, left))
        if best[i, j] >= threshold:
            kept.append((int(cls[i, j]), float(best[i, j]), top, left))
    return kept


def canvas_figure(canvas, probs, stride, window, path, labels=None, threshold: float = 0.8) -> Path:
    """A canvas with its detections boxed, and per class the probability of that class at every
    window position (K, h, w), each cell drawn at the centre of its window."""
    canvas, probs = np.asarray(canvas, dtype=float), np.asarray(probs, dtype=float)
    k, gh, gw = probs.shape
    labels = [str(i) for i in range(k)] if labels is None else list(labels)
    (sy, sx), (wh, ww) = stride, window
    cols, rows = panel_grid(k)
    fig = new_figure(3.4 + 1.6 * cols, max(3.4, 1.7 * rows + 0.5))
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[2.2] + [1] * cols)
    ax = fig.add_subplot(grid[:, 0])
    show_image(ax, canvas, "canvas and detections")
    from matplotlib.patches import Rectangle

    for c, p, top, left in detections(canvas, probs, stride, window, threshold):
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), ww, wh, fill=False, edgecolor=ACCENT, linewidth=1.5))
        ax.text(left - 0.3, top + wh - 0.7, f"{labels[c]} {p:.0%}", color="white", fontsize=7,
                bbox={"facecolor": ACCENT, "edgecolor": "none", "pad": 1.0})
    left, top = ww / 2 - sx / 2 - 0.5, wh / 2 - sy / 2 - 0.5  # cell (i, j) drawn at its window's centre
    extent = (left, left + gw * sx, top + gh * sy, top)
    for c in range(k):
        ax = fig.add_subplot(grid[c // cols, 1 + c % cols])
        show_image(ax, canvas, f"p({labels[c]})", alpha=0.35)
        im = ax.imshow(probs[c], cmap="Reds", vmin=0, vmax=1, extent=extent, interpolation="nearest", alpha=0.75)
        ax.set_xlim(-0.5, canvas.shape[-1] - 0.5)
        ax.set_ylim(canvas.shape[-2] - 0.5, -0.5)
    fig.colorbar(im, ax=fig.axes[1:], shrink=0.8, label="probability of the window centred here")
    fig.suptitle("the classifier slid over the canvas in one pass: one window per cell", fontsize=10, color=INK)
    return save(fig, path)


def roofline_figure(points, peak_gflops: float, bandwidth_gbs: float, path, machine: str = "",
                    int8_gops: float | None = None) -> Path:
    """Achieved GFLOP/s against arithmetic intensity (FLOPs per byte moved), under the roofs
    min(peak, bandwidth * intensity); ``points`` are dicts with name, intensity, gflops, section. With
    ``int8_gops``, the int8 roof (operations of int8 products a second) is drawn dashed beside it."""
    if not points:
        raise OneByOneError("a roofline needs at least one measured point")
    fig = new_figure(10, 4.6)
    ax = fig.add_subplot()
    xs = np.logspace(
        np.log10(min(p["intensity"] for p in points) / 2), np.log10(max(p["intensity"] for p in points) * 2), 200
    )
    ax.plot(xs, np.minimum(peak_gflops, bandwidth_gbs * xs), color=INK, lw=1.5,
            label=f"roof: {peak_gflops:.0f} GFLOP/s peak, {bandwidth_gbs:.1f} GB/s")
    if int8_gops:
        ax.plot(xs, np.minimum(int8_gops, bandwidth_gbs * xs), color=INK, lw=1.0, ls="--",
                label=f"int8 roof: {int8_gops:.0f} GOP/s (torch's quantized 1x1 conv)")
    colors = {"a": "#1c7ed6", "b": ACCENT}
    for sec, label in (("a", "1x1 conv (Pointwise), widths 3..1024"), ("b", "PointNet shared MLP")):
        pts = [p for p in points if p["section"] == sec]
        if pts:
            ax.scatter(
                [p["intensity"] for p in pts],
                [p["gflops"] for p in pts],
                s=28,
                color=colors[sec],
                label=label,
                zorder=3,
            )
    for p in points:
        if p["section"] == "b":
            ax.annotate(
                text(p["name"].split()[-1]),
                (p["intensity"], p["gflops"]),
                textcoords="offset points",
                xytext=(5, -3),
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte of input, weights and output)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(text(f"roofline{': ' + machine if machine else ''}"), fontsize=9, color=INK)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the axes: it covers nothing
    return save(fig, path)


def si(v: float) -> str:
    """A count with an SI suffix: 1.2K, 3.4M, 5G (no suffix below 1000)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def bench_roofline(result: dict, path) -> Path:
    """The roofline of a result of ``onebyone bench`` (the dict its ``--json`` file holds)."""
    try:
        points = [r for row in result.get("pointwise_op", []) for r in row["roofline"]] + result.get(
            "shared_mlp", {}
        ).get("roofline", [])
        peak, bandwidth, machine = result["peak_gflops"], result["bandwidth_gbs"], result.get("machine", "")
    except (KeyError, TypeError, AttributeError) as e:
        raise OneByOneError(
            f"expected the JSON written by `onebyone bench --json` (with peak_gflops, bandwidth_gbs and "
            f"measured sections), got one without {e}"
        ) from None
    return roofline_figure(points, peak, bandwidth, path, machine, result.get("peak_gops_int8"))


MAX_BENCH_BYTES = 64 * 2**20  # a bench JSON is a few kB: a larger file (or /dev/zero) is refused unread


def read_bench(path) -> dict:
    """The JSON written by ``onebyone bench --json`` at ``path``, checked (``check_bench``); a file that is not
    one (too large, not a regular file, not JSON, nested past reason) is refused, named."""
    import json
    import os

    what = f"--bench expects the JSON object written by `onebyone bench --json`; {path}"
    if not os.path.isfile(path):
        raise OneByOneError(f"{what} is not a regular file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BENCH_BYTES + 1)
        if len(raw) > MAX_BENCH_BYTES:
            raise OneByOneError(f"{what} is larger than {MAX_BENCH_BYTES // 2**20} MB")
        bench = json.loads(raw)
    except (OSError, ValueError, RecursionError) as e:
        raise OneByOneError(f"{what} could not be read as JSON: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(bench, dict) or "peak_gflops" not in bench:
        kind = "an object without 'peak_gflops'" if isinstance(bench, dict) else f"a {type(bench).__name__}"
        raise OneByOneError(f"{what} holds {kind}")
    return check_bench(bench)


def text(label) -> str:
    """A label drawn from data, with matplotlib's mathtext switched off (``$`` shown as itself)."""
    return str(label).replace("$", r"\$")


def check_bench(result: dict) -> dict:
    """``result`` if it has the fields a page reads from a bench run, of the right types; else a
    OneByOneError naming the first that is missing or wrong."""
    def number(v) -> bool:
        try:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(float(v)) and v > 0
        except OverflowError:  # an integer of hundreds of digits
            return False

    for key in ("peak_gflops", "bandwidth_gbs"):
        if not number(result.get(key)):
            raise OneByOneError(f"the bench JSON's {key} must be a number > 0, got {result.get(key)!r}")
    if "peak_gops_int8" in result and not number(result["peak_gops_int8"]):
        raise OneByOneError(f"the bench JSON's peak_gops_int8 must be a number > 0, got {result['peak_gops_int8']!r}")
    if not isinstance(result.get("machine", ""), str):
        raise OneByOneError(f"the bench JSON's machine must be a text, got {result['machine']!r}")
    rows = result.get("pointwise_op", [])
    mlp = result.get("shared_mlp", {})
    if not isinstance(rows, list) or not isinstance(mlp, dict):
        raise OneByOneError("the bench JSON's pointwise_op must be a list and shared_mlp an object")
    lists = [row.get("roofline", []) if isinstance(row, dict) else None for row in rows] + [mlp.get("roofline", [])]
    if not all(isinstance(v, list) for v in lists):
        raise OneByOneError(f"each roofline of the bench JSON must be a list of points, got "
                            f"{next(v for v in lists if not isinstance(v, list))!r:.80}")
    for p in [p for v in lists for p in v]:
        if not (isinstance(p, dict) and number(p.get("intensity")) and number(p.get("gflops"))
                and p.get("section") in ("a", "b") and isinstance(p.get("name"), str) and p["name"].strip()):
            raise OneByOneError(f"a roofline point of the bench JSON must hold name (a text), section ('a' or 'b'), "
                                f"intensity and gflops (numbers > 0), got {p!r:.200}")
    if not any(lists):
        raise OneByOneError("the bench JSON holds no roofline point (sections a and b measure them): write one with "
                            "`onebyone bench --sections ab --json FILE`")
    return result


def kinds_figure(by_kind: dict, path, labels: dict | None = None) -> Path:
    """MACs and parameters per layer kind, side by side: ``by_kind`` maps kind -> {"macs", "params", "macs_pct",
    "params_pct"}; the 1x1 ("pointwise") bars are drawn in the accent colour."""
    from matplotlib.ticker import MaxNLocator

    kinds = [k for k in by_kind if by_kind[k]["macs"] or by_kind[k]["params"]]
    fig = new_figure(10, 0.45 * len(kinds) + 1.4)
    names = [(labels or {}).get(k, k) for k in kinds]
    colors = [ACCENT if k == "pointwise" else INK for k in kinds]
    for i, (key, title) in enumerate((("macs", "MACs"), ("params", "parameters"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = [by_kind[k][key] for k in kinds]
        ax.barh(range(len(kinds)), values, color=colors)
        for y, (v, k) in enumerate(zip(values, kinds)):
            ax.text(v, y, f"  {by_kind[k][key + '_pct']:.1f}%", va="center", fontsize=8)
        ax.set_yticks(range(len(kinds)), names if i == 0 else [""] * len(kinds), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, max(values + [1]) * 1.25)
        ax.xaxis.set_major_formatter(lambda v, _: si(v))
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_title(f"{title} by layer kind", fontsize=10, color=INK)
    return save(fig, path)
