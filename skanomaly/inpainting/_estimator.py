"""InpaintingAE: self-supervised training of autoencoders (Bauer 2022)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from scipy import ndimage
from sklearn.utils._param_validation import Interval, RealNotInt, StrOptions
from skorch.callbacks import Callback
from skorch.helper import predefined_split
from skorch.utils import to_device

from .._training import UnsupervisedNet, make_net
from ..base import BaseDetector
from .distortions import DistortionDataset
from .losses import OBJECTIVES, InpaintingLoss
from .torch_model import InpaintingAutoencoder

__all__ = ["InpaintingAE", "largest_component_level", "remove_small_components"]


# ------------------------------------------------------------- §4.2 helpers
def _largest_component(binary):
    labels, n = ndimage.label(binary)
    if n == 0:
        return 0
    return int(np.bincount(labels.ravel())[1:].max())


def largest_component_level(heatmap, min_area):
    """Lowest heatmap level at which no region of ``min_area`` pixels stands out.

    Returns the smallest value ``t`` of ``heatmap`` such that every connected
    component (4-connectivity) of ``heatmap > t`` has fewer than
    ``min_area`` pixels.  The largest component only shrinks as ``t`` rises,
    so ``t`` is found by bisection over the sorted heatmap values.  With
    ``min_area=1`` it is the heatmap's maximum.

    Parameters
    ----------
    heatmap : ndarray of shape (H, W)
    min_area : int
        Minimal area of a defect, in pixels.

    Returns
    -------
    level : float
        The image is anomalous at a threshold ``thr`` (a component of at
        least ``min_area`` pixels exceeds it) exactly when ``level > thr``.
    """
    heatmap = np.asarray(heatmap)
    if min_area <= 1:
        return float(heatmap.max())
    values = np.unique(heatmap)
    lo, hi = 0, len(values) - 1  # values[hi] always qualifies: nothing exceeds it
    while lo < hi:
        mid = (lo + hi) // 2
        if _largest_component(heatmap > values[mid]) < min_area:
            hi = mid
        else:
            lo = mid + 1
    return float(values[lo])


def remove_small_components(masks, min_area):
    """Drop connected components (4-connectivity) smaller than ``min_area``.

    Parameters
    ----------
    masks : ndarray of bool, shape (n, H, W)
    min_area : int

    Returns
    -------
    masks : ndarray of bool, shape (n, H, W)
    """
    out = np.zeros_like(masks, dtype=bool)
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes >= min_area
            keep[0] = False
            out[i] = keep[labels]
    return out


# ------------------------------------------------------------ skorch glue
class InpaintingAENet(UnsupervisedNet):
    """UnsupervisedNet whose loss also sees the clean images and masks.

    Batches are ``(X_hat, target)`` with ``target = cat([X, M])`` along the
    channels (see :class:`DistortionDataset`); the criterion is called as
    ``criterion(F(X_hat), X, X_hat, M)``.
    """

    def get_loss(self, y_pred, y_true, X=None, training=False):
        X = to_device(X, self.device)
        y_true = to_device(y_true, self.device)
        c = y_pred.shape[1]
        return self.criterion_(y_pred, y_true[:, :c], X, y_true[:, c:])


class _DistortionSchedule(Callback):
    """Tell the training dataset the epoch (seeds and progressive size)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        # skorch's own on_epoch_begin has already opened this epoch's history row.
        self.dataset.set_epoch(len(net.history) - 1)


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
    squared_norm : bool, default=False
        ``False`` uses the objectives exactly as the paper writes them: each
        region's L2 norm of the residual divided by the region's L1 mask
        norm.  ``True`` squares the L2 norms, which makes each term the mean
        squared error over its region and balances the two regions; it
        trains markedly faster and better at small budgets, and makes
        ``objective="amplify"`` usable at ``lam=0.5`` (see Notes).
    width : int, default=32
        Filters of the first convolution; every layer's width scales with
        it.  32 gives Table 1 exactly; small values make tiny test networks.
    image_size : int, default=512
        Working side length (a multiple of 8, at least 16); images are
        resized to it for the network, maps are resized back to the input
        resolution.  Table 1 is drawn for 512.
    smoothing_sigma : float, default=4.0
        Standard deviation, in pixels of the working size, of the Gaussian
        filter applied to the error map (``scipy.ndimage.gaussian_filter``);
        0 disables smoothing.
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
    device : str, default="auto"
        ``"auto"`` picks CUDA when available, else CPU.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, batch order, held-out split and every
        distortion.  Same seed, data and device: same scores.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets ``offset_``.  ``"auto"`` is the rule of §4.2: an image is
        anomalous when a region of at least ``min_defect_area`` pixels
        exceeds ``threshold_`` (``offset_ = -threshold_``); a float is the
        share of the reference normal images treated as outliers.
    verbose : int, default=0
        ``>0`` prints skorch's epoch log and a progress bar.
    image_shape : tuple or None, default=None
        ``(H, W)`` or ``(H, W, C)`` to unflatten 2-D ``(n, n_features)``
        input.
    value_range : tuple (low, high) or None, default=None
        Raw values mapped to 0 and 1 for data of another range (e.g.
        ``(0, 4095)`` for 12-bit images); ``None``: uint8 means 0-255 and
        floats 0-1.
    callbacks : list of skorch callbacks or None, default=None
        Added to the training net (e.g. ``EarlyStopping`` on ``valid_loss``,
        which the paper recommends for eq. (3)).
    validation_fraction : float in (0, 1) or None, default=None
        Holds out this share of the training images (at least one): they
        give skorch's ``valid_loss`` (on fixed distortions) and are the
        normal validation images on which ``threshold_`` and ``offset_`` are
        set (§4.2).  ``None`` trains on all images and sets both on the
        training images.

    Attributes
    ----------
    net_ : skanomaly._training.UnsupervisedNet
        The trained skorch net; ``net_.module_`` is the
        :class:`~skanomaly.inpainting.torch_model.InpaintingAutoencoder`.
    min_defect_area_ : int
        Minimal defect area in input pixels.
    threshold_ : float
        Heatmap threshold: on every reference normal image, no connected
        region of ``min_defect_area_`` pixels exceeds it.
    offset_ : float
        Decision threshold on ``score_samples``.
    reference_scores_ : ndarray of shape (n_reference,)
        Anomaly scores of the normal images that set ``threshold_`` (the
        held-out ones when ``validation_fraction`` is set).
    n_features_in_ : int
        ``H * W * C`` of the training images.
    input_shape_ : tuple
        ``(H, W, C)`` of the training images.

    Notes
    -----
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

    - Objectives: by default the norms exactly as written (per image, the
      unsquared L2 norm of the masked residual divided by the L1 norm of the
      mask over all channels), averaged over the batch.  Written so, a term
      is its region's RMS error divided by the square root of the region's
      size, so beyond ``lam`` the small distorted region outweighs the rest
      by ``sqrt(|M_bar|_1 / |M|_1)`` (about 5-10 with the default patch
      sizes).  Eq. (1) then learns the undistorted reconstruction slowly,
      and eq. (3) at ``lam=0.5`` lowers its loss by raising the error
      everywhere (we observed reconstructions with an RMS error of 0.3).
      ``squared_norm=True`` turns each term into its region's mean squared
      error, the usual reading of such losses; it trains much better at
      small budgets (see the benchmark in ``benchmarks/bench_inpainting.py``).
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
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(8, 32, 32)).astype(np.float32)
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
        squared_norm=False,
        width=32,
        image_size=512,
        smoothing_sigma=4.0,
        min_defect_area=0.001,
        patch_size=(0.05, 0.35),
        brightness=0.0,
        rotate90=True,
        flip=True,
        progressive_resizing=True,
        max_epochs=100,
        batch_size=8,
        lr=1e-3,
        device="auto",
        random_state=None,
        contamination="auto",
        verbose=0,
        image_shape=None,
        value_range=None,
        callbacks=None,
        validation_fraction=None,
    ):
        self.objective = objective
        self.lam = lam
        self.squared_norm = squared_norm
        self.width = width
        self.image_size = image_size
        self.smoothing_sigma = smoothing_sigma
        self.min_defect_area = min_defect_area
        self.patch_size = patch_size
        self.brightness = brightness
        self.rotate90 = rotate90
        self.flip = flip
        self.progressive_resizing = progressive_resizing
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.device = device
        self.random_state = random_state
        self.contamination = contamination
        self.verbose = verbose
        self.image_shape = image_shape
        self.value_range = value_range
        self.callbacks = callbacks
        self.validation_fraction = validation_fraction

    # ----------------------------------------------------------- helpers
    def _check_own_params(self):
        if self.image_size % 8 or self.image_size < 16:
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
        return low, high

    def _working_tensor(self, images):
        """All images at the working size, float32 on the CPU."""
        chunks = [
            self._to_working_size(x).clamp_(0.0, 1.0)
            for x in images.batches(max(1, self.batch_size), device="cpu")
        ]
        return torch.cat(chunks).contiguous()

    def _split(self, n_images):
        """Indices of training and held-out images."""
        if not self.validation_fraction or n_images < 2:
            return np.arange(n_images), np.arange(0)
        n_valid = min(n_images - 1, max(1, int(round(self.validation_fraction * n_images))))
        order = np.random.RandomState(self._seed_).permutation(n_images)
        return np.sort(order[n_valid:]), np.sort(order[:n_valid])

    def _resolved_min_area(self, height, width):
        if isinstance(self.min_defect_area, Integral):
            return int(self.min_defect_area)
        return max(1, int(math.ceil(self.min_defect_area * height * width)))

    # --------------------------------------------------------------- fit
    def _fit(self, images):
        patch_size = self._check_own_params()
        self.min_defect_area_ = self._resolved_min_area(images.height, images.width)
        train_idx, valid_idx = self._split(images.n_images)
        distortion = dict(
            patch_size=patch_size,
            brightness=float(self.brightness),
            rotate90=bool(self.rotate90),
            flip=bool(self.flip),
        )
        train_set = DistortionDataset(
            self._working_tensor(images.subset(train_idx)),
            random_state=self._seed_,
            max_epochs=self.max_epochs,
            progressive=bool(self.progressive_resizing),
            **distortion,
        )
        extra = {"train_split": None}
        valid_set = None
        if len(valid_idx):
            # Fixed distortions of the held-out images at full size: a
            # comparable valid_loss from epoch to epoch.
            distortion.update(rotate90=False, flip=False)
            valid_set = DistortionDataset(
                self._working_tensor(images.subset(valid_idx)),
                random_state=self._seed_ + 1,
                progressive=False,
                **distortion,
            )
            extra["train_split"] = predefined_split(valid_set)
        net = make_net(
            self,
            module=InpaintingAutoencoder,
            criterion=InpaintingLoss,
            net_class=InpaintingAENet,
            module__in_channels=images.n_channels,
            module__width=int(self.width),
            criterion__objective=self.objective,
            criterion__lam=float(self.lam),
            criterion__squared=bool(self.squared_norm),
            **extra,
        )
        net.callbacks.append(("distortion_schedule", _DistortionSchedule(train_set)))
        try:
            net.fit(train_set)
        finally:
            # The net keeps references to both datasets (callback, train_split):
            # drop their images so that a pickled detector holds no training data.
            train_set.release()
            if valid_set is not None:
                valid_set.release()
        self.net_ = net

    # ----------------------------------------------------------- scoring
    def _error_maps(self, x):
        """Smoothed error maps at the working size, as a CPU float32 array."""
        xw = self._to_working_size(x)
        recon = self.net_.module_(xw)
        err = (recon - xw).pow(2).mean(dim=1).sqrt()
        maps = err.float().cpu().numpy()
        if self.smoothing_sigma > 0:
            maps = ndimage.gaussian_filter(
                maps, sigma=(0, self.smoothing_sigma, self.smoothing_sigma), mode="reflect"
            )
        return maps

    def _anomaly_batch(self, x):
        maps = torch.from_numpy(self._error_maps(x))
        maps = self._to_input_size(maps, x.shape[-2:])
        arr = maps.numpy()
        scores = torch.tensor(
            [largest_component_level(m, self.min_defect_area_) for m in arr],
            dtype=torch.float64,
        )
        return scores, maps

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

    def segment(self, X, threshold=None):
        """Binary anomaly masks: regions of at least ``min_defect_area_`` above a threshold.

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images to segment.
        threshold : float, default=None
            Heatmap threshold; defaults to the fitted ``threshold_``.

        Returns
        -------
        masks : ndarray of bool
            Same layout as :meth:`transform`; connected regions smaller
            than ``min_defect_area_`` pixels are removed (§4.2).
        """
        masks = super().segment(X, threshold=threshold)
        h, w, _ = self.input_shape_
        cleaned = remove_small_components(masks.reshape(len(masks), h, w), self.min_defect_area_)
        return cleaned.reshape(masks.shape)
