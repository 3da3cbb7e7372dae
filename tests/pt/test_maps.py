"""Class maps and the canvas: the maps average to the logits, the slid classifier equals cropping, the PNGs
get written."""

import re

import numpy as np
import pytest
import torch
from torch import nn

from onebyone import OneByOneError
from onebyone.cli import main
from onebyone.data import compose_canvas
from onebyone.plots import detections
from onebyone.runs import draw_run_maps
from onebyone.torch import Pointwise
from onebyone.torch.maps import canvas_scores, class_maps, draw_maps
from onebyone.train import TrainConfig, load_checkpoint, train
from onebyone.zoo import create_model


def unpadded(head: str) -> nn.Module:
    """A trunk with no padding (so a slid window equals its crop) and a GAP or a Flatten -> Linear head."""
    torch.manual_seed(0)
    trunk = [nn.Conv2d(1, 6, 3), nn.ReLU(), nn.MaxPool2d(2)]  # 10x10 -> 8x8 -> 4x4, total stride 2
    if head == "gap":
        return nn.Sequential(*trunk, Pointwise(6, 5), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    return nn.Sequential(*trunk, nn.Flatten(), nn.Linear(6 * 16, 12), nn.ReLU(), nn.Linear(12, 5)).eval()


def test_class_maps_average_to_the_logits():
    model = create_model("nin_digits").eval()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = class_maps(model, x)
    assert maps.shape == (3, 10, 4, 4)
    torch.testing.assert_close(maps.mean((2, 3)), model(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", ["gap", "linear"])
def test_canvas_scores_equal_the_classifier_on_every_crop(head):
    model = unpadded(head)
    canvas = torch.randn(2, 1, 22, 18, generator=torch.Generator().manual_seed(1))
    scores, stride = canvas_scores(model, canvas, (1, 10, 10))
    assert stride == (2, 2) and scores.shape == (2, 5, (22 - 10) // 2 + 1, (18 - 10) // 2 + 1)
    with torch.no_grad():
        for i in range(scores.shape[2]):
            for j in range(scores.shape[3]):
                crop = canvas[:, :, 2 * i:2 * i + 10, 2 * j:2 * j + 10]
                torch.testing.assert_close(scores[:, :, i, j], model(crop).reshape(2, 5), rtol=1e-5, atol=1e-5)


def test_maps_need_a_1x1_head_and_a_canvas_big_enough():
    with pytest.raises(OneByOneError, match="no head of a 1x1 conv"):
        class_maps(unpadded("linear"), torch.zeros(1, 1, 10, 10))
    with pytest.raises(OneByOneError, match=r"\(B, 1, H >= 10, W >= 10\).*\(1, 1, 8, 30\)"):
        canvas_scores(unpadded("gap"), torch.zeros(1, 1, 8, 30), (1, 10, 10))


def test_detections_find_the_objects_and_skip_empty_windows():
    canvas = compose_canvas([np.ones((1, 4, 4)), np.ones((1, 4, 4))], grid=2, seed=0)  # (1, 14, 14), gap 2
    gh = gw = (14 - 4) // 2 + 1
    probs = np.zeros((3, gh, gw))
    probs[1] = 0.95  # the classifier says "1" everywhere, empty windows included
    probs[0] = 0.05
    found = detections(canvas, probs, (2, 2), (4, 4))
    ink = [(t, x) for t in range(0, 11, 2) for x in range(0, 11, 2) if canvas[0, t:t + 4, x:x + 4].sum() == 16]
    assert sorted((t, x) for _, _, t, x in found) == sorted(ink) and len(found) == 2
    assert all(c == 1 and p == pytest.approx(0.95) for c, p, _, _ in found)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("nin")
    train(TrainConfig("nin_digits", "digits", epochs=2, lr=1e-2), out=out, progress=False)
    return out


def is_png(path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and im.size[0] > 200 and im.size[1] > 100


def test_cli_maps_and_canvas_write_pngs(checkpoint, tmp_path, capsys):
    assert main(["maps", str(checkpoint), "test:0", "--out", str(tmp_path / "m.png")]) == 0
    assert "predicted" in capsys.readouterr().out and is_png(tmp_path / "m.png")
    assert main(["maps", str(checkpoint), "test:0,1,2", "--canvas", "--out", str(tmp_path / "c.png")]) == 0
    assert "17x17 windows of 8x8" in capsys.readouterr().out and is_png(tmp_path / "c.png")
    from PIL import Image

    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "digit.png")
    assert main(["maps", str(checkpoint), str(tmp_path / "digit.png"), "--out", str(tmp_path / "f.png")]) == 0
    assert is_png(tmp_path / "f.png")


def test_cli_maps_bad_images(checkpoint, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.array([200, 0, 0], np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "small.png")
    cases = [(["rgb.png"], r"takes 1-channel images \(1x8x8\); .* has 3 channel"),
             (["big.png"], "takes one 1x8x8 image .* 1x10x12 .*--canvas"),
             (["small.png", "--canvas"], "at least 1x8x8; .* is 1x5x5"),
             (["missing.png"], "does not exist"),
             (["test:99999"], r"test indices must be in \[0, 359\)")]
    for args, message in cases:
        path = args[0] if args[0].startswith("test:") else str(tmp_path / args[0])
        assert main(["maps", str(checkpoint), path, *args[1:], "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err), args
        with pytest.raises(OneByOneError) as python:  # the same refusal, word for word, from Python
            draw_run_maps(checkpoint, path, tmp_path / "x.png", canvas="--canvas" in args)
        assert err.strip() == f"onebyone: error: {python.value}"
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(OneByOneError, match="NaN or infinite"):  # draw_maps itself checks what it draws
        draw_maps(load_checkpoint(checkpoint)[0], np.full((1, 8, 8), np.nan), tmp_path / "x.png")


def test_maps_names_a_class_folder_removed_since_training(tmp_path, capsys):
    import shutil

    from onebyone.cli import main

    run = gray_folder_run(tmp_path / "imgs", ("cats", "dogs"), 3, tmp_path / "run")
    shutil.rmtree(tmp_path / "imgs" / "dogs")
    assert main(["maps", str(run), str(tmp_path / "imgs" / "cats" / "0.png"), "--out", str(tmp_path / "m.png")]) == 2
    assert "at least two classes; found 1 (cats)" in capsys.readouterr().err


def test_maps_and_resume_keep_the_classes_the_run_was_trained_on(tmp_path, capsys):
    """A class folder renamed after training: maps names the classes as trained (the checkpoint holds them, in
    label order), and --resume, whose labels would now be swapped, is refused with both lists."""
    import numpy as np
    from PIL import Image

    from onebyone import checkpoint
    from onebyone.cli import main

    rng = np.random.default_rng(0)
    for c, level in (("a_zero", 0.1), ("b_one", 0.9)):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            img = np.clip(level + rng.normal(0, 0.05, (8, 8)), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / ".ipynb_checkpoints").mkdir()  # hidden: never a class
    run = tmp_path / "run"
    assert main(["train", "nin_digits", "--data", str(tmp_path / "imgs"), "--epochs", "2", "--out", str(run),
                 "--quiet", "--lr", "0.01"]) == 0
    assert checkpoint.read_json(run, "config.json")["classes"] == ["a_zero", "b_one"]
    (tmp_path / "imgs" / "a_zero").rename(tmp_path / "imgs" / "z_zero")
    capsys.readouterr()
    assert main(["maps", str(run), str(tmp_path / "imgs" / "z_zero" / "0.png"), "--out", str(tmp_path / "m.png")]) == 0
    said = capsys.readouterr().out
    assert "predicted a_zero" in said or "predicted b_one" in said  # the trained names, never z_zero
    assert main(["train", "nin_digits", "--resume", "--epochs", "3", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "now holds the classes ['b_one', 'z_zero'], but the run was trained on ['a_zero', 'b_one']" in err


@pytest.mark.parametrize("name,stride", [("squeezenet1_0", 16), ("squeezenet1_1", 16)])
def test_the_stride_is_measured_not_divided(name, stride):
    """SqueezeNet's total stride is 16 (a stride-2 conv and three stride-2 pools); its ceil-mode pools make a
    224-pixel window give a 13-cell map, and 224 // 13 = 17 was reported: every column drifted a pixel more."""
    model = create_model(name, num_classes=4).eval()
    _, got = canvas_scores(model, torch.zeros(1, 3, 256, 240), (3, 224, 224))
    assert got == (stride, stride)


def test_a_pooled_linear_head_has_no_class_maps_of_its_own_and_its_canvas_has_one_per_class():
    """GAP -> Flatten -> Linear after a 1x1 conv: the pool's input is features, not one map per class (they
    were returned as class maps: 256 of them for 10 classes); the canvas goes through convolutionalize."""
    model = create_model("mobilenet_v1", num_classes=10, alpha=0.25).eval()
    with pytest.raises(OneByOneError, match="no head of a 1x1 conv"):
        class_maps(model, torch.zeros(1, 3, 64, 64))
    scores, _ = canvas_scores(model, torch.randn(1, 3, 96, 96), (3, 64, 64))
    assert scores.shape[:2] == (1, 10)


def test_class_maps_run_a_training_model_in_eval_mode_and_leave_it_as_it_was():
    model = create_model("nin_digits")  # training mode, as a user may hold it
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    maps = class_maps(model, x)
    assert model.training and all(torch.equal(stats[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(maps, class_maps(model.eval(), x))


def test_a_run_on_a_folder_draws_maps_of_its_own_images_and_colour_is_named(tmp_path, capsys):
    """Gray digits saved as RGB PNGs: training read them in gray, `maps` in colour and refused its own
    training image ('takes 1-channel images; has 3'). A colour folder for a 1-channel model is named as such."""
    from PIL import Image

    from onebyone.data import load

    x, y = load("digits", "test")
    for cls in range(3):
        (tmp_path / "d" / str(cls)).mkdir(parents=True)
        for i, img in enumerate(x[y == cls][:6]):
            v = (img[0] * 255).astype(np.uint8)
            Image.fromarray(np.stack([v, v, v], -1)).save(tmp_path / "d" / str(cls) / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "nin_digits", "--data", str(tmp_path / "d"), "--epochs", "1", "--out", str(run),
                 "--quiet"]) == 0
    path, said = draw_run_maps(run, str(tmp_path / "d" / "1" / "0.png"), tmp_path / "m.png")
    assert path.is_file() and said.startswith("predicted ")
    for i in range(6):  # one class in colour
        Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.array([200, 0, 0], np.uint8)).save(
            tmp_path / "d" / "2" / f"{i}.png")
    assert main(["train", "nin_digits", "--data", str(tmp_path / "d"), "--epochs", "1", "--out",
                 str(tmp_path / "run2"), "--quiet"]) == 2
    assert "gives (3, 8, 8): its images are in colour; use a model of 3 input channels" in capsys.readouterr().err


def test_maps_take_the_models_channels_not_the_datas(tmp_path, capsys):
    """A 1-channel run whose folder now reads in colour (a run from before colour was kept, or a colour picture
    added since): `maps test:0` crashed inside torch ('expected input ... to have 1 channels'); it is refused
    by name, and a gray picture of the folder still draws."""
    from PIL import Image

    run, rng = gray_folder_run(tmp_path / "d", ("a", "b"), 8, tmp_path / "run"), np.random.default_rng(1)
    for i in range(8):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "d" / "a" / f"c{i}.png")
    from onebyone.data import load

    xte, _ = load(str(tmp_path / "d"), "test")
    i = next(i for i, im in enumerate(xte) if not np.array_equal(im[0], im[1]))  # a colour one
    with pytest.raises(OneByOneError, match=rf"nin_digits takes 1-channel images \(1x8x8\); test:{i} has 3 channel"):
        draw_run_maps(run, f"test:{i}", tmp_path / "m.png")
    path, _ = draw_run_maps(run, str(tmp_path / "d" / "b" / "0.png"), tmp_path / "m.png")
    assert path.is_file()


def gray_folder_run(folder, classes, n: int, run):
    """A one-epoch nin_digits run on a folder of ``n`` random gray 8x8 PNGs per class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / c / f"{i}.png")
    assert main(["train", "nin_digits", "--data", str(folder), "--epochs", "1", "--out", str(run), "--quiet"]) == 0
    return run
