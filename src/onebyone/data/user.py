"""User data: a folder with one subfolder of images per class, or an .npz with arrays x and y."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import OneByOneError
from .split import split_indices

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise OneByOneError(f"{path} must hold arrays 'x' and 'y'; missing {missing}, found {f.files}")
            x, y = f["x"], f["y"]
    except OneByOneError:
        raise
    except (OSError, ValueError, AttributeError, EOFError, zipfile.BadZipFile) as e:  # not a zip of .npy arrays
        # (empty, truncated, or with a damaged member; a pickle is never loaded)
        raise OneByOneError(f"{path} is not an .npz archive of arrays 'x' and 'y' (as numpy.savez writes): "
                            f"{type(e).__name__}") from None
    return check_samples(x, y, str(path))


PIXEL_DEPTHS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}  # 8- and 16-bit pixels' largest values


def as_float(a: np.ndarray) -> np.ndarray:
    """``a`` as float32: 8- and 16-bit pixels (uint8, uint16) scaled to [0, 1] as image files of those depths
    are read, other numbers as they are."""
    return (a.astype(np.float64) / PIXEL_DEPTHS[a.dtype]).astype(np.float32) if a.dtype in PIXEL_DEPTHS \
        else a.astype(np.float32)


def check_samples(x, y, where: str):
    """(x float32, y int64) if ``x`` holds finite numbers, one per sample, and ``y`` one class label per
    sample: non-negative integers (integral floats too) with no more classes than samples. A uint8 or uint16
    ``x`` (pixels) is scaled to 0..1, as images read from files are (and as torchvision's ``ToTensor`` does):
    a model trained on the arrays then reads an image file as it read its training samples."""
    if x.dtype.kind not in "fiub":
        raise OneByOneError(f"{where}: x must hold numbers, got dtype {x.dtype}")
    if x.ndim < 2 or len(x) < 2:
        raise OneByOneError(f"{where}: x must hold at least 2 samples (N, ...) to split into train and test, "
                            f"got shape {x.shape}")
    x = as_float(x)
    if not np.isfinite(x).all():
        raise OneByOneError(f"{where}: x holds {int((~np.isfinite(x)).sum()):,} NaN or infinite values; "
                            "expected finite inputs")
    if y.dtype.kind not in "fiub":
        raise OneByOneError(f"{where}: y must hold class labels 0, 1, ..., K-1, got dtype {y.dtype}")
    if y.ndim != 1:
        hint = " (one-hot labels? use y.argmax(1))" if y.ndim == 2 else ""
        raise OneByOneError(f"{where}: y must be one class label per sample, shape (N,), got {y.shape}{hint}")
    if len(y) != len(x):
        raise OneByOneError(f"{where}: x has {len(x)} samples but y has {len(y)}")
    if not np.isfinite(y).all() or (y != np.round(y)).any():
        raise OneByOneError(f"{where}: y must hold whole-number class labels, got values such as "
                            f"{y[(~np.isfinite(y)) | (y != np.round(y))][:3].tolist()}")
    if (y < 0).any():
        raise OneByOneError(f"{where}: class labels must be >= 0, got {int(y.min())}")
    classes = int(y.max()) + 1
    if classes > len(y):
        raise OneByOneError(f"{where}: labels go up to {classes - 1} for {len(y)} samples, which would build a "
                            f"{classes:,}-class head; labels must be 0 ... K-1 for K classes (renumber them)")
    return x, y.astype(np.int64)


def read_image(path, gray: bool = False) -> np.ndarray:
    """An image file as (C, H, W) float32 in [0, 1]: C = 1 for grayscale, 3 for colour (alpha dropped),
    or 1 always with ``gray``; 16-bit gray scaled by 65535, 32-bit float pixels taken as they are. A ``.npy``
    file holds (H, W) or (C, H, W) values, taken as they are (uint8 and
    uint16 pixels scaled to [0, 1])."""
    path = Path(path)
    if not path.is_file():
        raise OneByOneError(f"image file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:  # not an .npy file, or one holding objects (never unpickled)
            raise OneByOneError(f"{path} is not a readable .npy array of numbers: {e}") from None
        if a.dtype.kind not in "fiub":
            raise OneByOneError(f"{path} holds an array of {a.dtype}; expected numbers")
        a = as_float(a)
        if a.ndim not in (2, 3):
            raise OneByOneError(f"{path} holds an array of shape {a.shape}; expected (H, W) or (C, H, W)")
        return a[None] if a.ndim == 2 else a
    try:
        from PIL import Image
    except ImportError as e:
        raise OneByOneError("reading images needs pillow: pip install 'onebyone[data]'") from e
    try:
        img = Image.open(path)
        img.load()
        if img.mode.startswith("I"):  # 16-bit grayscale ("I;16", or "I" holding 0 ... 65535): scaled by its depth
            a = np.asarray(img).astype(np.float64)
            if a.min() < 0 or a.max() > 65535:
                raise OneByOneError(f"{path} holds {img.mode} values outside 0 ... 65535; expected an 8- or 16-bit "
                                    "image")
            return (a / 65535.0).astype(np.float32)[None]  # (H, W) -> (1, H, W)
        if img.mode == "F":  # 32-bit float pixels (a scientific TIFF): taken as they are, as an .npy's
            return np.asarray(img, dtype=np.float32)[None]  # (H, W) -> (1, H, W)
        img = img.convert("L" if gray or img.mode in ("1", "L", "LA", "F") else "RGB")
    except Image.DecompressionBombError as e:
        raise OneByOneError(f"{path} is too large to read safely ({e}); expected an image of at most "
                            f"{Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except OSError as e:
        raise OneByOneError(f"{path} is not a readable image ({', '.join(sorted(IMAGE_SUFFIXES))} or .npy): {e}") from e
    a = np.asarray(img, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)  # (H, W) -> (1, H, W); (H, W, 3) -> (3, H, W)


def folder_classes(path: Path) -> list:
    """The class names of a folder of class subfolders, sorted: its subfolders, hidden ones (``.name``, as
    ``.ipynb_checkpoints``) skipped."""
    try:
        return sorted(p.name for p in Path(path).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise OneByOneError(f"cannot list the class folders of {path}: {e.strerror or e}") from None


def _folder(path: Path):
    """(x, y) of a folder of class subfolders: every image of every class, in one channel count (``same_channels``);
    files that are not images (by their suffix) are named in a warning, hidden ones skipped unsaid."""
    classes = folder_classes(path)
    if len(classes) < 2:
        raise OneByOneError(f"{path} must contain one subfolder of images per class, at least two classes; found "
                            f"{len(classes)} ({', '.join(classes) or 'none'})")
    xs, ys, skipped = [], [], []
    for label, name in enumerate(classes):
        try:
            entries = sorted(f for f in (path / name).iterdir() if f.is_file() and not f.name.startswith("."))
        except OSError as e:
            raise OneByOneError(f"cannot read the class folder {path / name}: {e.strerror or e}") from None
        files = [f for f in entries if f.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [f for f in entries if f.suffix.lower() not in IMAGE_SUFFIXES]
        if not files:
            raise OneByOneError(f"class folder {path / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            img = read_image(f)  # (C, H, W), C = 1 or 3
            if xs and img.shape[1:] != xs[0].shape[1:]:
                raise OneByOneError(
                    f"{f} is {img.shape[2]}x{img.shape[1]}, but earlier images are {xs[0].shape[2]}x{xs[0].shape[1]}"
                )
            xs.append(img)
            ys.append(label)
    if skipped:
        import warnings

        warnings.warn(f"{path}: {len(skipped)} file(s) that are not images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                      f"were left out: {', '.join(str(f.relative_to(path)) for f in skipped[:5])}", UserWarning,
                      stacklevel=4)
    return same_channels(xs), np.array(ys, dtype=np.int64)


def same_channels(images: list) -> np.ndarray:
    """Images of 1 or 3 channels as one (N, C, H, W) array: C = 1 where every image is gray (one channel, or
    three equal ones: a gray picture saved as RGB), else 3, each gray image's channel repeated (as PIL's
    conversion to RGB does)."""
    if all(_gray(im) for im in images):
        return np.stack([im[:1] for im in images])
    return np.stack([np.repeat(im, 3, axis=0) if im.shape[0] == 1 else im for im in images])


def load_path(path: Path, split: str = "train"):
    if not path.exists():
        raise OneByOneError(f"dataset path {path} does not exist")
    x, y = _npz(path) if path.suffix == ".npz" else _folder(path) if path.is_dir() else (None, None)
    if x is None:
        raise OneByOneError(f"{path} is neither a folder of class subfolders nor an .npz file")
    idx = split_indices(len(x), split)
    return x[idx], y[idx]


def _gray(image: np.ndarray) -> bool:
    """One channel, or three equal ones (a gray picture saved as RGB)."""
    return image.shape[0] == 1 or image.shape[0] == 3 and (image[0] == image[1]).all() and (image[1] == image[2]).all()


def fit_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """``image`` (C, H, W) in ``channels`` channels where that loses nothing (a gray picture saved as RGB to one
    channel, one channel repeated to three, as a folder of mixed images is read), else as it is."""
    if image.shape[0] == 3 and channels == 1 and _gray(image):
        return image[:1]
    return np.repeat(image, 3, axis=0) if image.shape[0] == 1 and channels == 3 else image
