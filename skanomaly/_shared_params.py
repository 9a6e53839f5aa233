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
from skorch.callbacks import Callback

__all__ = ["MAX_IMAGE_SIZE", "SHARED_PARAMETERS_DOC", "fill_shared_doc"]


#: Largest ``image_size`` (pixels per side) a detector accepts.
MAX_IMAGE_SIZE = 16384


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
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        memory = None
    if side > MAX_IMAGE_SIZE or (memory is not None and per_image > memory):
        raise ValueError(
            f"image_size={side} is too large: one {side}x{side} working image takes "
            f"{per_image / 2**30:.3g} GiB as a float32 RGB tensor, and the network's "
            f"activations many times that. image_size must be at most "
            f"{MAX_IMAGE_SIZE}; anomaly detectors usually work at 128-512 px (resize "
            f"or tile large images)."
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
    a default callback of that name, as in skorch."""
    if callbacks is None:
        return
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


#: The documentation of the parameters every detector shares, written once and
#: filled into each estimator's docstring where it says ``[shared parameters]``.
SHARED_PARAMETERS_DOC = """\
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
    ``GradientNormClipping``, ``LRScheduler``).
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
precision : {"float32", "bfloat16", "float16"}, default="float32"
    Arithmetic of inference (scoring, maps): ``"bfloat16"``/``"float16"``
    run the networks under :func:`torch.autocast` (CUDA; bfloat16 also on
    the CPU), which is faster on GPUs at a small loss of agreement with
    float32 (see ``benchmarks/gpu_check.py``).  Training is float32."""


def fill_shared_doc(cls):
    """Class decorator: replace the ``[shared parameters]`` line of the docstring.

    The line's indentation is applied to :data:`SHARED_PARAMETERS_DOC`.
    """
    doc = cls.__doc__ or ""
    marker = "[shared parameters]"
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == marker:
            indent = line[: len(line) - len(line.lstrip())]
            block = [indent + l if l else l for l in SHARED_PARAMETERS_DOC.splitlines()]
            lines[i : i + 1] = block
            cls.__doc__ = "\n".join(lines)
            return cls
    raise ValueError(f"{cls.__name__}'s docstring has no {marker!r} line.")
