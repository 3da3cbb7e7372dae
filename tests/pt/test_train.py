"""Training: it learns, it is reproducible, checkpoints are safetensors and resume exactly, DDP agrees."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from onebyone import OneByOneError, checkpoint, data
from onebyone.cli import main
from onebyone.train import TrainConfig, evaluate, load_checkpoint, train


def cfg(**kw):
    return TrainConfig("nin_digits", "digits", **{"epochs": 3, "batch_size": 64, "lr": 1e-2, **kw})


def test_a_short_run_learns_and_writes_a_safe_checkpoint(tmp_path):
    model0 = load_untrained_accuracy()
    model, metrics = train(cfg(), out=tmp_path, progress=False)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["test_acc"] > max(0.8, model0 + 0.5)
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint", "epoch-0003",  # one complete epoch, linked
                                                    checkpoint.MANIFEST, checkpoint.LOCK}  # what it wrote; its lock
    files = {"model.safetensors", "optimizer.safetensors", "config.json", "state.json", "metrics.json"}
    assert {p.name for p in (tmp_path / "checkpoint").iterdir()} == files
    assert len({(tmp_path / "checkpoint" / f).stat().st_mode for f in files}) == 1  # one mode for every file
    loaded, loaded_cfg = load_checkpoint(tmp_path)  # safetensors: nothing is unpickled
    x, y = data.load("digits", "test")
    assert evaluate(loaded, x, y) == metrics[-1]["test_acc"] and loaded_cfg.num_classes == 10
    assert json.loads((tmp_path / "checkpoint" / "metrics.json").read_text()) == metrics


def load_untrained_accuracy():
    from onebyone.zoo import create_model

    torch.manual_seed(0)
    x, y = data.load("digits", "test")
    return evaluate(create_model("nin_digits"), x, y)


def test_same_seed_same_weights_and_resume_equals_an_uninterrupted_run(tmp_path):
    full, m_full = train(cfg(epochs=4), out=tmp_path / "full", progress=False)
    again, _ = train(cfg(epochs=4), progress=False)
    train(cfg(epochs=4), out=tmp_path / "split", progress=False, until=2)  # interrupted after epoch 2
    resumed, m_resumed = train(cfg(epochs=4), out=tmp_path / "split", resume=True, progress=False)
    for name, p in full.state_dict().items():
        assert torch.equal(p, again.state_dict()[name]), name
        assert torch.equal(p, resumed.state_dict()[name]), name
    assert [m["test_acc"] for m in m_resumed] == [m["test_acc"] for m in m_full]


def test_cli_train_and_bad_input(tmp_path, capsys):
    assert main(["train", "nin_digits", "--data", "digits", "--epochs", "1", "--out", str(tmp_path), "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["train", "nin_digits", "--data", "mnist", "--out", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'mnist'; expected one of ('digits', 'shapes3d')" in capsys.readouterr().err
    assert main(["train", "resnet", "--data", "digits", "--out", str(tmp_path / "y")]) == 2
    assert "unknown model 'resnet'; the zoo has:" in capsys.readouterr().err
    with pytest.raises(
        OneByOneError, match=r"pointnet_vanilla expects samples of shape \(3, 1024\) .* digits gives \(1, 8, 8\)"
    ):
        train(TrainConfig("pointnet_vanilla", "digits", epochs=1), progress=False)
    with pytest.raises(OneByOneError, match="is not a checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere")


def test_two_process_ddp_ends_with_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        worker,
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    start = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(start[k], a[k]) for k in a)  # rank 0's checkpoint is what both ranks hold
    metrics = json.loads((tmp_path / "run" / "checkpoint" / "metrics.json").read_text())
    assert len(metrics) == 1  # rank 0 wrote it, with the loss and accuracy over both ranks' shares:
    assert metrics[0]["samples"] == 2 * -(-1437 // 2)  # digits' 1,437 training samples (one repeated to even them)


@pytest.mark.parametrize("live", [True, False])
def test_progress_is_richs_bar_on_a_terminal_and_one_plain_line_per_epoch_elsewhere(live, monkeypatch, tmp_path):
    import io
    import sys

    from onebyone import progress

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "live", lambda: live)
    train(cfg(epochs=2), out=tmp_path / "run", progress=True)
    text = err.getvalue()
    if live:  # rich's columns: the bar, steps done of all, the rate, time spent and time left
        assert "━" in text and "samples/s" in text and "left" in text
    else:
        lines = text.splitlines()
        assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"] and "\r" not in text
        assert all("samples/s" in line for line in lines)


def test_a_small_training_step_runs_on_one_thread_unless_the_user_set_omp_num_threads(monkeypatch):
    """Threads on a step of under SMALL_STEP_MACS mostly wait for each other: one is used; a large step keeps
    torch's count, and an OMP_NUM_THREADS the user set always wins (the suite sets it: removed here)."""
    import numpy as np

    from onebyone.train import SMALL_STEP_MACS, training_threads

    small, big = torch.nn.Conv2d(3, 8, 1), torch.nn.Conv2d(256, 256, 3, padding=1)
    x_small, x_big = np.zeros((4, 3, 8, 8), np.float32), np.zeros((4, 256, 32, 32), np.float32)
    assert 8 * 3 * 64 * 16 < SMALL_STEP_MACS < 256 * 256 * 9 * 32 * 32 * 16  # per sample times the batch of 16
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert training_threads(big, x_big, 16) == 2
        assert training_threads(small, x_small, 16) == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert training_threads(small, x_small, 16) == 2
    finally:
        torch.set_num_threads(before)
