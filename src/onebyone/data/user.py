"""User data: a folder with one subfolder of images per class, or an .npz with arrays x and y."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OneByOneError
from .split import split_indices

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


def _npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise OneByOneError(f"{path} must hold arrays 'x' and 'y'; missing {missing}, found {f.files}")
            x, y = f["x"], f["y"]
    except (OSError, ValueError) as e:
        raise OneByOneError(f"{path} is not a readable .npz file: {e}") from e
    if len(x) != len(y):
        raise OneByOneError(f"{path}: x has {len(x)} samples but y has {len(y)}")
    return x.astype(np.float32), y.astype(np.int64)


def _folder(path: Path):
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise OneByOneError(f"{path} must contain one subfolder of images per class; found none")
    xs, ys = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise OneByOneError(f"class folder {path / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            img = np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0
            if xs and img.shape != xs[0].shape[1:]:
                raise OneByOneError(f"{f} is {img.shape[1]}x{img.shape[0]}, but earlier images are {xs[0].shape[2]}x{xs[0].shape[1]}")
            xs.append(img[None])  # (H, W) -> (1, H, W)
            ys.append(label)
    return np.stack(xs), np.array(ys, dtype=np.int64)


def load_path(path: Path, split: str = "train"):
    if not path.exists():
        raise OneByOneError(f"dataset path {path} does not exist")
    x, y = _npz(path) if path.suffix == ".npz" else _folder(path) if path.is_dir() else (None, None)
    if x is None:
        raise OneByOneError(f"{path} is neither a folder of class subfolders nor an .npz file")
    idx = split_indices(len(x), split)
    return x[idx], y[idx]
