"""Learning-rate schedules over training batches, as skorch callbacks.

:class:`BatchLRSchedule` scales the learning rate of the ``t``-th training
batch of a fit with ``T`` batches in all by ``factor(t)``; subclasses give
the factor.  It multiplies each parameter group's current rate by
``factor(t) / factor(t - 1)`` before batch ``t``, so that changes made by
other schedulers compose with it instead of being overwritten.  ``T`` is
``ceil(n_train / batch_size) * max_epochs``, known at the first epoch.

:class:`WarmupCosineLR` is the ``lr_schedule="warmup_cosine"`` option of
every detector; IGD's paper schedule, a polynomial decay, is
:class:`skanomaly.igd._net.PolynomialLRDecay`.
"""

from __future__ import annotations

import math

from skorch.callbacks import Callback

from ._callbacks import batches_per_epoch

__all__ = ["BatchLRSchedule", "WarmupCosineLR", "net_optimizers"]


def net_optimizers(net):
    """Names (without the trailing ``_``) of every optimizer an initialised skorch net holds."""
    return [
        name[:-1]
        for name, value in vars(net).items()
        if name.startswith("optimizer") and name.endswith("_") and hasattr(value, "param_groups")
    ]


class BatchLRSchedule(Callback):
    """Scale the learning rates of a net's optimizers batch by batch.

    Parameters
    ----------
    optimizers : sequence of str or None, default=None
        Names of the net's optimizers to schedule (without the trailing
        ``_``); ``None`` schedules every one (``optimizer_`` and, e.g.,
        SCADN's ``optimizer_discriminator_``, IGD's ``optimizer_critic_``).
    """

    def __init__(self, optimizers=None):
        self.optimizers = optimizers

    def initialize(self):
        self.step_ = 0
        self.total_steps_ = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.initialize()

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        if self.total_steps_ is None:
            per_epoch = batches_per_epoch(net, dataset_train)
            self.total_steps_ = max(1, per_epoch * net.max_epochs)

    def factor(self, t):  # pragma: no cover - abstract
        """The scale of the learning rate at batch ``t`` (from 0)."""
        raise NotImplementedError

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if not training:
            return
        t = self.step_
        self.step_ += 1
        previous = 1.0 if t == 0 else self.factor(t - 1)
        ratio = self.factor(t) / previous if previous > 0 else 0.0
        if ratio == 1.0:
            return
        names = self.optimizers if self.optimizers is not None else net_optimizers(net)
        for name in names:
            for group in getattr(net, name + "_").param_groups:
                group["lr"] = group["lr"] * ratio


class WarmupCosineLR(BatchLRSchedule):
    """Linear warm-up, then cosine decay to 0 (``lr_schedule="warmup_cosine"``).

    Batch ``t`` of ``T`` runs at ``lr * (t + 1) / W`` during the first
    ``W = max(1, round(warmup * T))`` batches, then at
    ``lr * (1 + cos(pi * (t - W) / (T - W))) / 2``.  The warm-up lets a
    larger ``lr`` and ``batch_size`` start without diverging (Adam's second
    moments are still poor estimates in the first steps); the cosine decay
    ends training at a small rate, where the loss settles.

    Parameters
    ----------
    warmup : float in [0, 1), default=0.05
        Share of the training batches spent warming up.
    optimizers : sequence of str or None, default=None
        See :class:`BatchLRSchedule`.
    """

    def __init__(self, warmup=0.05, optimizers=None):
        super().__init__(optimizers=optimizers)
        self.warmup = warmup

    def factor(self, t):
        total = self.total_steps_
        warm = max(1, int(round(self.warmup * total)))
        if t < warm:
            return (t + 1) / warm
        if total <= warm:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - warm) / (total - warm))))
