"""Tests of skanomaly.datasets: synthetic defects, splits and loaders."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from skanomaly.datasets import (
    DEFECT_KINDS,
    load_fashion_mnist,
    load_image_folder,
    load_mvtec_ad,
    make_defects,
    make_texture_defects,
    one_class_split,
    read_images,
)


def _texture(n=6, size=32, channels=None, seed=0):
    """Smooth random texture in [0.2, 0.8] (float64)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    noise = rng.normal(size=shape)
    sigma = (0, 1.5, 1.5) if channels is None else (0, 1.5, 1.5, 0)
    smooth = ndimage.gaussian_filter(noise, sigma)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    return 0.2 + 0.6 * smooth


# ----------------------------------------------------------------- make_defects


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("layout", ["gray", "gray1", "rgb"])
def test_make_defects_changes_only_inside_mask(kind, layout):
    channels = {"gray": None, "gray1": 1, "rgb": 3}[layout]
    X = _texture(n=8, size=48, channels=channels)
    X_u8 = np.rint(X * 255).astype(np.uint8)
    for images in (X, X.astype(np.float32), X_u8):
        bad, masks = make_defects(images, kinds=kind, random_state=3)
        assert bad.shape == images.shape and bad.dtype == images.dtype
        assert masks.shape == images.shape[:3] and masks.dtype == bool
        # Every image received a defect, and it covers a small part of it.
        assert masks.any(axis=(1, 2)).all()
        assert masks.mean() < 0.25
        # Bit-identical outside the mask.
        assert np.array_equal(bad[~masks], images[~masks])
        # Visible inside: most footprint pixels changed, by a clear amount.
        diff = np.abs(bad.astype(np.float64) - images.astype(np.float64))
        if images.dtype == np.uint8:
            diff /= 255.0
        if diff.ndim == 4:
            diff = diff.max(axis=-1)
        assert (diff[masks] > 0).mean() > 0.7
        assert diff[masks].mean() > 0.03


def test_make_defects_is_reproducible_and_seed_dependent():
    X = _texture(n=4)
    a, ma = make_defects(X, random_state=0)
    b, mb = make_defects(X, random_state=0)
    c, mc = make_defects(X, random_state=1)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(ma, mc)
    # The input is not modified.
    assert np.array_equal(X, _texture(n=4))


def test_make_defects_size_range_controls_extent():
    X = _texture(n=20, size=64)
    _, small = make_defects(X, kinds="stain", size_range=(0.08, 0.1), random_state=0)
    _, large = make_defects(X, kinds="stain", size_range=(0.4, 0.45), random_state=0)
    assert large.sum(axis=(1, 2)).min() > small.sum(axis=(1, 2)).max()


def test_make_defects_n_defects_range_and_flat_images():
    # Flat images: each kind must still change pixels (brightness-aware).
    for level in (0.0, 0.5, 1.0):
        X = np.full((5, 32, 32), level)
        bad, masks = make_defects(X, n_defects=(2, 3), random_state=0)
        assert masks.any(axis=(1, 2)).all()
        assert np.array_equal(bad[~masks], X[~masks])
        assert np.abs(bad - X)[masks].mean() > 0.05
    # More defects cover more area on average.
    X = _texture(n=30)
    _, one = make_defects(X, kinds="stain", n_defects=1, random_state=0)
    _, four = make_defects(X, kinds="stain", n_defects=4, random_state=0)
    assert four.sum() > 2 * one.sum()


def test_make_defects_patch_uses_foreign_content():
    # Two images of different flat levels: a patch copied from the other image
    # brings its level; one copied from the same image gets an offset.
    X = np.stack([np.full((32, 32), 0.2), np.full((32, 32), 0.8)])
    bad, masks = make_defects(X, kinds="patch", random_state=0)
    for i in range(2):
        inside = bad[i][masks[i]]
        assert np.abs(inside - X[i, 0, 0]).mean() > 0.1


def test_make_defects_tiny_images_and_lists():
    X = [np.full((8, 8, 3), 128, dtype=np.uint8) for _ in range(3)]
    bad, masks = make_defects(X, random_state=0)
    assert isinstance(bad, np.ndarray) and bad.shape == (3, 8, 8, 3)
    assert masks.any(axis=(1, 2)).all()


@pytest.mark.parametrize(
    "images, kwargs, error, match",
    [
        (np.zeros((2, 8, 8, 2)), {}, ValueError, "1 or 3 channels"),
        (np.zeros((8, 8)), {}, ValueError, "ndim"),
        (np.full((2, 8, 8), 2.0), {}, ValueError, r"\[0, 1\]"),
        (np.full((2, 8, 8), np.nan), {}, ValueError, "NaN"),
        (np.zeros((2, 8, 8), dtype=np.int32), {}, TypeError, "uint8"),
        (np.zeros((0, 8, 8)), {}, ValueError, "empty"),
        (np.zeros((2, 8, 8)), {"kinds": ["dent"]}, ValueError, "dent"),
        (np.zeros((2, 8, 8)), {"kinds": []}, ValueError, "at least one"),
        (np.zeros((2, 8, 8)), {"n_defects": 0}, ValueError, "n_defects"),
        (np.zeros((2, 8, 8)), {"size_range": (0.3, 0.1)}, ValueError, "size_range"),
        ([np.zeros((8, 8)), np.zeros((9, 9))], {}, ValueError, "same shape"),
    ],
)
def test_make_defects_rejects_bad_input(images, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_defects(images, **kwargs)


def test_make_texture_defects():
    data = make_texture_defects(
        "brick", n_train=5, n_test=10, image_size=32, defect_ratio=0.3, random_state=0
    )
    assert data.X_train.shape == (5, 32, 32) and data.X_train.dtype == np.uint8
    assert data.X_test.shape == (10, 32, 32)
    assert data.y_test.sum() == 3
    assert np.array_equal(data.masks_test.any(axis=(1, 2)), data.y_test == 1)
    again = make_texture_defects(
        "brick", n_train=5, n_test=10, image_size=32, defect_ratio=0.3, random_state=0
    )
    assert np.array_equal(again.X_test, data.X_test)
    with pytest.raises(ValueError, match="too large"):
        make_texture_defects("brick", image_size=300)


def test_make_texture_defects_records_the_kinds_planted():
    data = make_texture_defects("gravel", n_train=2, n_test=24, image_size=32,
                                n_defects=(1, 2), random_state=1)
    assert len(data.kinds_test) == 24
    for y, kinds in zip(data.y_test, data.kinds_test):
        assert (len(kinds) > 0) == bool(y)
        assert set(kinds) <= set(DEFECT_KINDS) and len(kinds) <= 2
    assert {len(k) for k in data.kinds_test} == {0, 1, 2}
    # A single kind asked for: that kind, and the defects make_defects paints.
    only = make_texture_defects("gravel", n_train=2, n_test=8, image_size=32,
                                kinds="smear", random_state=1)
    assert {k for k in only.kinds_test if k} == {("smear",)}
    bad = only.y_test == 1
    clean = make_texture_defects("gravel", n_train=2, n_test=8, image_size=32,
                                 defect_ratio=0.0, random_state=1)
    assert np.array_equal(clean.X_test[~bad], only.X_test[~bad])


# -------------------------------------------------------------- one_class_split


def test_one_class_split():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 25)
    X = np.arange(100)[:, None, None] * np.ones((1, 3, 3))
    X_train, X_test, y_test = one_class_split(X, y, 2, train_size=0.8, random_state=0)
    assert X_train.shape == (20, 3, 3) and X_test.shape == (80, 3, 3)
    train_ids = X_train[:, 0, 0].astype(int)
    test_ids = X_test[:, 0, 0].astype(int)
    assert np.all(y[train_ids] == 2)
    assert set(train_ids).isdisjoint(test_ids)
    assert np.array_equal(np.sort(np.r_[train_ids, test_ids]), np.arange(100))
    assert np.array_equal(y_test, (y[test_ids] != 2).astype(int))
    assert y_test.sum() == 75
    # int train_size, several normal classes, determinism
    a = one_class_split(X, y, [0, 1], train_size=10, random_state=rng.integers(100))
    assert a[0].shape[0] == 10 and a[2].sum() == 50 and (a[2] == 0).sum() == 40
    b1 = one_class_split(X, y, 3, random_state=5)
    b2 = one_class_split(X, y, 3, random_state=5)
    assert all(np.array_equal(u, v) for u, v in zip(b1, b2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"normal_class": 9}, "does not occur"),
        ({"normal_class": 0, "train_size": 1.0}, r"\(0, 1\)"),
        ({"normal_class": 0, "train_size": 25}, "one is kept"),
    ],
)
def test_one_class_split_errors(kwargs, match):
    y = np.repeat(np.arange(4), 25)
    with pytest.raises(ValueError, match=match):
        one_class_split(np.zeros((100, 2)), y, **kwargs)


# ------------------------------------------------------------------ Fashion


def _write_idx(path, array, compress):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [True, False])
def test_load_fashion_mnist(tmp_path, compress):
    rng = np.random.default_rng(0)
    sets = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        suffix = ".gz" if compress else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", X, compress)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", y, compress)
        sets[prefix] = (X, y)
    X, y = load_fashion_mnist(tmp_path, subset="train")
    assert X.dtype == np.uint8 and X.shape == (7, 28, 28) and y.dtype == np.int64
    assert np.array_equal(X, sets["train"][0]) and np.array_equal(y, sets["train"][1])
    X, y = load_fashion_mnist(tmp_path, subset="test")
    assert np.array_equal(X, sets["t10k"][0])
    X, y = load_fashion_mnist(tmp_path, subset="all")
    assert X.shape == (10, 28, 28)
    assert np.array_equal(y, np.r_[sets["train"][1], sets["t10k"][1]])


def test_load_fashion_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, np.uint8), False)
    with pytest.raises(ValueError, match="magic"):
        load_fashion_mnist(tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), False)
    with pytest.raises(ValueError, match="disagree"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="subset"):
        load_fashion_mnist(tmp_path, subset="val")


# ---------------------------------------------------------- MVTec and folders


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _mvtec_tree(root, rgb=True):
    rng = np.random.default_rng(0)
    shape = (20, 24, 3) if rgb else (20, 24)
    cat = root / "widget"
    for i in range(3):
        _save(cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 256, shape, np.uint8))
    for i in range(2):
        _save(cat / "test" / "good" / f"{i:03d}.png", rng.integers(0, 256, shape, np.uint8))
    masks = {}
    for defect in ("crack", "hole"):
        for i in range(2):
            _save(cat / "test" / defect / f"{i:03d}.png", rng.integers(0, 256, shape, np.uint8))
            mask = np.zeros((20, 24), np.uint8)
            mask[2 + i : 8 + i, 3:9 + 2 * i] = 255
            _save(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
            masks[(defect, i)] = mask > 0
    return masks


@pytest.mark.parametrize("rgb", [True, False])
def test_load_mvtec_ad(tmp_path, rgb):
    masks = _mvtec_tree(tmp_path, rgb=rgb)
    data = load_mvtec_ad(tmp_path, "widget")
    tail = (3,) if rgb else ()
    assert data.X_train.shape == (3, 20, 24) + tail and data.X_train.dtype == np.uint8
    assert data.X_test.shape == (6, 20, 24) + tail
    assert list(data.defect_types) == ["crack", "crack", "good", "good", "hole", "hole"]
    assert data.y_test.tolist() == [1, 1, 0, 0, 1, 1]
    assert not data.masks_test[data.y_test == 0].any()
    assert np.array_equal(data.masks_test[0], masks[("crack", 0)])
    assert np.array_equal(data.masks_test[5], masks[("hole", 1)])
    # Pixel values are read exactly.
    first = np.asarray(Image.open(data.paths_test[2]))
    assert np.array_equal(data.X_test[2], first)
    small = load_mvtec_ad(tmp_path, "widget", image_size=(10, 12), color="rgb")
    assert small.X_train.shape == (3, 10, 12, 3) and small.masks_test.shape == (6, 10, 12)
    assert small.masks_test[0].sum() == pytest.approx(masks[("crack", 0)].sum() / 4, rel=0.3)


def test_load_mvtec_ad_errors(tmp_path):
    _mvtec_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="available: \\['widget'\\]"):
        load_mvtec_ad(tmp_path, "bottle")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mvtec_ad(tmp_path / "missing", "widget")
    mask_file = tmp_path / "widget" / "ground_truth" / "hole" / "001_mask.png"
    mask_bytes = mask_file.read_bytes()
    mask_file.unlink()
    with pytest.raises(FileNotFoundError, match="001_mask.png"):
        load_mvtec_ad(tmp_path, "widget")
    mask_file.write_bytes(mask_bytes)
    (tmp_path / "widget" / "test" / "hole" / "001.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="Cannot read image"):
        load_mvtec_ad(tmp_path, "widget")


def test_load_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _save(tmp_path / "good" / f"g{i}.png", rng.integers(0, 256, (16, 16), np.uint8))
    (tmp_path / "good" / "notes.txt").write_text("not an image")
    for i in range(2):
        _save(tmp_path / "bad" / f"b{i}.jpg", rng.integers(0, 256, (16, 16), np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[4:9, 4:9] = 255
    _save(tmp_path / "masks" / "b1_mask.png", mask)
    data = load_image_folder(tmp_path / "good")
    assert data.X.shape == (3, 16, 16) and len(data.paths) == 3
    data = load_image_folder(
        tmp_path / "good", tmp_path / "bad", path_masks=tmp_path / "masks", image_size=8
    )
    assert data.X.shape == (3, 8, 8) and data.X_defective.shape == (2, 8, 8)
    assert not data.masks_defective[0].any()
    assert data.masks_defective[1].sum() == pytest.approx(25 / 4, abs=3)
    # Mixed colour: an RGB file makes everything RGB.
    _save(tmp_path / "bad" / "b2.png", rng.integers(0, 256, (16, 16, 3), np.uint8))
    data = load_image_folder(tmp_path / "good", tmp_path / "bad")
    assert data.X.shape == (3, 16, 16, 3) and data.X_defective.shape == (3, 16, 16, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No image files"):
        load_image_folder(tmp_path / "empty")
    _save(tmp_path / "mixed" / "a.png", np.zeros((8, 8), np.uint8))
    _save(tmp_path / "mixed" / "b.png", np.zeros((9, 8), np.uint8))
    with pytest.raises(ValueError, match="different sizes"):
        load_image_folder(tmp_path / "mixed")
    assert load_image_folder(tmp_path / "mixed", image_size=(4, 5)).X.shape == (2, 4, 5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="Cannot read image"):
        read_images([tmp_path / "broken.png"])
    with pytest.raises(FileNotFoundError):
        read_images([tmp_path / "absent.png"])


def test_image_listing_is_shared_with_the_cli(tmp_path):
    from skanomaly.cli import _collect_paths
    from skanomaly.datasets._io import list_image_files

    for name in ("b.PNG", "a.jpg", "c.tiff", "notes.txt", "d.png.bak"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()  # a folder with an image's extension
    expected = [tmp_path / "a.jpg", tmp_path / "b.PNG", tmp_path / "c.tiff"]
    assert list_image_files(tmp_path) == expected
    assert list_image_files(str(tmp_path)) == expected
    assert _collect_paths([str(tmp_path)]) == expected
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_image_files(tmp_path / "absent")


# -------------------------------------------------- masks, hidden files, bombs


def _mask_file(path, encoding):
    """Write a 16x16 mask with a 4x4 defect at [4:8, 4:8] in one encoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding == "rgb_red":
        mask = np.zeros((16, 16, 3), np.uint8)
        mask[4:8, 4:8] = (255, 0, 0)
        Image.fromarray(mask).save(path)
        return
    if encoding == "rgba_transparent":
        mask = np.zeros((16, 16, 4), np.uint8)
        mask[..., :3] = 255  # transparent white background: not a defect
        mask[4:8, 4:8] = (0, 0, 255, 255)
        Image.fromarray(mask).save(path)
        return
    if encoding == "palette":
        im = Image.new("P", (16, 16), 0)
        im.putpalette([255, 255, 255, 0, 0, 0, 0, 200, 0])  # index 0 is white
        index = np.ones((16, 16), np.uint8)  # black background
        index[4:8, 4:8] = 2
        im.putdata(index.ravel().tolist())
        im.save(path)
        return
    top, dtype = {"0/1": (1, np.uint8), "0/255": (255, np.uint8),
                  "16bit": (65535, np.uint16), "bilevel": (255, np.uint8)}[encoding]
    mask = np.zeros((16, 16), dtype)
    mask[4:8, 4:8] = top
    im = Image.fromarray(mask)
    (im.convert("1") if encoding == "bilevel" else im).save(path)


@pytest.mark.parametrize(
    "encoding", ["0/1", "0/255", "rgb_red", "16bit", "bilevel", "palette", "rgba_transparent"]
)
def test_masks_non_zero_in_any_channel_is_a_defect(tmp_path, encoding):
    expected = np.zeros((16, 16), bool)
    expected[4:8, 4:8] = True
    cat = tmp_path / "mvtec" / "widget"
    img = np.full((16, 16), 128, np.uint8)
    for part in ("train/good", "test/good", "test/crack"):
        _save(cat / part / "000.png", img)
    _mask_file(cat / "ground_truth" / "crack" / "000_mask.png", encoding)
    data = load_mvtec_ad(tmp_path / "mvtec", "widget")
    assert np.array_equal(data.masks_test[data.y_test == 1][0], expected)
    assert not data.masks_test[data.y_test == 0].any()
    _save(tmp_path / "good" / "g.png", img)
    _save(tmp_path / "bad" / "b.png", img)
    _mask_file(tmp_path / "masks" / "b_mask.png", encoding)
    data = load_image_folder(tmp_path / "good", tmp_path / "bad", path_masks=tmp_path / "masks")
    assert np.array_equal(data.masks_defective[0], expected)
    # Resized on request, along with the images.
    data = load_image_folder(
        tmp_path / "good", tmp_path / "bad", path_masks=tmp_path / "masks", image_size=8
    )
    assert np.array_equal(data.masks_defective[0], expected[::2, ::2])


def test_masks_in_a_colour_mode_without_black_zero_are_refused(tmp_path):
    from skanomaly.datasets._io import read_masks

    Image.new("CMYK", (16, 16), (0, 0, 0, 0)).save(tmp_path / "m.jpg")
    with pytest.raises(ValueError, match=r"m\.jpg has colour mode CMYK.*grey or RGB"):
        read_masks([tmp_path / "m.jpg"], (16, 16))


def test_masks_of_another_size_need_image_size(tmp_path):
    img = np.full((16, 16), 128, np.uint8)
    big = np.zeros((40, 40), np.uint8)
    big[0:20, 0:20] = 255
    cat = tmp_path / "mvtec" / "widget"
    for part in ("train/good", "test/good", "test/crack"):
        _save(cat / part / "000.png", img)
    _save(cat / "ground_truth" / "crack" / "000_mask.png", big)
    message = r"000_mask\.png is 40x40 pixels.*image is 16x16.*pass image_size"
    with pytest.raises(ValueError, match=message):
        load_mvtec_ad(tmp_path / "mvtec", "widget")
    _save(tmp_path / "good" / "g.png", img)
    _save(tmp_path / "bad" / "000.png", img)
    _save(tmp_path / "masks" / "000_mask.png", big)
    with pytest.raises(ValueError, match=message):
        load_image_folder(tmp_path / "good", tmp_path / "bad", path_masks=tmp_path / "masks")
    # With image_size the mask is resized with its image.
    data = load_mvtec_ad(tmp_path / "mvtec", "widget", image_size=8)
    expected = np.zeros((8, 8), bool)
    expected[:4, :4] = True
    assert np.array_equal(data.masks_test[data.y_test == 1][0], expected)
    data = load_image_folder(
        tmp_path / "good", tmp_path / "bad", path_masks=tmp_path / "masks", image_size=8
    )
    assert np.array_equal(data.masks_defective[0], expected)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    from skanomaly.datasets import ImageFolderSequence
    from skanomaly.datasets._io import list_image_files

    img = np.full((16, 16), 128, np.uint8)
    cat = tmp_path / "mvtec" / "widget"
    for part in ("train/good", "test/good", "test/.ipynb_checkpoints"):
        _save(cat / part / "000.png", img)
    (cat / "ground_truth").mkdir()
    # macOS's AppleDouble files: not images at all.
    (cat / "train" / "good" / "._000.png").write_bytes(b"\x00\x05\x16\x07junk")
    (cat / "test" / "good" / "._000.png").write_bytes(b"\x00\x05\x16\x07junk")
    data = load_mvtec_ad(tmp_path / "mvtec", "widget")
    assert list(data.defect_types) == ["good"] and len(data.paths_train) == 1
    assert list_image_files(cat / "train" / "good") == [cat / "train" / "good" / "000.png"]
    assert load_image_folder(cat / "train" / "good").X.shape == (1, 16, 16)
    assert len(ImageFolderSequence(cat / "train" / "good")) == 1


@pytest.mark.parametrize("side", [12, 32])  # 144 px: Pillow's warning; 1024 px: its error
def test_decompression_bombs_name_the_file(tmp_path, monkeypatch, side):
    import warnings

    from skanomaly.datasets import ImageFolderSequence

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("L", (side, side)).save(tmp_path / "bomb.png")
    message = r"Cannot read image .*bomb\.png: .*decompression bomb.*MAX_IMAGE_PIXELS \(now 100\)"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ValueError, match=message):
            read_images([tmp_path / "bomb.png"])
        with pytest.raises(ValueError, match=message):
            load_image_folder(tmp_path)
        with pytest.raises(ValueError, match=message):
            ImageFolderSequence(tmp_path)
        with pytest.raises(ValueError, match=message):
            ImageFolderSequence(tmp_path, mode="gray")


def test_float_images_are_read_by_their_range(tmp_path):
    from skanomaly.datasets import ImageFolderSequence

    ramp = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    X = read_images([tmp_path / "unit.tif"])
    assert X.dtype == np.uint8 and X.shape == (1, 16, 16)
    assert np.array_equal(X[0], np.rint(ramp * 255).astype(np.uint8))
    assert np.array_equal(ImageFolderSequence([tmp_path / "unit.tif"])[0], X[0])
    assert read_images([tmp_path / "unit.tif"], color="rgb").shape == (1, 16, 16, 3)
    for name, values, found in [
        ("byte.tif", ramp * 255, "values from 0 to 255"),
        ("neg.tif", ramp - 0.5, "values from -0.5 to 0.5"),
        ("nan.tif", np.where(ramp > 0.5, np.nan, ramp), "not finite"),
    ]:
        Image.fromarray(values.astype(np.float32), mode="F").save(tmp_path / name)
        message = rf"Cannot read image .*{name}: .*{found}.*\[0, 1\]. Convert it"
        with pytest.raises(ValueError, match=message):
            read_images([tmp_path / name])
        with pytest.raises(ValueError, match=message):
            ImageFolderSequence([tmp_path / name])
