"""The trivial detector every quality test must beat.

``|x - mean training image|``, averaged over colour channels and lightly
smoothed, is what any detector gets for free on aligned data: it needs no
training beyond one mean.  A quality test whose threshold this baseline also
passes cannot tell a working detector from a broken one, so every quality
test computes it on its own data and asserts the detector beats it by a
stated margin (see ``tests/test_quality.py``).
"""

import numpy as np
from scipy import ndimage

__all__ = ["as_float_images", "mean_image_baseline"]


def as_float_images(X):
    """Images as float64 ``(n, H, W, C)`` in [0, 1].

    Parameters
    ----------
    X : ndarray of shape (n, H, W) or (n, H, W, C)
        ``uint8`` means 0-255, floats mean 0-1 (the detectors' contract).

    Returns
    -------
    images : ndarray of shape (n, H, W, C), dtype float64
    """
    X = np.asarray(X)
    images = X.astype(np.float64) / 255.0 if X.dtype == np.uint8 else X.astype(np.float64)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"expected (n, H, W) or (n, H, W, C) images, got shape {X.shape}")
    return images


def mean_image_baseline(X_train, X_test, sigma=1.5):
    """Anomaly scores and maps of the trivial ``|x - mean training image|`` detector.

    Parameters
    ----------
    X_train : ndarray of shape (n_train, H, W) or (n_train, H, W, C)
        Normal images; only their pixel-wise mean is used.
    X_test : ndarray of shape (n_test, H, W) or (n_test, H, W, C)
        Images to score, of the same size and channel count.
    sigma : float, default=1.5
        Standard deviation in pixels of the Gaussian that smooths each map
        (``scipy.ndimage.gaussian_filter``, reflecting borders); 0 disables it.

    Returns
    -------
    anomaly_scores : ndarray of shape (n_test,)
        The maximum of each map: higher means more anomalous, like
        ``-det.score_samples(X_test)``.
    maps : ndarray of shape (n_test, H, W), dtype float32
        ``|x - mean|`` averaged over channels, then smoothed: higher means
        more anomalous, like ``det.transform(X_test)``.
    """
    train = as_float_images(X_train)
    test = as_float_images(X_test)
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(
            f"training images {train.shape[1:]} and test images {test.shape[1:]} differ"
        )
    mean = train.mean(axis=0)
    maps = np.abs(test - mean).mean(axis=-1)
    if sigma > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect")
    return maps.max(axis=(1, 2)), maps.astype(np.float32)
