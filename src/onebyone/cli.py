"""The ``onebyone`` command. Subcommands import torch / keras only when they need them."""
from __future__ import annotations

import argparse
import sys

from .errors import OneByOneError


def _tour(args) -> int:
    from .tour import render, run_tour

    lessons = run_tour(only=args.lesson or None, seed=args.seed)
    if args.json:
        print(render.to_json(lessons))
    else:
        print(render.text(lessons, color=sys.stdout.isatty()))
    return 0 if all(L.passed for L in lessons) else 1


def _lessons(args) -> int:
    from .tour.core import REGISTRY

    for spec in REGISTRY:
        print(f"{spec.id:18s} {spec.title}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onebyone", description="The 1x1 convolution, understood and used.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tour", help="run every lesson: each seed claim computed and verified")
    t.add_argument("--json", action="store_true", help="print the lessons and checks as JSON")
    t.add_argument("--lesson", action="append", metavar="ID", help="run only this lesson (repeatable)")
    t.add_argument("--seed", type=int, default=0, help="seed of the random arrays (default 0)")
    t.set_defaults(fn=_tour)
    ls = sub.add_parser("lessons", help="list the lesson ids")
    ls.set_defaults(fn=_lessons)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except OneByOneError as e:
        print(f"onebyone: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
