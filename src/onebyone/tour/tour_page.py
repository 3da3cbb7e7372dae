"""The tour as one HTML page: per lesson its claim, its figure, its experiment and its checks with PASS/FAIL.

What a lesson shows is read from its spec in the one registry (``core.REGISTRY``: ``@lesson(...,
figure=..., experiment=...)``); the page's HTML is ``templates/header.html`` and ``templates/lesson.html``.
"""
from __future__ import annotations

from pathlib import Path

from .. import webpage as page
from ..errors import OneByOneError
from ..plots import new_figure, save
from ..webpage import esc, fill, template
from . import core
from .experiments import common
from .lessons_basics import SOURCES
from .render import detail, tally

ONE_IDEA = "y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]"


def figure_of(lesson):
    """The figure its spec declares for ``lesson`` (a ``figure_tools.Figure``), or None: a lesson without a
    figure, or one the registry does not hold."""
    spec = core.spec_of(lesson.id)
    return spec.figure if spec is not None else None


def draw(lesson, path):
    """Write the figure of ``lesson`` (which has run) to ``path``; returns the path."""
    figure = figure_of(lesson)
    if figure is None:
        drawn = sorted(spec.id for spec in core.REGISTRY if spec.figure is not None)
        raise OneByOneError(f"no figure for lesson {lesson.id!r}; figures exist for {drawn}")
    if not lesson.arrays:
        raise OneByOneError(f"lesson {lesson.id!r} kept no arrays to draw (did it stop before its end?)")
    fig = new_figure(figure.width, figure.height)
    figure.draw(lesson.arrays, fig)
    return save(fig, path)


def experiment_html(lesson) -> str:
    """The HTML of the experiment its spec declares for ``lesson`` (which has run), or "" where there is none."""
    spec = core.spec_of(lesson.id)
    return spec.experiment.html(lesson.arrays) if spec is not None and spec.experiment is not None else ""


def section(i: int, lesson, figure_src: str | None) -> str:
    checks = page.table(("", "check", "computed"), [(page.badge(c.passed), c.name, detail(c)) for c in lesson.checks])
    notes = "".join(f"<li>{esc(n)}</li>" for n in lesson.notes)
    return fill(template("lesson.html", __package__), id=esc(lesson.id), passed=str(lesson.passed).lower(), number=i,
                title=esc(lesson.title), badge=page.badge(lesson.passed), claim=esc(lesson.claim),
                source=esc(lesson.source), experiment=experiment_html(lesson), checks=checks,
                figure=page.figure(figure_src, f"figure of the lesson {lesson.title}") if figure_src else "",
                notes=f'<ul class="notes">{notes}</ul>' if notes else "")


def write_tour(lessons, folder) -> Path:
    """Draw every lesson's figure into ``folder/figures`` and write ``folder/index.html``; returns its path."""
    folder = page.claim(folder)
    sections = []
    for i, L in enumerate(lessons, 1):
        src = None
        if L.arrays and figure_of(L) is not None:
            draw(L, folder / "figures" / f"{L.id}.png")
            src = f"figures/{L.id}.png"
        sections.append(section(i, L, src))
    ok = all(L.passed for L in lessons)
    nav = "".join(f'<li><a href="#{esc(L.id)}">{esc(L.title)}</a> {page.badge(L.passed)}</li>' for L in lessons)
    header = fill(template("header.html", __package__), formula=esc(ONE_IDEA),
                  sources="; ".join(esc(t) for t in SOURCES), summary_class="" if ok else "bad",
                  tally=esc(tally(lessons)), nav=nav)
    return page.write(folder, page.document("onebyone: the 1x1 convolution tour", header,
                                            common() + "\n" + "\n".join(sections)))
