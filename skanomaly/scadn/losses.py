"""Losses of SCADN (Yan et al., AAAI 2021, eqs. 2-4).

The discriminator returns logits ``z``; ``D = sigmoid(z)``, so
``log D = -softplus(-z)`` and ``log(1 - D) = -softplus(z)``, evaluated without
overflow.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

__all__ = [
    "ADVERSARIAL_LOSSES",
    "reconstruction_loss",
    "adversarial_objective",
    "discriminator_loss",
    "generator_adversarial_loss",
    "total_generator_loss",
    "ReconstructionLoss",
]

ADVERSARIAL_LOSSES = ("minimax", "nonsaturating")


def reconstruction_loss(output, target, mask, lambda_rm=3.0):
    """Weighted mean squared error of eq. 2.

    ``mean([1 + lambda_rm (1 - M)] * (I_hat - I)^2)`` over batch, channels and
    pixels: removed pixels weigh ``1 + lambda_rm``, kept ones 1.

    Parameters
    ----------
    output, target : Tensor of shape (b, C, H, W)
        Reconstruction ``I_hat`` and input ``I``.
    mask : Tensor of shape (b, 1, H, W) or (b, C, H, W)
        1 = kept, 0 = removed.
    lambda_rm : float, default=3.0

    Returns
    -------
    loss : scalar Tensor
    """
    weight = 1 + lambda_rm * (1 - mask)
    return (weight * (output - target).square()).mean()


def adversarial_objective(real_logits, fake_logits):
    """``L_adv = E[log D(I)] + E[log(1 - D(I_hat))]`` (eq. 3).

    Means are over the batch and over the PatchGAN's patches.  The
    discriminator maximises it; its loss is the negative
    (:func:`discriminator_loss`).
    """
    return -F.softplus(-real_logits).mean() - F.softplus(fake_logits).mean()


def discriminator_loss(real_logits, fake_logits):
    """``-L_adv``: binary cross-entropy of real patches to 1 and fakes to 0."""
    return -adversarial_objective(real_logits, fake_logits)


def generator_adversarial_loss(fake_logits, kind="minimax"):
    """The part of ``L_adv`` the generator minimises.

    Parameters
    ----------
    fake_logits : Tensor
        Discriminator logits of reconstructions.
    kind : {"minimax", "nonsaturating"}, default="minimax"
        ``"minimax"`` is eq. 3 as written: ``E[log(1 - D(I_hat))]`` (the
        ``E[log D(I)]`` term does not depend on the generator).
        ``"nonsaturating"`` is ``-E[log D(I_hat)]``, the authors' code and
        EdgeConnect.

    Returns
    -------
    loss : scalar Tensor
    """
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake_logits).mean()
    raise ValueError(f"kind must be one of {ADVERSARIAL_LOSSES}; got {kind!r}.")


def total_generator_loss(rec, adv, lambda_rec=1.0, lambda_adv=0.001):
    """``lambda_rec * L_rec + lambda_adv * L_adv`` (eq. 4), the generator's loss."""
    return lambda_rec * rec + lambda_adv * adv


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss` (eq. 2), for skorch's criterion.

    Parameters
    ----------
    lambda_rm : float, default=3.0
    """

    def __init__(self, lambda_rm=3.0):
        super().__init__()
        self.lambda_rm = lambda_rm

    def forward(self, output, target, mask):
        return reconstruction_loss(output, target, mask, self.lambda_rm)
