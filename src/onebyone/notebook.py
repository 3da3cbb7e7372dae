"""What Jupyter shows for onebyone's results (``_repr_html_``): a ``ModelStats``, a ``RewriteReport`` and a
lesson render as the same tables and figures as the pages, as plain HTML (no script needed to read them), the
figures inline as PNG where matplotlib is installed."""
from __future__ import annotations

import base64
import importlib.util
import tempfile
from pathlib import Path

from . import webpage as page
from .webpage import esc


def _inline(draw) -> str:
    """``draw(path)``'s PNG as an inline <img>, or "" without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(draw(Path(tmp) / "figure.png"))
        data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="figure" style="max-width: 100%">'


def stats_html(stats) -> str:
    """A model's analysis: its totals and convention, MACs and params by kind (figure), and every layer."""
    from .model_page import by_kind
    from .plots import kinds_figure
    from .stats import KIND_LABELS

    head, cells = stats.cells()
    numeric = range(head.index("params"), len(head))
    kinds = by_kind(stats)
    figure = _inline(lambda path: kinds_figure(kinds, path, KIND_LABELS)) if kinds else ""
    notes = "".join(f"<li>{esc(line)}</li>" for line in stats.summary_lines())
    return (f"<div><strong>{esc(stats.model)}</strong> (batch {stats.batch_size}, {esc(stats.dtype)})"
            f"<ul>{notes}</ul>{figure}{page.table(head, cells, numeric)}</div>")


def report_html(report) -> str:
    """A rewrite's report: what changed, what was skipped and why, how far the outputs moved, the costs."""
    rows = [("changed", c, "") for c in report.changed] + [("skipped", n, r) for n, r in report.skipped]
    costs = (f"params {report.params_before:,} &rarr; {report.params_after:,}; MACs {report.macs_before:,} "
             f"&rarr; {report.macs_after:,} per sample" + (f" of {esc(report.sample)}" if report.sample else ""))
    notes = "".join(f"<li>{esc(n)}</li>" for n in report.notes)
    return (f"<div><strong>{esc(report.rewrite)}</strong>: {len(report.changed)} change(s), "
            f"{len(report.skipped)} skipped; max abs diff {report.max_abs_diff:.3g} (tolerance "
            f"{report.tolerance:.3g})<br>{costs}{page.table(('', 'where', 'why'), rows)}"
            f"{f'<ul>{notes}</ul>' if notes else ''}</div>")


def lesson_html(lesson) -> str:
    """A lesson that has run: its claim and source, the figure its spec declares (none without matplotlib),
    each check with what was computed, its notes."""
    from .tour.render import detail
    from .tour.tour_page import draw, figure_of

    figure = _inline(lambda path: draw(lesson, path)) if lesson.arrays and figure_of(lesson) is not None else ""
    checks = page.table(("", "check", "computed"), [(page.badge(c.passed), c.name, detail(c)) for c in lesson.checks])
    notes = "".join(f"<li>{esc(n)}</li>" for n in lesson.notes)
    return (f"<div><h3>{esc(lesson.title)} {page.badge(lesson.passed)}</h3><p>{esc(lesson.claim)}</p>"
            f"<p><em>Source: {esc(lesson.source)}</em></p>{figure}{checks}"
            f"{f'<ul>{notes}</ul>' if notes else ''}</div>")
