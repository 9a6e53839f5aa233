"""Self-supervised training pairs for the inpainting autoencoder (Bauer 2022, §3.2).

For a normal image ``X`` a patch size and location are sampled, the patch is
warped by an elastic deformation, cut with a random shape mask and pasted
back, giving the distorted input ``X_hat`` and the binary mask ``M`` of the
pasted pixels.  Optionally the brightness of the patch varies.  Training
images are augmented by rotations by multiples of 90 degrees and flips, and
resized progressively over the epochs.

Every random choice of a sample comes from a NumPy generator seeded with
``(random_state, epoch, index)``: the pairs do not depend on the order in
which a data loader asks for them, and the same seed gives the same pairs.

The ranges below are ours: the paper gives none (see the estimator's Notes).
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.draw import ellipse, polygon
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "random_shape_mask",
    "elastic_displacement",
    "distort",
    "augment",
    "progressive_size",
    "DistortionDataset",
]

#: Patch side as a fraction of the image side (height and width drawn apart).
PATCH_SIZE = (0.05, 0.35)
#: Smoothing sigma of the displacement field, as a fraction of the patch's shorter side.
ELASTIC_SIGMA = (0.06, 0.15)
#: RMS displacement of the field in units of its smoothing sigma.
ELASTIC_STRENGTH = (0.5, 1.5)
#: Tries before falling back to a forced change when a warp changes nothing.
MAX_TRIES = 10
#: Progressive resizing: (end of the stage as a share of the epochs, scale).
PROGRESSIVE_STAGES = ((0.25, 0.25), (0.5, 0.5), (1.0, 1.0))


def random_shape_mask(height, width, rng):
    """A random filled shape inside a ``height x width`` box.

    Half of the shapes are ellipses (semi-axes 50-100 % of the half box,
    any orientation), half are star-shaped polygons around the box centre
    (3-10 vertices at random angles, radii 30-100 % of the half box).  The
    centre pixel is always inside, so the mask is never empty.

    Parameters
    ----------
    height, width : int
        Size of the box.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    mask : ndarray of bool, shape (height, width)
    """
    mask = np.zeros((height, width), dtype=bool)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    ry, rx = height / 2.0, width / 2.0
    if rng.random() < 0.5:
        rr, cc = ellipse(
            cy,
            cx,
            ry * rng.uniform(0.5, 1.0),
            rx * rng.uniform(0.5, 1.0),
            shape=(height, width),
            rotation=rng.uniform(-math.pi, math.pi),
        )
    else:
        n_vertices = int(rng.integers(3, 11))
        angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, n_vertices))
        radii = rng.uniform(0.3, 1.0, n_vertices)
        rows = cy + radii * ry * np.sin(angles)
        cols = cx + radii * rx * np.cos(angles)
        rr, cc = polygon(rows, cols, shape=(height, width))
    mask[rr, cc] = True
    mask[int(round(cy)), int(round(cx))] = True
    return mask


def elastic_displacement(height, width, alpha, sigma, rng):
    """Displacement field of torchvision's ``ElasticTransform``, from ``rng``.

    Follows ``torchvision.transforms.v2.ElasticTransform``: uniform noise in
    [-1, 1] per axis, smoothed by a Gaussian of standard deviation ``sigma``
    pixels, scaled by ``alpha`` and expressed in the normalised coordinates
    that :func:`torchvision.transforms.v2.functional.elastic` expects.  The
    only difference is that the noise comes from ``rng`` instead of torch's
    global generator, so that each sample is reproducible on its own.

    Returns
    -------
    displacement : torch.Tensor of shape (1, height, width, 2)
    """
    noise = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(2, 1, height, width)).astype(np.float32))
    if sigma > 0:
        k = int(8 * sigma + 1)
        k += 1 - k % 2
        noise = TF.gaussian_blur(noise, [k, k], [float(sigma), float(sigma)])
    dx = noise[0, 0] * (alpha / width)
    dy = noise[1, 0] * (alpha / height)
    return torch.stack([dx, dy], dim=-1).unsqueeze(0)


def _warp_patch(image, top, left, ph, pw, rng, elastic_sigma, elastic_strength):
    """Elastically deformed content of ``image[:, top:top+ph, left:left+pw]``.

    The warp is computed on the patch plus a margin of context (the image is
    edge-replicated where the margin leaves it), and displacements are capped
    at the margin, so every sampled point has real image content and the
    transform's constant fill never enters the patch.
    """
    sigma = max(0.5, rng.uniform(*elastic_sigma) * min(ph, pw))
    strength = rng.uniform(*elastic_strength)
    # RMS of uniform noise smoothed by a unit-mass Gaussian is about
    # 1 / (sqrt(3) * 2 sqrt(pi) sigma); torchvision's displacement in pixels is
    # alpha / 2 times the smoothed noise, hence RMS displacement = strength * sigma.
    alpha = 4.0 * math.sqrt(3.0 * math.pi) * strength * sigma**2
    margin = int(math.ceil(4.0 * strength * sigma)) + 1
    padded = F.pad(image.unsqueeze(0), (margin, margin, margin, margin), mode="replicate")[0]
    crop = padded[:, top : top + ph + 2 * margin, left : left + pw + 2 * margin]
    h, w = crop.shape[-2:]
    disp = elastic_displacement(h, w, alpha, sigma, rng)
    cap = margin - 1
    disp[..., 0].clamp_(-2.0 * cap / w, 2.0 * cap / w)
    disp[..., 1].clamp_(-2.0 * cap / h, 2.0 * cap / h)
    warped = TF.elastic(crop, disp, interpolation=TF.InterpolationMode.BILINEAR)
    return warped[:, margin : margin + ph, margin : margin + pw]


def distort(
    image,
    rng,
    *,
    patch_size=PATCH_SIZE,
    brightness=0.0,
    elastic_sigma=ELASTIC_SIGMA,
    elastic_strength=ELASTIC_STRENGTH,
    max_tries=MAX_TRIES,
):
    """One distorted copy ``X_hat`` of ``image`` and its mask ``M``.

    Parameters
    ----------
    image : torch.Tensor of shape (C, H, W)
        A normal image in [0, 1], at least 2 x 2 pixels.
    rng : numpy.random.Generator
        Source of every random choice.
    patch_size : (float, float), default=(0.05, 0.35)
        Range of the patch's height and width as fractions of the image's
        (drawn independently; at least 1 pixel, at most the side minus 1, so
        part of the image is always left unmodified).
    brightness : float, default=0.0
        The warped patch is multiplied by a factor drawn uniformly in
        ``[max(0, 1 - brightness), 1 + brightness]`` (torchvision's
        ``adjust_brightness``, clipped to [0, 1]); 0 disables it.
    elastic_sigma : (float, float), default=(0.06, 0.15)
        Range of the displacement field's smoothing sigma, as a fraction of
        the patch's shorter side (at least 0.5 pixel).
    elastic_strength : (float, float), default=(0.5, 1.5)
        Range of the field's RMS displacement in units of its sigma.
    max_tries : int, default=10
        New patches are drawn while the distortion leaves the image
        unchanged (a flat region); after that many, the masked pixels are
        shifted by 0.5 modulo 1 so that ``X_hat != X`` always holds, as the
        paper's objective (3) requires.

    Returns
    -------
    distorted : torch.Tensor of shape (C, H, W)
        ``X_hat``: equal to ``image`` outside the mask.
    mask : torch.Tensor of shape (1, H, W), float32
        ``M``: 1 where the patch was pasted, 0 elsewhere.
    """
    channels, height, width = image.shape
    for _ in range(max(1, int(max_tries))):
        ph = int(np.clip(round(rng.uniform(*patch_size) * height), 1, height - 1))
        pw = int(np.clip(round(rng.uniform(*patch_size) * width), 1, width - 1))
        top = int(rng.integers(0, height - ph + 1))
        left = int(rng.integers(0, width - pw + 1))
        patch = _warp_patch(image, top, left, ph, pw, rng, elastic_sigma, elastic_strength)
        if brightness > 0:
            factor = rng.uniform(max(0.0, 1.0 - brightness), 1.0 + brightness)
            patch = TF.adjust_brightness(patch, factor)
        shape = torch.from_numpy(random_shape_mask(ph, pw, rng))
        original = image[:, top : top + ph, left : left + pw]
        if torch.any((patch != original)[:, shape]):
            break
    else:
        patch = torch.remainder(original + 0.5, 1.0)
    distorted = image.clone()
    region = distorted[:, top : top + ph, left : left + pw]
    region[:, shape] = patch[:, shape]
    mask = torch.zeros((1, height, width), dtype=torch.float32)
    mask[0, top : top + ph, left : left + pw] = shape.to(torch.float32)
    return distorted, mask


def augment(image, rng, *, rotate90=True, flip=True):
    """Random rotation by a multiple of 90 degrees and random flips.

    ``rotate90`` rotates by 0, 90, 180 or 270 degrees (only 0 or 180 for a
    non-square image, whose shape must not change); ``flip`` flips
    horizontally and vertically, each with probability 1/2.  The random
    numbers are drawn whatever the switches, so switching one off does not
    change the other choices of a sample.
    """
    k = int(rng.integers(0, 4))
    flips = rng.random(2) < 0.5
    if rotate90:
        if image.shape[-1] != image.shape[-2]:
            k = 2 * (k % 2)
        if k:
            image = torch.rot90(image, k, dims=(-2, -1))
    if flip:
        if flips[0]:
            image = torch.flip(image, dims=(-1,))
        if flips[1]:
            image = torch.flip(image, dims=(-2,))
    return image


def progressive_size(epoch, max_epochs, image_size, stages=PROGRESSIVE_STAGES, min_size=16):
    """Training image size at ``epoch`` (0-based) under progressive resizing.

    With the default stages, the first quarter of the epochs trains at a
    quarter of ``image_size``, the second quarter at half of it and the
    second half at the full size; an epoch belongs to the stage in which it
    ends, so the last epoch is always at full size.  Sizes are rounded down
    to multiples of 8 (the network's requirement), never below ``min_size``
    (16: the network's 1/8 bottleneck keeps 2 x 2 values, so batch norm works
    even on a batch of one) nor above ``image_size``.

    Parameters
    ----------
    epoch : int
    max_epochs : int
    image_size : int or (int, int)
        Full working size (height, width).
    stages : sequence of (float, float)
        ``(end, scale)`` pairs in increasing order, the last ending at 1:
        epochs ending by ``end * max_epochs`` (and after the previous
        stage's end) use ``scale * image_size`` pixels per side.
    min_size : int, default=16
        Smallest side (a multiple of 8).

    Returns
    -------
    size : (int, int)
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    progress = (epoch + 1) / max(1, max_epochs)
    scale = 1.0
    for end, stage_scale in stages:
        if progress <= end + 1e-9:
            scale = stage_scale
            break

    def side(full):
        return int(min(full, max(min_size, (int(full * scale) // 8) * 8)))

    return side(image_size[0]), side(image_size[1])


class DistortionDataset(Dataset):
    """Training pairs generated on the fly from normal images.

    Item ``i`` is the normal image ``i``, resized to the current stage's
    size, augmented, and distorted by :func:`distort`; its randomness is
    seeded by ``(random_state, epoch, i)``.  Call :meth:`set_epoch` at the
    start of every epoch (the estimator does it with a skorch callback).

    Parameters
    ----------
    images : torch.Tensor of shape (n, C, H, W) or WorkingSizeImages
        Normal images in [0, 1] at the full working size: a tensor, or a
        dataset with ``len``, ``shape`` and ``image(i)`` (a ``(C, H, W)``
        tensor) that reads them one at a time (the estimator's, so that
        training memory does not grow with the number of images).
    random_state : int, default=0
        Seed of every random choice.
    max_epochs : int, default=1
        Number of epochs, for the progressive schedule.
    progressive : bool, default=True
        Whether to resize progressively (:func:`progressive_size`).
    rotate90, flip : bool, default=True
        Augmentations of :func:`augment`.
    patch_size, brightness, elastic_sigma, elastic_strength :
        Passed to :func:`distort`.

    Notes
    -----
    ``__getitem__`` returns ``(X_hat, target)`` where ``target`` stacks the
    normal image ``X`` and the mask ``M`` along the channels, ``(C + 1, h,
    w)``, so that a plain ``(X, y)`` data loader carries all three tensors.
    Each image is resized to the stage's size when its item is read (one
    image at a time: exactly the values of resizing them all at once).
    """

    def __init__(
        self,
        images,
        *,
        random_state=0,
        max_epochs=1,
        progressive=True,
        rotate90=True,
        flip=True,
        patch_size=PATCH_SIZE,
        brightness=0.0,
        elastic_sigma=ELASTIC_SIGMA,
        elastic_strength=ELASTIC_STRENGTH,
    ):
        self.images = images
        self.random_state = int(random_state)
        self.max_epochs = int(max_epochs)
        self.progressive = progressive
        self.rotate90 = rotate90
        self.flip = flip
        self.distort_kwargs = dict(
            patch_size=patch_size,
            brightness=brightness,
            elastic_sigma=elastic_sigma,
            elastic_strength=elastic_strength,
        )
        #: ``(H, W)``, the full working size.
        self.full_size = tuple(int(s) for s in images.shape[-2:])
        self.set_epoch(0)

    def set_epoch(self, epoch):
        """Select the epoch: it seeds the samples and sets the image size."""
        self.epoch = int(epoch)
        full = self.full_size
        if self.progressive:
            self.size = progressive_size(self.epoch, self.max_epochs, full)
        else:
            self.size = full

    def release(self):
        """Drop the images (after training), so that a pickled net stays small.

        The images (a tensor, or a dataset reading them) are replaced by a
        new empty tensor: an empty slice (``images[:0]``) would still own,
        and pickle, the whole storage.
        """
        shape = tuple(self.images.shape[1:])
        dtype = self.images.dtype if isinstance(self.images, torch.Tensor) else torch.float32
        self.images = torch.empty((0, *shape), dtype=dtype)

    def _image(self, index):
        """Normal image ``index`` at the current stage's size, ``(C, h, w)``."""
        if isinstance(self.images, torch.Tensor):
            image = self.images[index]
        else:
            image = self.images.image(index)
        if self.size == tuple(image.shape[-2:]):
            return image
        return F.interpolate(
            image[None],
            size=self.size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).clamp_(0.0, 1.0)[0]

    def __len__(self):
        return len(self.images)

    def sample(self, index):
        """``(X_hat, X, M)`` of item ``index`` at the current epoch."""
        rng = np.random.default_rng([self.random_state, self.epoch, int(index)])
        image = augment(self._image(int(index)), rng, rotate90=self.rotate90, flip=self.flip)
        distorted, mask = distort(image, rng, **self.distort_kwargs)
        return distorted, image, mask

    def __getitem__(self, index):
        distorted, image, mask = self.sample(index)
        return distorted, torch.cat([image, mask], dim=0)
