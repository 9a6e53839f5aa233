"""InpaintingAE: self-supervised training of autoencoders (Bauer 2022)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from skorch.helper import predefined_split

from .._docstrings import fill_doc
from .._shared_params import SEGMENT_DOC
from .._training import make_net
from ..base import BaseDetector, assign_parameters, fill_shared_doc
from ._net import DistortionSchedule, FullSizeEarlyStopping, InpaintingAENet
from .distortions import DistortionDataset
from .losses import OBJECTIVES, InpaintingLoss
from .postprocess import largest_component_level, remove_small_components
from .torch_model import InpaintingAutoencoder, anomaly_maps

__all__ = ["InpaintingAE"]


def _full_size_stopping(cb):
    """The shared early-stopping callback, made to wait for full-size images."""
    return FullSizeEarlyStopping(**cb.get_params())


@fill_shared_doc
class InpaintingAE(BaseDetector):
    """Autoencoder trained to inpaint elastically distorted patches.

    Bauer's self-supervised anomaly detector: a convolutional autoencoder
    with stacked dilated convolutions (Table 1) is trained on normal images
    in which a random patch was elastically deformed, cut with a random shape
    and pasted back (§3.2).  With ``objective="restore"`` (eq. 1) it learns
    to reproduce the image while replacing the distorted region by locally
    consistent content; with ``objective="amplify"`` (eq. 3) it reproduces
    normal regions but amplifies its error on distorted ones.  At test time
    the whole image goes through the network in one pass; the anomaly map is
    the reconstruction error over the colour channels, smoothed by a
    Gaussian filter.

    Parameters
    ----------
    objective : {"restore", "amplify"}, default="restore"
        Training objective: eq. (1) or eq. (3) of the paper.
    lam : float in [0, 1], default=0.5
        ``lambda``: weight of the undistorted region's term (the distorted
        region's term has ``1 - lambda``).  The paper finds 0.5 good for
        eq. (1).
    squared_norm : bool, default=True
        ``True`` squares the L2 norms of the objectives, which makes each
        term the mean squared error over its region (see Notes for why this
        is the default).  ``False`` uses the objectives exactly as the paper
        prints them: each region's unsquared L2 norm of the residual divided
        by the region's L1 mask norm.
    width : int, default=32
        Filters of the first convolution; every layer's width scales with
        it.  32 gives Table 1 exactly; small values make tiny test networks.
    image_size : int or None, default=512
        Working side length (a multiple of 8, at least 16); images are
        resized to it for the network, maps are resized back to the input
        resolution.  Table 1 is drawn for 512.  ``None`` keeps each image's
        own size (full resolution, no resize; training images at least
        16 px per side): the image is padded at the bottom and right by
        reflection to a multiple of 8 (the network's three 2x poolings) and
        the map is cropped back; distorted patches, progressive resizing and
        ``smoothing_sigma`` then count in input pixels.  The network is
        fully convolutional, so a detector fitted at full resolution also
        scores images of another size than the training images (one size
        per call); ``threshold_``, ``offset_`` and ``min_defect_area_`` come
        from the training images.  Memory grows with the image area: tile
        large images with :class:`skanomaly.TiledDetector`.
    smoothing_sigma : float, default=4.0
        Standard deviation, in pixels of the working size, of the Gaussian
        filter applied to the error map (reflected borders, as
        ``scipy.ndimage.gaussian_filter(mode="reflect")``); 0 disables
        smoothing.
    min_defect_area : int or float, default=0.001
        Minimal area of an anomalous region (§4.2): an int is a number of
        pixels at the input resolution, a float in (0, 1) a share of the
        input image's area (rounded up).  It sets the image score, the
        threshold and :meth:`segment` (see Notes).
    patch_size : (float, float), default=(0.05, 0.35)
        Range of the distorted patch's height and width, as fractions of the
        training image's (each drawn uniformly).
    brightness : float, default=0.0
        Brightness variation of distorted patches (§3.2, "depending on the
        data"): the patch is multiplied by a factor drawn uniformly in
        ``[1 - brightness, 1 + brightness]``; 0 disables it.
    rotate90 : bool, default=True
        Augment training images by random rotations by multiples of 90
        degrees (§4.1; switch it off for objects with an orientation).
    flip : bool, default=True
        Augment training images by random horizontal and vertical flips.
    progressive_resizing : bool, default=True
        Train on images growing over the epochs (§3.2): a quarter of
        ``image_size`` for the first quarter of the epochs, half of it for
        the second quarter, the full size for the second half (never below
        16 pixels).
    max_epochs : int, default=100
        Training epochs.
    batch_size : int, default=8
        Training and scoring batch size.
    lr : float, default=1e-3
        Adam learning rate.
    [shared parameters]

    Attributes
    ----------
    net_ : skanomaly.inpainting._net.InpaintingAENet
        The trained skorch net; ``net_.module_`` is the
        :class:`~skanomaly.inpainting.torch_model.InpaintingAutoencoder`.
    min_defect_area_ : int
        Minimal defect area in input pixels.
    threshold_ : float
        Heatmap threshold: on every reference normal image, no connected
        region of ``min_defect_area_`` pixels exceeds it.
    reference_scores_ : ndarray of shape (n_reference,)
        Anomaly scores of the normal images that set ``threshold_`` (the
        held-out ones when ``validation_fraction`` is set).
    [shared attributes]

    Notes
    -----
    Shared parameters with a meaning of their own here.  The held-out share
    of ``validation_fraction`` (at least one image) gives ``valid_loss`` on
    fixed distortions and is the set of normal validation images on which
    ``threshold_`` and ``offset_`` are set (§4.2); without it both are set
    on the training images.  ``contamination="auto"`` is the rule of §4.2:
    an image is anomalous when a region of at least ``min_defect_area``
    pixels exceeds ``threshold_`` (``offset_ = -threshold_``); a float is
    the share of those reference images treated as outliers.
    ``random_state`` also seeds the held-out split and every distortion.

    Inference rule.  The network sees the whole working-size image once.
    The map is the root mean square of ``F(X) - X`` over the colour channels
    (the paper's "||F(X) - X||_2 averaged over the colour channels"; the
    Euclidean norm divided by ``sqrt(C)``, so grey and colour maps share a
    scale), smoothed by a Gaussian of ``smoothing_sigma`` at the working
    size and resized bilinearly to the input.  The image anomaly score is
    the heatmap level below which a connected region (4-connectivity) of at
    least ``min_defect_area_`` pixels appears
    (:func:`largest_component_level`); with ``min_defect_area=1`` it is the
    maximum of the smoothed map.  ``threshold_`` is the largest such score
    over the reference normal images, which is the §4.2 rule ("the largest
    connected component of every normal map stays below the minimal
    area"), so with ``contamination="auto"`` :meth:`predict` flags exactly
    the images with an above-threshold region of at least that area.
    :meth:`segment` keeps only such regions.

    Choices where the paper is silent (all documented defaults):

    - Objectives (a decision of the project, issue 12): the squared norms
      by default.  As printed, each term divides an *unsquared* L2 norm of
      the masked residual by the L1 norm (the element count) of the mask;
      dividing by an element count only makes a mean when the numerator is
      a sum, so the printed term is its region's RMS error divided by the
      square root of the region's size.  Beyond ``lam`` the small distorted
      region then outweighs the rest by ``sqrt(|M_bar|_1 / |M|_1)``:
      measured at ``lam=0.5`` the distorted region (median 0.8 % of the
      image) receives ~11x the gradient of the whole undistorted region, so
      eq. (1) learns the undistorted reconstruction slowly and eq. (3)
      lowers its loss by raising the error everywhere.  Squaring makes each
      term its region's mean squared error, the reading under which ``lam``
      balances the two regions as the paper intends.  Measured on brick
      with ``objective="restore"`` (64 px, 40 test crops, width 8, 100
      epochs, ``lam=0.5``): pixel AUROC/PRO 0.765/0.249 as printed against
      0.870/0.655 squared (``benchmarks/results_inpainting.md``, from
      ``benchmarks/bench_inpainting.py``).
      ``squared_norm=False`` keeps the printed formula.
    - Progressive resizing and early stopping: with ``early_stopping`` the
      patience counts only from the first epoch at full size (the schedule
      is 1/4, 1/2 then full size over the quarters of ``max_epochs``), since
      ``valid_loss`` is measured at full size.
    - Distortions (:mod:`skanomaly.inpainting.distortions`): patch sides
      5-35 % of the image's; a displacement field made as torchvision's
      ``ElasticTransform`` does (uniform noise smoothed by a Gaussian) with
      sigma 6-15 % of the patch's shorter side and RMS displacement 0.5-1.5
      sigma, applied with torchvision's ``elastic`` to the patch plus a
      margin of real context (so no fill colour enters); shape masks are
      random ellipses or star-shaped polygons of 3-10 vertices; brightness
      off by default.  A distortion that changes nothing (a flat region) is
      redrawn up to 10 times, then the masked pixels are shifted by 0.5
      modulo 1, so ``||X_hat - X||_1 > 0`` always holds as eq. (3)
      requires.
    - Each sample's randomness is seeded by ``(seed, epoch, index)``, so
      results do not depend on data-loader order.
    - Progressive resizing schedule: 1/4, 1/2 then full size over the first
      quarter, second quarter and second half of the epochs (sizes rounded
      down to multiples of 8, at least 16 so that batch norm always sees
      several values per channel at the 1/8 bottleneck).
    - The optimiser (Adam, lr 1e-3), batch size 8 and 100 epochs are ours;
      the paper gives none.  For eq. (3) the paper relies on early
      stopping: pass ``validation_fraction`` and skorch's ``EarlyStopping``.

    References
    ----------
    A. Bauer. "Self-Supervised Training with Autoencoders for Visual Anomaly
    Detection." arXiv:2206.11723 (2022).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly import InpaintingAE
    >>> X = np.random.default_rng(0).uniform(size=(8, 32, 32)).astype(np.float32)
    >>> det = InpaintingAE(width=4, image_size=32, max_epochs=2, smoothing_sigma=1,
    ...                    random_state=0).fit(X)
    >>> det.transform(X).shape
    (8, 32, 32)
    """

    _parameter_constraints = {
        **BaseDetector._parameter_constraints,
        "objective": [StrOptions(set(OBJECTIVES))],
        "lam": [Interval(Real, 0, 1, closed="both")],
        "squared_norm": ["boolean"],
        "width": [Interval(Integral, 1, None, closed="left")],
        "smoothing_sigma": [Interval(Real, 0, None, closed="left")],
        "min_defect_area": [
            Interval(Integral, 1, None, closed="left"),
            Interval(RealNotInt, 0, 1, closed="neither"),
        ],
        "patch_size": [tuple, list],
        "brightness": [Interval(Real, 0, 1, closed="left")],
        "rotate90": ["boolean"],
        "flip": ["boolean"],
        "progressive_resizing": ["boolean"],
    }

    def __init__(
        self,
        objective="restore",
        lam=0.5,
        squared_norm=True,
        width=32,
        image_size=512,
        smoothing_sigma=4.0,
        min_defect_area=0.001,
        patch_size=(0.05, 0.35),
        brightness=0.0,
        rotate90=True,
        flip=True,
        progressive_resizing=True,
        max_epochs=100, batch_size=8, lr=1e-3, lr_schedule="paper", device="auto",
        random_state=None, contamination="auto", verbose=0, image_shape=None, value_range=None,
        callbacks=None, validation_fraction=None, early_stopping=False, n_iter_no_change=10, tol=1e-4,
        precision="float32", image_score="auto", image_score_k=0.01, image_score_sigma=4.0):
        assign_parameters(self, locals())

    _fitted_attributes = ("min_defect_area_", "reference_scores_")

    def _check_fitted_values(self):
        height, width = self.input_shape_[:2]
        expected = self._resolved_min_area(height, width)
        if self.min_defect_area_ != expected:
            raise ValueError(
                f"min_defect_area_={self.min_defect_area_!r} is not what "
                f"min_defect_area={self.min_defect_area!r} gives for "
                f"{height}x{width} images ({expected})"
            )

    # ----------------------------------------------------------- helpers
    def _check_params(self):
        """Check the image size and ``patch_size``; the patch range for ``_fit``."""
        if self.image_size is not None and (self.image_size % 8 or self.image_size < 16):
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of 8 (three 2x "
                f"poolings in the network) and at least 16."
            )
        try:
            low, high = (float(v) for v in self.patch_size)
        except (TypeError, ValueError):
            low = high = float("nan")
        if not 0 < low <= high < 1:
            raise ValueError(
                f"patch_size={self.patch_size!r} must be a pair (low, high) with "
                f"0 < low <= high < 1 (fractions of the image side)."
            )
        return {"patch_size": (low, high)}

    @property
    def _resizes_freely(self):
        # Fully convolutional at full resolution: any input size (see image_size).
        return self.image_size is None

    def _split(self, n_images):
        """Indices of training and held-out images."""
        if not self._validation_fraction() or n_images < 2:
            return np.arange(n_images), np.arange(0)
        n_valid = min(n_images - 1, max(1, int(round(self._validation_fraction() * n_images))))
        order = np.random.RandomState(self._seed_).permutation(n_images)
        return np.sort(order[n_valid:]), np.sort(order[:n_valid])

    def _resolved_min_area(self, height, width):
        if isinstance(self.min_defect_area, Integral):
            return int(self.min_defect_area)
        return max(1, int(math.ceil(self.min_defect_area * height * width)))

    # --------------------------------------------------------------- fit
    def _fit(self, images, patch_size):
        if self.image_size is None and min(images.height, images.width) < 16:
            raise ValueError(
                f"image_size=None keeps the training images' own size, "
                f"{images.height}x{images.width}, but InpaintingAE trains on images of "
                f"at least 16 px per side (batch norm at its 1/8 bottleneck); pass "
                f"image_size=16 or more to resize them."
            )
        self.min_defect_area_ = self._resolved_min_area(images.height, images.width)
        if self.min_defect_area_ > images.height * images.width:
            raise ValueError(
                f"min_defect_area={self.min_defect_area!r} is {self.min_defect_area_} pixels "
                f"but the images have only {images.height}x{images.width}="
                f"{images.height * images.width}; use a smaller value or a fraction in (0, 1)."
            )
        train_idx, valid_idx = self._split(images.n_images)
        distortion = dict(
            patch_size=patch_size,
            brightness=float(self.brightness),
            rotate90=bool(self.rotate90),
            flip=bool(self.flip),
        )
        # The images are read (and resized) item by item from the input, every
        # epoch: training memory does not grow with the number of images.
        train_set = DistortionDataset(
            self._working_images(images, lazy=True, indices=train_idx),
            random_state=self._seed_,
            max_epochs=self.max_epochs,
            progressive=bool(self.progressive_resizing),
            **distortion,
        )
        train_split = None
        valid_set = None
        if len(valid_idx):
            # Fixed distortions of the held-out images at full size: a
            # comparable valid_loss from epoch to epoch.
            distortion.update(rotate90=False, flip=False)
            valid_set = DistortionDataset(
                self._working_images(images, lazy=True, indices=valid_idx),
                random_state=self._seed_ + 1,
                progressive=False,
                **distortion,
            )
            train_split = predefined_split(valid_set)
        self._build_networks(
            train_split=train_split, schedule=DistortionSchedule(train_set)
        )
        net = self.net_
        try:
            net.partial_fit(train_set)
        finally:
            # The net keeps references to both datasets (callback, train_split):
            # drop their images so that a pickled detector holds no training data.
            train_set.release()
            if valid_set is not None:
                valid_set.release()

    def _build_networks(self, pretrained=True, train_split=None, schedule=None):
        """The initialised, untrained skorch net (``fit`` and ``skanomaly.load``).

        ``fit`` passes the held-out split and the distortion schedule
        callback; ``load`` builds the bare net for the saved weights.
        """
        net = make_net(
            self,
            module=InpaintingAutoencoder,
            criterion=InpaintingLoss,
            net_class=InpaintingAENet,
            module__in_channels=self.input_shape_[2],
            module__width=int(self.width),
            criterion__objective=self.objective,
            criterion__lam=float(self.lam),
            criterion__squared=bool(self.squared_norm),
            train_split=train_split,
        )
        if schedule is not None:
            net.callbacks.append(("distortion_schedule", schedule))
            # Patience starts once the training images are at full size.
            net.callbacks = [
                (key, _full_size_stopping(cb) if key == "early_stopping" else cb)
                for key, cb in net.callbacks
            ]
        self.net_ = net.initialize()

    # ----------------------------------------------------------- scoring
    def _anomaly_working(self, xw):
        # Smoothed error maps at the working size; the base resizes them to
        # the input, where _score_from_maps applies the §4.2 area rule.
        return None, anomaly_maps(self.net_.module_(xw), xw, self.smoothing_sigma)

    def _score_from_maps(self, maps):
        levels = [largest_component_level(m, self.min_defect_area_) for m in maps.cpu().numpy()]
        return torch.tensor(levels, dtype=torch.float64)

    # The threshold is the §4.2 area rule on the reference images' scores,
    # not a pixel quantile: no maps are kept at the end of fit.
    _pixel_threshold = False

    def _reference_images(self, images):
        _, valid_idx = self._split(images.n_images)
        return images.subset(valid_idx) if len(valid_idx) else images

    def _set_thresholds(self, scores):
        # With contamination="auto" the base's offset_ (lowest normality of
        # the reference images) is exactly -threshold_: the §4.2 rule.
        self.reference_scores_ = np.asarray(scores, dtype=np.float64)
        self.threshold_ = float(self.reference_scores_.max())

    @fill_doc(segment=SEGMENT_DOC)
    def segment(self, X, threshold=None):
        """Binary anomaly masks: regions of at least ``min_defect_area_`` above a threshold.

        The heatmap pixels above the threshold, less the connected regions
        smaller than ``min_defect_area_`` pixels (§4.2).

        [segment]
        """
        masks = super().segment(X, threshold=threshold)
        # Flattened input has the fitted size; image input may have another
        # (image_size=None scores any size).
        h, w = masks.shape[1:] if masks.ndim == 3 else self.input_shape_[:2]
        cleaned = remove_small_components(masks.reshape(len(masks), h, w), self.min_defect_area_)
        return cleaned.reshape(masks.shape)
