"""Tiled training and scoring of large images: :class:`TiledDetector`.

A detector works at one working size; a defect of a few pixels in a
4000 x 3000 image vanishes when the image is resized to it.  Tiling (as
anomalib's tiler) trains the detector on overlapping tiles of the images at
their own resolution and scores each image tile by tile, stitching the tile
maps into a map of the whole image.  Memory is bounded by the tile size and
the inner detector's batch, not by the image size.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

from ._scoring_api import ScoringAPIMixin
from ._shared_params import NoBoolNumbersMixin
from ._training import check_fit_cancelled, stop_when_task_cancelled
from .thresholds import StreamingFPRThreshold
from .validation import check_image_shape, check_images, check_value_range

__all__ = ["TiledDetector", "tile_origins"]


def _starts(length, tile, stride):
    """Tile starts along one axis: every ``stride`` pixels, the last one flush
    with the far edge (so every pixel is covered and no tile is padded)."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_origins(height, width, tile_size, stride):
    """Top-left corners of the tiles covering a ``height x width`` image.

    Tiles start every ``stride`` pixels along each axis; where the image side
    is not ``tile_size`` plus a multiple of ``stride``, one more tile is
    placed flush with the bottom (right) edge, so every pixel is covered and
    no tile reaches outside the image (nothing is padded).

    Parameters
    ----------
    height, width : int
        Image size; both at least ``tile_size``.
    tile_size : int
        Side of the square tiles.
    stride : int
        Step between tiles, at most ``tile_size``.

    Returns
    -------
    origins : list of (int, int)
        ``(top, left)`` of each tile, row by row.
    """
    rows = _starts(int(height), int(tile_size), int(stride))
    cols = _starts(int(width), int(tile_size), int(stride))
    return [(top, left) for top in rows for left in cols]


class _TileReader:
    """Tiles of validated images as float32 ``(T, T, C)`` arrays in [0, 1].

    Arrays and tensors are sliced tile by tile (a tile's pixels only); lazy
    collections read one whole image at a time and keep the last one.
    """

    def __init__(self, images, tile_size):
        self.images = images
        self.tile_size = int(tile_size)
        self._index = None
        self._image = None

    def tile(self, i, top, left):
        data, t = self.images.data, self.tile_size
        if isinstance(data, torch.Tensor):  # (n, C, H, W)
            raw = data[i, :, top : top + t, left : left + t].to(torch.float32)
            raw = raw.permute(1, 2, 0).numpy()  # float32 first: bfloat16 has no NumPy type
        elif isinstance(data, np.ndarray):  # (n, H, W, C), memmaps included
            raw = data[i, top : top + t, left : left + t]
        else:  # a lazy collection: read each image once while its tiles are read
            if self._index != i:
                self._image, self._index = None, None  # free the previous image first
                self._image, self._index = np.asarray(data[i : i + 1])[0], i
            raw = self._image[top : top + t, left : left + t]
        # The same float32 operations as ImageSet.tensor: identical values.
        tile = np.array(raw, dtype=np.float32)
        if self.images.shift != 0.0:
            tile -= np.float32(self.images.shift)
        if self.images.scale != 1.0:
            tile /= np.float32(self.images.scale)
        return np.clip(tile, 0.0, 1.0, out=tile)

    def tiles(self, i, origins):
        return np.stack([self.tile(i, top, left) for top, left in origins])


class _TileSequence:
    """All tiles of a set of images as a lazy image collection.

    It has ``__len__``, ``__getitem__``, ``shape`` and ``dtype``, so a
    detector's ``fit`` reads the tiles batch by batch
    (:func:`skanomaly.validation.check_images` accepts it like
    :class:`~skanomaly.datasets.ImageFolderSequence`); no more than a batch
    of tiles is in memory at once unless the detector itself keeps its
    training images.
    """

    def __init__(self, images, origins, tile_size):
        self._reader = _TileReader(images, tile_size)
        self._origins = list(origins)
        n = images.n_images * len(self._origins)
        self.shape = (n, int(tile_size), int(tile_size), images.n_channels)
        self.dtype = np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def _one(self, k):
        i, j = divmod(int(k), len(self._origins))
        return self._reader.tile(i, *self._origins[j])

    def __getitem__(self, key):
        if isinstance(key, Integral):
            k = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"tile index {key} out of range for {len(self)} tiles")
            return self._one(k)
        indices = range(len(self))[key] if isinstance(key, slice) else np.asarray(key).ravel()
        if len(indices) == 0:
            return np.empty((0,) + self.shape[1:], dtype=self.dtype)
        return np.stack([self._one(k) for k in indices])


class TiledDetector(
    NoBoolNumbersMixin, ScoringAPIMixin, OutlierMixin, TransformerMixin, BaseEstimator
):
    """Train and score a detector on overlapping tiles of large images.

    ``fit`` trains a clone of ``detector`` on the overlapping square tiles of
    the training images, read tile by tile (a lazy collection: tiles are
    cut when the detector reads them, so the tiles of all images are never
    in memory together unless the detector itself keeps its training
    images, as InpaintingAE does).  Scoring cuts each image into the same
    tiles, scores them in batches of the inner detector's ``batch_size``
    and stitches the tile maps into a map of the whole image.  Peak memory
    is bounded by the tile size and that batch (plus the image and its
    map), not by the image size.

    Parameters
    ----------
    detector : skanomaly detector
        An unfitted detector of any registered kind (``DFRDetector``,
        ``InpaintingAE``, ``SCADNDetector``, ``IGDDetector``); it is cloned.
        It processes each tile as an image: at its ``image_size`` (tiles
        resized to it) or, with ``image_size=None`` (DFR, InpaintingAE), at
        the tile's own resolution.  Its parameters are tunable as
        ``detector__<name>`` (e.g. in ``GridSearchCV``).  Its
        ``image_shape`` and ``value_range`` apply to the images given to
        this wrapper.
    tile_size : int, default=256
        Side of the square tiles, in input pixels; at most the images'
        height and width.
    stride : int or None, default=None
        Step between tiles, in ``1..tile_size``; ``None`` means
        ``tile_size // 2`` (tiles overlapping by half, so that each tile's
        border, where convolutions see padding, is averaged with the inside
        of its neighbours).  Along each axis, one more tile is placed flush
        with the far edge where needed (see :func:`tile_origins`).

    Attributes
    ----------
    detector_ : skanomaly detector
        The clone of ``detector`` fitted on the training tiles.
    tile_size_ : int
        The tile size used (``tile_size`` at fit).
    stride_ : int
        The stride used.
    image_shape_ : tuple or None
        The inner detector's ``image_shape`` at fit, which unflattens 2-D
        input at scoring too.
    value_range_ : tuple or None
        The inner detector's ``value_range`` at fit, which reads the images
        at scoring too.
    offset_ : float
        Decision threshold on ``score_samples``, from the training images'
        scores and the inner detector's ``contamination``.
    threshold_ : float
        Pixel threshold of :meth:`segment`: the inner detector's
        ``segmentation_fpr`` quantile of the training images' stitched
        maps; for a detector without a pixel threshold (InpaintingAE), its
        own ``threshold_`` fitted on the training tiles.
    n_features_in_ : int
        ``H * W * C`` of the training images.
    input_shape_ : tuple
        ``(H, W, C)`` of the training images.

    Notes
    -----
    Stitching.  Each pixel's value is the plain mean of the maps of the
    tiles covering it (anomalib's tiler also averages overlaps); a map
    constant over the tiles stays exactly that constant (the sums are
    accumulated in float64).

    Image score.  The anomaly score of an image is the maximum, over its
    tiles, of the inner detector's own image score of each tile
    (``-detector_.score_samples(tile)``).  Each tile score is what the
    method was trained and calibrated on (tiles), it exists for every
    detector (SCADN and IGD score images from more than their maps), an
    image is as anomalous as its most anomalous part, and it needs no
    stitched map, so :meth:`score_samples` keeps none.  With DFR (the
    maximum of the map) it is the maximum of the tile maps before overlaps
    are averaged.  ``offset_`` comes from the training images' scores
    (``contamination`` of the inner detector: ``"auto"`` flags no training
    image); ``threshold_`` from their stitched maps, as a detector does.
    Held-out images of the inner detector (``validation_fraction``) are
    tiles of the training images, so they are not independent of them.

    Parameters after fit.  Scoring uses what fit used: ``tile_size_``,
    ``stride_``, ``image_shape_``, ``value_range_`` and ``detector_``.
    Changing ``tile_size``, ``stride`` or ``detector`` (or its parameters)
    with ``set_params`` after fitting does not change the fitted wrapper's
    results; the next ``fit`` uses the new values.

    Sizes.  Images of any size at least ``tile_size`` are scored (one size
    per call, as everywhere); the tiles always have ``tile_size``.  A
    larger image has more tiles and so, with the maximum, a slightly
    higher score on average than the training images that set
    ``offset_``.

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly import DFRDetector, TiledDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(2, 96, 80)).astype(np.float32)
    >>> inner = DFRDetector(weights=None, scales=4, image_size=None, max_epochs=1,
    ...                     random_state=0)
    >>> det = TiledDetector(inner, tile_size=32).fit(X)
    >>> det.transform(X).shape
    (2, 96, 80)
    """

    _parameter_constraints: dict = {
        "detector": [HasMethods(["fit", "score_samples", "score_and_transform"])],
        "tile_size": [Interval(Integral, 1, None, closed="left")],
        "stride": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, detector, tile_size=256, stride=None):
        self.detector = detector
        self.tile_size = tile_size
        self.stride = stride

    def save(self, path):
        """Save the fitted wrapper and its inner detector to one pickle-free file.

        The safe model format of :meth:`skanomaly.base.BaseDetector.save`:
        the inner detector's tensors and description, ``tile_size``,
        ``stride`` and the wrapper's fitted values; :func:`skanomaly.load`
        returns a ``TiledDetector`` that scores exactly as this one.

        Parameters
        ----------
        path : str or path-like
            File to write (``.skan`` by convention), written to a temporary
            name and renamed.

        Returns
        -------
        path : str
            The file written.
        """
        from .persistence import save_detector

        return save_detector(self, path)

    def __sklearn_tags__(self):
        # The images are the inner detector's: its input tags (value range,
        # no NaN, 3-D arrays) and its output dtype (float32 maps).
        tags = super().__sklearn_tags__()
        inner = None
        if not isinstance(self.detector, type):  # a class is refused by fit
            inner = getattr(self.detector, "__sklearn_tags__", None)
            inner = inner() if inner is not None else None
        if inner is not None:
            tags.input_tags = inner.input_tags
            if inner.transformer_tags is not None:
                tags.transformer_tags.preserves_dtype = list(
                    inner.transformer_tags.preserves_dtype)
        return tags

    # ------------------------------------------------------------ helpers
    def _validate_params(self):
        if isinstance(self.detector, type):
            raise TypeError(
                f"detector must be a detector instance, got the class "
                f"{self.detector.__name__}; pass {self.detector.__name__}(...)."
            )
        super()._validate_params()

    def _check_params(self):
        """The stride actually used; a ValueError when tiles would leave gaps."""
        tile = int(self.tile_size)
        stride = max(1, tile // 2) if self.stride is None else int(self.stride)
        if stride > tile:
            raise ValueError(
                f"stride={self.stride} is larger than tile_size={tile}: the pixels "
                f"between tiles would not be covered; use stride <= tile_size (None "
                f"means tile_size // 2)."
            )
        return stride

    def _reading_params(self):
        """The inner detector's ``image_shape`` and ``value_range``, validated
        (tuples, or None): how ``fit`` reads the images, stored for scoring."""
        return (
            check_image_shape(getattr(self.detector, "image_shape", None)),
            check_value_range(getattr(self.detector, "value_range", None)),
        )

    @staticmethod
    def _origins(images, tile_size, stride):
        h, w = images.height, images.width
        if tile_size > min(h, w):
            raise ValueError(
                f"tile_size={tile_size} is larger than the {h}x{w} images of X; "
                f"use tile_size <= {min(h, w)} (tiles are square and cut from inside "
                f"the image)."
            )
        return tile_origins(h, w, tile_size, stride)

    def __setstate__(self, state):
        super().__setstate__(state)
        # A pickle made before tile_size_, image_shape_ and value_range_ were
        # fitted attributes scored with the parameters it holds: keep doing so
        # (the same results as before), so that it needs no refit.
        if "stride_" in self.__dict__ and "tile_size_" not in self.__dict__:
            self.tile_size_ = int(self.tile_size)
            self.image_shape_, self.value_range_ = self._reading_params()

    def _reset_fitted(self):
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, key)

    # ---------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Train a clone of ``detector`` on the overlapping tiles of ``X``.

        Parameters
        ----------
        X : array-like, torch.Tensor or lazy collection
            Normal images in any layout of the contract, each at least
            ``tile_size`` pixels high and wide.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            The fitted wrapper.
        """
        self._validate_params()
        stride = self._check_params()
        tile_size = int(self.tile_size)
        image_shape, value_range = self._reading_params()
        images = check_images(X, image_shape=image_shape, value_range=value_range)
        origins = self._origins(images, tile_size, stride)
        self._reset_fitted()
        try:
            det = clone(self.detector)
            # Tiles are float32 in [0, 1] images: the detector reads them as is.
            own = det.get_params(deep=False)
            det.set_params(**{k: None for k in ("image_shape", "value_range") if k in own})
            # Run as a Dask task, the fit stops at its next batch once the
            # task is cancelled (the threshold pass included).
            with stop_when_task_cancelled():
                det.fit(_TileSequence(images, origins, tile_size))
                self.detector_ = det
                self.tile_size_ = tile_size
                self.stride_ = stride
                self.image_shape_ = image_shape
                self.value_range_ = value_range
                self.n_features_in_ = images.n_features
                self.input_shape_ = (images.height, images.width, images.n_channels)
                self._fit_offset_and_threshold(images)
        except BaseException:
            # Failed or interrupted (KeyboardInterrupt): no half-fitted state.
            self._reset_fitted()
            raise
        return self

    def _fit_offset_and_threshold(self, images):
        det = self.detector_
        fpr = getattr(det, "segmentation_fpr", None)
        stream = None
        if getattr(det, "_pixel_threshold", False) and fpr is not None:
            stream = StreamingFPRThreshold(images.n_images * images.height * images.width, fpr)
        scores, _ = self._score_images(images, with_maps=False, map_sink=stream)
        contamination = getattr(det, "contamination", "auto")
        normality = -scores
        if contamination == "auto":
            self.offset_ = float(np.min(normality))
        else:
            self.offset_ = float(np.percentile(normality, 100.0 * contamination))
        if stream is not None:
            self.threshold_ = stream.threshold()
        elif getattr(det, "threshold_", None) is not None:
            self.threshold_ = float(det.threshold_)

    # ------------------------------------------------------------ scoring
    def _check_input(self, X):
        check_is_fitted(self)
        images = check_images(X, image_shape=self.image_shape_, value_range=self.value_range_)
        name = type(self).__name__
        if images.flat and images.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {images.n_features} features, but {name} is expecting "
                f"{self.n_features_in_} features as input."
            )
        c = self.input_shape_[2]
        if images.n_channels != c:
            raise ValueError(
                f"X has {images.n_channels} channel(s) but {name} was fitted on "
                f"images with {c} channel(s)."
            )
        return images

    def _score_images(self, images, with_maps=True, map_sink=None):
        """Image anomaly scores ``(n,)`` and (optionally) stitched maps ``(n, H, W)``.

        Tiles are scored in batches of the inner detector's ``batch_size``;
        ``map_sink`` (``add(maps)``) receives each image's stitched map.  Run
        as a Dask task, the pass stops at its next batch of tiles once the
        task is cancelled.
        """
        with stop_when_task_cancelled():
            return self._score_tiles(images, with_maps, map_sink)

    def _score_tiles(self, images, with_maps, map_sink):
        det = self.detector_
        t = self.tile_size_
        origins = self._origins(images, t, self.stride_)
        reader = _TileReader(images, t)
        h, w = images.height, images.width
        need_maps = with_maps or map_sink is not None
        n = images.n_images
        scores = np.empty(n, dtype=np.float64)
        maps = np.empty((n, h, w), dtype=np.float32) if with_maps else None
        if need_maps:
            # The tiles form a grid: a pixel's tile count is the product of
            # its row's and its column's count (no (H, W) count array).
            rows = np.zeros((h, 1))
            cols = np.zeros((1, w))
            for top in sorted({top for top, _ in origins}):
                rows[top : top + t] += 1.0
            for left in sorted({left for _, left in origins}):
                cols[:, left : left + t] += 1.0
            total = np.empty((h, w), dtype=np.float64)
        chunk = max(1, int(getattr(det, "batch_size", 8)))
        for i in range(n):
            worst = -np.inf
            if need_maps:
                total.fill(0.0)
            for first in range(0, len(origins), chunk):
                check_fit_cancelled()
                part = origins[first : first + chunk]
                tiles = reader.tiles(i, part)
                if need_maps:
                    normality, tile_maps = det.score_and_transform(tiles)
                    for (top, left), m in zip(part, tile_maps):
                        total[top : top + t, left : left + t] += m
                else:
                    normality = det.score_samples(tiles)
                worst = max(worst, float(np.max(-normality)))
            scores[i] = worst
            if need_maps:
                # float64 sums; for equal values the sum (of a few float32
                # numbers) and both divisions are exact: a constant stays exact.
                total /= rows
                total /= cols
                if with_maps:
                    maps[i] = total  # cast to float32 in place: no temporary copy
                    stitched = maps[i]
                else:
                    stitched = total.astype(np.float32)
                if map_sink is not None:
                    map_sink.add(stitched)
        return scores, maps
