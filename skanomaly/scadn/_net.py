"""The adversarial training step of SCADN on the shared skorch glue."""

from __future__ import annotations

import math

import torch
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator, to_device

from .._docstrings import fill_doc
from .._training import SECOND_NETWORK_PARAMETERS_DOC, TrainingDivergedError, UnsupervisedNet
from .losses import (
    discriminator_loss,
    generator_adversarial_loss,
    total_generator_loss,
)
from .masks import DEFAULT_MASK_SCALES, random_mask_indices, striped_masks
from .torch_model import PatchDiscriminator, masked_inputs

__all__ = ["SCADNNet"]


@fill_doc(
    parameters=SECOND_NETWORK_PARAMETERS_DOC.format(
        name="discriminator", default="PatchDiscriminator"
    )
)
class SCADNNet(UnsupervisedNet):
    """skorch net training SCADN's generator against a PatchGAN discriminator.

    ``module`` is the generator G, ``criterion`` the reconstruction loss of
    eq. 2 (called as ``criterion(I_hat, I, M)``), ``discriminator`` the
    discriminator D with its own optimizer ``optimizer_discriminator``.  Both
    modules and optimizers are skorch components: ``module_``,
    ``discriminator_``, ``optimizer_``, ``optimizer_discriminator_``, and
    their parameters are reachable by ``set_params``
    (``discriminator__width=...``, ``optimizer_discriminator__lr=...``).

    Each training step draws one striped mask per image, then

    1. updates D once, minimising ``-L_adv`` (eq. 3) on the real batch and
       the detached reconstructions;
    2. updates G once, minimising ``lambda_rec * L_rec + lambda_adv * L_adv``
       (eq. 4), the adversarial part scored by the just-updated D.

    ``train_loss`` in the history is the generator's loss;
    ``discriminator_loss`` is recorded per batch too.  A non-finite loss
    raises :class:`~skanomaly._training.TrainingDivergedError`.

    [parameters]
    mask_scales : sequence of float, default=DEFAULT_MASK_SCALES
        Stripe widths as fractions of the side.
    lambda_rec, lambda_adv : float, default=1.0, 0.001
        Weights of eq. 4.
    adversarial_loss : {"minimax", "nonsaturating"}, default="minimax"
        Generator's adversarial term (see
        :func:`~skanomaly.scadn.losses.generator_adversarial_loss`).
    **kwargs
        Further :class:`skorch.NeuralNet` parameters.
    """

    def __init__(
        self,
        module,
        criterion,
        *args,
        discriminator=PatchDiscriminator,
        optimizer_discriminator=torch.optim.Adam,
        mask_scales=DEFAULT_MASK_SCALES,
        lambda_rec=1.0,
        lambda_adv=0.001,
        adversarial_loss="minimax",
        **kwargs,
    ):
        self.discriminator = discriminator
        self.optimizer_discriminator = optimizer_discriminator
        self.mask_scales = mask_scales
        self.lambda_rec = lambda_rec
        self.lambda_adv = lambda_adv
        self.adversarial_loss = adversarial_loss
        super().__init__(module, criterion, *args, **kwargs)

    # --------------------------------------------------------- components
    def initialize_module(self):
        super().initialize_module()
        params = self.get_params_for("discriminator")
        self.discriminator_ = self.initialized_instance(self.discriminator, params)
        return self

    def initialize_optimizer(self, *args, **kwargs):
        super().initialize_optimizer(*args, **kwargs)
        named = self.discriminator_.named_parameters()
        groups, kw = self.get_params_for_optimizer("optimizer_discriminator", named)
        kw.setdefault("lr", self.lr)
        self.optimizer_discriminator_ = self.optimizer_discriminator(*groups, **kw)
        return self

    def _masks(self, x):
        """All striped masks (K, 1, H, W) for the batch's size and device."""
        key = (tuple(x.shape[-2:]), str(x.device), tuple(self.mask_scales))
        cache = getattr(self, "_mask_cache", None)
        if cache is None or cache[0] != key:
            m = striped_masks(*x.shape[-2:], self.mask_scales, device=x.device)
            cache = (key, m.reshape(-1, 1, *x.shape[-2:]))
            self._mask_cache = cache
        return cache[1]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_mask_cache", None)
        return state

    # ---------------------------------------------------------- the steps
    @staticmethod
    def _check(name, value, epoch):
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"SCADN training diverged in epoch {epoch}: the {name} is {value!r}. "
                f"Lower lr, check the input images, or change random_state."
            )

    def train_step(self, batch, **fit_params):
        self._set_training(True)
        x, _ = unpack_data(batch)
        x = to_device(x, self.device)
        masks = self._masks(x)
        m = masks[random_mask_indices(len(x), len(masks), device=x.device)]
        G, D = self.module_, self.discriminator_
        fake = G(masked_inputs(x, m))

        # 1. discriminator: maximise L_adv (eq. 3)
        self.optimizer_discriminator_.zero_grad()
        d_loss = discriminator_loss(D(x), D(fake.detach()))
        self._check("discriminator loss", d_loss.item(), len(self.history))
        d_loss.backward()
        self.optimizer_discriminator_.step()

        # 2. generator: minimise eq. 4 against the updated discriminator
        self.optimizer_.zero_grad()
        D.requires_grad_(False)
        try:
            adv = generator_adversarial_loss(D(fake), self.adversarial_loss)
        finally:
            D.requires_grad_(True)
        rec = self.criterion_(fake, x, m)
        g_loss = total_generator_loss(rec, adv, self.lambda_rec, self.lambda_adv)
        self._check("generator loss", g_loss.item(), len(self.history))
        g_loss.backward()
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.module_.named_parameters()),
            batch=batch,
            training=True,
        )
        self.optimizer_.step()

        self.history.record_batch("discriminator_loss", d_loss.item())
        self.history.record_batch("reconstruction_loss", rec.item())
        return {"loss": g_loss.detach(), "y_pred": fake.detach()}

    def validation_step(self, batch, **fit_params):
        """``lambda_rec * L_rec`` on held-out images with fixed masks.

        The ``i``-th image of a batch gets mask ``i mod K`` (of the ``K``
        striped masks) instead of a random one, so that the validation losses
        of successive epochs are comparable.
        """
        self._set_training(False)
        x, _ = unpack_data(batch)
        x = to_device(x, self.device)
        masks = self._masks(x)
        m = masks[torch.arange(len(x), device=x.device) % len(masks)]
        with torch.no_grad():
            fake = self.module_(masked_inputs(x, m))
            loss = self.lambda_rec * self.criterion_(fake, x, m)
        return {"loss": loss, "y_pred": fake}
