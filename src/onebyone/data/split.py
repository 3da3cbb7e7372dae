"""The one seeded train/test split every dataset uses."""
from __future__ import annotations

import numpy as np

from ..errors import OneByOneError


def split_indices(n: int, split: str, test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """A fixed permutation of range(n), cut into train (first 80%) and test (last 20%, at least one sample;
    at least one stays for training): neither split is ever empty.

    >>> [len(split_indices(n, s)) for n in (2, 5, 100) for s in ("train", "test")]
    [1, 1, 4, 1, 80, 20]
    """
    if n < 2:
        raise OneByOneError(f"a dataset needs at least 2 samples to split into train and test, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(n * test_fraction))))
    return np.sort(order[n_test:] if split == "train" else order[:n_test])


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, size, size), bilinear with aligned corners."""
    h, w = images.shape[-2:]
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = images[..., y0, :][..., x0] * (1 - wx) + images[..., y0, :][..., x1] * wx
    bottom = images[..., y1, :][..., x0] * (1 - wx) + images[..., y1, :][..., x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(images.dtype)
