"""Offline datasets: nothing is downloaded, ever.

``load(name, split)`` returns ``(x, y)`` NumPy arrays (float32 inputs, int64 labels):

- ``"digits"``: scikit-learn's bundled 8 x 8 handwritten digits (1,797 images) as (N, 1, 8, 8) in
  [0, 1], or (N, 1, 28, 28) with ``size=28`` (bilinear upscale); a fixed, seeded 80/20 split.
- ``"shapes3d"``: synthetic point clouds, (N, 3, n_points), of 8 shapes under random rotation, scale
  and noise; the same seed always gives the same clouds.
- a path: a folder with one subfolder of images per class (pixels in [0, 1]; one channel where every image is
  gray, else three), or an ``.npz`` with arrays
  ``x`` and ``y`` (a uint8 or uint16 ``x`` scaled to [0, 1] as images are, other numbers taken as they are).

"""
from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from ..checks import check_choice
from ..errors import OneByOneError
from .digits import load_digits
from .shapes3d import SHAPES, load_shapes3d
from .user import fit_channels, folder_classes, load_path, read_image

NAMES = ("digits", "shapes3d")


def is_path(name) -> bool:
    """Does a dataset name mean a file or folder (rather than one of ``NAMES``)?"""
    return "/" in str(name) or str(name).endswith(".npz") or Path(str(name)).exists()


def load(name: str, split: str = "train", **kwargs):
    """``(x, y)`` for a named dataset or a path (see the module docstring)."""
    check_choice(split, ("train", "test"), "split")
    takes = [p for p in inspect.signature(_loader(name)).parameters if p not in ("split", "path")]
    if set(kwargs) - set(takes):
        extra = sorted(set(kwargs) - set(takes))
        raise OneByOneError(f"{name} does not take {extra}; it takes {takes or 'no options'}")
    if name == "digits":
        return load_digits(split, **kwargs)
    if name == "shapes3d":
        return load_shapes3d(split, **kwargs)
    if is_path(name):
        return load_path(Path(name), split, **kwargs)
    raise OneByOneError(
        f"unknown dataset {name!r}; expected one of {NAMES}, a folder of class subfolders, or an .npz file"
    )


def _loader(name: str):
    return {"digits": load_digits, "shapes3d": load_shapes3d}.get(name, load_path)


def option_default(name: str, option: str):
    """The value ``load`` gives ``option`` (``size``, ``n_points``) for dataset ``name`` when none is given;
    None where it takes no such option."""
    p = inspect.signature(_loader(name)).parameters.get(option)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def images_from_spec(spec: str, test_x) -> tuple[list, bool]:
    """IMAGE as a list of (C, H, W) arrays and whether it came from a file: ``test:N[,M...]`` picks
    samples of ``test_x``, anything else is read as an image file."""
    if spec.startswith("test:"):
        try:
            idx = [int(i) for i in spec[5:].split(",")]
        except ValueError:
            raise OneByOneError(
                f"expected test:N or test:N,M,... (indices into the test split), got {spec!r}"
            ) from None
        bad = [i for i in idx if not 0 <= i < len(test_x)]
        if bad:
            raise OneByOneError(f"test indices must be in [0, {len(test_x)}), got {bad}")
        return [np.asarray(test_x[i]) for i in idx], False
    return [read_image(spec)], True


def num_classes(name: str, y=None) -> int:
    return {"digits": 10, "shapes3d": len(SHAPES)}.get(name) or int(np.max(y)) + 1


def class_names(name: str, k: int) -> list[str]:
    """Names of the k classes: the digits, the shapes, a folder's subfolder names, else the indices."""
    if name == "shapes3d":
        return list(SHAPES)
    path = Path(str(name))
    if name != "digits" and path.is_dir():
        names = folder_classes(path)
        if len(names) != k:
            raise OneByOneError(f"{path} now holds {len(names)} class folder(s) ({', '.join(names) or 'none'}), but "
                                f"the model was trained on {k} classes: restore the folders it was trained on")
        return names
    return [str(i) for i in range(k)]


def compose_canvas(images, grid: int = 3, gap=None, seed: int = 0) -> np.ndarray:
    """Images (C, h, w) placed in distinct, randomly chosen cells of a grid x grid canvas, with ``gap``
    blank pixels (default h // 2) around every image: (C, grid*(h+gap)+gap, grid*(w+gap)+gap).

    >>> canvas = compose_canvas([np.ones((1, 2, 2))] * 3, grid=2)  # gap 1 around every 2x2 image
    >>> canvas.shape, int(canvas.sum())
    ((1, 7, 7), 12)
    """
    images = [np.asarray(im, dtype=np.float32) for im in images]
    if not images or len(images) > grid * grid:
        raise OneByOneError(f"a {grid}x{grid} canvas holds 1 to {grid * grid} images, got {len(images)}")
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or len(images[0].shape) != 3:
        raise OneByOneError(f"canvas images must all be (C, h, w) of one shape, got {sorted(shapes)}")
    c, h, w = images[0].shape
    gap = h // 2 if gap is None else gap
    canvas = np.zeros((c, grid * (h + gap) + gap, grid * (w + gap) + gap), np.float32)
    cells = np.random.default_rng(seed).permutation(grid * grid)[:len(images)]
    for im, cell in zip(images, cells):
        top, left = gap + (cell // grid) * (h + gap), gap + (cell % grid) * (w + gap)
        canvas[:, top:top + h, left:left + w] = im
    return canvas


__all__ = ["NAMES", "SHAPES", "class_names", "compose_canvas", "fit_channels", "load", "num_classes", "read_image"]
