"""Input checks shared by the NumPy core and the adapters; each raises ``OneByOneError`` naming what
was expected and what was got, with the shapes."""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import OneByOneError

LAYOUTS = ("NCHW", "NHWC")


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise OneByOneError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def check_choice(value, choices, name: str):
    if value not in choices:
        raise OneByOneError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_int(value, name: str, minimum: int = 1) -> int:
    """A Python or NumPy integer >= minimum (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OneByOneError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise OneByOneError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_tolerance(value, name: str) -> float:
    """A real number >= 0 (a tolerance: a fraction of the output scale); bools and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise OneByOneError(f"{name} must be a number >= 0 (a fraction of the output scale), got {value!r}")
    return float(value)


def check_pair(value, name: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, returned as a pair."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise OneByOneError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_int(value[0], name, minimum), check_int(value[1], name, minimum)
    v = check_int(value, name, minimum)
    return v, v


def as_pair(value) -> tuple:
    """A setting a layer already holds (``kernel_size``, ``stride``...: an int or a pair) as a pair."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def as_float_array(x, name: str, ndim=None) -> np.ndarray:
    """x as a float32/float64 array; other numeric dtypes become float64.

    Args:
        ndim: an int or a tuple of allowed ranks (None: any rank >= 1).
    """
    if getattr(x, "requires_grad", False):  # a framework tensor in autograd: NumPy cannot hold its graph
        raise OneByOneError(f"{name} is a {type(x).__name__} that requires grad; the NumPy ops do not track "
                            "gradients: pass it detached (x.detach())")
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # a ragged list, mixed types
        raise OneByOneError(f"{name} must be a numeric array, got a {type(x).__name__} that numpy cannot make "
                            f"one of ({str(e).splitlines()[0]})") from None
    if a.dtype.kind not in "fiub":
        raise OneByOneError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise OneByOneError(f"{name} must have rank {want}, got rank {a.ndim} with shape {a.shape}")
    elif a.ndim == 0:
        raise OneByOneError(f"{name} must have rank >= 1, got a scalar")
    if a.size == 0:
        raise OneByOneError(f"{name} must not be empty, got shape {a.shape}")
    return a


def check_finite(a: np.ndarray, name: str) -> np.ndarray:
    """Refuse NaN/Inf (used by the weight converters, which must be exact)."""
    a = as_float_array(a, name)
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise OneByOneError(f"{name} must be finite, got {bad} NaN/Inf value(s) in shape {a.shape}")
    return a


def check_bias(b, out: int, dtype) -> np.ndarray | None:
    if b is None:
        return None
    b = as_float_array(b, "b", ndim=1).astype(dtype, copy=False)
    if b.shape != (out,):
        raise OneByOneError(f"b must have shape ({out},) to match {out} output channels, got {b.shape}")
    return b


def result_dtype(*arrays) -> np.dtype:
    return np.result_type(*[a.dtype for a in arrays if a is not None])


def check_writable(path, what: str) -> Path:
    """Refuse, before any long work, an output folder that is a file or cannot be created or written (or an
    empty name, which would mean the current folder). Nothing is left behind: a new folder is checked by
    making and removing one in the nearest folder that exists (the command makes it when it writes)."""
    if not str(path).strip():
        raise OneByOneError(f"{what} expects a folder name, got {str(path)!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OneByOneError(f"{what} {path} is a file; expected a folder (existing or new)")
    base = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not base.is_dir():
        raise OneByOneError(f"{what} {path} cannot be made: {base} is a file")
    if base == path.absolute():  # an existing folder: written to once, to be sure (access() trusts modes alone)
        try:
            probe = path / ".onebyone-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise OneByOneError(f"{what} {path} cannot be written: {e.strerror or e}") from None
    else:  # a new folder: one made and removed in the nearest that exists (access() trusts modes alone, and
        try:  # root passes it where nothing can be made, in /proc or /sys)
            os.rmdir(tempfile.mkdtemp(prefix=".onebyone-write-test", dir=base))
        except OSError as e:
            raise OneByOneError(f"{what} {path} cannot be made: {base} is not writable ({e.strerror or e})") from None
    return path


def check_writable_file(path, what: str) -> Path:
    """Refuse, before any long work, an output file whose folder is missing or not writable, or that exists and
    is not a regular file (a folder, a device such as /dev/full, a pipe): only a regular file is replaced."""
    if not str(path).strip():
        raise OneByOneError(f"{what} expects a file name, got {str(path)!r}")
    path = Path(path)
    if path.is_dir():
        raise OneByOneError(f"{what} {path} is a folder; expected a file name")
    if path.exists() and not path.is_file():
        raise OneByOneError(f"{what} {path} exists and is not a regular file (a device, a pipe or a socket): "
                            "name a regular file or a new one")
    if not path.parent.is_dir():
        raise OneByOneError(f"{what} {path}: its folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OneByOneError(f"{what} {path} cannot be written (no permission)")
    return path


def strict_json(value, **kw) -> str:
    """``value`` as JSON text (``json.dumps`` keywords in ``kw``), each float that is not finite written as
    null: NaN and Infinity are not JSON, and strict parsers (browsers' ``JSON.parse``, jq) refuse them."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, (list, tuple)) else v
    return json.dumps(clean(value), allow_nan=False, **kw)
