"""Training for zoo models on the offline datasets: progress line, safe checkpoints, resume, DDP.

Checkpoints are safetensors files plus JSON: ``model.safetensors`` (the weights), ``optimizer.safetensors``
(optimizer tensors and the RNG state), ``config.json``, ``state.json`` (epoch, optimizer scalars) and
``metrics.json``. Loading never unpickles anything. Each epoch reseeds the shuffling and dropout from
``seed`` and the epoch number, so ``--resume`` continues exactly as an uninterrupted run would.

Under ``torchrun --nproc_per_node=N`` the same code runs DistributedDataParallel (gloo on CPU, NCCL on
GPUs) with a DistributedSampler; only rank 0 logs and writes.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from . import data
from .errors import OneByOneError
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
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    tensors, scalars = _flatten_optimizer(opt)
    save_file(tensors, str(out / "optimizer.safetensors"))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    (out / "state.json").write_text(json.dumps({"epoch": epoch, "optimizer": scalars}, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))


def load_checkpoint(out: Path) -> tuple[nn.Module, TrainConfig]:
    """The trained model and its config from a checkpoint folder (safetensors: nothing is unpickled)."""
    out = Path(out)
    if not (out / "model.safetensors").exists() or not (out / "config.json").exists():
        raise OneByOneError(f"{out} is not a checkpoint folder: it needs model.safetensors and config.json")
    cfg = TrainConfig(**json.loads((out / "config.json").read_text()))
    model = create_model(cfg.model, num_classes=cfg.num_classes)
    model.load_state_dict(load_file(str(out / "model.safetensors")))
    return model.eval(), cfg


def _ddp() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _progress(epoch, epochs, batch, batches, loss, acc, rate, final=False):
    if not final and not sys.stderr.isatty():
        return  # in a log file, one line per epoch
    bar = "#" * int(20 * batch / batches)
    line = f"\repoch {epoch}/{epochs} [{bar:<20}] {batch}/{batches} loss {loss:.4f} acc {acc:.3f} {rate:,.0f} samples/s"
    sys.stderr.write((line if sys.stderr.isatty() else line[1:]) + ("\n" if final else ""))
    sys.stderr.flush()


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
    cfg: TrainConfig, out=None, resume: bool = False, progress: bool = True, until=None
) -> tuple[nn.Module, list]:
    """Train ``cfg.model`` on ``cfg.data``; returns (model, per-epoch metrics), and writes both under ``out``.

    ``until`` stops after that epoch as if interrupted (the learning-rate schedule still plans for
    ``cfg.epochs``), so a later ``resume=True`` continues the same run.
    """
    rank, world = _ddp()
    out = Path(out) if out is not None else None
    xtr, ytr = data.load(cfg.data, "train", **cfg.data_kwargs)
    xte, yte = data.load(cfg.data, "test", **cfg.data_kwargs)
    cfg.num_classes = cfg.num_classes or data.num_classes(cfg.data, ytr)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, num_classes=cfg.num_classes)
    want = model_info(cfg.model).input_size
    if xtr.shape[1] != want[0] or xtr.ndim != len(want) + 1:
        raise OneByOneError(
            f"{cfg.model} expects samples of shape {want} (channels first), but {cfg.data} gives {xtr.shape[1:]}"
        )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = lambda e: 0.5 * cfg.lr * (1 + np.cos(np.pi * e / cfg.epochs))  # noqa: E731 - cosine, per epoch
    start, metrics = 1, []
    if resume:
        if out is None or not (out / "state.json").exists():
            raise OneByOneError(f"--resume needs a checkpoint folder with state.json, got {out}")
        state = json.loads((out / "state.json").read_text())
        model.load_state_dict(load_file(str(out / "model.safetensors")))
        opt.load_state_dict(_unflatten_optimizer(load_file(str(out / "optimizer.safetensors")), state["optimizer"]))
        metrics = json.loads((out / "metrics.json").read_text())
        start = state["epoch"] + 1
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(np.ascontiguousarray(xtr)),
                                             torch.from_numpy(np.ascontiguousarray(ytr)))
    for epoch in range(start, min(cfg.epochs, until or cfg.epochs) + 1):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout etc.: the same whether resumed or not
        for g in opt.param_groups:
            g["lr"] = sched(epoch - 1)
        if world > 1:
            sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(dataset, cfg.batch_size, sampler=sampler)
        else:
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
            loader = torch.utils.data.DataLoader(dataset, cfg.batch_size, shuffle=True, generator=gen)
        net.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for b, (xb, yb) in enumerate(loader, 1):
            logits = net(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            if progress and rank == 0:
                _progress(epoch, cfg.epochs, b, len(loader), loss_sum / seen, correct / seen,
                          seen * world / (time.perf_counter() - t0), final=b == len(loader))
        if world > 1:  # DDP keeps parameters equal; BatchNorm statistics are local: take rank 0's
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        if rank == 0:
            metrics.append({"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                            "test_acc": evaluate(model, xte, yte), "seconds": time.perf_counter() - t0})
            if out is not None:
                save_checkpoint(out, model, opt, cfg, epoch, metrics)
    if world > 1:
        dist.barrier()
    return model, metrics
