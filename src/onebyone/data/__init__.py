"""Offline datasets: nothing is downloaded, ever.

``load(name, split)`` returns ``(x, y)`` NumPy arrays (float32 inputs, int64 labels):

- ``"digits"``: scikit-learn's bundled 8 x 8 handwritten digits (1,797 images) as (N, 1, 8, 8) in
  [0, 1], or (N, 1, 28, 28) with ``size=28`` (bilinear upscale); a fixed, seeded 80/20 split.
- ``"shapes3d"``: synthetic point clouds, (N, 3, n_points), of 8 shapes under random rotation, scale
  and noise; the same seed always gives the same clouds.
- a path: a folder with one subfolder of images per class, or an ``.npz`` with arrays ``x`` and ``y``.

``as_dataset(x, y)`` wraps the arrays in a torch ``TensorDataset``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OneByOneError, check_choice
from .digits import load_digits
from .shapes3d import SHAPES, load_shapes3d
from .user import load_path

NAMES = ("digits", "shapes3d")


def load(name: str, split: str = "train", **kwargs):
    """``(x, y)`` for a named dataset or a path (see the module docstring)."""
    check_choice(split, ("train", "test"), "split")
    if name == "digits":
        return load_digits(split, **kwargs)
    if name == "shapes3d":
        return load_shapes3d(split, **kwargs)
    if "/" in str(name) or str(name).endswith(".npz") or Path(str(name)).exists():
        return load_path(Path(name), split, **kwargs)
    raise OneByOneError(f"unknown dataset {name!r}; expected one of {NAMES}, a folder of class subfolders, or an .npz file")


def num_classes(name: str, y=None) -> int:
    return {"digits": 10, "shapes3d": len(SHAPES)}.get(name) or int(np.max(y)) + 1


def as_dataset(x, y):
    """The arrays as a torch TensorDataset (imports torch)."""
    import torch

    return torch.utils.data.TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))


__all__ = ["NAMES", "SHAPES", "as_dataset", "load", "num_classes"]
