"""A trained run is never lost: no silent overwrite, an atomic checkpoint that survives SIGKILL at any
moment, --resume that refuses what it would ignore, and a clear stop when the loss goes NaN."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from onebyone import OneByOneError, checkpoint
from onebyone.cli import main
from onebyone.train import TrainConfig, train

RUN = ["train", "nin_digits", "--data", "digits", "--batch-size", "128", "--lr", "0.01", "--quiet"]


def test_a_folder_holding_a_run_is_never_overwritten_without_being_asked(tmp_path, capsys):
    out = str(tmp_path / "good")
    assert main(RUN + ["--epochs", "2", "--out", out]) == 0
    before = checkpoint.read_tensors(out, "model.safetensors")
    assert main(RUN + ["--epochs", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "holds a run (nin_digits on digits); pass --resume to continue it, --overwrite to replace it" in err
    after = checkpoint.read_tensors(out, "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # untouched
    assert main(RUN + ["--epochs", "1", "--out", out, "--overwrite"]) == 0
    assert checkpoint.read_json(out, "state.json")["epoch"] == 1  # replaced, as asked


def test_the_default_output_folder_is_new_for_each_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(RUN + ["--epochs", "1"]) == 0
    assert main(RUN + ["--epochs", "1"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and all(r.startswith("nin_digits-digits-") for r in runs)
    assert all(checkpoint.folder(tmp_path / "runs" / r) is not None for r in runs)


def test_resume_refuses_options_that_differ_from_the_saved_run_and_says_when_there_is_nothing_to_do(tmp_path,
                                                                                                  capsys):
    out = str(tmp_path / "run")
    assert main(RUN + ["--epochs", "1", "--out", out]) == 0
    capsys.readouterr()
    assert main(["train", "pointnet_cls", "--data", "shapes3d", "--lr", "0.5", "--batch-size", "7", "--points", "64",
                 "--out", out, "--resume"]) == 2
    err = capsys.readouterr().err
    for said in ("MODEL pointnet_cls (saved: nin_digits)", "--data shapes3d (saved: digits)", "--lr 0.5 (saved: 0.01)",
                 "--batch-size 7 (saved: 128)", "--points 64 (saved: None)"):
        assert said in err
    assert main(["train", "nin_digits", "--out", out, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "nothing to do: the run in" in said and "finished epoch 1 of 1" in said
    assert main(["train", "nin_digits", "--out", out, "--resume", "--epochs", "2", "--quiet"]) == 0
    assert checkpoint.read_json(out, "state.json")["epoch"] == 2
    capsys.readouterr()
    assert main(["train", "nin_digits", "--out", out, "--resume", "--size", "8"]) == 0  # the size it ran at, by default
    assert "finished epoch 2 of 2" in capsys.readouterr().out
    assert main(["train", "nin_digits", "--out", out, "--resume", "--epochs", "1"]) == 0
    assert "finished epoch 2 (of the 2 planned), past --epochs 1; pass --epochs N with N > 2" in capsys.readouterr().out
    assert main(["train", "nin_digits", "--out", out, "--resume", "--size", "28"]) == 2
    assert "--size 28 (saved: 8)" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0"),
    (["--epochs", "-3"], "argument --epochs: expected an integer >= 1, got -3"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--lr", "-1"], "argument --lr: expected a finite number > 0 and <= 1000, got -1"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0 and <= 1000, got nan"),
    (["--points", "12x"], "argument --points: expected an integer >= 1, got '12x'"),
])
def test_every_option_is_checked_before_any_work(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "nin_digits", "--data", "digits", "--out", str(tmp_path / "r")] + args)
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(RUN + ["--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'} is a file" in capsys.readouterr().err


def test_a_loss_that_becomes_nan_stops_training_and_no_invalid_json_is_written(tmp_path, monkeypatch):
    cross_entropy, calls = torch.nn.functional.cross_entropy, []

    def diverging(logits, y):  # (a rate that blows up is refused up front: the loss turns NaN at the third batch)
        calls.append(1)
        return cross_entropy(logits, y) * (float("nan") if len(calls) >= 3 else 1.0)

    with monkeypatch.context() as m:
        m.setattr(torch.nn.functional, "cross_entropy", diverging)
        with pytest.raises(OneByOneError, match=r"the loss became nan at epoch 1, batch \d+: training stopped"):
            train(TrainConfig("nin_digits", "digits", epochs=2), out=tmp_path / "run", progress=False)
    assert checkpoint.folder(tmp_path / "run") is None  # nothing half-written
    ok, _ = train(TrainConfig("nin_digits", "digits", epochs=1), out=tmp_path / "ok", progress=False)
    json.loads((tmp_path / "ok" / "checkpoint" / "metrics.json").read_text(), parse_constant=pytest.fail)  # no NaN


KILLED_RUN = """
import sys
from onebyone.train import TrainConfig, train
train(TrainConfig("nin_digits", "digits", epochs=4, batch_size=128, lr=1e-2), out=sys.argv[1], progress=False,
      resume=len(sys.argv) > 2)
"""


def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run([sys.executable, "-c", KILLED_RUN, str(full)], check=True, env=env, timeout=300)
    want = checkpoint.read_tensors(full, "model.safetensors")
    rng = random.Random(0)
    for trial in range(1):  # each save's crash points are covered one by one in the next test
        out = tmp_path / f"killed{trial}"
        for _ in range(2):  # killed twice, at random moments, before the run is resumed to its end
            proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(out)] + (["resume"] if
                                    checkpoint.folder(out) else []), env=env)
            time.sleep(rng.uniform(1.0, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        args = [str(out), "resume"] if checkpoint.folder(out) else [str(out)]
        subprocess.run([sys.executable, "-c", KILLED_RUN, *args], check=True, env=env, timeout=300)
        got = checkpoint.read_tensors(out, "model.safetensors")
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), trial
        assert [m["epoch"] for m in checkpoint.read_json(out, "metrics.json")] == [1, 2, 3, 4]
        assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 4


@pytest.mark.parametrize("crash_at", range(1, 9))
def test_a_save_interrupted_at_any_step_leaves_one_complete_checkpoint(tmp_path, monkeypatch, crash_at):
    out = tmp_path / "run"
    tensors = {"w": torch.zeros(3)}
    checkpoint.save(out, tensors, {}, {"model": "m", "data": "d"}, {"epoch": 1}, [{"epoch": 1}])
    steps = [0]
    real_flush, real_remove = checkpoint._flush, checkpoint._remove_epoch

    def crash(real):
        def step(*args, **kw):
            steps[0] += 1
            if steps[0] == crash_at:
                raise KeyboardInterrupt  # the process dies here
            return real(*args, **kw)
        return step

    monkeypatch.setattr(checkpoint, "_flush", crash(real_flush))
    monkeypatch.setattr(checkpoint, "_remove_epoch", crash(real_remove))
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(out, {"w": torch.ones(3)}, {}, {"model": "m", "data": "d"}, {"epoch": 2}, [{"epoch": 1},
                                                                                                   {"epoch": 2}])
    epoch = checkpoint.read_json(out, "state.json")["epoch"]
    assert epoch in (1, 2)
    assert torch.equal(checkpoint.read_tensors(out, "model.safetensors")["w"], torch.full((3,), float(epoch - 1)))
    assert len(checkpoint.read_json(out, "metrics.json")) == epoch
    monkeypatch.undo()
    checkpoint.save(out, {"w": torch.ones(3)}, {}, {"model": "m", "data": "d"}, {"epoch": 2}, [{}, {}])  # next save
    assert {p.name for p in out.iterdir()} == {"checkpoint", "epoch-0002", checkpoint.MANIFEST}  # leftovers gone


def test_ctrl_c_says_where_the_last_checkpoint_is_and_how_to_resume(tmp_path, monkeypatch, capsys):
    import onebyone.train as T

    real = T.train

    def interrupted(cfg, out=None, **kw):
        real(cfg, out=out, until=1, **kw)  # one epoch saved, then the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "train", interrupted)
    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "3", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"the last complete checkpoint is epoch 1 in {out}/checkpoint" in err
    assert f"onebyone train nin_digits --out {out} --resume" in err and "Traceback" not in err


def test_a_dataset_path_is_stored_so_that_it_resolves_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    np.savez("mine.npz", x=x, y=np.arange(40) % 4)
    assert main(RUN[:2] + ["--data", "mine.npz", "--epochs", "1", "--out", "run", "--quiet"]) == 0
    saved = checkpoint.read_json(tmp_path / "run", "config.json")["data"]
    assert saved == str(tmp_path / "mine.npz")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", "nin_digits", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--quiet"]) == 0


def test_the_run_rules_refuse_alike_from_python_and_from_the_shell(tmp_path, capsys):
    """``start_run`` holds the rules ``onebyone train`` applies: the same refusal, word for word, either way."""
    from onebyone.runs import start_run

    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "1", "--out", str(out)]) == 0
    cases = [(RUN + ["--epochs", "1", "--out", str(out)], dict(data_name="digits", out=out)),
             (["train", "nin_digits", "--out", str(out), "--resume", "--lr", "0.5"],
              dict(out=out, resume=True, lr=0.5)),
             (["train", "nin_digits", "--resume", "--overwrite", "--out", str(out)],
              dict(out=out, resume=True, overwrite=True)),
             (["train", "nin_digits"], {})]
    for argv, kw in cases:
        capsys.readouterr()
        assert main(argv) == 2
        with pytest.raises(OneByOneError) as python:
            start_run("nin_digits", **kw)
        assert capsys.readouterr().err.strip() == f"onebyone: error: {python.value}", argv


def test_a_folder_of_the_users_is_refused_and_left_as_it_was(tmp_path, capsys):
    own = tmp_path / "own1"
    own.mkdir()
    (own / "config.json").write_text('{"mine": 1}')
    (own / "metrics.json").write_text("[1, 2]")
    (own / "epoch-plots").mkdir()
    (own / "epoch-plots" / "loss.png").write_bytes(b"png")
    before = {p.relative_to(own): p.read_bytes() for p in own.rglob("*") if p.is_file()}
    assert main(RUN + ["--epochs", "1", "--out", str(own)]) == 2
    assert "is not empty and holds no run of `onebyone train`: choose a new or empty folder" in capsys.readouterr().err
    assert {p.relative_to(own): p.read_bytes() for p in own.rglob("*") if p.is_file()} == before  # nothing written
    with pytest.raises(OneByOneError, match="is not empty and holds no run"):
        train(TrainConfig("nin_digits", "digits", epochs=1), out=own, progress=False)  # the API refuses it too


@pytest.mark.parametrize("names", [("config.json", "model.safetensors"), checkpoint.FILES])
def test_overwrite_never_deletes_a_folder_without_our_manifest(tmp_path, capsys, names):
    """A Hugging Face model folder (config.json, model.safetensors), or every file of an earlier version's run
    layout: no manifest of ours lists them, so --overwrite refuses and every byte stays."""
    own = tmp_path / "m"
    own.mkdir()
    for i, name in enumerate(names):
        (own / name).write_bytes(f"user file {i}".encode())
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    assert main(RUN + ["--epochs", "1", "--out", str(own), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "nothing was removed" in err or "holds no run" in err, err
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before
    with pytest.raises(OneByOneError):
        train(TrainConfig("nin_digits", "digits", epochs=1), out=own, progress=False, overwrite=True)
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before


def test_a_run_and_overwrite_remove_only_what_a_run_wrote(tmp_path):
    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "2", "--out", str(out)]) == 0
    (out / "epoch-notes.txt").write_text("mine")  # the user's files beside the run
    (out / "epoch-plots").mkdir()
    (out / "epoch-plots" / "loss.png").write_bytes(b"png")
    (out / "config.json").write_text("{}")
    assert main(RUN + ["--epochs", "3", "--out", str(out), "--resume"]) == 0  # saves epoch 3, removes epoch 2
    assert main(RUN + ["--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert (out / "epoch-notes.txt").read_text() == "mine" and (out / "epoch-plots" / "loss.png").read_bytes() == b"png"
    assert (out / "config.json").read_text() == "{}"
    assert sorted(p.name for p in out.glob("epoch-0*")) == ["epoch-0001"]  # the run's own epochs: the new one
    assert checkpoint.read_json(out, "state.json")["epoch"] == 1
    assert checkpoint.written(out) == ["checkpoint", "epoch-0001"]


def test_overwrite_and_resume_refuse_a_users_epoch_folder_before_removing_or_training_anything(tmp_path, capsys):
    """An ``epoch-0001`` of the user's beside a run: --overwrite removed the run, trained, then could not save
    (the folder was not its own): the old run and the new epoch were both lost. Now a folder of the user's
    under a name the run will save is refused before anything is removed (--overwrite) or trained (--resume),
    as is a file of the user's inside the run's own epoch folder (which --overwrite deleted); names it will
    not save are no matter. A file put in an older epoch folder is left there, with the folder, when training
    moves on, and a link in a listed folder's place is removed alone (not the files it leads to)."""
    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "2", "--out", str(out)]) == 0
    before = checkpoint.read_tensors(out, "model.safetensors")
    for mine, extra in (("epoch-0001", ["--overwrite", "--epochs", "1"]),
                        ("epoch-0003", ["--resume", "--epochs", "3"])):
        (out / mine).mkdir()
        (out / mine / "keep.txt").write_text("mine")
        assert main(RUN + ["--out", str(out), *extra]) == 2
        assert f"{mine}, not written by its run, where the run saves its epochs: nothing was removed" in (
            capsys.readouterr().err)
        after = checkpoint.read_tensors(out, "model.safetensors")
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert checkpoint.written(out) == ["checkpoint", "epoch-0002"]
        assert (out / mine / "keep.txt").read_text() == "mine"
    (out / "epoch-0003" / "keep.txt").unlink()
    (out / "epoch-0003").rmdir()
    (out / "epoch-0002" / "notes.txt").write_text("mine too")  # inside the run's own epoch folder
    assert main(RUN + ["--out", str(out), "--overwrite", "--epochs", "2"]) == 2
    assert "epoch-0002 holds notes.txt, which `onebyone train` did not write: nothing was removed" in (
        capsys.readouterr().err)
    assert checkpoint.read_json(out, "state.json")["epoch"] == 2
    assert main(RUN + ["--out", str(out), "--resume", "--epochs", "3"]) == 0  # the user's epoch-0001 no matter
    assert (out / "epoch-0002" / "notes.txt").read_text() == "mine too" and not (out / "epoch-0002" / FILE).exists()
    assert checkpoint.written(out) == ["checkpoint", "epoch-0003"]
    assert main(RUN + ["--out", str(out), "--resume", "--epochs", "4"]) == 0  # epoch-0002, left, is no matter
    archive = tmp_path / "archive"
    (out / "epoch-0004").rename(archive)  # the user moves the listed folder away and links it back
    (out / "epoch-0004").symlink_to(archive)
    assert main(RUN + ["--out", str(out), "--resume", "--epochs", "5"]) == 0
    assert (archive / FILE).is_file() and not (out / "epoch-0004").exists()


FILE = checkpoint.FILES[0]


def test_a_second_run_of_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    out = tmp_path / "clash"
    with checkpoint.lock(out):  # what a running `onebyone train --out clash` holds
        with pytest.raises(OneByOneError, match="another `onebyone train` is writing .*clash right now"):
            train(TrainConfig("nin_digits", "digits", epochs=1), out=out, progress=False)
        probe = subprocess.run([sys.executable, "-m", "onebyone", *RUN, "--epochs", "1", "--out", str(out)],
                               capture_output=True, text=True, timeout=300)
        assert probe.returncode == 2 and "another `onebyone train` is writing" in probe.stderr
    assert checkpoint.folder(out) is None  # neither wrote a run
    model, metrics = train(TrainConfig("nin_digits", "digits", epochs=1, batch_size=128), out=out, progress=False)
    assert checkpoint.read_json(out, "state.json")["epoch"] == 1  # once the lock is free, a run goes ahead


def test_a_damaged_manifest_is_refused_not_trusted(tmp_path):
    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "1", "--out", str(out)]) == 0
    (out / checkpoint.MANIFEST).write_text('{"written": ["../elsewhere"]}')
    with pytest.raises(OneByOneError, match="is damaged: 'written' should be a list of entry names"):
        checkpoint.clear(out)


def test_no_command_writes_over_what_it_should_not(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "index.html").write_text("the user's page")
    for args, said in [
        (["report", "nin_digits", "--html", ""], "--html expects a folder name, got ''"),
        (["tour", "--html", ""], "--html expects a folder name, got ''"),
        (["bench", "--quick", "--sections", "a", "--json", "x.png", "--png", "x.png"],
         "--json and --png name the same file x.png"),
        (["bench", "--quick", "--sections", "a", "--json", ""], "--json expects a file name, got ''"),
    ]:
        assert main(args) == 2, args
        assert said in capsys.readouterr().err
    os.mkfifo(tmp_path / "pipe")  # like /dev/full: not a regular file, never replaced by one
    assert main(["bench", "--quick", "--sections", "a", "--json", str(tmp_path / "pipe")]) == 2
    assert "exists and is not a regular file" in capsys.readouterr().err
    assert (tmp_path / "pipe").is_fifo() and (tmp_path / "index.html").read_text() == "the user's page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "pipe"]  # nothing else written


def test_every_command_that_writes_leaves_a_users_files_byte_for_byte(tmp_path, capsys, monkeypatch):
    """A folder of the user's own files (a Hugging Face model's, a page, notes, figures) given to every command
    that writes: each refuses the folder or writes only new files of its own beside them."""
    from pathlib import Path

    from onebyone import bench

    own = tmp_path / "mine"
    (own / "figures").mkdir(parents=True)
    for name, content in {"config.json": b'{"hidden_size": 8}', "model.safetensors": b"weights",
                          "index.html": b"<p>mine", "notes.txt": b"notes", "figures/kinds.png": b"png"}.items():
        (own / name).write_bytes(content)
    before = {p.relative_to(own): p.read_bytes() for p in own.rglob("*") if p.is_file()}
    run = tmp_path / "run"
    assert main(RUN + ["--epochs", "1", "--out", str(run)]) == 0
    published = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "bench.json").read_text())
    monkeypatch.setattr(bench, "run", lambda *a, **k: published)  # the writing, not minutes of timing
    monkeypatch.setattr(bench, "summary", lambda result: [])
    for args, status in [
        (RUN + ["--epochs", "1", "--out", str(own)], 2),
        (RUN + ["--epochs", "1", "--out", str(own), "--overwrite"], 2),
        (["report", "nin_digits", "--html", str(own)], 2),
        (["tour", "--html", str(own)], 2),
        (["bench", "--quick", "--json", str(own / "bench.json"), "--png", str(own / "roofline.png")], 0),
        (["maps", str(run), "test:0", "--out", str(own / "maps.png")], 0),
    ]:
        assert main(args) == status, (args, capsys.readouterr().err)
    after = {p.relative_to(own): p.read_bytes() for p in own.rglob("*") if p.is_file()}
    assert {k: after[k] for k in before} == before  # every file of the user's, byte for byte
    assert set(after) - set(before) == {Path("bench.json"), Path("roofline.png"), Path("maps.png")}


def test_overwrite_removes_nothing_until_the_new_runs_data_and_model_are_checked(tmp_path, capsys):
    """A typo in --data, or a model the data does not fit, with --overwrite: refused, and the run in the
    folder is still whole (once it was cleared first, and lost)."""
    out = str(tmp_path / "run")
    assert main(RUN + ["--epochs", "1", "--out", out]) == 0
    before = checkpoint.read_tensors(out, "model.safetensors")
    for run, said in [(["train", "nin_digits", "--data", "digitz"], "digitz"),
                      (["train", "pointnet_vanilla", "--data", "digits"], "pointnet_vanilla expects samples of shape")]:
        assert main(run + ["--quiet", "--epochs", "1", "--out", out, "--overwrite"]) == 2
        assert said in capsys.readouterr().err
        after = checkpoint.read_tensors(out, "model.safetensors")
        assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_classes_count_both_splits_and_a_class_with_no_training_sample_is_refused(tmp_path):
    """Labels 0 and 1 in training and a 2 only in the test split: refused, named (once the model was built for
    two classes and scored against the third without a word)."""
    from onebyone.data.split import split_indices

    n = 40
    y = np.arange(n) % 2
    y[split_indices(n, "test")[:2]] = 2  # both samples of class 2 in the test split
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((n, 1, 8, 8)).astype(np.float32), y=y)
    with pytest.raises(OneByOneError, match=r"class\(es\) \[2\] have no sample in the training split"):
        train(TrainConfig("nin_digits", str(tmp_path / "d.npz"), epochs=1), progress=False)


def test_resume_refuses_data_that_changed_since_the_run_began(tmp_path, capsys):
    """One more sample moves others between the train and test splits: --resume refuses it (it once went on,
    mixing two test sets and training on former test samples)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 1, 8, 8)).astype(np.float32), np.arange(100) % 10
    data, out = str(tmp_path / "g.npz"), str(tmp_path / "run")
    np.savez(data, x=x, y=y)
    args = ["train", "nin_digits", "--data", data, "--quiet", "--out", out]
    assert main(args + ["--epochs", "1"]) == 0
    np.savez(data, x=np.concatenate([x, x[:1]]), y=np.concatenate([y, y[:1]]))
    assert main(["train", "nin_digits", "--quiet", "--out", out, "--resume", "--epochs", "2"]) == 2
    assert "holds other samples than the run was trained on" in capsys.readouterr().err
    np.savez(data, x=x, y=y)  # restored: the run goes on
    assert main(["train", "nin_digits", "--quiet", "--out", out, "--resume", "--epochs", "2"]) == 0


def test_a_last_batch_of_one_sample_and_samples_too_small_for_the_model(tmp_path):
    """A training set one sample past a whole number of batches trains (the lone sample waits: a BatchNorm
    has no statistics for a batch of one); samples too small for the model are refused before training,
    named (both were raw errors, the first at the end of every epoch)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pc.npz", x=rng.standard_normal((11, 3, 16)).astype(np.float32), y=np.arange(11) % 2)
    _, metrics = train(TrainConfig("pointnet_vanilla", str(tmp_path / "pc.npz"), epochs=1, batch_size=8),
                       progress=False)
    assert len(metrics) == 1
    np.savez(tmp_path / "tiny.npz", x=rng.standard_normal((20, 1, 1, 1)).astype(np.float32), y=np.arange(20) % 2)
    with pytest.raises(OneByOneError, match=r"does not run on .*samples of shape \(1, 1, 1\)"):
        train(TrainConfig("nin_digits", str(tmp_path / "tiny.npz"), epochs=1), progress=False)


def test_maps_never_replaces_a_file_it_was_not_told_to(tmp_path, capsys, monkeypatch):
    """``maps`` writes maps.png here by default; where the user has a maps.png it is refused, and the file is
    left as it was (it once was replaced); a file named by --out is replaced, as asked."""
    out = str(tmp_path / "run")
    assert main(RUN + ["--epochs", "1", "--out", out]) == 0
    monkeypatch.chdir(tmp_path)
    (tmp_path / "maps.png").write_text("my figure")
    assert main(["maps", out, "test:0"]) == 2
    assert "maps.png exists in this folder and is not replaced unasked" in capsys.readouterr().err
    assert (tmp_path / "maps.png").read_text() == "my figure"
    assert main(["maps", out, "test:0", "--out", "maps.png"]) == 0
    assert (tmp_path / "maps.png").read_bytes().startswith(b"\x89PNG")


def test_a_model_file_of_another_kind_is_named_in_one_short_line(tmp_path, capsys):
    """An optimizer's tensors where the model's belong: refused in a line that names the file and the model,
    not torch's list of every missing key."""
    import shutil

    from onebyone.train import load_checkpoint

    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    epoch = out / "epoch-0001"
    shutil.copy(epoch / "optimizer.safetensors", epoch / "model.safetensors")
    assert main(RUN + ["--epochs", "2", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint does not fit nin_digits (RuntimeError: Error(s) in loading state_dict" in err
    assert len(err) < 600 and err.count("\n") == 1
    with pytest.raises(OneByOneError, match="model.safetensors does not fit nin_digits") as e:
        load_checkpoint(out)
    assert len(str(e.value)) < 600


def test_an_overwrite_interrupted_before_its_first_epoch_leaves_the_run_it_was_replacing(tmp_path, capsys,
                                                                                       monkeypatch):
    """--overwrite cleared the old run before training: Ctrl-C (or a crash) in the new run's first epoch left
    neither run. Now the old run stays whole, loadable and resumable, until the new run's first epoch is
    switched in; then only the new run's files remain."""
    import onebyone.train as training

    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "2", "--out", str(out)]) == 0
    before = checkpoint.read_tensors(out, "model.safetensors")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(training, "_epochs", killed)
        assert main(RUN + ["--epochs", "1", "--out", str(out), "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "still holds the run it was replacing (epoch 2), whole: --resume continues that one" in err, err
    after = checkpoint.read_tensors(out, "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert main(RUN + ["--epochs", "3", "--out", str(out), "--resume"]) == 0  # the old run goes on
    assert checkpoint.read_json(out, "state.json")["epoch"] == 3
    assert main(RUN + ["--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert checkpoint.written(out) == ["checkpoint", "epoch-0001"] and checkpoint.read_json(out, "state.json")[
        "epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint", "epoch-0001", checkpoint.MANIFEST,
                                                            checkpoint.LOCK])


def test_a_users_folder_that_holds_a_checkpoint_folder_is_the_users_not_a_damaged_run(tmp_path, capsys):
    own = tmp_path / "mine"
    (own / "checkpoint").mkdir(parents=True)
    (own / "checkpoint" / "weights.pt").write_text("w")
    for extra in ([], ["--resume"], ["--overwrite"]):
        assert main(RUN + ["--epochs", "1", "--out", str(own), *extra]) == 2
        err = capsys.readouterr().err
        assert "is incomplete" not in err and ("holds no run" in err or "has no such list" in err
                                               or "needs a run folder" in err), err
    assert (own / "checkpoint" / "weights.pt").read_text() == "w"


@pytest.mark.parametrize("field,value,said", [
    ("batch_size", 0, "TrainConfig's batch_size must be an integer >= 1, got 0"),  # (ZeroDivisionError)
    ("lr", -1.0, "TrainConfig's lr must be a number > 0"),  # (torch's 'Invalid learning rate')
    ("epochs", 0, "TrainConfig's epochs must be an integer >= 1, got 0"),  # (returned [] silently)
    ("num_classes", 5, "num_classes=5, but digits's labels go up to 9 (10 classes)"),  # (IndexError mid-epoch)
])
def test_the_python_api_refuses_a_bad_config_before_training(tmp_path, field, value, said):
    cfg = TrainConfig("nin_digits", "digits", **({"epochs": 1} | {field: value}))
    with pytest.raises(OneByOneError, match=said.replace("(", r"\(").replace(")", r"\)")):
        train(cfg, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_api_saves_a_data_path_absolute_and_names_skipped_labels(tmp_path, monkeypatch):
    """A relative path in TrainConfig was saved relative (maps and --resume broke from another folder); labels
    1..K gave 'all fell in the test split' for the empty class 0."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 1, 8, 8)).astype("float32"), y=np.arange(40) % 3 + 1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OneByOneError, match=r"its labels skip \[0\]: number the classes 0 to K-1"):
        train(TrainConfig("nin_digits", "d.npz", epochs=1), out=tmp_path / "a", progress=False)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 1, 8, 8)).astype("float32"), y=np.arange(40) % 3)
    train(TrainConfig("nin_digits", "d.npz", epochs=1), out=tmp_path / "b", progress=False)
    assert checkpoint.read_json(tmp_path / "b", "config.json")["data"] == str(tmp_path / "d.npz")


def test_resume_refuses_fewer_epochs_than_the_run_was_planned_for(tmp_path, capsys):
    """A 4-epoch run stopped after 1, resumed with --epochs 2: the cosine schedule was recomputed midway, a run
    like neither (the docstring said only epochs may grow)."""
    out = str(tmp_path / "run")
    train(TrainConfig("nin_digits", "digits", epochs=4, batch_size=128), out=out, progress=False, until=1)
    assert main(["train", "nin_digits", "--out", out, "--resume", "--epochs", "2"]) == 2
    assert "was planned for 4 epochs, its learning-rate schedule with them; --epochs 2" in capsys.readouterr().err
    assert main(["train", "nin_digits", "--out", out, "--resume", "--epochs", "1"]) == 0
    assert "finished epoch 1 (of the 4 planned), past --epochs 1; leave --epochs out to finish it" in (
        capsys.readouterr().out)
    assert checkpoint.read_json(out, "state.json")["epoch"] == 1


def test_channels_last_samples_are_named_as_such(tmp_path):
    x = np.random.default_rng(0).random((40, 8, 8, 1)).astype("float32")  # (N, H, W, C): Keras's order
    np.savez(tmp_path / "nhwc.npz", x=x, y=np.arange(40) % 2)
    with pytest.raises(OneByOneError, match=r"gives \(8, 8, 1\): channels last\? move them first"):
        train(TrainConfig("nin_digits", str(tmp_path / "nhwc.npz"), epochs=1), progress=False)


def test_a_run_copied_following_links_loads_and_is_refused_for_writing(tmp_path, capsys):
    """``shutil.copytree`` (or scp -r) turns the checkpoint link into a folder: the copy must still load, and a
    run into it must be refused before training (a save could not switch the link in)."""
    import shutil

    from onebyone.train import load_checkpoint

    out, copy = tmp_path / "run", tmp_path / "copy"
    assert main(RUN + ["--epochs", "1", "--out", str(out)]) == 0
    shutil.copytree(out, copy)
    assert (copy / "checkpoint").is_dir() and not (copy / "checkpoint").is_symlink()
    load_checkpoint(copy)
    assert main(RUN + ["--epochs", "1", "--out", str(copy)]) == 2
    assert "holds a run" in capsys.readouterr().err
    for extra in (["--resume", "--epochs", "2"], ["--overwrite", "--epochs", "1"]):
        assert main(RUN + ["--out", str(copy), *extra]) == 2
        assert "is a folder, not the link a run keeps there" in capsys.readouterr().err
    assert checkpoint.read_json(copy, "state.json")["epoch"] == 1


def test_overwrite_replaces_a_damaged_run_and_keeps_a_users_replaced_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(RUN + ["--epochs", "1", "--out", str(out)]) == 0
    mine = out / f"{checkpoint.REPLACED}epoch-0001"
    mine.mkdir()
    (mine / "model.safetensors").write_text("mine")
    assert main(RUN + ["--epochs", "1", "--out", str(out), "--overwrite"]) == 2
    assert f"holds {mine.name}, not written by its run" in capsys.readouterr().err
    assert (mine / "model.safetensors").read_text() == "mine"
    (mine / "model.safetensors").unlink()
    mine.rmdir()
    (out / "checkpoint" / "metrics.json").unlink()  # a damaged run: --overwrite is how it is replaced
    assert main(RUN + ["--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert checkpoint.read_json(out, "state.json")["epoch"] == 1 and checkpoint.written(out) == [
        "checkpoint", "epoch-0001"]


def test_a_config_takes_a_path_numpy_integers_and_a_dataset_name_beside_a_folder_of_that_name(tmp_path,
                                                                                             monkeypatch):
    """TrainConfig(data=Path(...)) and epochs=np.int64(1) were refused by the checks that took them in; a
    folder named `digits` in the working directory was loaded in place of the dataset."""
    from pathlib import Path

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 1, 8, 8)).astype("float32"), y=np.arange(40) % 2)
    train(TrainConfig("nin_digits", Path(tmp_path / "d.npz"), epochs=np.int64(1), batch_size=np.int32(16)),
          out=tmp_path / "a", progress=False)
    assert checkpoint.read_json(tmp_path / "a", "config.json")["epochs"] == 1
    (tmp_path / "digits").mkdir()
    monkeypatch.chdir(tmp_path)
    train(TrainConfig("nin_digits", "digits", epochs=1, batch_size=256), out=tmp_path / "b", progress=False)
    assert checkpoint.read_json(tmp_path / "b", "config.json")["data"] == "digits"
