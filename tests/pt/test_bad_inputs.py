"""Bad input, table-driven, across the CLI and the public API: each case must end in a clear error that
names the problem (a OneByOneError, or exit status 2 with a one-line message and no traceback), never in
a raw traceback or a silent wrong answer. The README quotes how many cases there are (``CASES``)."""
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

import onebyone as ob
from onebyone import OneByOneError, checkpoint, cost, data, ops
from onebyone.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch digits run, copied fresh for each case that damages it."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "nin_digits", "--data", "digits", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    return out


def damaged(run, tmp_path, name, content):
    out = tmp_path / "damaged"
    shutil.copytree(run, out, symlinks=True)
    target = (out / "checkpoint").resolve() / name
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    return out


def bench_json(tmp_path, point=None, **fields):
    """The published bench JSON with ``fields`` replaced (and its first roofline point, if given)."""
    from pathlib import Path

    result = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "bench.json").read_text())
    result.update(fields)
    if point is not None:
        result["pointwise_op"][0]["roofline"][0] = point
    (tmp_path / "b.json").write_text(json.dumps(result))
    return str(tmp_path / "b.json")


def _write(path, text):
    path.write_text(text)
    return str(path)


def npz(tmp_path, **arrays):
    path = tmp_path / "user.npz"
    np.savez(path, **arrays)
    return str(path)


X = np.random.default_rng(0).random((20, 1, 8, 8)).astype(np.float32)
Y = np.arange(20) % 4

# (id, arguments given the run folder and tmp_path, the message that must appear in stderr)
CLI = [
    ("train epochs 0", lambda r, t: ["train", "nin_digits", "--data", "digits", "--epochs", "0"], "expected an integer >= 1, got 0"),
    ("train batch -1", lambda r, t: ["train", "nin_digits", "--data", "digits", "--batch-size", "-1"], "expected an integer >= 1"),
    ("train lr inf", lambda r, t: ["train", "nin_digits", "--data", "digits", "--lr", "inf"], "finite number > 0 and <= 1000, got inf"),
    ("train points text", lambda r, t: ["train", "pointnet_cls", "--data", "shapes3d", "--points", "1k"], "got '1k'"),
    ("train size 7", lambda r, t: ["train", "nin_digits", "--data", "digits", "--size", "7"], "invalid choice: 7"),
    ("train no data", lambda r, t: ["train", "nin_digits", "--out", str(t / "o")], "--data is required"),
    ("train unknown model", lambda r, t: ["train", "resnet", "--data", "digits", "--out", str(t / "o")], "unknown model 'resnet'"),
    ("train unknown data", lambda r, t: ["train", "nin_digits", "--data", "mnist", "--out", str(t / "o")], "unknown dataset 'mnist'"),
    ("train over a run", lambda r, t: ["train", "nin_digits", "--data", "digits", "--out", str(r)], "holds a run"),
    ("train out is a file", lambda r, t: ["train", "nin_digits", "--data", "digits", "--out", str(r / "checkpoint" / "config.json")], "is a file"),
    ("resume no out", lambda r, t: ["train", "nin_digits", "--resume"], "--resume needs --out"),
    ("resume empty folder", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(t)], "holds no run"),
    ("resume and overwrite", lambda r, t: ["train", "nin_digits", "--resume", "--overwrite", "--out", str(r)], "give one of them"),
    ("resume other lr", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(r), "--lr", "0.5"], "--lr 0.5 (saved: 0.003)"),
    ("resume other data", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(r), "--data", "shapes3d"], "--data shapes3d (saved: digits)"),
    ("resume truncated model", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "2", "--out", str(damaged(r, t, "model.safetensors", b"\x08\x00"))], "not a readable safetensors file"),
    ("resume garbage optimizer", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "2", "--out", str(damaged(r, t, "optimizer.safetensors", b"garbage" * 10))], "optimizer.safetensors is not a readable"),
    ("resume missing optimizer", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "2", "--out", str(damaged(r, t, "optimizer.safetensors", None))], "optimizer.safetensors is missing"),
    ("resume bad state.json", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "2", "--out", str(damaged(r, t, "state.json", b"{"))], "state.json is not valid JSON"),
    ("resume bad config.json", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(damaged(r, t, "config.json", b"[1, 2]"))], "config.json must hold the fields"),
    ("npz float labels", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X, y=Y + 0.7), "--out", str(t / "o")], "whole-number class labels"),
    ("npz nan x", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X * np.nan, y=Y), "--out", str(t / "o")], "NaN or infinite"),
    ("npz huge labels", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X, y=Y + 10**6), "--out", str(t / "o")], "1,000,004-class head"),
    ("npz negative labels", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X, y=Y - 1), "--out", str(t / "o")], "labels must be >= 0"),
    ("npz one-hot labels", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X, y=np.eye(4)[Y]), "--out", str(t / "o")], "y.argmax(1)"),
    ("npz string labels", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X, y=np.array(["a"] * 20)), "--out", str(t / "o")], "got dtype <U1"),
    ("npz one sample", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X[:1], y=Y[:1]), "--out", str(t / "o")], "at least 2 samples"),
    ("npz missing key", lambda r, t: ["train", "nin_digits", "--data", npz(t, x=X), "--out", str(t / "o")], "missing ['y']"),
    ("npz not an npz", lambda r, t: ["train", "nin_digits", "--data", str(t / "notes.npz") if (t / "notes.npz").write_text("hello") else "", "--out", str(t / "o")], "is not an .npz archive"),
    ("summary negative size", lambda r, t: ["summary", "nin_digits", "--input-size", "3", "-5", "224"], "expected an integer >= 1, got -5"),
    ("summary batch -1", lambda r, t: ["summary", "nin_digits", "--batch-size", "-1"], "expected an integer >= 1, got -1"),
    ("summary unknown model", lambda r, t: ["summary", "no_such_model"], "unknown model 'no_such_model'"),
    ("summary factory raises", lambda r, t: ["summary", "json:loads"], "calling json:loads() failed"),
    ("summary bad model arg", lambda r, t: ["summary", "nin_digits", "--model-arg", "bogus=1"], "does not take ['bogus']"),
    ("report bench is a list", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", str(t / "l.json") if (t / "l.json").write_text("[1, 2]") else ""], "holds a list"),
    ("report html is a file", lambda r, t: ["report", "nin_digits", "--html", str(r / "checkpoint" / "config.json")], "is a file"),
    ("tour html is a file", lambda r, t: ["tour", "--lesson", "shapes", "--html", str(r / "checkpoint" / "config.json")], "is a file"),
    ("tour unknown lesson", lambda r, t: ["tour", "--lesson", "nope"], "unknown lesson id(s) ['nope']"),
    ("maps out not png", lambda r, t: ["maps", str(r), "test:0", "--out", str(t / "m.txt")], "end it in .png"),
    ("maps nan image", lambda r, t: ["maps", str(r), str(t / "nan.npy") if np.save(t / "nan.npy", np.full((8, 8), np.nan)) is None else ""], "NaN or infinite"),
    ("maps no checkpoint", lambda r, t: ["maps", str(t), "test:0"], "is not a checkpoint folder"),
    ("maps bad index", lambda r, t: ["maps", str(r), "test:99999"], "test indices must be in"),
    ("maps bad spec", lambda r, t: ["maps", str(r), "test:x"], "expected test:N"),
    ("bench json folder missing", lambda r, t: ["bench", "--quick", "--json", str(t / "no" / "b.json")], "does not exist"),
    ("bench json is a folder", lambda r, t: ["bench", "--quick", "--json", str(t)], "is a folder"),
    ("bench sections", lambda r, t: ["bench", "--sections", "xyz"], "--sections takes letters from"),
    ("bench runs 0", lambda r, t: ["bench", "--runs", "0"], "expected an integer >= 1, got 0"),
    ("bench png without roofline", lambda r, t: ["bench", "--sections", "d", "--png", str(t / "r.png")], "--png draws the roofline"),
    ("train points for digits", lambda r, t: ["train", "nin_digits", "--data", "digits", "--points", "256", "--out", str(t / "o")], "digits does not take ['n_points']"),
    ("train precision fp16", lambda r, t: ["train", "nin_digits", "--data", "digits", "--precision", "fp16"], "invalid choice: 'fp16'"),
    ("maps unknown flag", lambda r, t: ["maps", str(r), "test:0", "--size", "3"], "unrecognized arguments: --size 3"),
    ("train into a folder of the user's", lambda r, t: ["train", "nin_digits", "--data", "digits", "--out", str(t) if (t / "mine.txt").write_text("x") else ""], "is not empty and holds no run"),
    ("train seed 2**64-1", lambda r, t: ["train", "nin_digits", "--data", "digits", "--seed", str(2**64 - 1)], "expected an integer from 0 to 2,147,483,647"),
    ("resume epoch -5", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "3", "--out", str(damaged(r, t, "state.json", json.dumps({"epoch": -5, "optimizer": {}}).encode()))], "state.json must hold a whole epoch >= 1"),
    ("resume epoch 1.7", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "3", "--out", str(damaged(r, t, "state.json", json.dumps({"epoch": 1.7, "optimizer": {}}).encode()))], "state.json must hold a whole epoch >= 1"),
    ("resume metrics of another shape", lambda r, t: ["train", "nin_digits", "--resume", "--epochs", "3", "--out", str(damaged(r, t, "metrics.json", b'{"epoch": 1}'))], "metrics.json must hold one entry per epoch"),
    ("resume lr a string", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(damaged(r, t, "config.json", json.dumps({"model": "nin_digits", "data": "digits", "lr": "fast"}).encode()))], "config.json's lr must be a number > 0 and <= 1000, got 'fast'"),
    ("resume data_kwargs a list", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(damaged(r, t, "config.json", json.dumps({"model": "nin_digits", "data": "digits", "data_kwargs": [1]}).encode()))], "config.json's data_kwargs must be an object"),
    ("summary resolution -5", lambda r, t: ["summary", "mobilenet_v1", "--model-arg", "resolution=-5"], "resolution must be an integer >= 32"),
    ("summary alpha 0", lambda r, t: ["summary", "mobilenet_v1", "--model-arg", "alpha=0"], "must be a number in (0, 4], got 0"),
    ("summary dropout nan", lambda r, t: ["summary", "nin_cifar", "--model-arg", "dropout=nan"], "nin_cifar(dropout='nan') could not be built"),
    ("summary dropout 2.0", lambda r, t: ["summary", "nin_cifar", "--model-arg", "dropout=2.0"], "dropout probability has to be between 0 and 1"),
    ("summary batch 10**11", lambda r, t: ["summary", "nin_cifar", "--batch-size", str(10**11)], "needs 1.23 PB for one tensor"),
    ("summary a 10**10-class head", lambda r, t: ["summary", "nin_cifar", "--model-arg", f"num_classes={10**10}"], "needs 7.68 TB for one tensor"),
    ("report html where nothing can be made", lambda r, t: ["report", "nin_digits", "--html", "/proc/onebyone-page"], "cannot be made: /proc is not writable"),
    ("tour html where nothing can be made", lambda r, t: ["tour", "--lesson", "shapes", "--html", "/proc/onebyone-page"], "cannot be made: /proc is not writable"),
    ("summary depth 0", lambda r, t: ["summary", "nin_cifar", "--depth", "0"], "expected an integer >= 1, got 0"),
    ("report html empty", lambda r, t: ["report", "nin_digits", "--html", ""], "--html expects a folder name, got ''"),
    ("report bench peak a string", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, peak_gflops="lots")], "peak_gflops must be a number > 0, got 'lots'"),
    ("report bench machine a number", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, machine=5)], "machine must be a text, got 5"),
    ("report bench empty roofline point", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, point={})], "a roofline point of the bench JSON must hold"),
    ("resume weight_decay 1e300", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(damaged(r, t, "config.json", json.dumps({"model": "nin_digits", "data": "digits", "weight_decay": 1e300}).encode()))], "config.json's weight_decay must be a number >= 0 and <= 1000"),
    ("resume lr 1e308", lambda r, t: ["train", "nin_digits", "--resume", "--out", str(damaged(r, t, "config.json", json.dumps({"model": "nin_digits", "data": "digits", "lr": 1e308}).encode()))], "config.json's lr must be a number > 0 and <= 1000"),
    ("train lr 1e308", lambda r, t: ["train", "nin_digits", "--data", "digits", "--lr", "1e308"], "expected a finite number > 0 and <= 1000"),
    ("train one class", lambda r, t: ["train", "nin_digits", "--data", str(_one_class(t)), "--out", str(t / "o")], "at least two classes; found 1 (only)"),
    ("report bench shared_mlp roofline 5", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, shared_mlp={"roofline": 5})], "each roofline of the bench JSON must be a list of points, got 5"),
    ("report bench a row's roofline null", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, pointwise_op=[{"roofline": None}])], "must be a list of points, got None"),
    ("report bench point named ''", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, point={"name": "", "section": "a", "intensity": 1, "gflops": 1})], "must hold name (a text)"),
    ("report bench 401-digit peak", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", bench_json(t, peak_gflops=10**400)], "peak_gflops must be a number > 0"),
    ("report bench nested 200,000 deep", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", _write(t / "deep.json", "[" * 200_000 + "]" * 200_000)], "could not be read as JSON: RecursionError"),
    ("report bench /dev/zero", lambda r, t: ["report", "nin_digits", "--html", str(t / "p"), "--bench", "/dev/zero"], "/dev/zero is not a regular file"),
    ("bench png named otherwise", lambda r, t: ["bench", "--quick", "--sections", "a", "--png", str(t / "r.xyz")], "--png writes a PNG: name a file ending in .png"),
    ("bench json over a file of the user's", lambda r, t: ["bench", "--quick", "--sections", "a", "--json", _write(t / "notes.txt", "mine")], "exists and is not a bench result"),
    ("bench json and png one file", lambda r, t: ["bench", "--quick", "--sections", "a", "--json", str(t / "x.png"), "--png", str(t / "x.png")], "name the same file"),
]


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_bad_input_gets_a_message_and_status_2(case, run, tmp_path, capsys):
    _, args, message = case
    try:
        status = main(args(run, tmp_path))
    except SystemExit as stop:  # argparse's own refusal: usage and the message, status 2
        status = stop.code
    err = capsys.readouterr().err
    assert status == 2 and message in err and "Traceback" not in err, err


def test_a_file_the_system_refuses_mid_command_is_said_without_a_traceback(monkeypatch, capsys):
    """A disk that fills or a folder whose permissions change while a command writes: the OS's reason and the
    file, status 2, no traceback."""
    import errno

    import onebyone.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/page/index.html")

    monkeypatch.setattr(cli, "_lessons", full)
    assert main(["lessons"]) == 2
    err = capsys.readouterr().err
    assert "onebyone: error: No space left on device: /data/page/index.html" in err and "Traceback" not in err


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


API = [
    ("analyze negative size", lambda: ob.analyze(Tiny(), (3, -8, 8)), "input_size"),
    ("analyze float size", lambda: ob.analyze(Tiny(), (3, 8.5, 8)), "input_size"),
    ("analyze batch -1", lambda: ob.analyze(Tiny(), (3, 8, 8), batch_size=-1), "batch_size must be an integer >= 1"),
    ("analyze not a model", lambda: ob.analyze("model", (3, 8, 8)), "expected a torch.nn.Module or a keras.Model"),
    ("analyze wrong shape", lambda: ob.analyze(Tiny(), (4, 8, 8)), "failed at `conv`"),
    ("linear_to_conv1x1 string", lambda: __import__("onebyone.torch").torch.linear_to_conv1x1("model"), "expected a torch.nn.Module, got str"),
    ("linear_to_conv1x1 wrong size", lambda: __import__("onebyone.torch").torch.linear_to_conv1x1(nn.Linear(4, 2), input_size=(5,)), "cannot run on"),
    ("optimize wrong example", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 5, 8, 8)), "cannot run on"),
    ("optimize training model", lambda: __import__("onebyone.torch").torch.optimize(Tiny(), torch.randn(2, 3, 8, 8)), "eval-mode model"),
    ("conv1x1 ragged list", lambda: ops.conv1x1([[1, 2], [3]], np.ones((2, 2))), "x must be a numeric array"),
    ("conv_cost None", lambda: cost.conv_cost(None, 4, 3), "input_shape must be a tuple of ints"),
    ("conv_cost batch forgotten", lambda: cost.conv_cost((3, 224, 224), 64, 3), "ambiguous"),
    ("conv_cost 2-D kernel on 3 axes", lambda: cost.conv_cost((3, 224, 224), 64, (3, 3)), "did you leave out the batch axis"),
    ("pool2d padding over half", lambda: ops.pool2d(np.ones((1, 1, 6, 6)), 2, padding=3), "at most half the kernel"),
    ("data.load bad keyword", lambda: data.load("digits", colour=True), "does not take"),
    ("data.load bad split", lambda: data.load("digits", "val"), "split must be one of"),
    ("write_report None", lambda: __import__("onebyone.model_page").model_page.write_report(None, "x"), "expected the ModelStats"),
    ("run_tour seed text", lambda: __import__("onebyone.tour").tour.run_tour(seed="x"), "seed must be an integer"),
    ("create_model bad keyword", lambda: __import__("onebyone.zoo").zoo.create_model("nin_digits", bogus=1), "does not take"),
    ("checkpoint missing", lambda: checkpoint.read_json("/nonexistent", "state.json"), "is not a checkpoint folder"),
    ("fold_batchnorm string", lambda: __import__("onebyone.torch").torch.fold_batchnorm("x"), "expected a torch.nn.Module, got str"),
    ("optimize string", lambda: __import__("onebyone.torch").torch.optimize("x"), "expected a torch.nn.Module, got str"),
    ("merge_pointwise wrong example", lambda: __import__("onebyone.torch").torch.merge_pointwise(nn.Sequential(nn.Linear(4, 3)).eval(), example=torch.randn(2, 5)), "cannot run on an input of shape (2, 5)"),
    ("optimize bfloat16 without its pass", lambda: __import__("onebyone.torch").torch.optimize(nn.Sequential(nn.Conv2d(3, 4, 1)).eval(), torch.randn(1, 3, 8, 8), dtype=torch.bfloat16, passes=["fold"]), "dtype=torch.bfloat16 is made by the 'bfloat16' pass, which passes=['fold'] leaves out"),
    ("factorize rank and energy", lambda: __import__("onebyone.torch").torch.factorize(nn.Linear(4, 3), rank=1, energy=0.5), "give exactly one of rank / energy"),
    ("Pointwise zero channels", lambda: __import__("onebyone.torch").torch.Pointwise(0, 3), "in_channels must be an integer >= 1, got 0"),
    ("SharedMLP unknown activation", lambda: __import__("onebyone.torch").torch.SharedMLP((3, 4), activation="swish"), "activation must be one of"),
    ("chain of nothing", lambda: __import__("onebyone.torch").torch.FusedPointwiseChain.from_layers([]), "needs at least one pointwise layer"),
    ("convolutionalize size string", lambda: __import__("onebyone.torch").torch.convolutionalize(nn.Linear(3, 2), "abc"), "input_size must be one sample's shape"),
    ("layout rank 2", lambda: __import__("onebyone.layout").layout.convert(np.zeros((2, 3)), "NCHW", "NHWC"), "rank >= 3"),
    ("converter NaN", lambda: __import__("onebyone.forms").forms.dense_to_conv1x1(np.array([[np.nan]])), "must be finite"),
    ("analyze example list of strings", lambda: ob.analyze(Tiny(), example=["a"]), "example must be a tensor"),
    ("optimize bfloat16 tolerance", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), dtype="bf16"), "dtype must be None"),
    ("optimize compile string", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), compile="yes"), "compile must be True or False, got 'yes'"),
    ("optimize unknown pass", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), passes=["fuse"]), "unknown pass(es) ['fuse']"),
    ("rewrite of a meta model", lambda: __import__("onebyone.torch").torch.fold_batchnorm(Tiny().to("meta").eval(), input_size=(3, 8, 8)), "is on the meta device (conv.weight has a shape but no data)"),
    ("rewrite tol string", lambda: __import__("onebyone.torch").torch.fold_batchnorm(Tiny().eval(), input_size=(3, 8, 8), tol="1e-6"), "tol must be a number >= 0"),
    ("analyze a scripted model", lambda: ob.analyze(torch.jit.script(Tiny().eval()), input_size=(3, 8, 8)), "analyze needs the eager module, got a TorchScript"),
    ("add_costs of nothing", lambda: cost.add_costs([]), "add_costs sums one or more Cost objects, got none"),
    ("attention_cost rank 1", lambda: cost.attention_cost((4,), (4,), (4,)), "attention needs shapes of rank >= 2"),
    ("conv1x1 of a tensor in autograd", lambda: ops.conv1x1(torch.randn(1, 3, 4, 4, requires_grad=True), np.ones((2, 3))), "requires grad; the NumPy ops do not track gradients"),
    ("list_models None", lambda: __import__("onebyone.zoo").zoo.list_models(None), "pattern must be a string"),
    ("write_report into a file", lambda: __import__("onebyone.model_page").model_page.write_report(ob.analyze(Tiny(), input_size=(3, 8, 8)), __file__), "is a file; expected a folder"),
    ("factorize NaN weights", lambda: __import__("onebyone.torch").torch.factorize(_nan_linear(), rank=2), "holds 1 NaN or infinite values"),
    ("read_image of strings", lambda: data.read_image(_saved_npy(np.array(["a", "b"]))), "holds an array of <U1; expected numbers"),
    ("optimize channels_last 0", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), channels_last=0), "channels_last must be None (timed), True or False, got 0"),
    ("optimize channels_last 'no'", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), channels_last="no"), "channels_last must be None (timed), True or False, got 'no'"),
    ("OnnxRuntime float64 model", lambda: _engine("OnnxRuntime", nn.Conv2d(3, 4, 1).double()), "runs float32 and float16 models (the engines' CPU kernels have no float64 convolution)"),
    ("OnnxRuntime sessions 0", lambda: _engine("OnnxRuntime", nn.Conv2d(3, 4, 1), sessions=0), "sessions must be an integer >= 1, got 0"),
    ("OnnxRuntime tol None", lambda: _engine("OnnxRuntime", nn.Conv2d(3, 4, 1), tol=None), "tol must be a number >= 0"),
    ("OnnxRuntime tol a string", lambda: _engine("OnnxRuntime", nn.Conv2d(3, 4, 1), tol="1e-4"), "tol must be a number >= 0"),
    ("Exported itself", lambda: _engine("Exported", nn.Conv2d(3, 4, 1)), "Exported is what the engines share; use one"),
    ("optimize dtype_tol a string", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), dtype=torch.bfloat16, dtype_tol="0.1"), "dtype_tol must be a number >= 0"),
    ("expand_branches seed a string", lambda: __import__("onebyone.torch").torch.expand_branches(nn.Conv2d(4, 4, 3, padding=1), seed="a"), "seed must be an integer >= 0, got 'a'"),
    ("convolutionalize size 8", lambda: __import__("onebyone.torch").torch.convolutionalize(nn.Linear(3, 2), 8), "input_size must be one sample's shape (C, H, W) of integers >= 1, got 8"),
    ("convolutionalize size None", lambda: __import__("onebyone.torch").torch.convolutionalize(nn.Linear(3, 2), None), "got None"),
    ("merge_branches unbatched example", lambda: __import__("onebyone.torch").torch.merge_branches(_PoolBranch().eval(), example=torch.randn(3, 8, 8)), "did you leave out the batch axis"),
    ("convolutionalized model on a small input", lambda: _small_window(), "an input must be at least (8, 8)"),
    ("Pointwise int32 weights", lambda: __import__("onebyone.torch").torch.Pointwise(3, 4, dtype=torch.int32), "dtype must be a floating torch.dtype"),
    ("Pointwise bool input", lambda: __import__("onebyone.torch").torch.Pointwise(3, 4)(torch.ones(1, 3, 2, 2, dtype=torch.bool)), "takes a floating-point tensor, got torch.bool"),
    ("Pointwise loads a 3x3 conv", lambda: __import__("onebyone.torch").torch.Pointwise(3, 4).load_state_dict(nn.Conv2d(3, 4, 3).state_dict()), "loads a weight of shape (4, 3, 1, 1)"),
    ("pointwise (O, C) weight", lambda: __import__("onebyone.torch").torch.pointwise(torch.randn(1, 3, 4, 4), torch.randn(5, 3)), "(an (O, C) matrix: weight[:, :, None, None])"),
    ("pointwise channel mismatch", lambda: __import__("onebyone.torch").torch.pointwise(torch.randn(1, 4, 4, 4), torch.randn(5, 3, 1, 1)), "takes 3 channels on dim 1, got input of shape (1, 4, 4, 4)"),
    ("conv2d padding 10**9", lambda: ops.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), padding=10**9), "PB for one array"),
    ("analyze a huge input from Python", lambda: ob.analyze(nn.Conv2d(3, 4, 1), (3, 10**6, 10**6)), "needs 12 TB for one tensor"),
    ("analyze batch 10**9 from Python", lambda: ob.analyze(nn.Conv2d(3, 4, 1), (3, 8, 8), batch_size=10**9), "needs 768 GB for one tensor"),
    ("shapes3d n_points 10**10", lambda: data.load("shapes3d", n_points=10**10), "shapes3d at n_points=10,000,000,000 needs 384 TB for one array"),
    ("fused() under autograd", lambda: __import__("onebyone.torch").torch.FusedPointwiseChain.from_layers([__import__("onebyone.torch").torch.Pointwise(3, 4)]).fused(torch.randn(1, 3, 2, 2)), "fused() computes no gradients"),
    ("optimize passes a string", lambda: __import__("onebyone.torch").torch.optimize(Tiny().eval(), torch.randn(2, 3, 8, 8), passes="fold"), "passes must be a list of pass names"),
    ("fold_batchnorm of a torch.export module", lambda: __import__("onebyone.torch").torch.fold_batchnorm(_exported(), input_size=(3, 8, 8)), "calls aten ops (aten.conv2d.default...), as the module of a torch.export program does"),
    ("optimize of a torch.export module", lambda: __import__("onebyone.torch").torch.optimize(_exported(), torch.randn(2, 3, 8, 8)), "Rewrite the model before exporting it"),
]


class _WithGraph(Tiny):
    """A model holding a graph of its own (a GNN's adjacency, say): no torch.fx graph, rewritten as any model."""

    def __init__(self):
        super().__init__()
        self.graph = __import__("types").SimpleNamespace(nodes=[1, 2], edges=[(1, 2)])  # as networkx's reads


def test_a_model_with_a_graph_attribute_of_its_own_is_rewritten():
    from onebyone.torch import fold_batchnorm

    model, report = fold_batchnorm(_WithGraph().eval(), input_size=(3, 8, 8))
    assert report.max_abs_diff == 0 and model.graph.edges == [(1, 2)]


def _exported():
    return torch.export.export(Tiny().eval(), (torch.randn(2, 3, 8, 8),)).module()


class _PoolBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.p = nn.Conv2d(3, 3, 3, padding=1), nn.AvgPool2d(3, 1, 1)

    def forward(self, x):
        return self.a(x) + self.p(x)


def _small_window():
    from onebyone.torch import convolutionalize

    dense, _ = convolutionalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)), (1, 8, 8))
    return dense(torch.randn(1, 1, 5, 5))


def _engine(name, model, **kw):
    from onebyone.torch.fast import exported, onnx_runtime

    cls = exported.Exported if name == "Exported" else onnx_runtime.OnnxRuntime
    return cls(model.eval(), **kw)


def _one_class(tmp):
    from PIL import Image

    (tmp / "one" / "only").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp / "one" / "only" / f"{i}.png")
    return tmp / "one"


def _nan_linear():
    lin = nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    return lin


def _saved_npy(array):
    import tempfile

    path = tempfile.mkdtemp() + "/a.npy"
    np.save(path, array)
    return path


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_api_bad_input_raises_a_named_error(case):
    _, call, message = case
    with pytest.raises(OneByOneError) as e:
        call()
    assert message in str(e.value), str(e.value)


CASES = len(CLI) + len(API)


def test_the_readme_states_how_many_bad_inputs_are_tried():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"{CASES} bad inputs" in readme
    json.dumps(CASES)


@pytest.mark.parametrize("args,missing,extra", [
    (["summary", "nin_digits"], "torch", "torch"),
    (["report", "nin_digits", "--html", "r"], "matplotlib", "data"),
    (["train", "nin_digits", "--data", "digits"], "sklearn", "data"),
    (["tour", "--html", "t"], "matplotlib", "data"),
    (["bench", "--quick"], "rich", "torch"),
])
def test_every_command_names_the_extra_it_needs_before_any_work(args, missing, extra, monkeypatch, tmp_path, capsys):
    """A partial install (``pip install onebyone`` or ``onebyone[torch]``): the command stops at once and says
    what to install, never with a raw ModuleNotFoundError."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"needs {missing}" in err and f"pip install 'onebyone[{extra}]'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_report_draws_names_with_dollar_signs_as_text(tmp_path, capsys):
    """Labels drawn from data never go through matplotlib's mathtext: `$x^$` is a machine's name, not an error."""
    bench = bench_json(tmp_path, machine="box $x^$ two", point={"name": "$x^$ 64", "section": "b", "intensity": 2.0,
                                                               "gflops": 3.0})
    assert main(["report", "nin_digits", "--html", str(tmp_path / "page"), "--bench", bench]) == 0
    assert (tmp_path / "page" / "index.html").is_file()


def test_a_refused_model_argument_is_said_without_the_notices_torch_gave_while_building_it(capsys):
    """``--model-arg num_classes=0`` built a head of zero outputs (torch: "Initializing zero-element tensors is a
    no-op") and was then refused: the notice came before the error, as noise. It is said only on success."""
    import warnings

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert main(["summary", "tests.pt.test_bad_inputs:noisy_broken", "--input-size", "3", "8", "8"]) == 2
    assert "to have 4 channels, but got 3" in capsys.readouterr().err
    assert not [w for w in said if "built with a notice" in str(w.message)]
    assert main(["summary", "mobilenet_v1", "--model-arg", "num_classes=0"]) == 2  # (refused before it is built)
    assert "num_classes must be an integer >= 1, got 0 (timm's num_classes=0" in capsys.readouterr().err
    with warnings.catch_warnings(record=True) as said:  # a model that builds and runs: its notices are said
        warnings.simplefilter("always")
        assert main(["summary", "tests.pt.test_bad_inputs:noisy", "--input-size", "3", "8", "8"]) == 0
    assert [str(w.message) for w in said] == ["built with a notice"]


def noisy_broken():
    """A model that says something while it is built, then does not run on the input asked for."""
    import warnings

    warnings.warn("built with a notice", UserWarning, stacklevel=1)
    return nn.Sequential(nn.Conv2d(4, 2, 1))  # (4 channels: not the 3 asked for)


def noisy():
    import warnings

    warnings.warn("built with a notice", UserWarning, stacklevel=1)
    return nn.Sequential(nn.Conv2d(3, 4, 1))
