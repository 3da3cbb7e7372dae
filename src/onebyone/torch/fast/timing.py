"""The interleaved timer: ``optimize()`` uses it to choose kernels and forms, ``onebyone bench`` to compare
contenders. The fast layers themselves never time anything.

Three policies over the same interleaved rounds (``timings``), each for its question:
- ``fastest`` (a kernel for one layer): medians, and the default kept unless another wins by a margin: a
  choice made in milliseconds must not flip on noise, and a wrong "no change" costs nothing.
- ``time_models`` (``optimize``'s race of whole models): medians, and a model far behind the leader leaves
  the race early: the race spends its seconds on the forms that can still win.
- ``bench.sections.timeit`` (the published ratios): the best round, which estimates what the code can do
  on a quiet machine; on a shared one, noise only ever adds time.
"""
from __future__ import annotations

import random
import time

import torch

from ...errors import OneByOneError
from ..tensors import call
from . import private


def fastest(cands: dict, budget: float = 0.02, margin: float = 0.1, block: float = 1e-3):
    """The name of the fastest of ``cands`` ({name: no-argument callable}); candidates that raise (no
    kernel for this dtype...) drop out.

    The candidates are timed in interleaved rounds (3 to 15, as many as fit in about ``budget`` seconds
    each) and compared by their median; a sample is a block of calls in a row lasting about ``block``
    seconds. The first candidate keeps its place unless another beats it by more than ``margin``.
    Timed with ``__torch_function__`` modes off: a mode that watches every call adds a cost per torch
    call, which would favour the candidates that make fewer calls.
    """
    with private.without_function_modes():
        return _fastest(cands, budget, margin, block)


def _fastest(cands: dict, budget: float, margin: float, block: float):
    first = {}
    for name, fn in cands.items():
        try:
            fn()  # a warm-up call, then one timed call
            first[name] = once(fn)
        except (RuntimeError, NotImplementedError, AttributeError):
            continue
    if not first:
        raise OneByOneError(f"no kernel among {list(cands)} runs on this input")
    calls = per_block(first, block)
    rounds = max(3, min(15, int(budget / max(block, min(first.values())))))
    times = medians({name: cands[name] for name in first}, rounds, calls)
    best = min(times, key=times.get)
    default = next(iter(times))
    return best if times[best] < (1 - margin) * times[default] else default


def per_block(seconds: dict, block: float) -> dict:
    """Calls in a row (1 to 50) that fill ``block`` seconds, for each callable's seconds per call."""
    return {k: max(1, min(50, int(block / max(t, 1e-7)))) for k, t in seconds.items()}


def medians(fns: dict, rounds: int, calls=None, settle=False) -> dict:
    """Median seconds per call of each no-argument callable over ``rounds`` interleaved rounds (``timings``)."""
    return {k: _median(v) for k, v in timings(fns, rounds, calls, settle).items()}


def timings(fns: dict, rounds: int, calls=None, settle=False) -> dict:
    """Seconds per call of each no-argument callable in each of ``rounds`` interleaved rounds.

    Each round runs the callables in a new (seeded) random order, so drift and the allocator hit every
    candidate alike. ``calls`` (name -> n, default 1): time n calls in a row and divide. ``settle`` (True,
    or the set of names it applies to): make as many calls, untimed, right before the timed ones, so that
    the cost of switching from the one before falls outside (onnxruntime's thread pool and OpenMP's both
    spin for a while after their work, which slows whatever runs next on a machine with few cores).
    """
    keys, order, calls = list(fns), random.Random(0), calls or {}
    times = {k: [] for k in keys}
    for _ in range(rounds):
        for k in order.sample(keys, len(keys)):
            if settle is True or (settle and k in settle):
                once(fns[k], n=calls.get(k, 1))
            times[k].append(once(fns[k], n=calls.get(k, 1)))
    return times


def once(fn, *args, n: int = 1) -> float:
    """Seconds per call of ``n`` calls of ``fn(*args)`` in a row (CUDA synchronised)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


DROP = 1.25  # a model whose fastest call is this many times the leader's median leaves the race


def time_models(models: dict, x, rounds: int = 5, budget: float = 1.0, drop: float | None = DROP,
                block: float = 1e-3) -> dict:
    """{label: seconds a call of each model on ``x``}: medians of interleaved rounds under ``no_grad``.

    Each round calls the models still in the race in a new seeded order, each timed call right after an
    untimed one of the same model: what a loop over one model sees (the threads of the engine or the
    OpenMP code that ran before may still be spinning, which on a machine with few cores slowed the next
    call by a fifth in our measurements); in the first round that untimed call is also the warm-up. After
    the first round, a model faster than ``block`` seconds is timed in blocks of calls lasting about that
    (``per_block``). There are ``rounds`` rounds, or fewer (at least 3) where they would take over
    ``budget`` seconds as the first round estimates. After the first round, a model whose one timed call
    is over ``drop`` squared times the fastest's leaves the race; after each later round, one whose fastest
    call so far is over ``drop`` times the leader's median (None: none leave). A model that left keeps its
    median so far: more rounds would only say by how much it loses."""
    with torch.no_grad():
        fns = {k: (lambda m=m: call(m, x)) for k, m in models.items()}
        times, live, order, n, done = {k: [] for k in fns}, list(fns), random.Random(0), rounds, 0
        calls = dict.fromkeys(fns, 1)
        while done < n:
            for k in order.sample(live, len(live)):
                once(fns[k], n=calls[k])
                times[k].append(once(fns[k], n=calls[k]))
            done += 1
            if done == 1:
                if drop is not None:  # one timed call each so far: only the far slower leave
                    lead = min(v[0] for v in times.values())
                    live = [k for k in live if times[k][0] <= drop * drop * lead]
                calls = per_block({k: v[0] for k, v in times.items()}, block)
                per_round = 2 * sum(times[k][0] * calls[k] for k in live)
                n = max(3, min(rounds, int(budget / max(per_round, 1e-9))))
            elif drop is not None:
                lead = min(_median(times[k]) for k in live)
                live = [k for k in live if min(times[k]) <= drop * lead]
        return {k: _median(v) for k, v in times.items()}


def _median(v: list) -> float:
    return sorted(v)[len(v) // 2]
