"""A deterministic synthetic point-cloud set: 8 shapes, randomly rotated, scaled and jittered.

Each sampler draws points on the surface (or along the curve) of a unit-sized shape; then every cloud
gets a uniformly random rotation, a scale in [0.7, 1.3], Gaussian noise of std 0.02, and is centred.
"""
from __future__ import annotations

import numpy as np

from ..checks import check_int
from ..errors import check_size


def _sphere(r, n):
    p = r.normal(size=(n, 3))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _cube(r, n):
    p = r.uniform(-1, 1, (n, 3))
    axis = r.integers(0, 3, n)
    p[np.arange(n), axis] = r.choice([-1.0, 1.0], n)  # push each point onto one face
    return p


def _cylinder(r, n):
    t, z = r.uniform(0, 2 * np.pi, n), r.uniform(-1, 1, n)
    return np.stack([np.cos(t), np.sin(t), z], 1)


def _cone(r, n):
    t, h = r.uniform(0, 2 * np.pi, n), np.sqrt(r.uniform(0, 1, n))  # uniform on the lateral surface
    return np.stack([h * np.cos(t), h * np.sin(t), 1 - 2 * h], 1)


def _torus(r, n):
    u, v = r.uniform(0, 2 * np.pi, n), r.uniform(0, 2 * np.pi, n)
    return np.stack([(1 + 0.35 * np.cos(v)) * np.cos(u), (1 + 0.35 * np.cos(v)) * np.sin(u), 0.35 * np.sin(v)], 1)


def _pyramid(r, n):
    apex, base = np.array([0.0, 0.0, 1.0]), np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]], float)
    face = r.integers(0, 4, n)
    a, b = r.uniform(0, 1, n), r.uniform(0, 1, n)
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    return apex + a[:, None] * (base[face] - apex) + b[:, None] * (base[(face + 1) % 4] - apex)


def _octahedron(r, n):
    p = np.abs(r.normal(size=(n, 3)))
    p /= p.sum(axis=1, keepdims=True)  # on the face x + y + z = 1
    return p * r.choice([-1.0, 1.0], (n, 3))


def _helix(r, n):
    t = r.uniform(0, 4 * np.pi, n)
    return np.stack([np.cos(t), np.sin(t), t / (2 * np.pi) - 1], 1)


SHAPES = {"sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
          "pyramid": _pyramid, "octahedron": _octahedron, "helix": _helix}


def _rotation(r) -> np.ndarray:
    q, rr = np.linalg.qr(r.normal(size=(3, 3)))
    q = q * np.sign(np.diag(rr))
    return q if np.linalg.det(q) > 0 else -q


def load_shapes3d(split: str = "train", n_points: int = 1024, per_class=None, seed: int = 0):
    """``(x (N, 3, n_points) float32, y (N,) int64)``; 200 clouds per class for train, 50 for test."""
    n_points = check_int(n_points, "n_points")
    per_class = check_int(per_class if per_class is not None else (200 if split == "train" else 50), "per_class")
    check_size(len(SHAPES) * per_class * n_points * 3 * 8, f"shapes3d at n_points={n_points:,}")  # float64 points
    r = np.random.default_rng([seed, 0 if split == "train" else 1])
    xs, ys = [], []
    for label, sample in enumerate(SHAPES.values()):
        for _ in range(per_class):
            p = sample(r, n_points) @ _rotation(r).T * r.uniform(0.7, 1.3) + r.normal(0, 0.02, (n_points, 3))
            xs.append((p - p.mean(axis=0)).T)  # (N, 3) -> (3, N), centred
            ys.append(label)
    order = r.permutation(len(ys))
    return np.stack(xs).astype(np.float32)[order], np.array(ys, dtype=np.int64)[order]
