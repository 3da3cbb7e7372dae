"""The tour: every claim of the seed texts as a lesson, computed and verified.

>>> lessons = run_tour(only=["bottleneck"])
>>> lessons[0].passed, [c.got for c in lessons[0].checks][:2]
(True, [120422400, 2408448])
"""
from __future__ import annotations

from ..checks import check_int
from ..errors import OneByOneError
from . import lessons_basics, lessons_forms  # noqa: F401  (registers the lessons, in order)
from .core import REGISTRY, Check, Lesson, run_lesson


def lesson_ids() -> list:
    return [spec.id for spec in REGISTRY]


def run_tour(only=None, seed: int = 0) -> list:
    """Run the lessons (all, or those whose ids are in ``only``) and return them with their checks."""
    check_int(seed, "seed", 0)
    specs = REGISTRY
    if only:
        unknown = [i for i in only if i not in lesson_ids()]
        if unknown:
            raise OneByOneError(f"unknown lesson id(s) {unknown}; expected some of {lesson_ids()}")
        specs = [s for s in REGISTRY if s.id in only]
    return [run_lesson(spec, seed) for spec in specs]


__all__ = ["Check", "Lesson", "lesson_ids", "run_tour"]
