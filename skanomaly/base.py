"""The single base estimator every skanomaly detector derives from.

:class:`BaseDetector` implements the public contract once: input validation
and layouts, sign conventions, ``contamination`` -> ``offset_``, ``predict``,
``transform``/``segment`` output layout, device selection, batched inference,
seeding, pixel thresholds, and pickling that brings CUDA-trained weights back
on a CPU-only machine.  A detector implements ``_fit`` and
``_anomaly_working`` and optionally the hooks ``_check_params``,
``_reference_images``, ``_set_thresholds`` and ``_score_from_maps``.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet

from .image_scores import IMAGE_SCORES, reduce_maps
from ._shared_params import (
    NoBoolNumbersMixin,
    _check_callbacks,
    _check_contamination,
    _check_working_size,
    fill_shared_doc,
)
from ._training import (
    check_fit_cancelled,
    float32_mode,
    resolve_device,
    runtime_device,
    seeded,
    stop_when_task_cancelled,
)
from ._saving import PersistenceMixin
from ._scoring_api import ScoringAPIMixin
from ._working_size import WorkingSizeMixin
from .thresholds import StreamingFPRThreshold, fpr_threshold
from .validation import check_images

__all__ = [
    "BaseDetector",
    "StreamingFPRThreshold",
    "assign_parameters",
    "fill_shared_doc",
    "fpr_threshold",
]


def assign_parameters(estimator, arguments):
    """Set each ``__init__`` argument as the attribute of the same name.

    scikit-learn's convention is that ``__init__`` does nothing but store
    its arguments; the detectors call ``assign_parameters(self, locals())``
    as the only statement of their ``__init__`` instead of one assignment
    line per parameter, so the convention is written once.

    Parameters
    ----------
    estimator : BaseDetector
    arguments : dict
        ``locals()`` at the start of ``__init__``.
    """
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


class BaseDetector(
    NoBoolNumbersMixin,
    WorkingSizeMixin,
    ScoringAPIMixin,
    OutlierMixin,
    TransformerMixin,
    PersistenceMixin,
    BaseEstimator,
):
    """Base class of skanomaly's detectors (not to be instantiated).

    Subclasses define ``__init__`` storing their parameters and implement:

    ``_fit(self, images)``
        Train on an :class:`~skanomaly.validation.ImageSet` of normal images.
        ``self.device_`` and ``self._seed_`` are set and torch's RNG is seeded.
    ``_anomaly_working(self, xw)``
        ``xw`` is a float tensor ``(b, C, S, S)`` in [0, 1] at the working
        size (``_to_working_size``) on the run device; return anomaly scores
        ``(b,)`` (or ``None`` to take them from the maps at the input
        resolution with ``_score_from_maps``) and maps ``(b, h, w)`` at any
        resolution, which the base resizes to the input's.  With
        ``image_size=None`` ``xw`` is the input padded to
        ``_working_shape(H, W)`` (multiples of ``_full_resolution_multiple``)
        and the maps, resized to that shape, are cropped to ``(H, W)``.

    and may override the hooks:

    ``_check_params(self)``
        Cross-parameter checks; runs right after ``_validate_params()``,
        before any image is read or any network is built.  It may return a
        dict of the values it parsed, which ``fit`` passes on to ``_fit`` as
        keyword arguments (so that they are parsed once).
    ``_reference_images(self, images)``
        The normal images whose scores set ``offset_`` and ``threshold_``
        (default: the training images; held-out ones where a detector
        keeps some apart).
    ``_set_thresholds(self, scores)``
        Fitted values derived from the reference images' anomaly scores.
        With ``_pixel_threshold = True`` (the default) ``threshold_`` has
        already been set from their maps and ``segmentation_fpr``.
    ``_score_from_maps(self, maps)``
        Image anomaly scores from input-resolution maps (default: maximum).

    A ``fit`` refused by the checks of the parameters and the images, which
    run before anything else, leaves the detector as it was (a fitted
    detector stays fitted, as in scikit-learn).  A ``fit`` that fails or is
    interrupted (``KeyboardInterrupt``) once training has started leaves no
    fitted attribute behind, also when the detector was fitted before.

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
        "image_size": [Interval(Integral, 8, None, closed="left"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "lr_schedule": [StrOptions({"paper", "warmup_cosine"})],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "verbose": ["verbose"],
        "image_shape": [tuple, list, None],
        "value_range": [tuple, list, None],
        "callbacks": [list, tuple, None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "precision": [StrOptions({"float32", "tf32", "bfloat16", "float16"})],
        "image_score": [StrOptions(set(IMAGE_SCORES))],
        "image_score_k": [Interval(Real, 0, 1, closed="right")],
        "image_score_sigma": [Interval(Real, 0, None, closed="left")],
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
        checked = self._check_params() or {}
        self._check_shared_params()
        images = check_images(X, image_shape=self.image_shape, value_range=self.value_range)
        self._check_training_set(images)
        self._reset_fitted()
        try:
            self.n_features_in_ = images.n_features
            self.input_shape_ = (images.height, images.width, images.n_channels)
            self.device_ = resolve_device(self.device)
            self._seed_ = int(
                check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            )
            # Run as a Dask task (e.g. by GridSearchCV under joblib's Dask
            # backend), the fit stops at its next batch once the task is
            # cancelled.
            with stop_when_task_cancelled():
                with seeded(self._seed_, self.device_):
                    self._fit(images, **checked)
                self.n_epochs_ = self._epochs_run()
                self._fit_offset_and_thresholds(images)
            self.image_score_rule_ = self._image_score_key()
        except BaseException:
            # Failed or interrupted (KeyboardInterrupt): no half-fitted state.
            self._reset_fitted()
            raise
        return self

    def _validation_fraction(self):
        """The share of training images held out: ``validation_fraction``, or 0.1
        when ``early_stopping`` is on and it is ``None`` (scikit-learn's default)."""
        fraction = getattr(self, "validation_fraction", None)
        if fraction is None and getattr(self, "early_stopping", False):
            return 0.1
        return fraction

    def _epochs_run(self):
        """Training epochs actually run (``len(net_.history)``; 0 without a net)."""
        net = getattr(self, "net_", None)
        return int(len(net.history)) if net is not None else 0

    def _reset_fitted(self):
        """Remove every fitted attribute (names ending in ``_``)."""
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, key)

    def _check_params(self):
        """Hook: cross-parameter checks, before any image is read (default: none).

        Returns None, or a dict of parsed values passed to ``_fit`` as keyword
        arguments.
        """

    def _check_shared_params(self):
        """Checks of the shared parameters that ``_validate_params`` cannot express.

        Runs before any image is read: the device exists and is supported,
        ``image_size`` fits in memory, every item of ``callbacks`` is a skorch
        callback, and ``lr_schedule`` is not set twice.
        """
        resolve_device(self.device)
        _check_working_size(getattr(self, "image_size", None))
        named = _check_callbacks(getattr(self, "callbacks", None))
        if "finite_loss" in named:
            raise ValueError(
                "callbacks names a callback 'finite_loss', the name of the divergence "
                "guard, which cannot be replaced or switched off; give your callback "
                "another name."
            )
        if getattr(self, "early_stopping", False) and "early_stopping" in named:
            raise ValueError(
                "early_stopping=True and a callback named 'early_stopping' both stop "
                "training early; pass early_stopping=False to use your callback, or "
                "remove it."
            )
        if getattr(self, "lr_schedule", "paper") != "paper" and "lr_schedule" in named:
            raise ValueError(
                f"lr_schedule={self.lr_schedule!r} and a callback named 'lr_schedule' both "
                f"set the learning-rate schedule; keep lr_schedule='paper' to use your "
                f"callback, or remove the callback."
            )

    def _check_fitted_values(self):
        """Hook: check fitted values read from a model file against the
        parameters and ``input_shape_`` (default: none).

        ``skanomaly.load`` calls it before building any network, so that a
        value ``fit`` would have derived from the parameters cannot be
        replaced by one that costs memory or changes results.  Raise
        ValueError naming the value.
        """

    def _training_samples(self, images):
        """``(count, unit)`` of the samples the training split divides: the
        images (a detector that trains on parts of them overrides this)."""
        return images.n_images, "training image(s)"

    def _check_training_set(self, images):
        """Checks that need the number of training samples (``validation_fraction``)."""
        fraction = self._validation_fraction()
        if not fraction:
            return
        n, unit = self._training_samples(images)
        n_valid = int(np.ceil(float(fraction) * n))
        if n - n_valid < 1:
            most = f"at most {(n - 1) / n:.4g} for {n}" if n > 1 else "None"
            if getattr(self, "validation_fraction", None) is not None:
                source = f"validation_fraction={fraction!r}"
                fix = f"lower validation_fraction ({most})"
            else:
                source = f"early_stopping=True (validation_fraction=None: a share of {fraction!r})"
                fix = f"set a lower validation_fraction ({most}), turn early_stopping off"
            raise ValueError(
                f"{source} holds out {n_valid} of the {n} {unit} and leaves none to "
                f"train on; {fix} or pass more images."
            )

    def _fit(self, images, **checked):  # pragma: no cover - abstract
        raise NotImplementedError

    def _anomaly_working(self, xw):  # pragma: no cover - abstract
        raise NotImplementedError

    #: Whether ``fit`` sets ``threshold_`` from reference maps and ``segmentation_fpr``.
    _pixel_threshold = True

    def _reference_images(self, images):
        """Hook: the normal images that set ``offset_``/``threshold_`` (default: all)."""
        return images

    def _fit_offset_and_thresholds(self, images):
        """Score the reference images once: ``offset_``, ``threshold_`` and the hooks."""
        reference = self._reference_images(images)
        fpr = getattr(self, "segmentation_fpr", None) if self._pixel_threshold else None
        stream = None
        if fpr is not None:
            stream = StreamingFPRThreshold(
                reference.n_images * reference.height * reference.width, fpr
            )
        scores, _ = self._score_images(reference, with_maps=False, map_sink=stream)
        self.offset_ = self._offset_from(-scores, self.contamination)
        if stream is not None:
            self.threshold_ = stream.threshold()
        self._set_thresholds(scores)

    def _set_thresholds(self, scores):
        """Hook: more fitted values from the reference anomaly scores (default: none)."""

    def _score_from_maps(self, maps):
        """Hook: image anomaly scores ``(b,)`` from input-resolution maps (default: max)."""
        return maps.amax(dim=(1, 2))

    def _anomaly_batch(self, x):
        """Scores ``(b,)`` and input-resolution maps of a batch at input resolution.

        Resize to the working size, run the method, resize the maps back.
        With ``image_size=None`` the batch is padded instead
        (:meth:`_to_working_size`) and the maps are cropped back to it.
        """
        scores, maps = self._anomaly_working(self._to_working_size(x))
        # Under mixed precision a method may return bfloat16/float16 maps:
        # resize and reduce them in float32, so image scores and thresholds
        # are not rounded to three digits (a no-op in float32).
        maps = maps.float()
        scores = None if scores is None else scores.float()
        if getattr(self, "image_size", 0) is None:
            h, w = x.shape[-2:]
            maps = self._to_input_size(maps, self._working_shape(h, w))[..., :h, :w]
        else:
            maps = self._to_input_size(maps, x.shape[-2:])
        rule = getattr(self, "image_score", "auto")
        if rule != "auto":
            scores = reduce_maps(maps, rule, self.image_score_k, self.image_score_sigma)
        elif scores is None:
            scores = self._score_from_maps(maps)
        return scores, maps

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
            hint = ""
            if images.n_channels == 1 and images.n_images == c:
                hint = (
                    f" If X is one channels-first image ({c}, H, W), pass "
                    f"np.moveaxis(X, 0, -1)[None] (a batch of one (H, W, {c}) image)."
                )
            raise ValueError(
                f"X has {images.n_channels} channel(s) but {name} was fitted on "
                f"images with {c} channel(s).{hint}"
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

    def _score_images(self, images, with_maps=True, map_sink=None):
        """Anomaly scores ``(n,)`` and (optionally) maps ``(n, H, W)``, batched.

        ``map_sink`` (an object with ``add(maps)``) receives each batch's maps
        instead of keeping them.
        """
        device = runtime_device(self.device_)
        self._prepare_inference(device)
        # Outputs allocated once: no per-batch pieces to concatenate (which
        # doubled the maps' peak memory and fragmented the heap).
        n = images.n_images
        scores = np.empty(n, dtype=np.float64)
        maps = np.empty((n, images.height, images.width), dtype=np.float32) if with_maps else None
        start = 0
        with stop_when_task_cancelled(), torch.inference_mode(), self._autocast(device):
            for x in images.batches(self._inference_batch_size(), device=device):
                # Work whose Dask task was cancelled stops here (scoring, and
                # the threshold pass that ends a fit).
                check_fit_cancelled()
                s, m = self._anomaly_batch(x)
                stop = start + len(s)
                scores[start:stop] = s.detach().float().cpu().numpy()
                if with_maps or map_sink is not None:
                    m = m.detach().float().cpu().numpy()
                    if map_sink is not None:
                        map_sink.add(m)
                    if with_maps:
                        maps[start:stop] = m
                start = stop
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite anomaly scores; the model "
                f"may have diverged during fit."
            )
        return scores, maps

    def _inference_batch_size(self):
        return self.batch_size

    def _autocast(self, device):
        """Mixed-precision inference context for the ``precision`` parameter.

        ``"float32"`` (or a detector without the parameter) runs in float32;
        ``"bfloat16"``/``"float16"`` run the networks under
        :func:`torch.autocast` on the device (CUDA; bfloat16 also on CPU);
        scores and maps are returned in float32 either way.  Training always
        runs in float32.  ``"float32"`` turns TF32 off on CUDA
        (:func:`skanomaly._training.float32_mode`), so that GPU scores equal
        CPU scores to float32 rounding; ``"tf32"`` turns it on (faster on
        Ampere and newer GPUs, as float32 on the CPU).
        """
        precision = getattr(self, "precision", "float32")
        if precision in ("float32", "tf32"):
            return float32_mode(tf32=precision == "tf32")
        device_type = torch.device(device).type
        if device_type == "cpu" and precision == "float16":
            raise ValueError(
                "precision='float16' needs CUDA; on the CPU use precision='bfloat16' "
                "or 'float32'."
            )
        return torch.autocast(device_type, dtype=getattr(torch, precision))

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

        Raises
        ------
        TypeError
            ``contamination`` is neither ``"auto"`` nor a number.
        ValueError
            ``contamination`` lies outside (0, 0.5].
        """
        contamination = _check_contamination(contamination)
        self.offset_ = self._offset_from(self.score_samples(X_normal), contamination)
        self.image_score_rule_ = self._image_score_key()
        return self

    def _image_score_key(self):
        """``(image_score, image_score_k, image_score_sigma)`` as scoring uses them."""
        return (str(getattr(self, "image_score", "auto")),
                float(getattr(self, "image_score_k", 0.01)),
                float(getattr(self, "image_score_sigma", 4.0)))

    # ------------------------------------------------------------ pickling
    def __getstate__(self):
        # A copy: object.__getstate__ returns the live __dict__, and swapping a
        # CUDA module for its CPU copy there would change the live detector.
        state = dict(super().__getstate__())
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
