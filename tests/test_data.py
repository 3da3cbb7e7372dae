import numpy as np
import pytest

from onebyone import OneByOneError, data
from onebyone.data.split import resize_bilinear


def test_digits_split_is_fixed_and_disjoint():
    xtr, ytr = data.load("digits", "train")
    xte, yte = data.load("digits", "test")
    assert xtr.shape == (1438, 1, 8, 8) and xte.shape == (359, 1, 8, 8) and xtr.dtype == np.float32
    assert 0.0 <= xtr.min() and xtr.max() == 1.0 and set(np.unique(ytr)) == set(range(10))
    both = np.concatenate([xtr, xte]).reshape(1797, -1)
    assert len(np.unique(both, axis=0)) == len(np.unique(np.concatenate([xtr, xte]).reshape(1797, -1), axis=0))
    from sklearn.datasets import load_digits

    assert sorted(np.concatenate([ytr, yte]).tolist()) == sorted(load_digits().target.tolist())
    again, _ = data.load("digits", "train")
    assert np.array_equal(again, xtr)


def test_digits_upscaled_to_28_keeps_corners_and_mean():
    x8, _ = data.load("digits", "test")
    x28, _ = data.load("digits", "test", size=28)
    assert x28.shape == (359, 1, 28, 28)
    assert np.allclose(x28[..., 0, 0], x8[..., 0, 0]) and np.allclose(x28[..., -1, -1], x8[..., -1, -1])
    from scipy.ndimage import zoom  # an independent bilinear resize with the same corner-aligned grid

    ref = zoom(x8[:5, 0].astype(np.float64), (1, 28 / 8, 28 / 8), order=1, grid_mode=False)
    assert np.abs(ref - x28[:5, 0]).max() < 1e-5


def test_resize_bilinear_is_exact_on_a_linear_ramp():
    ramp = np.arange(4, dtype=np.float64)[None, None, None, :].repeat(4, axis=2)  # (1, 1, 4, 4), x-ramp
    out = resize_bilinear(ramp, 7)
    assert np.allclose(out[0, 0, 0], np.linspace(0, 3, 7))


def test_shapes3d_is_deterministic_balanced_and_centred():
    x, y = data.load("shapes3d", "test", n_points=256)
    assert x.shape == (8 * 50, 3, 256) and np.bincount(y).tolist() == [50] * 8 and len(data.SHAPES) >= 8
    assert np.abs(x.mean(axis=2)).max() < 1e-5
    x2, y2 = data.load("shapes3d", "test", n_points=256)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    xtr, _ = data.load("shapes3d", "train", n_points=256, per_class=5)
    assert xtr.shape == (40, 3, 256) and not np.array_equal(xtr[:5], x[:5])


def test_user_npz_and_folder(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "set.npz", x=rng.random((20, 1, 4, 4)), y=np.arange(20) % 3)
    x, y = data.load(str(tmp_path / "set.npz"), "train")
    assert x.shape == (16, 1, 4, 4) and y.dtype == np.int64
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray((rng.random((6, 5)) * 255).astype(np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    x, y = data.load(str(tmp_path / "imgs"), "test")
    assert x.shape == (2, 1, 6, 5) and set(y.tolist()) <= {0, 1}


def test_uint8_arrays_read_as_image_files_are(tmp_path):
    """Pixels saved as uint8 arrays train on what the same pixels read from a file give (0..1), so that
    `maps` on an image file feeds a model what it was trained on."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (20, 1, 6, 5), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x=pixels, y=np.arange(20) % 2)
    train_x, _ = data.load(str(tmp_path / "u8.npz"), "train")
    Image.fromarray(pixels[0, 0]).save(tmp_path / "one.png")
    from_file = data.read_image(tmp_path / "one.png", gray=True)
    assert train_x.max() <= 1.0 and train_x.dtype == np.float32
    row = next(i for i in range(len(train_x)) if np.allclose(train_x[i] * 255, pixels[0]))  # the same sample
    np.testing.assert_allclose(train_x[row], from_file, atol=1e-6)
    np.save(tmp_path / "one.npy", pixels[0])
    np.testing.assert_allclose(data.read_image(tmp_path / "one.npy"), from_file, atol=1e-6)
    deep = pixels[0, 0].astype(np.uint16) * 257  # the same picture in 16 bits
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.save(tmp_path / "deep.npy", deep)
    np.testing.assert_allclose(data.read_image(tmp_path / "deep.npy"), data.read_image(tmp_path / "deep.png"),
                               atol=1e-6)
    np.testing.assert_allclose(data.read_image(tmp_path / "deep.npy"), from_file, atol=1e-6)


def test_bad_names_and_paths(tmp_path):
    with pytest.raises(OneByOneError, match=r"unknown dataset 'mnist'; expected one of \('digits', 'shapes3d'\)"):
        data.load("mnist")
    with pytest.raises(OneByOneError, match="dataset path .*nothing.npz does not exist"):
        data.load(str(tmp_path / "nothing.npz"))
    np.savez(tmp_path / "good.npz", x=np.zeros((20, 1, 4, 4)), y=np.arange(20) % 3)
    good = (tmp_path / "good.npz").read_bytes()
    for name, damaged in (("empty", b""), ("cut", good[: len(good) // 2]),
                          ("flipped", good[:200] + bytes([good[200] ^ 0xFF]) + good[201:])):
        (tmp_path / f"{name}.npz").write_bytes(damaged)  # an empty, truncated or corrupted file: named, not raised
        with pytest.raises(OneByOneError, match=rf"{name}.npz is not an .npz archive of arrays 'x' and 'y'"):
            data.load(str(tmp_path / f"{name}.npz"))
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 3)))
    with pytest.raises(OneByOneError, match=r"must hold arrays 'x' and 'y'; missing \['x', 'y'\], found \['images'\]"):
        data.load(str(tmp_path / "bad.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OneByOneError, match="must contain one subfolder of images per class"):
        data.load(str(tmp_path / "empty"))
    with pytest.raises(OneByOneError, match="split must be one of"):
        data.load("digits", "valid")
    with pytest.raises(OneByOneError, match="size must be one of"):
        data.load("digits", size=16)


def test_a_16_bit_png_is_scaled_by_its_depth(tmp_path):
    from PIL import Image

    from onebyone.data import read_image

    Image.fromarray(np.full((4, 5), 40000, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.full((4, 5), 153, np.uint8)).save(tmp_path / "byte.png")
    deep = read_image(tmp_path / "deep.png")
    assert deep.shape == (1, 4, 5) and np.allclose(deep, 40000 / 65535)  # 0.61, not 1.0
    assert np.allclose(read_image(tmp_path / "byte.png", gray=True), 153 / 255)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 9, 100])
def test_every_split_of_a_user_dataset_has_a_sample(tmp_path, n):
    from onebyone.data.split import split_indices

    train, test = split_indices(n, "train"), split_indices(n, "test")
    assert len(train) >= 1 and len(test) >= 1 and sorted([*train, *test]) == list(range(n))
    np.savez(tmp_path / "small.npz", x=np.random.default_rng(0).random((n, 1, 8, 8)), y=np.arange(n) % 2)
    from onebyone import data

    assert len(data.load(str(tmp_path / "small.npz"), "test")[0]) == len(test)


def test_a_folder_dataset_skips_hidden_folders_and_needs_two_classes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", ".ipynb_checkpoints"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray((rng.random((6, 5)) * 255).astype(np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    with pytest.raises(OneByOneError, match=r"at least two classes; found 1 \(cat\)"):
        data.load(str(tmp_path / "imgs"), "train")
    (tmp_path / "imgs" / "dog").mkdir()
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "imgs" / "dog" / "0.png")
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(tmp_path / "imgs" / "dog" / "1.png")
    x, y = data.load(str(tmp_path / "imgs"), "train")
    assert set(y.tolist()) <= {0, 1} and data.class_names(str(tmp_path / "imgs"), 2) == ["cat", "dog"]


def test_a_folder_of_colour_images_keeps_its_colour_and_a_gray_one_stays_one_channel(tmp_path):
    """Every folder was read in gray (PIL's luminance): red and blue classes differed only by brightness, and no
    3-channel model could train on a folder. Now colour stays three channels; pictures that are gray (one
    channel, or RGB with three equal channels) stay one; a gray image among colour ones is repeated."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, channel in (("red", 0), ("blue", 2)):
        (tmp_path / "rgb" / cls).mkdir(parents=True)
        for i in range(4):
            a = np.zeros((6, 5, 3), np.uint8)
            a[..., channel] = rng.integers(100, 256, (6, 5))
            Image.fromarray(a).save(tmp_path / "rgb" / cls / f"{i}.png")
    g = (rng.random((6, 5)) * 255).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "rgb" / "red" / "gray.png")  # a gray one among them
    (x, y), (xt, yt) = (data.load(str(tmp_path / "rgb"), split) for split in ("train", "test"))
    x, y = np.concatenate([x, xt]), np.concatenate([y, yt])
    assert x.shape == (9, 3, 6, 5)
    red = x[y == 1]  # (classes in sorted order: blue 0, red 1)
    gray = np.array([np.array_equal(im[0], im[1]) and np.array_equal(im[1], im[2]) for im in red])
    assert (red[~gray][:, 2] == 0).all() and (red[~gray][:, 0] > 0).all()  # the red pictures hold no blue
    assert gray.sum() == 1 and np.allclose(red[gray][0, 0] * 255, g)
    for cls in ("a", "b"):  # gray pictures saved as RGB: one channel, as before
        (tmp_path / "grayrgb" / cls).mkdir(parents=True)
        for i in range(4):
            v = (rng.random((6, 5)) * 255).astype(np.uint8)
            Image.fromarray(np.stack([v, v, v], -1)).save(tmp_path / "grayrgb" / cls / f"{i}.png")
    assert data.load(str(tmp_path / "grayrgb"), "train")[0].shape[1:] == (1, 6, 5)


def test_files_a_folder_leaves_out_are_named_and_tiff_and_webp_are_read(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i, suffix in enumerate((".png", ".tif", ".webp")):
            Image.fromarray(np.full((4, 4), 40 * i + 10, np.uint8)).save(tmp_path / "d" / cls / f"{i}{suffix}")
    (tmp_path / "d" / "a" / "notes.txt").write_text("mine")
    (tmp_path / "d" / "a" / ".DS_Store").write_text("")
    with pytest.warns(UserWarning, match=r"1 file\(s\) that are not images .* were left out: a/notes.txt$"):
        x, y = data.load(str(tmp_path / "d"), "train")
    xt, _ = data.load(str(tmp_path / "d"), "test")
    assert len(x) + len(xt) == 6


def test_a_float_tiff_is_read_as_its_values(tmp_path):
    """32-bit float pixels went through PIL's 8-bit conversion: values in [0, 1] came back as 0 or 1/255."""
    from PIL import Image

    a = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(data.read_image(tmp_path / "f.tif"), a[None])
