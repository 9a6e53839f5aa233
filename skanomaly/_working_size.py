"""Working-size geometry shared by every detector (a mixin of BaseDetector).

A detector runs its networks on images at its *working size*: ``image_size``
squared (resized, antialiased), or with ``image_size=None`` the input's own
size padded at the bottom and right to a multiple the network needs; maps go
back to the input size.  Training images are read at the working size one at
a time (:class:`~skanomaly._training.WorkingSizeImages`).
"""

from __future__ import annotations

from numbers import Integral

import torch
import torch.nn.functional as F

from ._training import WorkingSizeImages

__all__ = ["WorkingSizeMixin"]


class WorkingSizeMixin:
    """Resizing and padding between input and working size (``image_size``)."""

    def _to_working_size(self, x, size=None, rgb=None):
        """Resize ``(b, C, H, W)`` to the working size; gray -> RGB if needed.

        ``rgb=None`` follows the class's ``_needs_rgb``; ``rgb=False`` keeps one
        channel (to store images small and expand them later).  With
        ``image_size=None`` (full resolution) nothing is resized: the batch is
        padded at the bottom and right, by reflection, to
        :meth:`_working_shape`.
        """
        size = self.image_size if size is None else size
        rgb = self._needs_rgb if rgb is None else rgb
        if rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if size is None:
            return self._pad_to_working_shape(x)
        size = (size, size) if isinstance(size, Integral) else tuple(size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(
                x, size=size, mode="bilinear", align_corners=False, antialias=True
            )
        return x

    #: Side multiple of full-resolution working images (``image_size=None``).
    _full_resolution_multiple = 8

    def _working_shape(self, height, width):
        """Working ``(H, W)`` of ``height x width`` input: ``(S, S)`` for
        ``image_size=S``; with ``image_size=None`` the input's size rounded up
        to a multiple of ``_full_resolution_multiple``."""
        if self.image_size is not None:
            return int(self.image_size), int(self.image_size)
        m = int(self._full_resolution_multiple)
        return -(-int(height) // m) * m, -(-int(width) // m) * m

    def _pad_to_working_shape(self, x):
        """Pad ``(b, C, H, W)`` at the bottom and right to :meth:`_working_shape`.

        Reflection (no artificial edge for the network to flag), or edge
        replication where the padding is not smaller than the image.
        """
        h, w = x.shape[-2:]
        hp, wp = self._working_shape(h, w)
        if (hp, wp) == (h, w):
            return x
        mode = "reflect" if hp - h < h and wp - w < w else "replicate"
        return F.pad(x, (0, wp - w, 0, hp - h), mode=mode)

    def _working_image_batch(self, x):
        """One batch ``(b, C, H, W)`` at the working size, clamped to [0, 1].

        Grayscale stays one channel (pretrained networks expand it later);
        the clamp undoes the small overshoot of antialiased resizing.
        """
        with torch.no_grad():
            return self._to_working_size(x, rgb=False).float().clamp_(0.0, 1.0)

    def _working_images(self, images, *, lazy=False, indices=None):
        """The training images at the working size: the one helper of every detector.

        Parameters
        ----------
        images : ImageSet
        lazy : bool, default=False
            ``False``: one CPU float32 tensor ``(n, C, S, S)``.  ``True``: a
            :class:`~skanomaly._training.WorkingSizeImages` dataset resizing
            each image when it is read (memory of one image): what every
            detector trains on, so that ``fit``'s memory does not grow with
            the number of images.
        indices : array-like of int, default=None
            With ``lazy=True``: only these images, in this order (a split,
            without copying the images).

        Returns
        -------
        Tensor or WorkingSizeImages
        """
        if lazy:
            return WorkingSizeImages(images, self._working_image_batch, indices)
        if indices is not None:
            images = images.subset(indices)
        parts = [
            self._working_image_batch(x)
            for x in images.batches(max(1, self.batch_size), device="cpu")
        ]
        return torch.cat(parts).contiguous()

    @staticmethod
    def _to_input_size(maps, size):
        """Bilinearly resize maps ``(b, h, w)`` to ``size=(H, W)``."""
        if tuple(maps.shape[-2:]) == tuple(size):
            return maps
        return F.interpolate(
            maps[:, None], size=tuple(size), mode="bilinear", align_corners=False
        )[:, 0]
