"""The tour as one HTML page: per lesson its claim, its figure and its checks with PASS/FAIL."""
from __future__ import annotations

from pathlib import Path

from .. import webpage as page
from ..errors import OneByOneError
from ..plots import new_figure, save
from ..webpage import esc
from . import figures_basics, figures_forms
from .experiments import COMMON, experiment
from .lessons_basics import SOURCES
from .render import detail, tally

FIGURES = {**figures_basics.FIGURES, **figures_forms.FIGURES}  # lesson id -> (draw(arrays, fig), size)

ONE_IDEA = "y[n, o, h, w] = sum_c W[o, c] * x[n, c, h, w] + b[o]"


def draw(lesson, path):
    """Write the figure of ``lesson`` (which has run) to ``path``; returns the path."""
    if lesson.id not in FIGURES:
        raise OneByOneError(f"no figure for lesson {lesson.id!r}; figures exist for {sorted(FIGURES)}")
    if not lesson.arrays:
        raise OneByOneError(f"lesson {lesson.id!r} kept no arrays to draw (did it stop before its end?)")
    fn, size = FIGURES[lesson.id]
    fig = new_figure(*size)
    fn(lesson.arrays, fig)
    return save(fig, path)


def section(i: int, lesson, figure_src: str | None) -> str:
    checks = page.table(("", "check", "computed"), [(page.badge(c.passed), c.name, detail(c)) for c in lesson.checks])
    notes = "".join(f"<li>{esc(n)}</li>" for n in lesson.notes)
    fig = page.figure(figure_src, f"figure of the lesson {lesson.title}") if figure_src else ""
    return f"""<section class="card lesson" id="{esc(lesson.id)}" data-pass="{str(lesson.passed).lower()}">
<h2>{i}. {esc(lesson.title)} {page.badge(lesson.passed)}</h2>
<p class="claim">{esc(lesson.claim)}</p>
<p class="source">Source: {esc(lesson.source)}</p>
{fig}
{experiment(lesson)}
{checks}
{f'<ul class="notes">{notes}</ul>' if notes else ''}
</section>"""


def write_tour(lessons, folder) -> Path:
    """Draw every lesson's figure into ``folder/figures`` and write ``folder/index.html``; returns its path."""
    folder = page.claim(folder)
    sections = []
    for i, L in enumerate(lessons, 1):
        src = None
        if L.arrays:
            draw(L, folder / "figures" / f"{L.id}.png")
            src = f"figures/{L.id}.png"
        sections.append(section(i, L, src))
    ok = all(L.passed for L in lessons)
    nav = "".join(f'<li><a href="#{esc(L.id)}">{esc(L.title)}</a> {page.badge(L.passed)}</li>' for L in lessons)
    header = f"""<h1>The 1x1 convolution, computed and checked</h1>
<p>Every claim below was computed on real arrays by onebyone when this page was made, and checked; the figures
are drawn from those arrays. A 1x1 convolution is a matrix product over the channels, at every pixel:</p>
<p><code class="formula">{esc(ONE_IDEA)}</code></p>
<p class="source">The claims come from three texts: {"; ".join(esc(t) for t in SOURCES)}.</p>
<p class="summary" id="summary"><strong class="{'' if ok else 'bad'}">{esc(tally(lessons))}</strong>.</p>
<nav><ol>{nav}</ol></nav>"""
    return page.write(folder, page.document("onebyone: the 1x1 convolution tour", header,
                                            COMMON + "\n" + "\n".join(sections)))
