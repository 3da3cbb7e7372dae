"""A training run's folder and its checkpoint, written as one atomic unit.

::

    run folder/
        checkpoint -> epoch-0011      a link, switched in one step (os.replace) once the epoch is complete
        epoch-0011/                    model.safetensors, optimizer.safetensors, config.json, state.json,
                                       metrics.json: each written and flushed to disk before the switch

        .onebyone-run.json             what the run wrote (the link and its epoch folders): the only
                                       entries a run, or ``--overwrite``, ever removes
        .onebyone-run.lock             held while a run writes: a second run of the same folder is refused
        .replaced-epoch-0011/          (--overwrite) the run being replaced, kept whole until the new run's
                                       first epoch is switched in

A process killed at any moment leaves ``checkpoint`` on a complete epoch: the one before, or the new one.
Loading never unpickles anything (safetensors and JSON), and every damaged or missing file is named in
a ``OneByOneError``. A run folder written by an earlier version (the five files directly in it) still loads,
but nothing in it is ever removed: a folder is ours to clear only where our manifest lists the entries.
Files of the user's in a run folder are never touched; a folder that is not empty and holds no run is
refused as a run folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import OneByOneError

FILES = ("model.safetensors", "optimizer.safetensors", "config.json", "state.json", "metrics.json")
LINK = "checkpoint"
MANIFEST = ".onebyone-run.json"
LOCK = ".onebyone-run.lock"
REPLACED = ".replaced-"  # the run an --overwrite replaces, kept until the new run's first epoch


def folder(out) -> Path | None:
    """The folder holding ``out``'s current checkpoint files, or None when ``out`` holds no run."""
    out = Path(out)
    if (out / LINK).exists() and ((out / LINK).is_symlink() or (out / MANIFEST).is_file()):  # (a copy of a run
        return (out / LINK).resolve()  # may hold the link as a folder; one named so beside no manifest is a user's)
    if _legacy(out):
        return out
    return None


def _legacy(out: Path) -> bool:
    """Does ``out`` hold a run in an earlier version's layout (all five files directly in it, no link)?
    Such a run loads; its files are never removed (no manifest of ours lists them)."""
    return not (out / LINK).is_symlink() and all((out / name).is_file() for name in FILES)


def is_run_folder(out) -> bool:
    """Was ``out`` made by ``onebyone train`` (its manifest, or an earlier version's run)?"""
    out = Path(out)
    return (out / MANIFEST).is_file() or _legacy(out)


def written(out) -> list:
    """The entries of ``out`` that its runs wrote, from its manifest (what a run may remove)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text()).get("written", [])
    except (OSError, ValueError, AttributeError):
        raise OneByOneError(f"{path} is damaged: it should list what the run wrote; remove the run by hand") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..")
                                              for n in names):
        raise OneByOneError(f"{path} is damaged: 'written' should be a list of entry names, got {names!r}")
    return names


def _record(out: Path, names) -> None:
    """Replace the manifest (atomically) with ``names``: what the run has written."""
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"written": sorted(set(names)), "by": "onebyone train"}, indent=2))
    os.replace(tmp, out / MANIFEST)


def check_run_folder(out, resume: bool, epochs: range = range(0), replacing: bool = False) -> Path:
    """Refuse ``out`` as a run folder, before anything is written: for ``resume``, a folder without a run;
    for a new run, a folder holding one (continue it, or ``clear`` it first) or a folder that is not empty
    and holds no run, so that nothing of the user's is ever mixed with, or removed by, a run. ``epochs``: those
    a resumed run will save (a folder of that name it did not write is refused); ``replacing``: the run held
    is one ``set_aside`` kept for a new run that replaces it."""
    out = Path(out)
    if resume:
        if folder(out) is None:
            raise OneByOneError(f"--resume needs a run folder written by `onebyone train`, got {out}")
        _check_link(out, "--resume")
        _check_epoch_names(out, "--resume", epochs)
        return out
    if out.exists() and not out.is_dir():
        raise OneByOneError(f"the run folder {out} is a file; expected a folder (existing or new)")
    if folder(out) is not None and not (replacing and folder(out).name.startswith(REPLACED)):
        raise OneByOneError(f"{out} holds a run: continue it (--resume) or replace it (--overwrite), or choose "
                            "another folder")
    if out.is_dir() and not is_run_folder(out) and any(p.name != LOCK for p in out.iterdir()):
        raise OneByOneError(f"{out} is not empty and holds no run of `onebyone train`: choose a new or empty folder "
                            "(a run writes only its own files, and never into a folder of yours)")
    return out


class lock:
    """Held while a run writes ``out``: a second run (another process) of the same folder is refused."""

    def __init__(self, out):
        self.path = Path(out) / LOCK

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.path.parent / MANIFEST).is_file() and not _legacy(self.path.parent):
            _record(self.path.parent, [])  # the folder is a run folder from now on
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise OneByOneError(f"another `onebyone train` is writing {self.path.parent} right now: wait for it, or "
                                "choose another folder") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # closing releases the lock; the file stays (removing it would race another run)
        return False


def save(out, tensors: dict, optimizer_tensors: dict, config: dict, state: dict, metrics: list) -> Path:
    """Write an epoch's checkpoint into ``out/epoch-NNNN`` and switch ``out/checkpoint`` to it; older epochs
    and half-written leftovers of an interrupted save are removed afterwards."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ours = written(out)
    new = out / f"epoch-{state['epoch']:04d}"
    if new.exists() and new.name not in ours:
        raise OneByOneError(f"{new} exists and was not written by this run: move it away to save this epoch")
    _record(out, ours + [new.name, LINK])  # first said, then written: a kill in between leaves nothing unlisted
    if new.exists():
        _remove_epoch(new)
    new.mkdir()
    save_file(tensors, str(new / "model.safetensors"))
    save_file(optimizer_tensors, str(new / "optimizer.safetensors"))
    for name, value in (("config.json", config), ("state.json", state), ("metrics.json", metrics)):
        (new / name).write_text(json.dumps(value, indent=2, allow_nan=False))  # never a NaN: valid JSON only
    mode = 0o666 & ~umask()
    for name in FILES:
        os.chmod(new / name, mode)  # the same mode for every file
        _flush(new / name)
    _flush(new)
    _switch(out, new.name)  # the one step: before it the old epoch, after it the new one
    for old in ours:
        if old not in (new.name, LINK) and (out / old).is_dir():  # older epochs, a replaced run's
            _remove_epoch(out / old, keep_foreign=True)
    _record(out, [new.name, LINK])  # an earlier version's five files, if any, stay: no manifest listed them
    return new


def _switch(out: Path, name: str) -> None:
    """Point ``out/checkpoint`` at ``out/name`` in one step (a new link renamed over the old)."""
    tmp = out / f".{LINK}.tmp"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(name)
    os.replace(tmp, out / LINK)
    _flush(out)


def set_aside(out) -> None:
    """For ``--overwrite``: keep the run held in ``out`` whole until the new run's first epoch is switched in.
    Its current epoch is linked (hard links, else copies) into ``.replaced-epoch-NNNN``, ``checkpoint`` switched
    to that, and every other entry its manifest lists removed; the new run's first ``save`` removes the rest.
    A new run killed before then leaves the run it was replacing, complete (``--resume`` continues it)."""
    import shutil

    out = Path(out)
    check_clearable(out)
    current, ours = folder(out), written(out)
    if current is None or current.parent != out.resolve() or current.name not in ours or not all(
            (current / name).is_file() for name in FILES):
        return clear(out)  # (no whole epoch of this run's own to keep)
    aside = _aside(out, current)
    if aside.name != current.name:  # (not set aside already, by an --overwrite that was interrupted)
        _record(out, ours + [aside.name])  # first said, then written
        if aside.exists() or aside.is_symlink():
            _remove_epoch(aside)
        aside.mkdir()
        for name in FILES:
            try:
                os.link(current / name, aside / name)
            except OSError:  # (a file system without hard links)
                shutil.copy2(current / name, aside / name)
                _flush(aside / name)
        _flush(aside)
        _switch(out, aside.name)
    for name in ours + [f".{LINK}.tmp"]:
        if name not in (aside.name, LINK):
            _remove(out / name)
    _record(out, [aside.name, LINK])


def _aside(out: Path, current: Path) -> Path:
    """Where ``set_aside`` keeps the run whose current epoch is ``current`` (there already, after an --overwrite
    that was interrupted)."""
    return out / f"{REPLACED}{current.name.removeprefix(REPLACED)}"


def _remove(p: Path) -> None:
    """Remove an entry a run wrote: a file or link, or an epoch folder (``_remove_epoch``)."""
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        _remove_epoch(p)


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


def clear(out) -> None:
    """Remove the run held in ``out`` (for an explicit ``--overwrite``): what its manifest says it wrote, and
    nothing else. A folder without our manifest is refused: no guess from file names licenses a delete."""
    out = Path(out)
    check_clearable(out)
    ours = written(out)
    for name in ours + [f".{LINK}.tmp"]:
        _remove(out / name)
    _record(out, [])


def check_clearable(out, epochs: range = range(0)) -> None:
    """Refuse to clear ``out`` unless our manifest lists what its run wrote, its epoch folders hold only the
    files a run writes, and no folder of the ``epochs`` the new run saves lies there unlisted (checked before
    anything is removed or trained)."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        have = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        raise OneByOneError(f"--overwrite removes only what `onebyone train` listed in {out / MANIFEST}, and {out} "
                            f"has no such list (it holds {', '.join(have[:8]) or 'nothing'}): nothing was removed; "
                            "move those files away or choose another --out")
    _check_link(out, "--overwrite")
    current = folder(out)
    aside = current is not None and _aside(out, current)
    if aside and (aside.exists() or aside.is_symlink()) and aside.name not in written(out):
        raise OneByOneError(f"--overwrite: {out} holds {aside.name}, not written by its run, where the run keeps "
                            "the run it replaces: nothing was removed; move it away first")
    for name in written(out):
        extra = sorted(p.name for p in (out / name).iterdir() if p.name not in FILES) if (
            (out / name).is_dir() and not (out / name).is_symlink()) else []
        if extra:
            raise OneByOneError(f"--overwrite: {out / name} holds {', '.join(extra[:8])}, which `onebyone train` did "
                                "not write: nothing was removed; move them away first")
    _check_epoch_names(out, "--overwrite", epochs)


def _check_link(out: Path, who: str) -> None:
    """Refuse to write a run whose ``checkpoint`` is a folder, not our link (a copy made following links): it
    loads, but a save could not switch the link in."""
    if (out / LINK).is_dir() and not (out / LINK).is_symlink():
        raise OneByOneError(f"{who}: {out / LINK} is a folder, not the link a run keeps there (was the run copied "
                            "following links?): it loads as it is; to train it further, copy it keeping links "
                            "(cp -a, shutil.copytree(..., symlinks=True))")


def _check_epoch_names(out: Path, who: str, epochs: range) -> None:
    """Refuse an ``epoch-NNNN`` of ``epochs`` in ``out`` that its manifest does not list: the run would save
    that epoch under that name and has no right to remove it (refused before any epoch is trained)."""
    ours = set(written(out))
    foreign = [n for n in (f"epoch-{e:04d}" for e in epochs)
               if n not in ours and ((out / n).exists() or (out / n).is_symlink())]
    if foreign:
        raise OneByOneError(f"{who}: {out} holds {', '.join(foreign[:8])}, not written by its run, where the run "
                            "saves its epochs: nothing was removed; move them away first")


def _remove_epoch(path: Path, keep_foreign: bool = False) -> None:
    """Remove an epoch folder a run wrote: its checkpoint files, then the folder. Anything else in it was put
    there by someone else: refused, or with ``keep_foreign`` left in place with its folder. A link in its
    place (to a folder of the user's) is removed alone."""
    if path.is_symlink():
        path.unlink()
        return
    for name in FILES:
        if (path / name).is_file() or (path / name).is_symlink():
            (path / name).unlink()
    try:
        path.rmdir()
    except OSError:
        if not keep_foreign:
            raise OneByOneError(f"{path} holds files `onebyone train` did not write "
                                f"({', '.join(sorted(p.name for p in path.iterdir())[:8])}): they were left "
                                "there; move them away and run again") from None


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


def umask() -> int:
    """This process's umask (read without changing it for longer than a call)."""
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
