"""The public scoring methods of every detector, written once.

:class:`ScoringAPIMixin` gives ``score_samples``, ``score_and_transform``,
``decision_function``, ``predict``, ``transform`` and ``segment`` to
:class:`~skanomaly.base.BaseDetector` and :class:`~skanomaly.TiledDetector`
from two methods of theirs: ``_check_input(X)`` (the fitted check and the
input's :class:`~skanomaly.validation.ImageSet`) and
``_score_images(images, with_maps=True)`` (anomaly scores and maps in one
pass).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._docstrings import fill_method_docs
from ._shared_params import SCORED_IMAGES_DOC, SEGMENT_DOC, _check_real

__all__ = ["ScoringAPIMixin"]


@fill_method_docs(scored_images=SCORED_IMAGES_DOC, segment=SEGMENT_DOC)
class ScoringAPIMixin:
    """``score_samples`` … ``segment`` from ``_check_input`` and ``_score_images``."""

    def score_samples(self, X):
        """Normality score of each image: the opposite of the anomaly score.

        [scored_images]

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Higher means more normal.
        """
        images = self._check_input(X)
        scores, _ = self._score_images(images, with_maps=False)
        return -scores

    def score_and_transform(self, X):
        """``score_samples(X)`` and ``transform(X)`` from one pass over the images.

        Each batch goes through the networks once, where calling both
        methods would run it twice.

        [scored_images]

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            As :meth:`score_samples`: higher means more normal.
        maps : ndarray of float32
            As :meth:`transform`: higher means more anomalous.
        """
        images = self._check_input(X)
        scores, maps = self._score_images(images)
        maps = maps.astype(np.float32, copy=False)
        return -scores, (maps.reshape(len(maps), -1) if images.flat else maps)

    def decision_function(self, X):
        """``score_samples(X) - offset_``: negative means anomalous.

        [scored_images]

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        self._check_offset_rule()
        return self.score_samples(X) - self.offset_

    def _check_offset_rule(self):
        """Refuse to compare scores of one image-score rule with an ``offset_``
        set under another (``image_score``, ``image_score_k`` or
        ``image_score_sigma`` changed after fit)."""
        fitted = getattr(self, "image_score_rule_", None)
        if fitted is None:  # no image-score rule (a TiledDetector)
            return
        current = self._image_score_key()
        if tuple(fitted) != current:
            raise ValueError(
                f"offset_ was set with image_score, image_score_k, image_score_sigma = "
                f"{tuple(fitted)!r}, but they are now {current!r}: the scores are on "
                f"another scale. Call calibrate(X_normal) with normal images to set "
                f"offset_ for the new rule, fit again, or set the parameters back."
            )

    def predict(self, X):
        """Label each image: ``+1`` normal, ``-1`` anomalous.

        [scored_images]

        Returns
        -------
        labels : ndarray of shape (n_samples,) of int
        """
        decision = self.decision_function(X)
        return np.where(decision < 0, -1, 1).astype(int)

    def transform(self, X):
        """Pixel anomaly heatmaps at the input resolution.

        [scored_images]

        Returns
        -------
        maps : ndarray of float32
            ``(n, H, W)`` for image input, ``(n, H*W)`` for flattened 2-D
            input; higher means more anomalous.
        """
        return self.score_and_transform(X)[1]

    def segment(self, X, threshold=None):
        """Binary anomaly masks: heatmap pixels above ``threshold``.

        [segment]
        """
        if threshold is None:
            check_is_fitted(self, "threshold_")
            threshold = self.threshold_
        else:
            threshold = _check_real(threshold, "threshold")
        return self.transform(X) > threshold
