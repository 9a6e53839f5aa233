"""Full resolution (``image_size=None``) and tiled scoring (``TiledDetector``)."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from skanomaly import (
    DFRDetector,
    IGDDetector,
    InpaintingAE,
    SCADNDetector,
    TiledDetector,
)
from skanomaly.metrics import image_auroc_scorer
from skanomaly.model_selection import NormalOnlyKFold
from skanomaly.tiling import _TileSequence, tile_origins
from skanomaly.validation import check_images

from .detectors import HAS_PRETRAINED, make_detector, registered


def _smooth_images(n, h, w, seed=0, channels=None):
    """Smooth random grey images in [0.3, 0.7] (a texture DFR learns quickly)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        a, b = rng.uniform(0, 2 * np.pi, 2)
        im = 0.5 + 0.1 * np.sin(xx / 3.0 + a) * np.cos(yy / 4.0 + b)
        out.append(im + rng.normal(0, 0.02, (h, w)))
    X = np.clip(np.stack(out), 0, 1).astype(np.float32)
    return X if channels is None else np.repeat(X[..., None], channels, axis=-1)


def _dfr(**kw):
    params = dict(weights=None, scales=4, image_size=None, max_epochs=2, batch_size=4,
                  device="cpu", random_state=0)
    return DFRDetector(**{**params, **kw})


def _inpainting(**kw):
    params = dict(width=4, image_size=None, smoothing_sigma=1.0, min_defect_area=4,
                  max_epochs=2, batch_size=8, device="cpu", random_state=0)
    return InpaintingAE(**{**params, **kw})


class _TileEcho(OutlierMixin, BaseEstimator):
    """A stand-in detector whose map of an image is the image itself.

    Its image anomaly score is the mean of the image; ``fit`` records what
    it was given and the largest batch it read.
    """

    def __init__(self, batch_size=3, contamination="auto", segmentation_fpr=0.0,
                 interrupt=False, image_shape=None, value_range=None):
        self.batch_size = batch_size
        self.contamination = contamination
        self.segmentation_fpr = segmentation_fpr
        self.interrupt = interrupt
        self.image_shape = image_shape  # read by TiledDetector, as a detector's
        self.value_range = value_range

    _pixel_threshold = True

    def fit(self, X, y=None):
        images = check_images(X)
        self.received_ = type(X).__name__
        self.n_tiles_ = images.n_images
        self.largest_read_ = max(len(x) for x in images.batches(self.batch_size))
        if self.interrupt:
            raise KeyboardInterrupt
        return self

    def score_and_transform(self, X):
        images = check_images(X)
        maps = images.tensor().mean(dim=1).numpy()
        return -maps.mean(axis=(1, 2)).astype(np.float64), maps

    def score_samples(self, X):
        return self.score_and_transform(X)[0]


# ------------------------------------------------------------ tile geometry
@pytest.mark.parametrize(
    "h, w, tile, stride",
    [(37, 45, 8, 5), (32, 32, 32, 32), (100, 64, 30, 7), (50, 61, 16, 16), (20, 33, 20, 1)],
)
def test_tiles_cover_every_pixel_inside_the_image(h, w, tile, stride):
    origins = tile_origins(h, w, tile, stride)
    cover = np.zeros((h, w), int)
    for top, left in origins:
        assert 0 <= top <= h - tile and 0 <= left <= w - tile
        cover[top : top + tile, left : left + tile] += 1
    assert cover.min() >= 1
    tops = sorted({t for t, _ in origins})
    assert tops[0] == 0 and tops[-1] == h - tile
    assert max(np.diff(tops), default=0) <= stride


def test_tile_sequence_reads_the_tiles_of_every_layout():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    origins = tile_origins(20, 24, 8, 6)
    expected = np.stack([X[i, t : t + 8, l : l + 8] for i in range(2) for t, l in origins])
    expected = expected.astype(np.float32) / np.float32(255)
    layouts = [X, torch.from_numpy(X).permute(0, 3, 1, 2).contiguous(), list(X)]
    for data in layouts:
        seq = _TileSequence(check_images(data), origins, 8)
        assert seq.shape == expected.shape and len(seq) == len(expected)
        np.testing.assert_array_equal(seq[:], expected)
        np.testing.assert_array_equal(seq[np.array([5, 1])], expected[[5, 1]])
        np.testing.assert_array_equal(seq[-1], expected[-1])


# --------------------------------------------------------------- stitching
def test_stitching_places_every_tile_map_where_its_tile_is():
    # The stand-in's map of a tile is the tile: the stitched map must be the image.
    X = _smooth_images(3, 37, 45, seed=1)
    det = TiledDetector(_TileEcho(), tile_size=16, stride=7).fit(X)
    maps = det.transform(X)
    np.testing.assert_allclose(maps, X, rtol=0, atol=1e-6)


def test_stitching_of_a_constant_map_is_exact():
    X = np.full((2, 37, 45), 0.3, dtype=np.float32)
    det = TiledDetector(_TileEcho(), tile_size=16, stride=5).fit(X)
    maps = det.transform(X)
    assert maps.dtype == np.float32
    assert np.all(maps == np.float32(0.3))


def test_fit_streams_the_tiles_and_sets_offset_and_threshold():
    X = _smooth_images(4, 40, 30, seed=2)
    det = TiledDetector(_TileEcho(batch_size=3), tile_size=16).fit(X)
    inner = det.detector_
    assert inner.received_ == "_TileSequence"  # lazily cut, not an array of all tiles
    assert inner.largest_read_ == 3
    assert inner.n_tiles_ == 4 * len(tile_origins(40, 30, 16, 8))
    assert det.stride_ == 8
    # Image score: the largest tile score (a tile's mean here).
    tiles = [[X[i, t : t + 16, l : l + 16].mean() for t, l in tile_origins(40, 30, 16, 8)]
             for i in range(4)]
    np.testing.assert_allclose(-det.score_samples(X), np.max(tiles, axis=1), rtol=1e-6)
    assert det.offset_ == pytest.approx(det.score_samples(X).min())
    assert det.threshold_ == pytest.approx(float(X.max()), rel=1e-6)  # fpr 0: the largest pixel
    assert np.all(det.predict(X) == 1)


def test_a_planted_defect_lights_up_its_region_of_the_stitched_map():
    X = (_smooth_images(6, 96, 80, seed=3) * 255).astype(np.uint8)
    det = TiledDetector(_dfr(), tile_size=32).fit(X[:4])
    Y = X[4:].copy()
    Y[1, 60:70, 10:20] = 255
    normality, maps = det.score_and_transform(Y)
    assert maps.shape == (2, 96, 80)
    row, col = np.unravel_index(np.argmax(maps[1]), maps[1].shape)
    assert 56 <= row < 74 and 6 <= col < 24
    assert maps[1, 60:70, 10:20].mean() > 3 * maps[1, :40, 40:].mean()
    assert normality[1] < normality[0]
    assert det.predict(Y).tolist() == [1, -1]


@pytest.mark.parametrize("name", registered())
def test_every_registered_detector_can_be_tiled(name):
    X = _smooth_images(3, 40, 48, seed=4, channels=3)
    inner = make_detector(name, image_size=32, max_epochs=1)
    det = TiledDetector(inner, tile_size=32, stride=16).fit(X)
    normality, maps = det.score_and_transform(X)
    assert maps.shape == (3, 40, 48) and np.all(np.isfinite(maps))
    assert np.all(np.isfinite(normality)) and np.all(det.predict(X) == 1)


def test_images_of_another_size_and_flattened_input():
    X = _smooth_images(3, 40, 36, seed=5)
    det = TiledDetector(_TileEcho(), tile_size=16).fit(X)
    assert det.transform(_smooth_images(1, 50, 70))[0].shape == (50, 70)
    assert det.segment(X).shape == (3, 40, 36)
    # Flattened input, unflattened with the inner detector's image_shape.
    flat = TiledDetector(_dfr(image_shape=(40, 36)), tile_size=16).fit(X.reshape(3, -1))
    assert flat.transform(X.reshape(3, -1)).shape == (3, 40 * 36)
    with pytest.raises(ValueError, match="features"):
        flat.transform(X[:, :, :20].reshape(3, -1))


# ----------------------------------------------------- scikit-learn behaviour
def test_clone_params_and_pickle_round_trip(tmp_path):
    det = TiledDetector(_dfr(), tile_size=24, stride=12)
    params = det.get_params()
    assert params["detector__scales"] == 4 and params["tile_size"] == 24
    det.set_params(detector__scales=3, stride=8)
    assert det.detector.scales == 3 and det.stride == 8
    twin = clone(det)
    assert twin.detector is not det.detector and twin.get_params()["detector__scales"] == 3

    X = _smooth_images(3, 40, 40, seed=6)
    det.fit(X)
    assert not hasattr(det.detector, "net_")  # the given detector stays unfitted
    scores, maps = det.score_and_transform(X)
    joblib.dump(det, tmp_path / "tiled.joblib")
    loaded = joblib.load(tmp_path / "tiled.joblib")
    s2, m2 = loaded.score_and_transform(X)
    np.testing.assert_array_equal(s2, scores)
    np.testing.assert_array_equal(m2, maps)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(det)).score_samples(X), scores)


def test_pickle_from_before_fitted_tile_size_scores_as_it_did():
    # Pickles made before tile_size_, image_shape_ and value_range_ were
    # fitted attributes lack them; they scored with the parameters.
    X = _smooth_images(3, 40, 40, seed=6)
    det = TiledDetector(_dfr(image_shape=(40, 40)), tile_size=24, stride=12).fit(X)
    scores = det.score_samples(X)
    old = pickle.loads(pickle.dumps(det))
    for attr in ("tile_size_", "image_shape_", "value_range_"):
        delattr(old, attr)
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.tile_size_ == 24 and loaded.image_shape_ == (40, 40)
    assert loaded.value_range_ is None
    np.testing.assert_array_equal(loaded.score_samples(X), scores)
    # Unfitted wrappers gain nothing.
    assert not hasattr(pickle.loads(pickle.dumps(TiledDetector(_dfr()))), "tile_size_")


def test_gridsearch_tunes_the_inner_detector():
    X = (_smooth_images(12, 48, 48, seed=7) * 255).astype(np.uint8)
    y = np.zeros(len(X), int)
    X[9:, 10:20, 20:30] = 255
    y[9:] = 1
    search = GridSearchCV(
        TiledDetector(_dfr(max_epochs=1), tile_size=24),
        {"detector__scales": [2, 4]},
        scoring=image_auroc_scorer,
        cv=NormalOnlyKFold(3, random_state=0),
        refit=False,
    )
    search.fit(X, y)
    assert [p["detector__scales"] for p in search.cv_results_["params"]] == [2, 4]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_score_ > 0.9


# -------------------------------------------------------------------- errors
def test_errors_name_the_parameter():
    X = _smooth_images(2, 30, 40)
    with pytest.raises(ValueError, match=r"tile_size=32 is larger than the 30x40 images"):
        TiledDetector(_TileEcho(), tile_size=32).fit(X)
    with pytest.raises(ValueError, match="stride"):
        TiledDetector(_TileEcho(), tile_size=16, stride=0).fit(X)
    with pytest.raises(ValueError, match=r"stride=20 is larger than tile_size=16"):
        TiledDetector(_TileEcho(), tile_size=16, stride=20).fit(X)
    with pytest.raises(ValueError, match="tile_size"):
        TiledDetector(_TileEcho(), tile_size=0).fit(X)
    with pytest.raises(ValueError, match="detector"):
        TiledDetector(object(), tile_size=16).fit(X)
    with pytest.raises(NotFittedError):
        TiledDetector(_TileEcho(), tile_size=16).score_samples(X)
    det = TiledDetector(_TileEcho(), tile_size=16).fit(X)
    with pytest.raises(ValueError, match="channel"):
        det.transform(np.repeat(X[..., None], 3, axis=-1))
    with pytest.raises(ValueError, match=r"tile_size=16 is larger than the 10x40 images"):
        det.transform(X[:, :10])


def test_parameters_set_after_fit_do_not_change_the_fitted_model():
    X = _smooth_images(2, 32, 32, seed=8)
    det = TiledDetector(_TileEcho(), tile_size=16).fit(X)
    scores, maps = det.score_and_transform(X)
    assert (det.tile_size_, det.stride_) == (16, 8)
    det.set_params(tile_size=4, stride=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN maps, no RuntimeWarning
        s2, m2 = det.score_and_transform(X)
    np.testing.assert_array_equal(s2, scores)
    np.testing.assert_array_equal(m2, maps)
    det.fit(X)  # the next fit uses the new values
    assert (det.tile_size_, det.stride_) == (4, 3)

    # The inner detector's image_shape and value_range: how fit read the images.
    flat = (2 * X).reshape(2, -1)
    det = TiledDetector(_TileEcho(image_shape=[32, 32], value_range=(0, 2)),
                        tile_size=16).fit(flat)
    assert det.image_shape_ == (32, 32) and det.value_range_ == (0.0, 2.0)
    maps = det.transform(flat)
    np.testing.assert_allclose(maps.reshape(X.shape), X, rtol=0, atol=1e-6)
    det.set_params(detector__image_shape=(16, 64), detector__value_range=(0, 1))
    np.testing.assert_array_equal(det.transform(flat), maps)


def test_interrupted_fit_leaves_no_fitted_state():
    X = _smooth_images(2, 30, 40)
    det = TiledDetector(_TileEcho(), tile_size=16).fit(X)
    det.set_params(detector__interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        det.fit(X)
    assert not hasattr(det, "detector_") and not hasattr(det, "offset_")


# -------------------------------------------------------- image_size=None
@pytest.mark.parametrize("factory", [_dfr, _inpainting], ids=["dfr", "inpainting"])
def test_full_resolution_maps_have_the_input_shape(factory):
    X = _smooth_images(4, 37, 45, seed=8)
    det = factory().fit(X)
    maps = det.transform(X)
    assert maps.shape == (4, 37, 45) and np.all(np.isfinite(maps))
    # Fully convolutional: another size is scored too, at its own resolution.
    other = _smooth_images(2, 50, 61, seed=9)
    assert det.transform(other).shape == (2, 50, 61)
    assert det.segment(other).shape == (2, 50, 61)
    assert det.score_samples(other).shape == (2,)


@pytest.mark.parametrize("factory", [_dfr, _inpainting], ids=["dfr", "inpainting"])
def test_full_resolution_equals_the_resized_path_at_the_working_size(factory):
    X = _smooth_images(5, 32, 32, seed=10)
    full = factory().fit(X)
    fixed = factory(image_size=32).fit(X)
    s_full, m_full = full.score_and_transform(X)
    s_fixed, m_fixed = fixed.score_and_transform(X)
    np.testing.assert_array_equal(s_full, s_fixed)
    np.testing.assert_array_equal(m_full, m_fixed)
    assert full.offset_ == fixed.offset_ and full.threshold_ == fixed.threshold_


@pytest.mark.parametrize("factory", [_dfr, _inpainting], ids=["dfr", "inpainting"])
def test_full_resolution_pads_by_reflection_and_crops_the_map(factory):
    # The map of a 37x45 image is the crop of the map of that image padded
    # (by reflection, bottom and right) to the working multiple.
    X = _smooth_images(4, 37, 45, seed=13)
    det = factory().fit(X)
    m = det._full_resolution_multiple
    hp, wp = -(-37 // m) * m, -(-45 // m) * m
    assert (hp, wp) != (37, 45)
    padded = np.pad(X, ((0, 0), (0, hp - 37), (0, wp - 45)), mode="reflect")
    m_pad = det.transform(padded)
    np.testing.assert_allclose(det.transform(X), m_pad[:, :37, :45], rtol=1e-5, atol=1e-6)


def test_full_resolution_crops_the_padding_without_shifting_the_map():
    # A defect at the bottom-right corner of a 37x45 image (padded to 40x48)
    # must stay at the corner of the map.
    X = (_smooth_images(5, 37, 45, seed=11) * 255).astype(np.uint8)
    det = _dfr(max_epochs=3).fit(X[:4])
    Y = X[4:].copy()
    Y[0, 29:37, 37:45] = 255
    m = det.transform(Y)[0]
    row, col = np.unravel_index(np.argmax(m), m.shape)
    assert row >= 27 and col >= 35


@pytest.mark.parametrize(
    "backbone", ["vgg19", pytest.param("efficientnet_lite0", marks=pytest.mark.skipif(
        not HAS_PRETRAINED, reason="needs timm"))],
)
def test_dfr_padding_multiple_is_the_deepest_layer_stride(backbone):
    from skanomaly.backbones import FeatureStages
    from skanomaly.dfr._estimator import _LAYER_STRIDES

    strides = _LAYER_STRIDES[backbone]
    stages = FeatureStages(backbone, None, list(range(1, len(strides) + 1)))
    with torch.no_grad():
        outs = stages(torch.zeros(1, 3, 64, 64))
    assert [64 // o.shape[-1] for o in outs] == strides
    det = DFRDetector(backbone=backbone, weights=None, image_size=None, scales=12)
    assert det._full_resolution_multiple == np.lcm(4, strides[11])
    det.set_params(scales=[2, len(strides)])
    assert det._full_resolution_multiple == (32 if backbone == "efficientnet_lite0" else 16)


def test_full_resolution_save_load_and_onnx(tmp_path):
    import skanomaly

    X = _smooth_images(4, 37, 45, seed=12)
    det = _dfr(scales=6).fit(X)
    det.save(tmp_path / "m.skanomaly")
    loaded = skanomaly.load(tmp_path / "m.skanomaly")
    np.testing.assert_array_equal(loaded.transform(X), det.transform(X))
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    det.export_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    raw, maps = session.run(None, {"images": X[:, None]})
    normality, expected = det.score_and_transform(X)
    assert maps.shape == (4, 37, 45)
    assert np.max(np.abs(maps - expected)) <= 1e-4 * np.ptp(expected)
    np.testing.assert_allclose(raw, -normality, rtol=1e-4)


@pytest.mark.parametrize(
    "cls, params",
    [
        (SCADNDetector, dict(width=4, max_epochs=1)),
        (IGDDetector, dict(teacher=None, width=4, latent_dim=8, max_epochs=1)),
    ],
    ids=["scadn", "igd"],
)
def test_fixed_size_methods_refuse_full_resolution(cls, params):
    X = _smooth_images(2, 32, 32)
    with pytest.raises(ValueError, match=r"image_size=None.*TiledDetector"):
        cls(image_size=None, device="cpu", **params).fit(X)
    assert "TiledDetector" in cls.__doc__
