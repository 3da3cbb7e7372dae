"""The tour in the terminal (plain text, colour on a tty) and as JSON."""
from __future__ import annotations

import os
import textwrap

from ..checks import strict_json
from ..cost import CONVENTION
from .core import summarize


def fmt_value(value) -> str:
    v = summarize(value)
    if isinstance(v, dict) and "shape" in v:
        return f"array{tuple(v['shape'])}"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v)


def detail(c) -> str:
    """What a check computed, in one line: the error and tolerance, or what was expected and got."""
    if c.max_abs_error is not None:
        return f"max abs err {c.max_abs_error:.2e} (tol {c.tolerance:.0e})"
    return f"expected {fmt_value(c.expected)}, got {fmt_value(c.got)}"


def tally(lessons) -> str:
    """'L/N lessons pass, C/M checks pass'."""
    n_checks = sum(len(L.checks) for L in lessons)
    n_ok = sum(c.passed for L in lessons for c in L.checks)
    skipped = [s for L in lessons for s in L.skipped]
    line = f"{sum(L.passed for L in lessons)}/{len(lessons)} lessons pass, {n_ok}/{n_checks} checks pass"
    if skipped:
        extras = ",".join(dict.fromkeys(e for _, _, e in skipped))
        line += (f"; {sum(n for _, n, _ in skipped)} check(s) skipped ({'; '.join(w for w, _, _ in skipped)}): "
                 f"pip install 'onebyone[{extras}]' runs them")
    return line


def text(lessons, color: bool = False, width: int = 100) -> str:
    """Every lesson: title, claim, checks with PASS/FAIL, expected, got and max abs error; in color where
    asked and the ``NO_COLOR`` convention (no-color.org: set and not empty) does not turn it off."""
    color = color and not os.environ.get("NO_COLOR")
    paint = (lambda s, c: f"\033[{c}m{s}\033[0m") if color else (lambda s, c: s)
    out = []
    for i, L in enumerate(lessons, 1):
        mark = paint("PASS", "32") if L.passed else paint("FAIL", "31;1")
        out.append(f"{paint(f'{i:2d}. {L.title}', '1')}  [{L.id}]  {mark}")
        out += textwrap.wrap(L.claim, width, initial_indent="    ", subsequent_indent="    ")
        out.append(paint(f"    source: {L.source}", "2"))
        for c in L.checks:
            status = paint("PASS", "32") if c.passed else paint("FAIL", "31;1")
            out.append(f"    {status}  {c.name}: {detail(c)}")
        out += [f"    - {n}" for n in L.notes]
        out.append("")
    out.append(f"{tally(lessons)}.  ({CONVENTION})")
    return "\n".join(out)


def to_json(lessons) -> str:
    return strict_json([L.to_dict() for L in lessons], indent=2)  # (a failed lesson's NaN: null)
