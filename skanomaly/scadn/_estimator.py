"""SCADNDetector: semantic context based anomaly detection (Yan et al., 2021)."""

from __future__ import annotations

import os
import shutil
import tempfile
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from .._training import make_net, runtime_device
from ..base import BaseDetector, StreamingFPRThreshold, assign_parameters, fill_shared_doc
from ..validation import _release_pages
from ._net import SCADNNet
from .losses import ADVERSARIAL_LOSSES, ReconstructionLoss
from .masks import DEFAULT_MASK_SCALES, stripe_width, striped_masks
from .torch_model import (
    PatchDiscriminator,
    SCADNGenerator,
    scale_error_maps,
    select_scale,
)

__all__ = ["SCADNDetector"]

# A per-scale map cache larger than this (bytes) goes to a temporary file, whose
# pages are released as they are written and read: fit's memory then does not
# grow with the number of training images (a bounded in-memory cache for small
# fits, which then write no file).
_MEMORY_CACHE_LIMIT = 32 * 1024**2


@fill_shared_doc
class SCADNDetector(BaseDetector):
    """Semantic context based anomaly detection network (SCADN).

    Multi-scale striped masks remove half of a normal image; a generator
    learns, against a PatchGAN discriminator, to restore the removed stripes
    from their surroundings.  At test time every image is passed through all
    masks; the squared errors on the removed stripes are merged per scale by a
    pixel-wise maximum; the scale whose mean error is furthest above its mean
    on the training images is chosen; its map is the heatmap and its mean the
    anomaly score (eqs. 5-10).

    Parameters
    ----------
    mask_scales : sequence of float, default=(1/4, 1/8, 1/16)
        Stripe widths as fractions of the image side, one per scale.  Each
        scale gives four masks: vertical stripes, their complement, horizontal
        stripes, their complement.  The default is the authors' released mask
        set (128, 64 and 32 px stripes at 512 px).
    width : int, default=64
        Channels of the first generator and discriminator layer (deeper
        layers use 2, 4 and 8 times it).  64 is the paper's network; small
        values give tiny nets for tests.
    lambda_rm : float, default=3.0
        Extra weight of removed pixels in the reconstruction loss (eq. 2).
    lambda_rec : float, default=1.0
        Weight of the reconstruction loss (eq. 4).
    lambda_adv : float, default=0.001
        Weight of the adversarial loss (eq. 4).
    adversarial_loss : {"minimax", "nonsaturating"}, default="minimax"
        The generator's adversarial term: ``"minimax"`` minimises
        ``log(1 - D(I_hat))`` as eqs. 3-4 are written; ``"nonsaturating"``
        minimises ``-log D(I_hat)``, as the authors' code (EdgeConnect's
        "nsgan") does.
    discriminator_lr : float or None, default=None
        Adam learning rate of the discriminator; None uses ``lr`` (the paper
        gives one learning rate; the authors' code used ``0.1 * lr``).
    segmentation_fpr : float in [0, 1), default=0.005
        Acceptable false-positive rate on the training images' pixels that
        sets ``threshold_`` for :meth:`segment`.
    image_size : int, default=512
        Working side length; images are resized to it.  A multiple of 8, at
        least 24 (the generator works at 1/8 of it).  The paper uses 512 for
        MVTec AD and LaceAD and 32 for MNIST and CIFAR-10.  ``None`` (full
        resolution) is refused: the striped masks' widths, the per-scale
        mean errors ``mu_`` that choose the scale (eq. 9) and the PatchGAN
        discriminator are all set for one square working size.  For large
        images, wrap the detector in :class:`skanomaly.TiledDetector`, which
        trains and scores it on overlapping tiles and stitches their maps.
    max_epochs : int, default=200
        Training epochs (paper: 200).
    batch_size : int, default=4
        Training batch size (paper: 4 at 512 px, 512 at 32 px); scoring
        processes this many images at a time, each through all masks.
    lr : float, default=1e-4
        Adam learning rate of the generator (paper: 1e-4, betas (0, 0.9)).
    [shared parameters]

    With ``validation_fraction``, ``valid_loss`` is the reconstruction loss
    with fixed masks.

    Attributes
    ----------
    net_ : SCADNNet
        The trained skorch net: generator ``net_.module_``, discriminator
        ``net_.discriminator_``, optimizers ``net_.optimizer_`` and
        ``net_.optimizer_discriminator_``; ``net_.history`` records
        ``train_loss`` (generator), ``discriminator_loss`` and
        ``reconstruction_loss`` per batch.
    stripe_widths_ : list of int
        Stripe width in pixels of each scale at the working size.
    mu_ : ndarray of shape (n_scales,)
        Reference value ``mu_i``: mean over the training images of the
        average of their error map ``E_i``.
    threshold_ : float
        Pixel threshold of :meth:`segment` on the selected scale's error map
        (``segmentation_fpr`` of the training pixels lie above it).
    [shared attributes]

    Notes
    -----
    Choices where the paper is silent or ambiguous, and where the authors'
    code differs:

    - Masks: 1 = kept, 0 = removed, and removed pixels are set to 0 (eq. 1);
      the authors' code filled them with 1.  Stripes start with a kept stripe
      at the top/left; a side that is not a multiple of twice the stripe
      width ends with a partial stripe, so a mask then removes about, not
      exactly, half of the image, but every pixel is still removed by
      exactly two of its scale's four masks.  Stripe width is
      ``round(scale * side)``, at least 1 px.
    - Generator: the implementation details say only the first residual
      block is dilated, the method section that the blocks use dilated
      convolutions; as in EdgeConnect and the authors' code, the first
      convolution of every block is dilated (dilation 2).  Up-sampling is
      nearest-neighbour x2 followed by a 3x3 convolution (authors' code)
      rather than transposed convolutions (EdgeConnect); the output is
      ``(tanh + 1) / 2``.  The generator receives only the masked image, no
      mask channel (eq. 1).  Weights are drawn from N(0, 0.02).
    - Discriminator: the 70x70 PatchGAN of the authors' code (five 4x4
      convolutions, spectral normalisation, no bias); the paper calls it
      "global" but names PatchGAN.  ``D`` averages over patches in eq. 3.
    - Losses: eq. 2 is the mean over pixels and channels of the weighted
      squared error; the authors' code instead added the MSE of kept pixels
      and 4 x that of removed pixels and divided by the mask mean (for 50 %
      masks a constant factor 2 on the reconstruction loss).  Their feature
      matching loss had weight 0 and is omitted.  The discriminator loss is
      ``-L_adv`` (the code halved it).
    - Training: each step updates D once, then G once against the updated D;
      both use Adam with betas (0, 0.9).  The authors saved the checkpoint
      with the lowest training-set error every 10 epochs; here training runs
      ``max_epochs`` (or until a user's early-stopping callback stops it).
    - Inference: error maps are the squared error averaged over colour
      channels (authors' code), computed at the working size; the heatmap
      is bilinearly resized to the input size; the score is the mean of the
      chosen map at the working size (eq. 10).  ``mu_i`` is computed with
      the trained generator over all training images at the end of ``fit``.
    - Cost: scoring runs the generator ``4 * len(mask_scales)`` times per
      image (12 by default), in chunks of ``4 * batch_size`` masked images.
      After training, ``fit`` runs these passes once per training image: it
      keeps each image's per-scale maps at the working size in a float32
      cache (``n * len(mask_scales) * image_size**2 * 4`` bytes; a temporary
      file above 32 MiB, deleted at the end of ``fit``), takes ``mu_`` from
      it, then the scores that set ``offset_`` and ``threshold_``.  With
      ``precision`` other than ``"float32"`` the training images are scored
      a second time under mixed precision (``mu_`` stays float32).

    References
    ----------
    X. Yan, H. Zhang, X. Xu, X. Hu, P.-A. Heng. "Learning semantic context
    from normal samples for unsupervised anomaly detection." AAAI 2021.

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly import SCADNDetector
    >>> X = np.random.default_rng(0).uniform(size=(8, 32, 32)).astype(np.float32)
    >>> det = SCADNDetector(width=4, image_size=32, max_epochs=1, random_state=0).fit(X)
    >>> det.transform(X).shape
    (8, 32, 32)
    """

    _parameter_constraints = {
        **BaseDetector._parameter_constraints,
        "mask_scales": [list, tuple],
        "width": [Interval(Integral, 1, None, closed="left")],
        "lambda_rm": [Interval(Real, 0, None, closed="left")],
        "lambda_rec": [Interval(Real, 0, None, closed="left")],
        "lambda_adv": [Interval(Real, 0, None, closed="left")],
        "adversarial_loss": [StrOptions(set(ADVERSARIAL_LOSSES))],
        "discriminator_lr": [Interval(Real, 0, None, closed="neither"), None],
        "segmentation_fpr": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        mask_scales=DEFAULT_MASK_SCALES,
        width=64,
        lambda_rm=3.0,
        lambda_rec=1.0,
        lambda_adv=0.001,
        adversarial_loss="minimax",
        discriminator_lr=None,
        segmentation_fpr=0.005,
        image_size=512,
        max_epochs=200, batch_size=4, lr=1e-4, lr_schedule="paper", device="auto",
        random_state=None, contamination="auto", verbose=0, image_shape=None, value_range=None,
        callbacks=None, validation_fraction=None, early_stopping=False, n_iter_no_change=10, tol=1e-4,
        precision="float32", image_score="auto", image_score_k=0.01, image_score_sigma=4.0):
        assign_parameters(self, locals())

    # ----------------------------------------------------------- helpers
    def _check_params(self):
        size = self.image_size
        if size is None:
            raise ValueError(
                "image_size=None (full resolution) is not supported by SCADNDetector: "
                "its striped masks, the per-scale mean errors that pick the mask scale "
                "(eq. 9) and its discriminator need one fixed square working size. Pass "
                "an int image_size, or tile large images with skanomaly.TiledDetector."
            )
        if size % 8 or size < 24:
            raise ValueError(
                f"image_size={size} must be a multiple of 8 and at least 24: the "
                f"generator down-samples to 1/8 and its dilated residual blocks need "
                f"feature maps of at least 3x3."
            )
        scales = tuple(self.mask_scales)
        if not scales or not all(
            isinstance(s, Real) and not isinstance(s, bool) and 0 < s <= 0.5 for s in scales
        ):
            raise ValueError(
                f"mask_scales={self.mask_scales!r} must be a non-empty sequence of "
                f"stripe widths as fractions of the side, each in (0, 0.5]."
            )
        return {"mask_scales": scales}

    def _scale_maps(self, xw):
        """Per-scale error maps (b, n_scales, S, S) of images at the working size."""
        masks = striped_masks(*xw.shape[-2:], self.mask_scales_, device=xw.device)
        return scale_error_maps(self.net_.module_, xw, masks, chunk_size=4 * self.batch_size)

    # --------------------------------------------------------------- fit
    #: Fitted values the safe model format stores (see ``BaseDetector.save``).
    _fitted_attributes = ("mask_scales_", "stripe_widths_", "mu_")

    def _check_fitted_values(self):
        scales = list(self._check_params()["mask_scales"])
        if list(self.mask_scales_) != scales:
            raise ValueError(f"mask_scales_={self.mask_scales_!r} differs from "
                             f"mask_scales={self.mask_scales!r}")
        widths = [stripe_width(self.image_size, s) for s in scales]
        if list(self.stripe_widths_) != widths:
            raise ValueError(f"stripe_widths_={self.stripe_widths_!r} are not the widths of "
                             f"mask_scales at image_size={self.image_size} ({widths})")
        if np.shape(self.mu_) != (len(scales),):
            raise ValueError(f"mu_ has shape {np.shape(self.mu_)}, not one value per mask "
                             f"scale ({len(scales)})")

    def _build_networks(self, pretrained=True):
        """Build the untrained, initialised skorch net (generator and discriminator).

        Called by ``fit`` before training and by ``skanomaly.load`` before
        loading the saved tensors; needs ``input_shape_`` and
        ``mask_scales_``.  ``pretrained`` is unused (SCADN has no pretrained
        network).
        """
        channels = self.input_shape_[2]
        optim_kw = {"optimizer__betas": (0.0, 0.9), "optimizer_discriminator__betas": (0.0, 0.9)}
        if self.discriminator_lr is not None:
            optim_kw["optimizer_discriminator__lr"] = self.discriminator_lr
        net = make_net(
            self,
            module=SCADNGenerator,
            criterion=ReconstructionLoss,
            net_class=SCADNNet,
            module__in_channels=channels,
            module__width=self.width,
            criterion__lambda_rm=self.lambda_rm,
            discriminator=PatchDiscriminator,
            discriminator__in_channels=channels,
            discriminator__width=self.width,
            mask_scales=self.mask_scales_,
            lambda_rec=self.lambda_rec,
            lambda_adv=self.lambda_adv,
            adversarial_loss=self.adversarial_loss,
            **optim_kw,
        )
        self.net_ = net.initialize()

    def _fit(self, images, mask_scales):
        self.mask_scales_ = mask_scales
        self.stripe_widths_ = [stripe_width(self.image_size, s) for s in self.mask_scales_]
        self._build_networks()
        net = self.net_
        data = self._working_images(images, lazy=True)
        try:
            net.partial_fit(data)
        finally:
            data.release()  # whatever still refers to it holds no training images
        if self._scores_from_cache(images):
            self._fit_from_map_cache(images)
            return
        # Reference value mu_i of each scale (eq. 9) from the training images;
        # the base then scores them a second time for offset_ and threshold_.
        net.module_.eval()
        total = None
        with torch.inference_mode():
            for x in images.batches(self.batch_size, device=self.device_):
                total = self._add_scale_means(total, self._scale_maps(self._to_working_size(x)))
        self.mu_ = (total / images.n_images).cpu().numpy()

    @staticmethod
    def _add_scale_means(total, maps):
        """Running float64 sum over images of each scale's mean error (for ``mu_``)."""
        means = maps.mean(dim=(2, 3)).sum(dim=0).double()
        return means if total is None else total + means

    def _scores_from_cache(self, images):
        """Whether ``fit`` scores its training images once, from a map cache.

        True when the reference images are the training images and scoring
        runs in float32 with the method's own image score: ``mu_`` is always
        computed in float32, so with ``precision="bfloat16"``/``"float16"``
        the reference scores need a second, mixed-precision pass (the
        base's), as does another ``image_score`` (input-resolution maps).
        """
        return (
            getattr(self, "precision", "float32") == "float32"
            and getattr(self, "image_score", "auto") == "auto"
            and self._reference_images(images) is images
        )

    def _map_cache(self, n_images):
        """An empty float32 cache ``(n_images, n_scales, S, S)`` of per-scale maps.

        In memory up to ``_MEMORY_CACHE_LIMIT`` bytes, else a temporary
        ``.npy`` memory map (whose pages the callers release once written or
        read).

        Returns
        -------
        cache : ndarray or numpy.memmap
        tmpdir : str or None
            The temporary folder holding the memory map, to delete after use.
        """
        shape = (n_images, len(self.mask_scales_), self.image_size, self.image_size)
        nbytes = int(np.prod(shape)) * 4
        if nbytes <= _MEMORY_CACHE_LIMIT:
            return np.empty(shape, dtype=np.float32), None
        tmpdir = tempfile.mkdtemp(prefix="skanomaly-scadn-")
        cache = np.lib.format.open_memmap(
            os.path.join(tmpdir, "maps.npy"), mode="w+", dtype=np.float32, shape=shape
        )
        return cache, tmpdir

    def _fit_from_map_cache(self, images):
        """``mu_`` and the reference scores from one generator pass over ``images``.

        Each training image's per-scale error maps ``E_i`` (eqs. 5-7, the
        ``4 * n_scales`` generator passes) are computed once at the working
        size and cached in float32; ``mu_`` (eq. 9) is their mean, and the
        scale selection, scores and heatmaps that set ``offset_`` and
        ``threshold_`` are then computed from the cache, in the same batches
        and with the same operations as :meth:`score_samples`, so the fitted
        values equal those of scoring the training images anew.  The cache
        is deleted before returning; :meth:`_fit_offset_and_thresholds` sets
        the fitted values.
        """
        device = runtime_device(self.device_)
        self._prepare_inference(device)
        batch_size = self._inference_batch_size()
        cache, tmpdir = self._map_cache(images.n_images)
        try:
            total, start = None, 0
            with torch.inference_mode():
                for x in images.batches(batch_size, device=device):
                    maps = self._scale_maps(self._to_working_size(x))
                    total = self._add_scale_means(total, maps)
                    cache[start : start + len(maps)] = maps.cpu().numpy()
                    # A disk cache's written pages leave this process (no-op in memory).
                    _release_pages(cache[start : start + len(maps)])
                    start += len(maps)
            self.mu_ = (total / images.n_images).cpu().numpy()
            self._reference_scoring_ = self._score_map_cache(cache, images, batch_size, device)
        finally:
            del cache
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    def _score_map_cache(self, cache, images, batch_size, device):
        """Scores ``(n,)`` and pixel threshold (or None) from cached per-scale maps."""
        fpr = self.segmentation_fpr if self._pixel_threshold else None
        size = (images.height, images.width)
        stream = None
        if fpr is not None:
            stream = StreamingFPRThreshold(images.n_images * size[0] * size[1], fpr)
        mu = torch.as_tensor(self.mu_, dtype=torch.float32, device=device)
        scores = []
        with torch.inference_mode():
            for start in range(0, len(cache), batch_size):
                block = cache[start : start + batch_size]
                if isinstance(block, np.memmap):  # a private copy; its pages released
                    block, mapped = np.array(block), block
                    _release_pages(mapped)
                maps = torch.from_numpy(block)
                s, final, _ = select_scale(maps.to(device), mu)
                scores.append(s.float().cpu().numpy())
                if stream is not None:
                    stream.add(self._to_input_size(final, size).float().cpu().numpy())
        scores = np.concatenate(scores).astype(np.float64)
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite anomaly scores; the model "
                f"may have diverged during fit."
            )
        return scores, (None if stream is None else stream.threshold())

    def _fit_offset_and_thresholds(self, images):
        """``offset_`` and ``threshold_`` from the scores ``fit`` computed with ``mu_``.

        Falls back to the base's scoring pass where ``fit`` did not score the
        reference images (see :meth:`_scores_from_cache`).
        """
        reference = vars(self).pop("_reference_scoring_", None)
        if reference is None:
            super()._fit_offset_and_thresholds(images)
            return
        scores, threshold = reference
        self.offset_ = self._offset_from(-scores, self.contamination)
        if threshold is not None:
            self.threshold_ = threshold
        self._set_thresholds(scores)

    def _anomaly_working(self, xw):
        maps = self._scale_maps(xw)
        mu = torch.as_tensor(self.mu_, dtype=maps.dtype, device=maps.device)
        scores, final, _ = select_scale(maps, mu)
        return scores, final

    def chosen_scales(self, X):
        """Index of the mask scale chosen for each image (eq. 9).

        Parameters
        ----------
        X : array-like or torch.Tensor
            Images of the fitted size.

        Returns
        -------
        scales : ndarray of shape (n_samples,) of int
            Indices into ``mask_scales``.
        """
        images = self._check_input(X)
        device = runtime_device(self.device_)
        self._prepare_inference(device)
        mu = torch.as_tensor(self.mu_, dtype=torch.float32, device=device)
        out = []
        with torch.inference_mode():
            for x in images.batches(self.batch_size, device=device):
                xw = self._to_working_size(x)
                out.append(select_scale(self._scale_maps(xw), mu)[2].cpu().numpy())
        return np.concatenate(out)
