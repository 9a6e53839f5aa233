"""Image anomaly scores from pixel anomaly maps: the ``image_score`` parameter.

Every detector turns an image into a pixel anomaly map; how the map becomes
one image score decides what an image-level decision can see.  The maximum
of the map (DFR's rule) is decided by one pixel, so a single noisy pixel of
a normal image weighs as much as a whole defect.  The alternatives here
pool evidence over an area:

``"max"``
    The largest value of the map.
``"top_k_mean"``
    The mean of the largest ``image_score_k`` share of the map's pixels
    (at least one pixel): a defect must cover about that share of the image
    to reach its full score, and an isolated bright pixel is averaged down.
``"smoothed_max"``
    The largest value of the map after a Gaussian filter of standard
    deviation ``image_score_sigma`` pixels (borders reflected, as
    ``scipy.ndimage.gaussian_filter``): the same idea with a spatial
    neighbourhood instead of a rank.

``"auto"`` keeps each method's own rule from its paper (DFR: the map's
maximum; InpaintingAE: §4.2's largest-connected-region level; SCADN: the
error map of the scale selected by the validation statistics μ_i; IGD: its
global-and-local Gaussian score).  The reductions work on the maps that
``transform`` returns (input resolution), so ``image_score_sigma`` is in
input pixels.  They are written in torch and traced into exported ONNX
graphs, which therefore score like the library.
"""

from __future__ import annotations

import math

__all__ = ["IMAGE_SCORES", "IMAGE_SCORES_DOC", "reduce_maps"]

#: The values of the ``image_score`` parameter.
IMAGE_SCORES = ("auto", "max", "top_k_mean", "smoothed_max")

#: The shared documentation of the three parameters (filled into every
#: detector's docstring with the other shared parameters).
IMAGE_SCORES_DOC = """\
image_score : {"auto", "max", "top_k_mean", "smoothed_max"}, default="auto"
    How a pixel anomaly map becomes the image's anomaly score
    (:mod:`skanomaly.image_scores`).  ``"auto"`` is the method's own rule
    from its paper; ``"max"`` the map's largest value; ``"top_k_mean"`` the
    mean of its largest ``image_score_k`` share of pixels; ``"smoothed_max"``
    the largest value after a Gaussian filter of ``image_score_sigma``
    pixels.  ``fit`` sets ``offset_`` under the chosen rule; changed after
    fit, the rule takes effect in ``score_samples`` at once, and
    ``calibrate`` (or a new fit) sets ``offset_`` for it.
image_score_k : float in (0, 1], default=0.01
    Share of the map's pixels averaged by ``image_score="top_k_mean"``.
image_score_sigma : float >= 0, default=4.0
    Standard deviation in pixels of the map (input resolution) of the
    Gaussian filter of ``image_score="smoothed_max"``."""


def reduce_maps(maps, rule, k=0.01, sigma=4.0):
    """Image anomaly scores from a batch of anomaly maps.

    Parameters
    ----------
    maps : torch.Tensor of shape (b, H, W)
        Pixel anomaly maps.
    rule : {"max", "top_k_mean", "smoothed_max"}
        The reduction (see the module's documentation).
    k : float in (0, 1], default=0.01
        Share of the pixels averaged by ``"top_k_mean"``; the count is
        ``ceil(k * H * W)`` (less a millionth, against float rounding), at
        least 1.
    sigma : float, default=4.0
        Gaussian standard deviation in pixels for ``"smoothed_max"``.

    Returns
    -------
    scores : torch.Tensor of shape (b,)
    """
    if rule == "max":
        return maps.amax(dim=(1, 2))
    if rule == "top_k_mean":
        flat = maps.flatten(1)
        # Less a millionth of a pixel: 0.07 * 100 is 7.000000000000001 in
        # floats, which ceil would make 8 pixels instead of 7 % of 100 (the
        # count may be a traced tensor in an ONNX export, so no round()).
        count = max(1, math.ceil(float(k) * flat.shape[1] - 1e-6))
        return flat.topk(min(count, flat.shape[1]), dim=1).values.mean(dim=1)
    if rule == "smoothed_max":
        from .inpainting.torch_model import gaussian_smooth  # light import of this module

        return gaussian_smooth(maps, sigma).amax(dim=(1, 2))
    raise ValueError(
        f"image_score={rule!r} is not a map reduction; use one of "
        f"{', '.join(repr(r) for r in IMAGE_SCORES[1:])}."
    )
