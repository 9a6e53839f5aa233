"""Lazy image collections (issue 13): memmaps and ImageFolderSequence.

Detectors read them batch by batch and give exactly the scores and maps of
the same images in memory; validation never loads the whole collection.
"""

import os
import pickle
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from skorch.callbacks import Callback

from skanomaly.datasets import ImageFolderSequence, read_images
from skanomaly.validation import check_images
from tests.detectors import make_detector, registered

N_IMAGES = 10
SIZE = 32


def _images(n=N_IMAGES, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(1, size, size))
    noise = rng.integers(-30, 30, size=(n, size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_folder(folder, images, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        name = names[i] if names else f"img_{i:03d}.png"
        Image.fromarray(image).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same images in memory, as a uint8 memmap and as a folder of PNGs."""
    root = tmp_path_factory.mktemp("lazy")
    X = _images()
    path = root / "images.npy"
    np.save(path, X)
    folder = _write_folder(root / "folder", X)
    return X, np.load(path, mmap_mode="r"), folder


@pytest.mark.parametrize("name", registered())
def test_lazy_inputs_match_in_memory_arrays(name, data):
    X, X_map, folder = data
    X_seq = ImageFolderSequence(folder)
    assert isinstance(X_map, np.memmap)
    results = []
    for train in (X, X_map, X_seq):
        det = make_detector(name).fit(train)
        results.append(
            (det.score_samples(train), det.transform(train), det.offset_)
        )
    ref_scores, ref_maps, ref_offset = results[0]
    for scores, maps, offset in results[1:]:
        np.testing.assert_array_equal(scores, ref_scores)
        np.testing.assert_array_equal(maps, ref_maps)
        assert offset == ref_offset


def test_sequence_reads_on_demand(data):
    X, _, folder = data
    seq = ImageFolderSequence(folder)
    assert seq.shape == X.shape and seq.dtype == np.uint8 and len(seq) == len(X)
    np.testing.assert_array_equal(seq[3], X[3])
    np.testing.assert_array_equal(seq[-1], X[-1])
    np.testing.assert_array_equal(seq[2:7], X[2:7])
    np.testing.assert_array_equal(seq[[5, 1]], X[[5, 1]])
    np.testing.assert_array_equal(np.asarray(seq), read_images(seq.paths))
    rgb = ImageFolderSequence(seq.paths[:3], mode="rgb", size=(16, 20))
    assert rgb.shape == (3, 16, 20, 3) and rgb[0:2].shape == (2, 16, 20, 3)
    with pytest.raises(IndexError, match="out of range"):
        seq[len(seq)]


def test_check_images_reads_no_image_of_a_sequence(data, monkeypatch):
    _, _, folder = data
    seq = ImageFolderSequence(folder)
    reads = []
    original = ImageFolderSequence._read
    monkeypatch.setattr(
        ImageFolderSequence, "_read", lambda self, i, check=True: reads.append(i)
        or original(self, i, check)
    )
    images = check_images(seq)
    assert reads == []
    assert (images.n_images, images.height, images.width, images.n_channels) == (
        N_IMAGES, SIZE, SIZE, 1
    )
    images.tensor(0, 2)
    assert reads == [0, 1]


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        ImageFolderSequence(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageFolderSequence(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        ImageFolderSequence(tmp_path / "empty")
    with pytest.raises(ValueError, match="missing.png does not exist"):
        ImageFolderSequence([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="mode must be"):
        ImageFolderSequence(tmp_path, mode="RGBA")


def test_mixed_sizes_name_the_file_when_reached(tmp_path):
    images = list(_images(n=6))
    folder = _write_folder(tmp_path / "mixed", images)
    Image.fromarray(_images(n=1, size=40)[0]).save(folder / "img_004b_big.png")
    seq = ImageFolderSequence(folder)  # only the first image is read
    check_images(seq)  # shape and dtype only: no error yet
    with pytest.raises(ValueError, match=r"img_004b_big\.png is 40x40 pixels.*size="):
        make_detector("inpainting").fit(seq)
    resized = ImageFolderSequence(folder, size=SIZE)
    assert resized[:].shape == (7, SIZE, SIZE)


def test_bad_values_of_a_lazy_collection_are_reported_when_read():
    class Floats:
        shape = (4, 8, 8)
        dtype = np.dtype(np.float32)

        def __len__(self):
            return 4

        def __getitem__(self, key):
            batch = np.zeros((4, 8, 8), np.float32)
            batch[3, 0, 0] = 2.0
            return batch[key]

    images = check_images(Floats())
    images.tensor(0, 2)
    with pytest.raises(ValueError, match=r"X\[2:4\] holds a value 2\.0 above"):
        images.tensor(2, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_check_images_does_not_load_a_large_memmap(tmp_path, dtype):
    path = tmp_path / "big.npy"
    shape = (4000, 64, 64)  # 65 MB float32; the file is sparse zeros
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    X = np.load(path, mmap_mode="r")

    def resident():
        with open("/proc/self/status") as fh:
            return next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmRSS"))

    linux = os.path.exists("/proc/self/status")
    before = resident() if linux else 0
    tracemalloc.start()
    try:
        images = check_images(X)
        images.tensor(0, 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 8, (peak, X.nbytes)
    if linux:  # its pages were read, then released
        assert resident() - before < X.nbytes / 4, (resident() - before, X.nbytes)


class _RecordingImages:
    """A lazy collection that records how many images each read returns.

    Converting it whole (``np.asarray``) or pickling it fails the test: a
    ``fit`` must stream it, and a fitted detector must not refer to it.
    """

    def __init__(self, X):
        self._X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.reads = []  # images returned by each __getitem__

    def __len__(self):
        return len(self._X)

    def __getitem__(self, key):
        batch = self._X[key]
        self.reads.append(1 if batch.ndim == len(self.shape) - 1 else len(batch))
        return batch

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole collection was converted to one array")

    def __reduce__(self):
        raise AssertionError("the fitted detector refers to its training collection")


class _EpochReads(Callback):
    """Record, as each training epoch begins and as training ends, the images read so far."""

    def __init__(self, reads, marks):
        self.reads = reads  # the collection's list (not the collection: pickled)
        self.marks = marks

    def on_epoch_begin(self, net, **kwargs):
        self.marks.append(sum(self.reads))

    def on_train_end(self, net, **kwargs):
        self.marks.append(sum(self.reads))


def _streamed_fit(name, n=24, **params):
    X = _images(n=n)
    source = _RecordingImages(X)
    marks = []
    det = make_detector(name, **params)
    det.set_params(callbacks=[_EpochReads(source.reads, marks)])
    det.fit(source)
    return det, source, marks


@pytest.mark.parametrize("name", registered())
def test_fit_reads_a_lazy_collection_batch_by_batch(name):
    # Never more than a batch at once, never the whole collection as one
    # array, and the fitted (pickled) detector keeps no reference to it.
    params = {"feature_cache": "disk"} if name == "dfr" else {}
    det, source, _ = _streamed_fit(name, max_epochs=2, **params)
    batch = max(det.batch_size, det._inference_batch_size())
    assert source.reads and max(source.reads) <= batch, (max(source.reads), batch)
    pickle.dumps(det)
    det.score_samples(source)
    assert max(source.reads) <= batch


@pytest.mark.parametrize("name", ["inpainting", "scadn", "igd"])
@pytest.mark.parametrize("validation_fraction", [None, 0.25])
def test_training_streams_the_images_every_epoch(name, validation_fraction):
    # Training keeps no working-size copy of the images: each epoch reads its
    # training images from the collection again (DFR trains on its feature
    # cache, by design).
    n = 24
    _, _, marks = _streamed_fit(
        name, n=n, max_epochs=3, validation_fraction=validation_fraction
    )
    n_train = n - int(np.ceil((validation_fraction or 0) * n))
    per_epoch = np.diff(marks)
    assert len(per_epoch) == 3
    assert all(reads >= n_train for reads in per_epoch), per_epoch


def test_streamed_training_images_equal_the_batch_resized_ones():
    # Training reads each image alone; it must get exactly the values of
    # resizing the images as one batch (what fit did before streaming).
    import torch
    import torch.nn.functional as F

    from skanomaly.inpainting.distortions import DistortionDataset

    X = _images(n=6, size=40)  # resized to the working size 32
    det = make_detector("inpainting")
    images = check_images(X)
    eager = det._working_images(images)
    order = [4, 1, 2]
    lazy = det._working_images(images, lazy=True, indices=order)
    assert len(lazy) == 3 and lazy.shape == (3, *eager.shape[1:])
    for j, i in enumerate(order):
        assert torch.equal(lazy[j][0], eager[i])
    dataset = DistortionDataset(lazy, max_epochs=4, rotate90=False, flip=False)
    for epoch in (0, 3):  # progressive resizing: 16 px, then the full 32 px
        dataset.set_epoch(epoch)
        expected = F.interpolate(
            eager[order], size=dataset.size, mode="bilinear", align_corners=False,
            antialias=True,
        ).clamp_(0.0, 1.0) if dataset.size != dataset.full_size else eager[order]
        for j in range(3):
            assert torch.equal(dataset.sample(j)[1], expected[j])
    dataset.release()
    assert len(dataset) == 0 and not isinstance(dataset.images, type(lazy))
