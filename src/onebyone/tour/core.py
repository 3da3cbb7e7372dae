"""Lessons and checks: a lesson states a claim, computes it on real arrays, and records checks.

A check holds what the claim expects, what was computed, whether they agree, and for array
comparisons the max abs error and the tolerance. Nothing is written in by hand: ``got`` always
comes from a computation inside the lesson.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import OneByOneError

if TYPE_CHECKING:  # the types of what a lesson declares; imported by the lessons, not here
    from .experiments import Experiment
    from .figure_tools import Figure


def summarize(value) -> Any:
    """A JSON-able view of a value: arrays become their shape and a few statistics."""
    if isinstance(value, np.ndarray) and value.ndim > 0 and value.size > 8:
        return {"shape": list(value.shape), "mean": float(value.mean()), "l2": float(np.linalg.norm(value))}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [summarize(v) for v in value]
    return value


@dataclass
class Check:
    name: str
    expected: Any
    got: Any
    passed: bool
    max_abs_error: float | None = None
    tolerance: float | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "expected": summarize(self.expected), "got": summarize(self.got), "pass": self.passed}
        if self.max_abs_error is not None:
            d["max_abs_error"] = self.max_abs_error
            d["tolerance"] = self.tolerance
        return d


@dataclass
class Lesson:
    id: str
    title: str
    claim: str
    source: str
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (what, how many checks, the extra that runs them)
    arrays: dict = field(default_factory=dict, repr=False)  # what the lesson computed, for its figure

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def close(self, name: str, expected, got, tol: float = 1e-10) -> float:
        """Two arrays (or numbers) agree elementwise within ``tol`` (same shape required)."""
        e, g = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
        if e.shape != g.shape:
            self.checks.append(Check(name, list(e.shape), list(g.shape), False))
            return math.inf
        err = float(np.max(np.abs(e - g))) if e.size else 0.0
        self.checks.append(Check(name, expected, got, bool(err <= tol), err, tol))
        return err

    def equal(self, name: str, expected, got) -> bool:
        """Exact equality of numbers, shapes or other plain values."""
        ok = summarize(expected) == summarize(got)
        self.checks.append(Check(name, expected, got, bool(ok)))
        return ok

    def holds(self, name: str, condition: bool, got, expected: str) -> bool:
        """A computed condition; ``got`` is the computed value, ``expected`` says what makes it pass."""
        self.checks.append(Check(name, expected, got, bool(condition)))
        return bool(condition)

    def note(self, text: str) -> None:
        """A line of computed explanation shown under the checks."""
        self.notes.append(text)

    def skip(self, what: str, checks: int, extra: str) -> None:
        """``checks`` checks of ``what`` not run here: the package of ``extra`` is not installed (said, counted)."""
        self.skipped.append((what, checks, extra))
        self.note(f"{what}: {checks} check(s) skipped, not installed here (pip install 'onebyone[{extra}]')")

    def keep(self, **arrays) -> None:
        """Keep computed arrays for the lesson's figure (the HTML page draws them; the checks never read them)."""
        self.arrays.update(arrays)

    def _repr_html_(self) -> str:
        """Jupyter's view: the lesson's card from the tour page, figure inline (``onebyone.notebook``)."""
        from ..notebook import lesson_html

        return lesson_html(self)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "claim": self.claim, "source": self.source,
                "pass": self.passed, "checks": [c.to_dict() for c in self.checks], "notes": list(self.notes),
                "skipped": [{"what": w, "checks": n, "extra": e} for w, n, e in self.skipped]}


@dataclass(frozen=True)
class LessonSpec:
    """A lesson as declared, all in one place: its claim, the function that computes and checks it, and what
    the page shows of it: ``figure`` (a ``figure_tools.Figure``, drawn from the arrays the lesson kept) and
    ``experiment`` (an ``experiments.Experiment``), each None where the lesson has none."""
    id: str
    title: str
    claim: str
    source: str
    fn: Callable
    figure: Figure | None = None
    experiment: Experiment | None = None


REGISTRY: list = []  # the one registry of the tour: every LessonSpec, in declaration order


def lesson(id: str, title: str, source: str, claim: str, figure: Figure | None = None,
           experiment: Experiment | None = None):
    """Register a lesson function ``fn(L: Lesson, rng: np.random.Generator) -> None`` with its figure and its
    experiment (None: the lesson has none); an id already registered is refused."""
    if spec_of(id) is not None:
        raise OneByOneError(f"a lesson with id {id!r} is already registered")

    def wrap(fn):
        REGISTRY.append(LessonSpec(id, title, " ".join(claim.split()), source, fn, figure, experiment))
        return fn
    return wrap


def spec_of(lesson_id: str) -> LessonSpec | None:
    """The registered spec of the lesson ``lesson_id``, or None where no lesson has that id."""
    return next((spec for spec in REGISTRY if spec.id == lesson_id), None)


def run_lesson(spec: LessonSpec, seed: int = 0) -> Lesson:
    L = Lesson(spec.id, spec.title, spec.claim, spec.source)
    rng = np.random.default_rng([seed, sum(map(ord, spec.id))])
    try:
        spec.fn(L, rng)
    except Exception as e:  # a lesson that crashes is a failed lesson, shown as such
        L.checks.append(Check("lesson ran to the end", "no exception", f"{type(e).__name__}: {e}", False))
    return L
