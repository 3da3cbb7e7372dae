"""A training run's folder and its checkpoint, written as one atomic unit.

::

    run folder/
        checkpoint -> epoch-0011      a link, switched in one step (os.replace) once the epoch is complete
        epoch-0011/                    model.safetensors, optimizer.safetensors, config.json, state.json,
                                       metrics.json: each written and flushed to disk before the switch

A process killed at any moment leaves ``checkpoint`` on a complete epoch: the one before, or the new one.
Loading never unpickles anything (safetensors and JSON), and every damaged or missing file is named in
a ``OneByOneError``. A run folder written by an earlier version (the five files directly in it) still loads.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import OneByOneError

FILES = ("model.safetensors", "optimizer.safetensors", "config.json", "state.json", "metrics.json")
LINK = "checkpoint"


def folder(out) -> Path | None:
    """The folder holding ``out``'s current checkpoint files, or None when ``out`` holds no run."""
    out = Path(out)
    if (out / LINK).exists():
        return (out / LINK).resolve()
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():  # an earlier version's layout
        return out
    return None


def save(out, tensors: dict, optimizer_tensors: dict, config: dict, state: dict, metrics: list) -> Path:
    """Write an epoch's checkpoint into ``out/epoch-NNNN`` and switch ``out/checkpoint`` to it; older epochs
    and half-written leftovers of an interrupted save are removed afterwards."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    new = out / f"epoch-{state['epoch']:04d}"
    if new.exists():
        shutil.rmtree(new)
    new.mkdir()
    save_file(tensors, str(new / "model.safetensors"))
    save_file(optimizer_tensors, str(new / "optimizer.safetensors"))
    for name, value in (("config.json", config), ("state.json", state), ("metrics.json", metrics)):
        (new / name).write_text(json.dumps(value, indent=2, allow_nan=False))  # never a NaN: valid JSON only
    mode = 0o666 & ~_umask()
    for name in FILES:
        os.chmod(new / name, mode)  # the same mode for every file
        _flush(new / name)
    _flush(new)
    tmp = out / f".{LINK}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(new.name)
    os.replace(tmp, out / LINK)  # the one step: before it the old epoch, after it the new one
    _flush(out)
    for old in out.glob("epoch-*"):
        if old != new and old.is_dir():
            shutil.rmtree(old)
    for name in FILES if (out / "config.json").is_file() else ():  # an earlier version's files, now superseded
        (out / name).unlink(missing_ok=True)
    return new


def new_run_folder(root, name: str) -> Path:
    """A folder under ``root`` that does not exist yet, named after the run and the time: each run gets
    its own unless the user names one."""
    import time

    stem = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = stem, 1
    while path.exists():
        n += 1
        path = stem.with_name(f"{stem.name}-{n}")
    return path


def check_writable(path, what: str) -> Path:
    """Refuse, before any long work, an output folder that is a file or cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OneByOneError(f"{what} {path} is a file; expected a folder (existing or new)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".onebyone-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise OneByOneError(f"{what} {path} cannot be written: {e.strerror or e}") from None
    return path


def check_writable_file(path, what: str) -> Path:
    """Refuse, before any long work, an output file whose folder is missing or not writable, or that is a folder."""
    path = Path(path)
    if path.is_dir():
        raise OneByOneError(f"{what} {path} is a folder; expected a file name")
    if not path.parent.is_dir():
        raise OneByOneError(f"{what} {path}: its folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OneByOneError(f"{what} {path} cannot be written (no permission)")
    return path


def clear(out) -> None:
    """Remove the run held in ``out`` (for an explicit ``--overwrite``); other files stay."""
    out = Path(out)
    for p in [out / LINK, out / f".{LINK}.tmp"] + list(out.glob("epoch-*")):
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
    for name in FILES:
        (out / name).unlink(missing_ok=True)


def read_json(out, name: str):
    """A JSON file of ``out``'s checkpoint, or a clear error naming it."""
    where = _require(out)
    path = where / name
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise OneByOneError(f"{path} is missing: the checkpoint in {out} is incomplete") from None
    except (OSError, ValueError) as e:
        raise OneByOneError(f"{path} is not valid JSON ({e}): the checkpoint in {out} is damaged") from None


def read_tensors(out, name: str) -> dict:
    """A safetensors file of ``out``'s checkpoint (nothing is unpickled), or a clear error naming it."""
    from safetensors.torch import load_file

    path = _require(out) / name
    if not path.is_file():
        raise OneByOneError(f"{path} is missing: the checkpoint in {out} is incomplete")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        raise OneByOneError(f"{path} is not a readable safetensors file ({e}): the checkpoint in {out} "
                            "is damaged") from None


def _require(out) -> Path:
    where = folder(out)
    if where is None:
        raise OneByOneError(f"{out} is not a checkpoint folder: it holds no run written by `onebyone train`")
    return where


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _flush(path: Path) -> None:
    """Push a file's (or a folder's entries') bytes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
