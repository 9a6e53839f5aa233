"""The parameters every detector shares: their checks and their documentation.

The checks here are the ones ``_parameter_constraints`` cannot express; the
documentation is written once and filled into each estimator's docstring by
:func:`fill_shared_doc`.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, InvalidParameterError
from skorch.callbacks import Callback

from ._docstrings import fill_markers
from .image_scores import IMAGE_SCORES_DOC

__all__ = [
    "MAX_IMAGE_SIZE",
    "NoBoolNumbersMixin",
    "SCORED_IMAGES_DOC",
    "SEGMENT_DOC",
    "SHARED_PARAMETERS_DOC",
    "fill_shared_doc",
]


#: Largest ``image_size`` (pixels per side) a detector accepts.
MAX_IMAGE_SIZE = 16384


def physical_memory():
    """This machine's physical memory in bytes (None where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _check_working_size(image_size):
    """Refuse a working size whose tensors cannot fit in memory.

    The float32 RGB working image alone takes ``3 * 4 * S**2`` bytes; the
    networks' activations take many times that.  Sides above
    :data:`MAX_IMAGE_SIZE`, or a single working image larger than the
    machine's memory, are refused.
    """
    if not isinstance(image_size, Integral) or isinstance(image_size, bool):
        return
    side = int(image_size)
    per_image = 3 * 4 * side * side
    memory = physical_memory()
    if side > MAX_IMAGE_SIZE or (memory is not None and per_image > memory):
        raise ValueError(
            f"image_size={side} is too large: one {side}x{side} working image takes "
            f"{per_image / 2**30:.3g} GiB as a float32 RGB tensor, and the network's "
            f"activations many times that. image_size must be at most "
            f"{MAX_IMAGE_SIZE}; anomaly detectors usually work at 128-512 px (resize "
            f"or tile large images)."
        )


class NoBoolNumbersMixin:
    """``_validate_params`` that also refuses ``True``/``False`` for numbers.

    scikit-learn's ``Interval`` constraints accept booleans (``bool`` is an
    ``Integral``), so ``max_epochs=True`` would silently train one epoch and
    ``lr=True`` use a rate of 1.  Every parameter whose constraints hold a
    numeric ``Interval`` and not ``"boolean"`` refuses a bool here, with an
    :class:`~sklearn.utils._param_validation.InvalidParameterError` (a
    ``ValueError`` and ``TypeError``) naming it.
    """

    def _validate_params(self):
        super()._validate_params()
        params = self.get_params(deep=False)
        for name, constraints in self._parameter_constraints.items():
            value = params.get(name)
            if not isinstance(value, (bool, np.bool_)) or "boolean" in constraints:
                continue
            intervals = [c for c in constraints if isinstance(c, Interval)]
            if intervals:
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be "
                    f"{intervals[0]}, got the bool {value!r}; pass a number "
                    f"(booleans are not read as 0 or 1)."
                )


def _check_real(value, name):
    """``value`` as a finite float, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__} {value!r}."
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return value


def _check_contamination(contamination):
    """``"auto"`` or a float in (0, 0.5], as the ``contamination`` parameter."""
    if isinstance(contamination, str) and contamination == "auto":
        return contamination
    if isinstance(contamination, str) or isinstance(contamination, (bool, np.bool_)) or (
        not isinstance(contamination, Real)
    ):
        raise TypeError(
            f"contamination must be 'auto' or a float in (0, 0.5], got "
            f"{type(contamination).__name__} {contamination!r}."
        )
    value = float(contamination)
    if not 0.0 < value <= 0.5:
        raise ValueError(
            f"contamination={contamination!r} is outside (0, 0.5]: it is the share of "
            f"normal images flagged as outliers; use a small share such as 0.01, or "
            f"'auto'."
        )
    return value


def _check_callbacks(callbacks):
    """Each item of ``callbacks``: a skorch Callback (instance or class) or a
    ``(name, Callback)`` pair, with unique names; ``(name, None)`` switches off
    a default callback of that name, as in skorch.  Returns the set of names
    given to callbacks."""
    if callbacks is None:
        return set()
    names = []
    for i, item in enumerate(callbacks):
        cb = item
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], str):
                raise TypeError(
                    f"callbacks[{i}] is a tuple {item!r}; a named callback must be a "
                    f"pair (name: str, callback)."
                )
            names.append(item[0])
            cb = item[1]
            if cb is None:
                continue
        is_callback = isinstance(cb, Callback) or (
            isinstance(cb, type) and issubclass(cb, Callback)
        )
        if not is_callback:
            raise TypeError(
                f"callbacks[{i}] is {type(cb).__name__} {cb!r}, not a skorch callback; "
                f"pass skorch.callbacks.Callback instances (e.g. EarlyStopping()) or "
                f"(name, callback) pairs."
            )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"callbacks has several callbacks named {duplicates}; give each a unique "
            f"name."
        )
    return set(names)


#: The documentation of the parameters every detector shares, written once and
#: filled into each estimator's docstring where it says ``[shared parameters]``.
SHARED_PARAMETERS_DOC = """\
lr_schedule : {"paper", "warmup_cosine"}, default="paper"
    Learning-rate schedule of training.  ``"paper"`` is the paper's (a
    constant Adam rate; IGD's polynomial decay); ``"warmup_cosine"`` warms
    the rate up linearly over the first 5 % of the training batches, then
    decays it to 0 along a cosine (:class:`~skanomaly._schedules.WarmupCosineLR`,
    on every optimizer of the net), the schedule that lets a larger ``lr``
    converge in fewer epochs.  Measured on a CPU at 64 px
    (``benchmarks/results_convergence.md``, docs "Convergence within a CPU
    budget"): with ``lr`` x10-x30 and the same or a smaller ``batch_size``
    (a larger one did not help on the CPU), N/10 epochs reached the
    training loss that the paper schedule reached after 0.46 N epochs for
    DFR (``lr=3e-3``, ``batch_size=2``, N=100; within 10 % of its loss at
    N only with N/5 epochs), after 0.3 N for SCADN (``lr=1e-3``,
    ``batch_size=2``, N=30), below its loss at N for IGD (``lr=3e-3``,
    ``batch_size=16``, N=20); no gain for InpaintingAE.  DFR meets the
    target with random batches of regional vectors instead of images
    (``vector_batch_size=128``, ``lr=1e-3``: within 2 % of the loss at N
    in N/20 epochs, 0.087 of the time).
device : str, default="auto"
    ``"auto"`` picks CUDA when available, else CPU; ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"`` ask for one.  A model fitted on CUDA scores on the CPU of a
    machine without CUDA.
random_state : int, RandomState instance or None, default=None
    Seeds every random choice of ``fit`` (initialisation, batch order,
    sampling).  Same seed, data and device: same scores.
contamination : "auto" or float in (0, 0.5], default="auto"
    Sets ``offset_``: ``"auto"`` flags no reference normal image (the
    lowest ``score_samples`` of the training images, or of the held-out
    ones where the detector holds some out); a float is the share of them
    treated as outliers, as in :class:`~sklearn.ensemble.IsolationForest`.
verbose : int, default=0
    ``1`` shows one progress bar over the whole fit with an ETA; ``2`` also
    prints skorch's per-epoch table.  Whatever ``verbose``, a fit projected
    (from its first training steps) to take over an hour warns with the
    estimate and the settings that would cut it
    (:class:`skanomaly.LongFitWarning`).
image_shape : tuple or None, default=None
    ``(H, W)`` or ``(H, W, C)`` to unflatten 2-D ``(n, n_features)`` input;
    one of H/W may be -1.
value_range : tuple (low, high) or None, default=None
    Raw values mapped to 0 and 1 for data of another range (e.g.
    ``(0, 4095)`` for 12-bit images); ``None``: integers mean 0-255 and
    floats 0-1.
callbacks : list of skorch callbacks or None, default=None
    Added to the training net (e.g. ``EarlyStopping``, ``Checkpoint``,
    ``GradientNormClipping``, ``LRScheduler``), as instances, classes or
    ``(name, callback)`` pairs.  ``fit`` trains new instances built from
    each callback's parameters (the parameter values themselves shared, so
    a list or writer the callback reports to still gets its reports), so
    the objects passed here never gain fitted state; the trained ones are
    in ``net_.callbacks_``.
    ``("progress_bar", None)`` or ``("time_estimate", None)`` switch those
    off (a callback under either name replaces it); the divergence guard
    ``"finite_loss"`` cannot be replaced, nor ``"early_stopping"`` or
    ``"lr_schedule"`` while ``early_stopping=True`` or ``lr_schedule`` set
    them.
validation_fraction : float in (0, 1) or None, default=None
    Holds out this share of the training images as skorch's validation set
    (``valid_loss``, e.g. for early stopping); with ``early_stopping=True``
    and ``None``, 0.1 is held out (as in
    :class:`~sklearn.neural_network.MLPClassifier`).
early_stopping : bool, default=False
    Stop training when ``valid_loss`` has not improved by at least ``tol``
    for ``n_iter_no_change`` consecutive epochs (skorch's
    :class:`~skorch.callbacks.EarlyStopping`, keeping the last weights).
    ``n_epochs_`` records the epochs actually run.
n_iter_no_change : int, default=10
    Patience of ``early_stopping``, in epochs.
tol : float, default=1e-4
    Smallest decrease of ``valid_loss`` that counts as an improvement.
precision : {"float32", "tf32", "bfloat16", "float16"}, default="float32"
    Arithmetic of inference (scoring, maps).  ``"float32"`` is IEEE float32
    on every device (TF32 off on CUDA: a GPU scores as the CPU does, to
    rounding); ``"tf32"`` lets CUDA convolutions and matrix products use
    TF32 (faster on Ampere and newer GPUs; an IGD map moved by up to 24 %
    of its range on an H100, through MS-SSIM's divisions); ``"bfloat16"``/
    ``"float16"`` run the networks under :func:`torch.autocast` (CUDA;
    bfloat16 also on the CPU), faster still at a small loss of agreement
    with float32 (see ``benchmarks/gpu_check.py``).  Training is float32
    (TF32 allowed, torch's default).
""" + IMAGE_SCORES_DOC


#: The images the scoring methods of every detector take, documented once
#: (filled into the methods of :class:`~skanomaly.base.BaseDetector`).
SCORED_IMAGES_DOC = """\
Parameters
----------
X : array-like, torch.Tensor or lazy collection
    Images in any layout accepted by :meth:`fit`, of the fitted size
    (any size with ``image_size=None``; at least ``tile_size`` for
    :class:`~skanomaly.TiledDetector`)."""

#: The parameters and result of ``segment``, for the base's and its overrides.
SEGMENT_DOC = SCORED_IMAGES_DOC + """
threshold : float, default=None
    Heatmap threshold; defaults to the fitted ``threshold_``.

Returns
-------
masks : ndarray of bool
    Same layout as :meth:`transform`."""


#: The documentation of the fitted attributes every detector sets, filled in
#: where a docstring says ``[shared attributes]``.
SHARED_ATTRIBUTES_DOC = """\
offset_ : float
    Decision threshold on ``score_samples``:
    ``decision_function(X) = score_samples(X) - offset_`` (see
    ``contamination``).
image_score_rule_ : tuple
    ``(image_score, image_score_k, image_score_sigma)`` under which
    ``offset_`` was set (by ``fit`` or ``calibrate``).  After changing them
    on a fitted detector, ``score_samples`` follows the new rule at once,
    but ``decision_function`` and ``predict`` raise a ValueError until
    ``calibrate(X_normal)`` or ``fit`` sets ``offset_`` for it.
n_epochs_ : int
    Training epochs actually run (fewer than ``max_epochs`` when early
    stopping ended the fit).
n_features_in_ : int
    ``H * W * C`` of the training images.
input_shape_ : tuple
    ``(H, W, C)`` of the training images."""


def fill_shared_doc(cls):
    """Class decorator: fill the ``[shared parameters]`` and ``[shared attributes]`` lines.

    The lines' indentation is applied to :data:`SHARED_PARAMETERS_DOC` and
    :data:`SHARED_ATTRIBUTES_DOC` (:func:`skanomaly._docstrings.fill_markers`,
    which also fills the other blocks of documentation written once).
    """
    return fill_markers(cls, {"shared parameters": SHARED_PARAMETERS_DOC,
                              "shared attributes": SHARED_ATTRIBUTES_DOC})
