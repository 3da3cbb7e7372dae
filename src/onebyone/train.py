"""Training for zoo models on the offline datasets: progress line, safe checkpoints, resume, DDP.

Each epoch's checkpoint is one atomic unit (``onebyone.checkpoint``): ``model.safetensors`` (the weights),
``optimizer.safetensors``, ``config.json``, ``state.json`` (epoch, optimizer scalars) and ``metrics.json``.
Loading never unpickles anything. Each epoch reseeds the shuffling and dropout from ``seed`` and the epoch
number, so ``--resume`` continues exactly as an uninterrupted run would, from any moment it was stopped.

Under ``torchrun --nproc_per_node=N`` the same code runs DistributedDataParallel on the CPU (gloo) with a
DistributedSampler (which repeats up to N - 1 samples so that every rank gets as many); only rank 0 logs
and writes, and the epoch's training loss and accuracy are summed over every rank's share.
"""
from __future__ import annotations

import hashlib
import numbers
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint, data
from .checks import check_choice
from .errors import OneByOneError, reason
from .progress import Bar
from .zoo import create_model, model_info


@dataclass
class TrainConfig:
    model: str
    data: str
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    data_kwargs: dict = field(default_factory=dict)  # e.g. {"size": 28} or {"n_points": 512}
    num_classes: int = 0  # 0: from the dataset
    precision: str = "fp32"  # "bf16": products in bfloat16 under autocast; weights and checkpoints float32
    classes: list = field(default_factory=list)  # the class names in label order, as trained (empty: not known)
    data_hash: str = ""  # the samples and labels of both splits, as trained (empty: not known)


MAX_RATE = 1e3  # lr and weight_decay above this only overflow or blow the weights up: refused, named


def _flatten_optimizer(opt) -> tuple[dict, dict]:
    """Optimizer state as (tensors for safetensors, JSON-able scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{k}"] = v.contiguous()
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    return tensors, scalars


def _unflatten_optimizer(tensors: dict, scalars: dict) -> dict:
    state = {}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for idx, st in scalars["state"].items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_checkpoint(out: Path, model: nn.Module, opt, cfg: TrainConfig, epoch: int, metrics: list) -> None:
    """Write the epoch's checkpoint in ``out`` as one atomic unit (``onebyone.checkpoint``)."""
    tensors, scalars = _flatten_optimizer(opt)
    checkpoint.save(out, {k: v.contiguous() for k, v in model.state_dict().items()}, tensors, asdict(cfg),
                    {"epoch": epoch, "optimizer": scalars}, metrics)


def read_config(out) -> TrainConfig:
    """The ``TrainConfig`` saved in the run folder ``out``, checked field by field."""
    raw = checkpoint.read_json(out, "config.json")
    names = set(TrainConfig.__dataclass_fields__)
    if not isinstance(raw, dict) or not {"model", "data"} <= set(raw) or set(raw) - names:
        raise OneByOneError(f"{out}: config.json must hold the fields of a training run ({sorted(names)}), "
                            f"got {sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    for name, (ok, want) in _CONFIG_FIELDS.items():
        if name in raw and not ok(raw[name]):
            raise OneByOneError(f"the checkpoint in {out} is damaged: config.json's {name} must be {want}, "
                                f"got {raw[name]!r}")
    return TrainConfig(**raw)


def _whole(lo, hi=None):
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)


_CONFIG_FIELDS = {  # field -> (check, what it must be): a config.json edited by hand is refused, named
    "model": (lambda v: isinstance(v, str) and v != "", "a model name"),
    "data": (lambda v: isinstance(v, str) and v != "", "a dataset name or path"),
    "epochs": (_whole(1), "an integer >= 1"),
    "batch_size": (_whole(1), "an integer >= 1"),
    "lr": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_RATE,
           f"a number > 0 and <= {MAX_RATE:g}"),
    "weight_decay": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= MAX_RATE,
                     f"a number >= 0 and <= {MAX_RATE:g}"),
    "seed": (_whole(0, 2**31 - 1), "an integer from 0 to 2**31-1"),
    "data_kwargs": (lambda v: isinstance(v, dict) and all(k in ("size", "n_points") and _whole(1)(x)
                                                          for k, x in v.items()),
                    "an object of size / n_points, integers >= 1"),
    "num_classes": (_whole(0), "an integer >= 0"),
    "precision": (lambda v: v in ("fp32", "bf16"), "'fp32' or 'bf16'"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) and c for c in v), "a list of class names"),
    "data_hash": (lambda v: isinstance(v, str), "a string"),
}


def read_state(out) -> tuple[dict, list]:
    """(state.json, metrics.json) of the run in ``out``, checked: a whole epoch >= 1 with the optimizer's
    scalars, and one metrics entry per epoch; a damaged one is refused, named."""
    state, metrics = checkpoint.read_json(out, "state.json"), checkpoint.read_json(out, "metrics.json")
    epoch = state.get("epoch") if isinstance(state, dict) else None
    if not _whole(1)(epoch) or not isinstance(state.get("optimizer"), dict):
        raise OneByOneError(f"the checkpoint in {out} is damaged: state.json must hold a whole epoch >= 1 and the "
                            f"optimizer's state, got {state!r:.120}")
    if not isinstance(metrics, list) or len(metrics) != epoch or not all(isinstance(m, dict) for m in metrics):
        raise OneByOneError(f"the checkpoint in {out} is damaged: metrics.json must hold one entry per epoch "
                            f"({epoch}), got {metrics!r:.120}")
    return state, metrics


def resume_conflicts(saved: TrainConfig, given: dict) -> list:
    """The options given for a resumed run that differ from the ones it was saved with, as
    ``"--lr 0.5 (saved: 0.003)"``; ``given`` maps field names to values, None meaning not given."""
    out = []
    for name, value in given.items():
        if value is None:
            continue
        have = (saved.data_kwargs.get(name, data.option_default(saved.data, name)) if name in ("size", "n_points")
                else getattr(saved, name))  # (a dataset option left out: the loader's default, what it ran)
        if value != have:
            flag = {"n_points": "--points", "model": "MODEL"}.get(name, "--" + name.replace("_", "-"))
            out.append(f"{flag} {value} (saved: {have})")
    return out


def data_spec(name: str) -> str:
    """How a dataset is stored in config.json: a named one by name, a path as an absolute path, so that
    ``maps`` and ``--resume`` work from any folder."""
    return str(Path(name).resolve()) if name not in data.NAMES and data.is_path(name) else name


def load_checkpoint(out: Path) -> tuple[nn.Module, TrainConfig]:
    """The trained model and its config from a run folder (safetensors and JSON: nothing is unpickled)."""
    cfg = read_config(out)
    model = create_model(cfg.model, num_classes=cfg.num_classes)
    try:
        model.load_state_dict(checkpoint.read_tensors(out, "model.safetensors"))
    except RuntimeError as e:
        raise OneByOneError(f"{out}: model.safetensors does not fit {cfg.model} with {cfg.num_classes} classes "
                            f"({reason(e, 300)})") from None
    return model.eval(), cfg


def _ddp() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # the model and batches stay on the CPU
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


SMALL_STEP_MACS = 100_000_000  # below this a training step is too small to split between threads


def training_threads(model: nn.Module, x, batch_size: int) -> int:
    """The threads torch uses for this run: one when a step's forward pass holds fewer than
    ``SMALL_STEP_MACS`` multiply-accumulates (threads on such small work mostly wait for each other, and on
    a busy machine spin against other processes); otherwise torch's default. An ``OMP_NUM_THREADS`` the
    user set always wins. Returns the count in force."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    from .torch.collect import analyze

    per_sample = analyze(model, example=torch.from_numpy(np.ascontiguousarray(x[:1]))).macs
    if per_sample * batch_size < SMALL_STEP_MACS:
        torch.set_num_threads(1)
    return torch.get_num_threads()


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += int(
                (model(torch.from_numpy(x[i : i + batch_size])).argmax(1).numpy() == y[i : i + batch_size]).sum()
            )
    return correct / len(x)


def train(
    cfg: TrainConfig, out=None, resume: bool = False, progress: bool = True, until=None, overwrite: bool = False
) -> tuple[nn.Module, list]:
    """Train ``cfg.model`` on ``cfg.data``; returns (model, per-epoch metrics), and writes both under ``out``.

    ``out`` must be new, empty, or a run folder (``onebyone.checkpoint``): a new run refuses a folder that
    holds a run unless ``overwrite`` (which removes only what that run wrote, and keeps it whole until the new
    run's first epoch is saved) and a folder of other files always; the folder is locked while the run writes
    it, so a second run of it is refused. ``until`` stops after that epoch as if interrupted (the learning-rate
    schedule still plans for ``cfg.epochs``), so a later ``resume=True`` continues the same run.
    """
    setup = _setup(cfg, resume)  # the data and the model checked before any file is touched
    if out is None or int(os.environ.get("RANK", "0")) != 0:  # under DDP only rank 0 writes, and locks
        return _train(cfg, None if out is None else Path(out), resume, progress, until, setup)
    out = Path(out)
    done = read_state(out)[0]["epoch"] if resume and checkpoint.folder(out) is not None else 0
    saves = range(done + 1, cfg.epochs + 1)  # the epochs it will save
    replacing = overwrite and not resume and checkpoint.folder(out) is not None
    if replacing:
        checkpoint.check_clearable(out, saves)  # before the lock marks the folder: no manifest, nothing is ours
        with checkpoint.lock(out):
            checkpoint.set_aside(out)  # the old run kept whole until the new one's first epoch
    checkpoint.check_run_folder(out, resume, saves, replacing)
    with checkpoint.lock(out):
        checkpoint.check_run_folder(out, resume, saves, replacing)  # again, now that no other run can write it
        return _train(cfg, out, resume, progress, until, setup)


def _setup(cfg: TrainConfig, resume: bool) -> tuple:
    """(train and test samples and labels, the model): everything that can refuse the run's inputs (the
    data, its classes, the model's input shape), before anything is written or cleared."""
    check_choice(cfg.precision, ("fp32", "bf16"), "precision")
    cfg.data = os.fspath(cfg.data) if isinstance(cfg.data, os.PathLike) else cfg.data
    for name, (ok, want) in _CONFIG_FIELDS.items():  # (the API's TrainConfig, as the CLI's options are)
        if not ok(getattr(cfg, name)):
            raise OneByOneError(f"TrainConfig's {name} must be {want}, got {getattr(cfg, name)!r}")
        if isinstance(getattr(cfg, name), numbers.Integral):  # (a NumPy integer is no JSON number)
            setattr(cfg, name, int(getattr(cfg, name)))
    cfg.data = cfg.data if resume else data_spec(cfg.data)  # (a path saved absolute: maps, --resume from anywhere)
    xtr, ytr = data.load(cfg.data, "train", **cfg.data_kwargs)
    xte, yte = data.load(cfg.data, "test", **cfg.data_kwargs)
    labels = int(max(ytr.max(), yte.max())) + 1
    if cfg.num_classes and labels > cfg.num_classes:
        raise OneByOneError(f"num_classes={cfg.num_classes}, but {cfg.data}'s labels go up to {labels - 1} ({labels} "
                            "classes): leave num_classes at 0 (from the data) or make it at least that")
    cfg.num_classes = cfg.num_classes or data.num_classes(cfg.data, np.concatenate([ytr, yte]))
    if cfg.num_classes < 2:
        raise OneByOneError(f"{cfg.data} holds {cfg.num_classes} class: a classifier needs at least two")
    untrained = sorted(set(range(cfg.num_classes)) - set(np.unique(ytr).tolist()))
    if untrained:
        given = set(np.unique(np.concatenate([ytr, yte])).tolist())
        why = (f"its labels skip {sorted(set(range(cfg.num_classes)) - given)[:8]}: number the classes 0 to K-1"
               if set(range(cfg.num_classes)) - given else "all fell in the test split: give each class a few more "
               "samples")
        raise OneByOneError(f"{cfg.data}: class(es) {untrained[:8]} have no sample in the training split ({why})")
    found = data.class_names(cfg.data, cfg.num_classes)
    if resume and cfg.classes and found != cfg.classes:
        raise OneByOneError(f"--resume: {cfg.data} now holds the classes {found}, but the run was trained on "
                            f"{cfg.classes} (in label order): restore the folders it was trained on")
    cfg.classes = found
    digest = data_hash(xtr, ytr, xte, yte)
    if resume and cfg.data_hash and digest != cfg.data_hash:
        raise OneByOneError(f"--resume: {cfg.data} holds other samples than the run was trained on (its train and "
                            "test splits would differ): restore the data it was trained on, or start a new run")
    cfg.data_hash = digest
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=cfg.num_classes)
    _check_fits(cfg, model, xtr)
    return xtr, ytr, xte, yte, model


def data_hash(*arrays) -> str:
    """A fingerprint of the arrays (their shapes, dtypes and bytes): 16 hex digits of SHA-256."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _check_fits(cfg: TrainConfig, model: nn.Module, xtr) -> None:
    """The model runs on the data's samples: channels, rank and size (a forward pass on two samples)."""
    want = model_info(cfg.model).input_size
    if xtr.shape[1] != want[0] or xtr.ndim != len(want) + 1:
        hint = {(1, 3): ": its images are in colour; use a model of 3 input channels, or save them in gray",
                (3, 1): ": its images are gray; use a model of 1 input channel, or save them in colour"}.get(
            (want[0], xtr.shape[1]), "") if xtr.ndim == 4 else ""
        if xtr.ndim == 4 and xtr.shape[-1] == want[0] and xtr.shape[1] != want[0]:
            hint = ": channels last? move them first (onebyone.layout.to_channels_first, or x.transpose(0, 3, 1, 2))"
        raise OneByOneError(f"{cfg.model} expects samples of shape {want} (channels first), but {cfg.data} gives "
                            f"{xtr.shape[1:]}{hint}")
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(np.ascontiguousarray(xtr[:2])))
    except (RuntimeError, ValueError) as e:
        raise OneByOneError(f"{cfg.model} (samples like {want}) does not run on {cfg.data}'s samples of shape "
                            f"{tuple(xtr.shape[1:])}: {str(e).splitlines()[0]}") from None


def _train(cfg: TrainConfig, out, resume: bool, progress: bool, until, setup: tuple) -> tuple[nn.Module, list]:
    rank, world = _ddp()
    xtr, ytr, xte, yte, model = setup
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, metrics = 1, []
    if resume:
        if out is None or checkpoint.folder(out) is None:
            raise OneByOneError(f"--resume needs a run folder written by `onebyone train`, got {out}")
        state, metrics = read_state(out)
        try:
            model.load_state_dict(checkpoint.read_tensors(out, "model.safetensors"))
            opt.load_state_dict(_unflatten_optimizer(checkpoint.read_tensors(out, "optimizer.safetensors"),
                                                     state["optimizer"]))
            for g in opt.param_groups:  # config.json is the one source of the rates (lr is set each epoch)
                g["weight_decay"] = cfg.weight_decay
            start = int(state["epoch"]) + 1
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise OneByOneError(f"{out}: the checkpoint does not fit {cfg.model} ({reason(e, 300)}); it is "
                                "damaged or from another run") from None
    previous = torch.get_num_threads()
    training_threads(model, xtr, cfg.batch_size)
    try:
        _epochs(cfg, model, opt, out, start, metrics, xtr, ytr, xte, yte, rank, world, progress, until)
    finally:
        torch.set_num_threads(previous)  # process-wide: handed back as it was
    return model, metrics


def _epochs(cfg, model, opt, out, start, metrics, xtr, ytr, xte, yte, rank, world, progress, until):
    sched = lambda e: 0.5 * cfg.lr * (1 + np.cos(np.pi * e / cfg.epochs))  # noqa: E731 - cosine, per epoch
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(np.ascontiguousarray(xtr)),
                                             torch.from_numpy(np.ascontiguousarray(ytr)))
    for epoch in range(start, min(cfg.epochs, until or cfg.epochs) + 1):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout etc.: the same whether resumed or not
        for g in opt.param_groups:
            g["lr"] = sched(epoch - 1)
        one_left = -(-len(dataset) // world) % cfg.batch_size == 1  # a last batch of one sample: no batch
        # statistics for a BatchNorm to take; that sample (another each epoch) waits for the next epoch
        if world > 1:
            sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(dataset, cfg.batch_size, sampler=sampler, drop_last=one_left)
        else:
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            loader = torch.utils.data.DataLoader(dataset, cfg.batch_size, shuffle=True, generator=gen,
                                                 drop_last=one_left)
        net.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        bar = Bar(f"epoch {epoch}/{cfg.epochs}", len(loader)) if progress and rank == 0 else None
        with bar or nullcontext():  # an error or Ctrl-C stops the bar where it was
            for b, (xb, yb) in enumerate(loader, 1):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                    logits = net(xb)
                    loss = nn.functional.cross_entropy(logits.float(), yb)
                if not torch.isfinite(loss):
                    last = f"epoch {epoch - 1} in {out}" if out is not None and epoch > 1 else "none"
                    raise OneByOneError(f"the loss became {loss.item()} at epoch {epoch}, batch {b}: training stopped. "
                                        f"Check the data for huge or non-finite values, or lower --lr (now {cfg.lr}); "
                                        f"last checkpoint: {last}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(yb)
                loss_sum += loss.item() * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                if bar is not None:
                    info = (f"loss {loss_sum / seen:.4f} acc {correct / seen:.3f} "  # (rank 0's share)
                            f"{seen * world / (time.perf_counter() - t0):,.0f} samples/s")
                    bar.update(b, info) if b < len(loader) else bar.close(info)
        if world > 1:  # DDP keeps parameters equal; BatchNorm statistics are local: take rank 0's
            for buf in model.buffers():
                dist.broadcast(buf, 0)
            sums = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
            dist.all_reduce(sums)  # the epoch's figures over every rank's share, not rank 0's alone
            loss_sum, correct, seen = float(sums[0]), int(sums[1]), int(sums[2])
        if rank == 0:
            metrics.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                            "test_acc": evaluate(model, xte, yte), "seconds": time.perf_counter() - t0,
                            "samples": seen})  # trained on this epoch, every rank's
            if out is not None:
                save_checkpoint(out, model, opt, cfg, epoch, metrics)
    if world > 1:
        dist.barrier()
