"""The callbacks every detector's training net carries.

:class:`FiniteLossGuard` stops a diverging or collapsing fit with
:class:`TrainingDivergedError`; :class:`FitProgressBar` is ``verbose=1``'s
one progress bar; :class:`FitTimeEstimate` warns (:class:`LongFitWarning`)
before a fit projected to take over an hour.  :func:`skanomaly._training.make_net`
adds them.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch
from skorch.callbacks import Callback

__all__ = [
    "FiniteLossGuard",
    "FitProgressBar",
    "FitTimeEstimate",
    "LongFitWarning",
    "TrainingDivergedError",
]


def batches_per_epoch(net, dataset_train):
    """Training batches in one epoch of ``net`` over ``dataset_train``.

    A net may batch its training data otherwise than by its ``batch_size``
    (DFR's ``vector_batch_size`` sets the training iterator's): the training
    iterator's batch size counts.
    """
    if not dataset_train:
        return 0
    batch_size = net.get_params_for("iterator_train").get("batch_size", net.batch_size)
    return math.ceil(len(dataset_train) / batch_size)


class TrainingDivergedError(RuntimeError):
    """Raised when a training loss becomes NaN, infinite or explodes."""


class FiniteLossGuard(Callback):
    """Stop training with a clear error when it diverges or collapses.

    Checks, during training only:

    - the batch loss: NaN, infinite, or above ``max_loss`` in magnitude;
    - the gradients (``on_grad_computed``, where the net reports them): any
      NaN or infinite entry;
    - the learnable parameters of every module after each batch: any NaN or
      infinite entry, or a magnitude above ``max_weight``;
    - saturated output: a network whose output (``y_pred``) lies within
      ``saturation_tol`` of 0 or 1 in every element while its gradients are
      all exactly zero has stopped learning (a sigmoid pushed to its bounds
      by too large a learning rate).  This counts as divergence when it
      lasts a whole epoch, or when training ends on such a batch.

    A bounded loss (e.g. a reconstruction error of sigmoid outputs) never
    becomes infinite, so the last two checks catch divergence the loss
    check cannot see.

    Parameters
    ----------
    max_loss : float, default=1e8
        A finite batch loss above this value also counts as divergence.
    max_weight : float, default=1e6
        A parameter entry above this magnitude counts as divergence.
    saturation_tol : float, default=1e-6
        Distance to 0 or 1 under which an output element counts as saturated.
    """

    def __init__(self, max_loss=1e8, max_weight=1e6, saturation_tol=1e-6):
        self.max_loss = max_loss
        self.max_weight = max_weight
        self.saturation_tol = saturation_tol

    def initialize(self):
        self.on_train_begin(None)
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.grad_max_ = None
        self.epoch_batches_ = 0
        self.saturated_batches_ = 0
        self.last_saturated_ = False

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.epoch_batches_ = 0
        self.saturated_batches_ = 0

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if training:
            self.grad_max_ = None

    def _raise(self, net, what):
        epoch = len(net.history)
        raise TrainingDivergedError(
            f"Training diverged in epoch {epoch}: {what}. Lower lr (now "
            f"{getattr(net, 'lr', '?')!r}), check the input images, or change "
            f"random_state."
        )

    def on_grad_computed(self, net, named_parameters, X=None, y=None, training=None,
                         **kwargs):
        grads = [p.grad.detach() for _, p in named_parameters if p.grad is not None]
        if not grads:
            return
        # One synchronisation per batch: the largest gradient magnitude.
        largest = float(torch.stack([g.abs().max() for g in grads if g.numel()]).max())
        self.grad_max_ = largest
        if not math.isfinite(largest):
            self._raise(net, f"a gradient is {largest!r}")

    def _check_weights(self, net):
        try:
            params = [p.detach() for _, p in net.get_all_learnable_params()]
        except AttributeError:  # not initialised the usual way
            return
        params = [p for p in params if p.numel()]
        if not params:
            return
        largest = float(torch.stack([p.abs().max() for p in params]).max())
        if not math.isfinite(largest):
            self._raise(net, f"a network weight is {largest!r}")
        if largest > self.max_weight:
            self._raise(
                net, f"a network weight reached {largest:.6g}, above max_weight="
                f"{self.max_weight:g} (the weights are exploding)"
            )

    def _saturated(self, y_pred):
        if not isinstance(y_pred, torch.Tensor) or not y_pred.is_floating_point():
            return False
        if y_pred.numel() == 0 or self.grad_max_ is not None and self.grad_max_ != 0.0:
            return False
        y = y_pred.detach()
        tol = self.saturation_tol
        return bool(((y.abs() <= tol) | ((y - 1).abs() <= tol)).all())

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if not training:
            return
        loss = net.history[-1, "batches", -1].get("train_loss")
        if loss is not None and (not math.isfinite(loss) or abs(loss) > self.max_loss):
            self._raise(net, f"the batch loss is {loss!r}")
        self._check_weights(net)
        self.last_saturated_ = self._saturated(kwargs.get("y_pred"))
        self.epoch_batches_ += 1
        self.saturated_batches_ += int(self.last_saturated_)

    _SATURATED = (
        "the network's output is stuck at 0/1 (saturated) with zero gradients"
    )

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        if self.epoch_batches_ and self.saturated_batches_ == self.epoch_batches_:
            self._raise(net, self._SATURATED + " for the whole epoch")

    def on_train_end(self, net, X=None, y=None, **kwargs):
        if self.last_saturated_ and self.grad_max_ == 0.0:
            self._raise(net, self._SATURATED + " at the end of training")


class LongFitWarning(UserWarning):
    """A fit is projected to take longer than an hour at its settings."""


class FitProgressBar(Callback):
    """One progress bar over the whole fit, with an ETA (``verbose=1``).

    The bar counts training batches over all ``max_epochs`` epochs and shows
    the epoch and the latest losses; skorch's per-epoch table is printed only
    with ``verbose >= 2``.

    Parameters
    ----------
    desc : str, default="fit"
        Label of the bar.
    """

    def __init__(self, desc="fit"):
        self.desc = desc

    def initialize(self):
        self._bar = None
        return self

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self._bar is None:
            from tqdm.auto import tqdm

            per_epoch = batches_per_epoch(net, dataset_train)
            remaining = net.max_epochs - (len(net.history) - 1)
            self._bar = tqdm(total=per_epoch * max(1, remaining), desc=self.desc, unit="batch")

    def on_batch_end(self, net, training=None, **kwargs):
        if training and self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, net, **kwargs):
        if self._bar is not None:
            row = net.history[-1]
            post = {"epoch": row["epoch"]}
            for key in ("train_loss", "valid_loss"):
                if key in row:
                    post[key] = f"{row[key]:.4g}"
            self._bar.set_postfix(post, refresh=False)

    def on_train_end(self, net, **kwargs):
        self._close()

    def _close(self):
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
        self._bar = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_bar"] = None
        return state


class FitTimeEstimate(Callback):
    """Warn early when a fit is projected to run longer than ``limit_s``.

    After ``n_steps`` timed training batches (the first batch, which pays
    for warm-up, is not timed) the mean batch time is multiplied by the
    number of training batches of the whole fit; above the limit a
    :class:`LongFitWarning` gives the estimate and the settings that would
    cut it.

    Parameters
    ----------
    hints : str
        The settings to mention (device, image size, epochs, ...).
    limit_s : float, default=3600
    n_steps : int, default=3
    """

    def __init__(self, hints, limit_s=3600.0, n_steps=3):
        self.hints = hints
        self.limit_s = limit_s
        self.n_steps = n_steps

    def initialize(self):
        self._per_epoch = None
        self._times = []
        self._start = None
        self._seen = 0
        self._done = False
        return self

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self._per_epoch is None and dataset_train is not None:
            self._per_epoch = batches_per_epoch(net, dataset_train)
            self._epochs = net.max_epochs - (len(net.history) - 1)

    def on_batch_begin(self, net, training=None, **kwargs):
        if training and not self._done:
            self._start = time.perf_counter()

    def on_batch_end(self, net, training=None, **kwargs):
        if not training or self._done or self._start is None:
            return
        self._seen += 1
        if self._seen > 1:
            self._times.append(time.perf_counter() - self._start)
        if len(self._times) >= self.n_steps:
            self._done = True
            total = (self._per_epoch or 1) * max(1, self._epochs)
            projected = float(np.mean(self._times)) * total
            if projected > self.limit_s:
                warnings.warn(
                    f"This fit is projected to take about {projected / 3600:.1f} h "
                    f"({np.mean(self._times):.2f} s per batch x {total} batches on "
                    f"{net.device}). To cut it: {self.hints}.",
                    LongFitWarning,
                    stacklevel=2,
                )


def _speed_hints(estimator):
    """The settings that would shorten a detector's fit, for :class:`FitTimeEstimate`."""
    params = estimator.get_params()
    hints = []
    if torch.device(estimator.device_).type == "cpu":
        hints.append("a GPU (device='cuda')")
    if params.get("image_size") is not None:
        hints.append(f"a smaller image_size (now {params['image_size']})")
    elif "image_size" in params:
        hints.append("image_size=N or skanomaly.TiledDetector (now full resolution)")
    hints.append(f"fewer max_epochs (now {params['max_epochs']})")
    if params.get("lr_schedule") == "paper":
        hints.append("lr_schedule='warmup_cosine' with a larger lr and fewer epochs")
    hints.append("early stopping on validation_fraction")
    if params.get("backbone") == "vgg19" or params.get("teacher") == "resnet18":
        hints.append("the offline EfficientNet-Lite0 backbone")
    return ", ".join(hints)
