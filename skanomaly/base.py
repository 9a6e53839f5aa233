"""The single base estimator every skanomaly detector derives from.

:class:`BaseDetector` implements the public contract once: input validation
and layouts, sign conventions, ``contamination`` -> ``offset_``, ``predict``,
``transform``/``segment`` output layout, device selection, batched inference,
seeding, and pickling that brings CUDA-trained weights back on a CPU-only
machine.  A detector implements ``_fit``, ``_anomaly_batch`` and optionally
``_set_thresholds``.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet

from ._training import resolve_device, runtime_device, seeded
from .validation import check_images

__all__ = ["BaseDetector", "fpr_threshold"]


def fpr_threshold(maps, fpr):
    """Pixel threshold that flags a share ``fpr`` of normal pixels.

    Parameters
    ----------
    maps : ndarray
        Anomaly maps of normal images (any shape).
    fpr : float in [0, 1)
        Acceptable false-positive rate on normal pixels; 0 gives the largest
        normal value (no normal pixel above the threshold).

    Returns
    -------
    threshold : float
        Pixels strictly above it are anomalous.
    """
    values = np.asarray(maps, dtype=np.float64).ravel()
    if fpr <= 0:
        return float(values.max())
    return float(np.quantile(values, 1.0 - fpr, method="higher"))


class BaseDetector(OutlierMixin, TransformerMixin, BaseEstimator):
    """Base class of skanomaly's detectors (not to be instantiated).

    Subclasses define ``__init__`` storing their parameters and implement:

    ``_fit(self, images)``
        Train on an :class:`~skanomaly.validation.ImageSet` of normal images.
        ``self.device_`` and ``self._seed_`` are set and torch's RNG is seeded.
    ``_anomaly_batch(self, x)``
        ``x`` is a float tensor ``(b, C, H, W)`` in [0, 1] at the input
        resolution on the run device; return anomaly scores ``(b,)`` and maps
        ``(b, H, W)`` at the input resolution, both higher = more anomalous.
    ``_set_thresholds(self, images, scores, maps)`` (optional)
        Set ``threshold_`` from the training anomaly scores and maps.

    Notes
    -----
    ``contamination="auto"`` sets ``offset_`` to the lowest
    ``score_samples`` of the training images: no training image is predicted
    anomalous.  Training images are scored by a model fitted on them, so on
    unseen normal images a small share will fall below it; to calibrate on
    held-out normal images, fit with a float ``contamination`` or use
    :meth:`calibrate`.
    """

    _parameter_constraints: dict = {
        "image_size": [Interval(Integral, 8, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "verbose": ["verbose"],
        "image_shape": [tuple, list, None],
        "value_range": [tuple, list, None],
        "callbacks": [list, tuple, None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
    }

    #: Whether a pretrained RGB network needs 3 channels (grayscale repeated).
    _needs_rgb = False
    #: Whether images of another size than at fit may be scored.
    _resizes_freely = False

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Train the detector on normal images.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Normal images in any layout of the contract: ``(n, H, W)``,
            ``(n, H, W, C)``, a list of equal-shape arrays, a tensor
            ``(n, C, H, W)``, or ``(n, n_features)`` with ``image_shape``.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            The fitted detector.
        """
        self._validate_params()
        images = check_images(X, image_shape=self.image_shape, value_range=self.value_range)
        self.n_features_in_ = images.n_features
        self.input_shape_ = (images.height, images.width, images.n_channels)
        self.device_ = resolve_device(self.device)
        self._seed_ = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with seeded(self._seed_, self.device_):
            self._fit(images)
        scores, maps = self._score_images(images)
        self.offset_ = self._offset_from(-scores, self.contamination)
        self._set_thresholds(images, scores, maps)
        return self

    def _fit(self, images):  # pragma: no cover - abstract
        raise NotImplementedError

    def _anomaly_batch(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_thresholds(self, images, scores, maps):
        """Hook: set ``threshold_`` from training scores/maps (default: none)."""

    @staticmethod
    def _offset_from(normal_scores, contamination):
        if contamination == "auto":
            return float(np.min(normal_scores))
        return float(np.percentile(normal_scores, 100.0 * contamination))

    # -------------------------------------------------------------- scoring
    def _check_input(self, X):
        check_is_fitted(self)
        images = check_images(X, image_shape=self.image_shape, value_range=self.value_range)
        name = type(self).__name__
        if images.flat and images.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {images.n_features} features, but {name} is expecting "
                f"{self.n_features_in_} features as input."
            )
        h, w, c = self.input_shape_
        if images.n_channels != c:
            raise ValueError(
                f"X has {images.n_channels} channel(s) but {name} was fitted on "
                f"images with {c} channel(s)."
            )
        if (images.height, images.width) != (h, w) and not self._resizes_freely:
            raise ValueError(
                f"X holds {images.height}x{images.width} images but {name} was fitted "
                f"on {h}x{w} images; resize them to {h}x{w} first."
            )
        return images

    def _prepare_inference(self, device):
        """Move every module the detector holds to ``device`` in eval mode."""
        for value in vars(self).values():
            if isinstance(value, torch.nn.Module):
                value.to(device).eval()
            elif isinstance(value, NeuralNet) and getattr(value, "initialized_", False):
                for name in value._modules:
                    getattr(value, name + "_").to(device).eval()

    def _score_images(self, images, with_maps=True):
        """Anomaly scores ``(n,)`` and (optionally) maps ``(n, H, W)``, batched."""
        device = runtime_device(self.device_)
        self._prepare_inference(device)
        scores, maps = [], []
        with torch.inference_mode():
            for x in images.batches(self._inference_batch_size(), device=device):
                s, m = self._anomaly_batch(x)
                scores.append(s.detach().float().cpu().numpy())
                if with_maps:
                    maps.append(m.detach().float().cpu().numpy())
        scores = np.concatenate(scores).astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite anomaly scores; the model "
                f"may have diverged during fit."
            )
        return scores, (np.concatenate(maps) if with_maps else None)

    def _inference_batch_size(self):
        return self.batch_size

    def score_samples(self, X):
        """Normality score of each image: the opposite of the anomaly score.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images in any layout accepted by :meth:`fit`, of the fitted size.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher means more normal.
        """
        images = self._check_input(X)
        scores, _ = self._score_images(images, with_maps=False)
        return -scores

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative means anomalous.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images to score.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Label each image: ``+1`` normal, ``-1`` anomalous.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images to label.

        Returns
        -------
        labels : ndarray of shape (n_samples,) of int
        """
        decision = self.decision_function(X)
        return np.where(decision < 0, -1, 1).astype(int)

    def transform(self, X):
        """Pixel anomaly heatmaps at the input resolution.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images to explain.

        Returns
        -------
        maps : ndarray of float32
            ``(n, H, W)`` for image input, ``(n, H*W)`` for flattened 2-D
            input; higher means more anomalous.
        """
        images = self._check_input(X)
        _, maps = self._score_images(images)
        maps = maps.astype(np.float32, copy=False)
        return maps.reshape(len(maps), -1) if images.flat else maps

    def segment(self, X, threshold=None):
        """Binary anomaly masks: heatmap pixels above ``threshold``.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images to segment.
        threshold : float, default=None
            Defaults to the fitted ``threshold_``.

        Returns
        -------
        masks : ndarray of bool
            Same layout as :meth:`transform`.
        """
        if threshold is None:
            check_is_fitted(self, "threshold_")
            threshold = self.threshold_
        return self.transform(X) > threshold

    def calibrate(self, X_normal, contamination="auto"):
        """Re-set ``offset_`` from held-out normal images.

        Parameters
        ----------
        X_normal : array-like or torch.Tensor
            Normal images not used for training.
        contamination : "auto" or float in (0, 0.5], default="auto"
            As the constructor parameter, applied to these images.

        Returns
        -------
        self : object
        """
        self.offset_ = self._offset_from(self.score_samples(X_normal), contamination)
        return self

    # ---------------------------------------------------------- image utils
    def _to_working_size(self, x, size=None):
        """Resize ``(b, C, H, W)`` to the working size; gray -> RGB if needed."""
        size = self.image_size if size is None else size
        if self._needs_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        size = (size, size) if isinstance(size, Integral) else tuple(size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(
                x, size=size, mode="bilinear", align_corners=False, antialias=True
            )
        return x

    @staticmethod
    def _to_input_size(maps, size):
        """Bilinearly resize maps ``(b, h, w)`` to ``size=(H, W)``."""
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return F.interpolate(
            maps[:, None], size=tuple(size), mode="bilinear", align_corners=False
        )[:, 0]

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        state = super().__getstate__()
        for key, value in state.items():
            if isinstance(value, torch.nn.Module) and any(
                t.device.type != "cpu" for t in value.state_dict().values()
            ):
                state[key] = copy.deepcopy(value).to("cpu")
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.three_d_array = True
        value_range = getattr(self, "value_range", None)
        tags.input_tags.positive_only = value_range is None or value_range[0] >= 0
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
