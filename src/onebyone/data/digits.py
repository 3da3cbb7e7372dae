"""scikit-learn's bundled 8 x 8 digits (shipped inside the package: no download)."""
from __future__ import annotations

import numpy as np

from ..checks import check_choice
from ..errors import OneByOneError
from .split import resize_bilinear, split_indices


def load_digits(split: str = "train", size: int = 8):
    check_choice(size, (8, 28), "size")
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError as e:
        raise OneByOneError("the digits dataset needs scikit-learn: pip install 'onebyone[data]'") from e
    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (1797, 8, 8) in [0, 16] -> (1797, 1, 8, 8) in [0, 1]
    idx = split_indices(len(x), split)
    x, y = x[idx], d.target[idx].astype(np.int64)
    return (resize_bilinear(x, 28) if size == 28 else x), y
