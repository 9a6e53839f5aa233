"""The skorch glue of the inpainting autoencoder on the shared training net."""

import numpy as np
from skorch.callbacks import Callback, EarlyStopping
from skorch.utils import to_device

from .._training import UnsupervisedNet

__all__ = ["InpaintingAENet", "DistortionSchedule"]


class InpaintingAENet(UnsupervisedNet):
    """UnsupervisedNet whose loss also sees the clean images and masks.

    Batches are ``(X_hat, target)`` with ``target = cat([X, M])`` along the
    channels (see :class:`~skanomaly.inpainting.distortions.DistortionDataset`);
    the criterion is called as ``criterion(F(X_hat), X, X_hat, M)``.
    """

    def get_loss(self, y_pred, y_true, X=None, training=False):
        X = to_device(X, self.device)
        y_true = to_device(y_true, self.device)
        c = y_pred.shape[1]
        return self.criterion_(y_pred, y_true[:, :c], X, y_true[:, c:])


class DistortionSchedule(Callback):
    """Tell the training dataset the epoch (seeds and progressive size).

    Parameters
    ----------
    dataset : DistortionDataset
        The training set; its ``set_epoch`` is called as each epoch begins.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        # skorch's own on_epoch_begin has already opened this epoch's history row.
        self.dataset.set_epoch(len(net.history) - 1)
        net.history.record("full_size", tuple(self.dataset.size) == self.dataset.full_size)


class FullSizeEarlyStopping(EarlyStopping):
    """skorch's :class:`~skorch.callbacks.EarlyStopping` that waits for full-size images.

    With progressive resizing the first epochs train on smaller images while
    ``valid_loss`` is measured at full size, so its early values say little
    about the final model.  Until the training images reach full size
    (``full_size`` in the history, recorded by :class:`DistortionSchedule`)
    this callback neither counts misses nor keeps a best score; patience
    starts at the first full-size epoch.
    """

    def on_epoch_end(self, net, **kwargs):
        if not net.history[-1].get("full_size", True):
            self.misses_ = 0
            self.dynamic_threshold_ = np.inf if self.lower_is_better else -np.inf
            return
        super().on_epoch_end(net, **kwargs)
