"""The plan of a fused pointwise chain, and a NumPy reference that executes it tile by tile.

A chain of 1x1 convs is the same per-point MLP at every point: for a tile of T points (rows),
``h = act_k(h @ W_k.T + b_k)`` layer after layer, optionally ending in a max or mean over the points
of each sample. Run tile by tile, the intermediates of one tile stay in cache and the full
(points, width) tensors are never written; a pool is reduced tile by tile too.

Two exact shortcuts: a max pool commutes with a bias and with any non-decreasing activation
(``max_p relu(z_p + b) = relu(max_p z_p + b)``), so the last layer's bias and activation are applied
to the pooled (B, O) vector, not to every point; and a mean pool commutes with the bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .activations import FUSABLE, REGISTRY
from .checks import check_choice, check_int
from .errors import OneByOneError

POOLS = (None, "max", "mean")
CACHE_BYTES = 16 << 20  # the bytes one layer's input and output rows of a tile may take (see choose_tile)


@dataclass(frozen=True)
class ChainPlan:
    """Widths (in, hidden..., out), one activation per layer, the pool, and points per tile."""

    widths: tuple
    acts: tuple
    pool: str | None
    tile: int

    @property
    def pool_first(self) -> bool:
        """Can the last layer's bias and activation wait until after the pool?"""
        return (
            self.pool == "max"
            and REGISTRY[self.acts[-1]].monotone
            or self.pool == "mean"
            and self.acts[-1] == "identity"
        )

    def macs_per_point(self) -> int:
        return sum(a * b for a, b in zip(self.widths, self.widths[1:]))


def choose_tile(widths, itemsize: int = 4, cache_bytes: int = CACHE_BYTES, lo: int = 64, hi: int = 4096) -> int:
    """Points per tile so that one layer's input and output rows for the tile fit in ``cache_bytes``,
    rounded down to a power of two, within [lo, hi].

    >>> choose_tile((3, 64, 64, 64, 128, 1024))  # widest pair 128 + 1024 floats: 3,640 points -> 2048
    2048
    """
    widest = max(a + b for a, b in zip(widths, widths[1:]))
    t = max(1, cache_bytes // (widest * itemsize))
    return int(min(hi, max(lo, 1 << (t.bit_length() - 1))))


def make_plan(widths, acts, pool=None, tile=None, itemsize: int = 4) -> ChainPlan:
    widths = tuple(check_int(w, "widths entries") for w in widths)
    acts = tuple(acts)
    if len(widths) < 2 or len(acts) != len(widths) - 1:
        raise OneByOneError(f"a chain needs widths (in, ..., out) and one activation per layer; got widths {widths} "
                            f"and {len(acts)} activation(s)")
    for a in acts:
        check_choice(a, FUSABLE, "activation")
    check_choice(pool, POOLS, "pool")
    tile = choose_tile(widths, itemsize) if tile is None else check_int(tile, "tile")
    return ChainPlan(widths, acts, pool, tile)


def tiles(n_samples: int, n_points: int, tile: int):
    """(first row, rows, first sample, samples) of each tile over ``n_samples`` x ``n_points`` rows.

    A tile is either several whole samples or a part of one sample, never parts of two, so a pool
    per sample can be reduced tile by tile.

    >>> list(tiles(2, 3, 4))  # 4 rows hold one whole 3-point sample
    [(0, 3, 0, 1), (3, 3, 1, 1)]
    >>> list(tiles(1, 5, 2))
    [(0, 2, 0, 1), (2, 2, 0, 1), (4, 1, 0, 1)]
    """
    if n_points <= tile:
        per = tile // n_points
        for s in range(0, n_samples, per):
            k = min(per, n_samples - s)
            yield s * n_points, k * n_points, s, k
    else:
        for s in range(n_samples):
            for p in range(0, n_points, tile):
                yield s * n_points + p, min(tile, n_points - p), s, 1


def run_chain(x, weights, biases, plan: ChainPlan):
    """The reference executor: x (B, P, C) rows -> (B, P, O), or (B, O) with a pool.

    Weights are (O, C) matrices, biases (O,) or None; every tile follows the plan exactly.
    """
    x = np.asarray(x, dtype=np.float64)
    b_, p_, c = x.shape
    if c != plan.widths[0]:
        raise OneByOneError(f"the chain expects {plan.widths[0]} input channels, got input of shape {x.shape}")
    rows = x.reshape(-1, c)  # (B, P, C) -> (B*P, C)
    out = np.zeros((b_, plan.widths[-1]) if plan.pool else (b_ * p_, plan.widths[-1]))
    if plan.pool == "max":
        out[:] = -np.inf
    last = len(weights) - 1
    for r0, n, s0, k in tiles(b_, p_, plan.tile):
        h = rows[r0:r0 + n]  # (T, C)
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = h @ np.asarray(w).T  # (T, C_i) -> (T, C_i+1)
            if i == last and plan.pool_first:
                break
            h = REGISTRY[plan.acts[i]].numpy(h + (0 if b is None else b))
        if plan.pool is None:
            out[r0:r0 + n] = h
            continue
        h = h.reshape(k, -1, h.shape[-1])  # (T, O) -> (samples, points, O)
        if plan.pool == "max":
            out[s0:s0 + k] = np.maximum(out[s0:s0 + k], h.max(1))
        else:
            out[s0:s0 + k] += h.sum(1) / p_
    if plan.pool_first:
        b = biases[-1]
        out = REGISTRY[plan.acts[-1]].numpy(out + (0 if b is None else b))
    return out if plan.pool else out.reshape(b_, p_, -1)
