"""A training run's folder, from Python as from the shell: ``start_run`` applies the rules for a new run, a
resumed one and ``overwrite`` (the CLI's ``train`` is this plus printing), and ``draw_run_maps`` draws a
trained run's class maps on an image (the CLI's ``maps``). Both refuse bad input with the same
``OneByOneError`` whichever way they are called."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import checkpoint, data
from .checks import check_writable, check_writable_file
from .errors import OneByOneError
from .train import TrainConfig, data_spec, load_checkpoint, read_config, read_state, resume_conflicts
from .zoo import model_info


def start_run(model: str, data_name: str | None = None, out=None, *, epochs=None, batch_size=None, lr=None,
              seed=None, size=None, n_points=None, precision=None, resume=False, overwrite=False):
    """(config, folder) of the run to train, or (None, why) when a resumed run has nothing left to do.

    A new run needs ``data_name``; it goes to ``out`` (default: a new folder under ``runs/``), which must be
    new, empty, or a run of ours with ``overwrite`` (only what that run wrote is replaced, by ``train``).
    ``resume`` continues the run in ``out`` as saved: options given that differ from it are refused; only
    ``epochs`` may grow. Options left None take the saved value (resume) or the defaults."""
    given = {"model": model, "data": data_spec(data_name) if data_name else None, "batch_size": batch_size,
             "lr": lr, "seed": seed, "size": size, "n_points": n_points, "precision": precision}
    if resume:
        if overwrite:
            raise OneByOneError("--resume continues the run in --out and --overwrite replaces it: give one of them")
        if not out:
            raise OneByOneError("--resume needs --out, the folder of the run to continue")
        out = Path(out)
        if checkpoint.folder(out) is None:
            raise OneByOneError(f"--resume: {out} holds no run written by `onebyone train`")
        cfg = read_config(out)
        conflicts = resume_conflicts(cfg, given)
        if conflicts:
            raise OneByOneError(f"--resume continues the run in {out} as it was saved; these options differ: "
                                f"{'; '.join(conflicts)}. Leave them out, or start a new run with another --out")
        done = read_state(out)[0]["epoch"]
        if epochs and epochs < cfg.epochs:
            if epochs <= done:
                further = "leave --epochs out to finish it" if done < cfg.epochs else \
                    f"pass --epochs N with N > {done} to train it further"
                return None, (f"nothing to do: the run in {out} finished epoch {done} (of the {cfg.epochs} planned), "
                              f"past --epochs {epochs}; {further}")
            raise OneByOneError(f"--resume: the run in {out} was planned for {cfg.epochs} epochs, its learning-rate "
                                f"schedule with them; --epochs {epochs} would stop it part way down: leave --epochs "
                                f"out, or give {cfg.epochs} or more (more trains past the plan)")
        cfg.epochs = epochs or cfg.epochs
        if done >= cfg.epochs:
            return None, (f"nothing to do: the run in {out} finished epoch {done}" + (
                f" of {cfg.epochs}" if done == cfg.epochs else f", past --epochs {cfg.epochs}")
                + f"; pass --epochs N with N > {done} to train it further")
    else:
        if not data_name:
            raise OneByOneError("--data is required: digits, shapes3d, a folder of class subfolders, or an .npz file")
        out = Path(out) if out else checkpoint.new_run_folder("runs", f"{model}-{Path(data_name).stem}")
        if checkpoint.folder(out) is not None and not out.is_file() and not overwrite:
            saved = read_config(out)
            raise OneByOneError(f"{out} holds a run ({saved.model} on {saved.data}); pass --resume to continue "
                                "it, --overwrite to replace it (only what that run wrote), or another --out")
        kw = ({"size": size} if size else {}) | ({"n_points": n_points} if n_points else {})
        cfg = TrainConfig(model, given["data"], epochs or 30, batch_size or 64, lr or 3e-3, seed=seed or 0,
                          data_kwargs=kw, precision=precision or "fp32")
    check_writable(out, "--out")
    if not (overwrite and checkpoint.folder(out) is not None):
        checkpoint.check_run_folder(out, resume)  # before the data loads: a folder of the user's is refused
    return cfg, out


def draw_run_maps(run, image: str, out=None, *, canvas: bool = False, seed: int = 0) -> tuple[Path, str]:
    """Draw the class maps of the run saved in ``run`` on ``image`` (``test:N`` picks test sample N;
    ``test:N,M,...`` with ``canvas``; else an image file) to the PNG ``out``; returns (path, a line saying
    what was drawn). The image must be finite and have the model's channels; without ``canvas`` it must be
    the model's input size, with it at least that size."""
    from .torch.maps import draw_canvas, draw_maps

    model, cfg = load_checkpoint(run)
    labels = cfg.classes or data.class_names(cfg.data, cfg.num_classes)  # as trained: the checkpoint names them
    xte, _ = data.load(cfg.data, "test", **cfg.data_kwargs)
    size = tuple(xte.shape[1:])
    if len(size) != 3:
        raise OneByOneError(f"maps need an image model; {cfg.model} on {cfg.data} takes samples of shape {size}")
    size = (model_info(cfg.model).input_size[0], *size[1:])  # the channels the model takes, whatever the data
    if not out:
        out = "canvas.png" if canvas else "maps.png"
        if Path(out).exists():
            raise OneByOneError(f"{out} exists in this folder and is not replaced unasked: pass --out to name the "
                                "PNG to write (a file --out names is replaced)")
    if not str(out).lower().endswith(".png"):
        raise OneByOneError(f"--out names the PNG to write; got {out!r} (end it in .png)")
    check_writable_file(out, "--out")
    images, from_file = data.images_from_spec(image, xte)
    images = [data.fit_channels(im, size[0]) for im in images]  # (as the folder it trained on was read)
    if any(not np.isfinite(im).all() for im in images):
        raise OneByOneError(f"{image} holds NaN or infinite values; expected a finite image")
    want, got = "x".join(map(str, size)), "x".join(map(str, images[0].shape))
    if images[0].shape[0] != size[0]:
        raise OneByOneError(f"{cfg.model} takes {size[0]}-channel images ({want}); "
                            f"{image} has {images[0].shape[0]} channel(s) ({got})")
    if canvas:
        picture = images[0] if from_file else data.compose_canvas(images, seed=seed)
        if picture.shape[1] < size[1] or picture.shape[2] < size[2]:
            raise OneByOneError(f"a canvas must be at least {want}; {image} is {got}")
        path, probs = draw_canvas(model, picture, size, out, labels)
        return path, f"{probs.shape[1]}x{probs.shape[2]} windows of {size[1]}x{size[2]}, {len(labels)} classes"
    if len(images) != 1 or images[0].shape != size:
        raise OneByOneError(f"{cfg.model} takes one {want} image (channels x height x width); got "
                            f"{len(images)} image(s) of {got} (use --canvas for larger images or several digits)")
    path, probs = draw_maps(model, images[0], out, labels)
    return path, f"predicted {labels[int(probs.argmax())]} ({probs.max():.1%})"


def resume_hint(out, model: str) -> str:
    """After an interrupted ``train``: where the last complete checkpoint is, and the command that continues it."""
    if checkpoint.folder(out) is None:
        return f"; no epoch had finished, so {out} holds no checkpoint yet"
    epoch = checkpoint.read_json(out, "state.json").get("epoch")
    if checkpoint.folder(out).name.startswith(checkpoint.REPLACED):
        return (f"; no epoch had finished, so {out} still holds the run it was replacing (epoch {epoch}), whole: "
                f"--resume continues that one, --overwrite replaces it again")
    return (f"; the last complete checkpoint is epoch {epoch} in {out}/checkpoint. Continue with: "
            f"onebyone train {model} --out {out} --resume")
