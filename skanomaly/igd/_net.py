"""IGD's training: the skorch net with the critic/auto-encoder alternation, and distillation."""

from __future__ import annotations

import math

import torch
from skorch.dataset import unpack_data
from skorch.utils import to_device
from torch import nn

from .._training import UnsupervisedNet
from .losses import (
    LOCAL_WINDOW,
    autoencoder_loss,
    critic_loss,
    distillation_loss,
    gaussian_from_moments,
    gsvdd_loss,
    interpolate_latents,
    reconstruction_loss,
    reconstruction_map,
    sample_alpha,
)
from .ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS
from .torch_model import DATA_RANGE, IGDCritics, patch_starts

__all__ = ["IGDLoss", "IGDNet", "distill", "as_rgb"]

#: ``gamma`` of eq. 5 (ACAI's): the critic sees ``gamma x + (1 - gamma) x_hat`` with target 0.
CRITIC_GAMMA = 0.2
#: Power of the polynomial learning-rate decay (the authors' code).
POLY_POWER = 0.9


def as_rgb(x):
    """Repeat a single channel to three (the paper's images are RGB)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class IGDLoss(nn.Module):
    """IGD's per-branch reconstruction loss (eq. 8) and the validation loss.

    Parameters
    ----------
    rho : float, default=0.15
        Weight of the MAE in eq. 8.
    lam : float, default=0.1
        Weight of the adversarial term in eq. 6.
    global_window : int, default=11
        Gaussian window of the global MS-SSIM (five scales).
    local_window : int, default=3
        Gaussian window of the local MS-SSIM (four scales).
    data_range : float, default=DATA_RANGE

    Notes
    -----
    Called as ``criterion(y_pred, X)`` (skorch's validation), it returns the
    sum over branches of the mean of ``l_m + l_h`` (eqs. 8 and 7), without the
    critic's term.
    """

    def __init__(self, rho=0.15, lam=0.1, global_window=11, local_window=LOCAL_WINDOW, data_range=DATA_RANGE):
        super().__init__()
        self.rho = rho
        self.lam = lam
        self.global_window = global_window
        self.local_window = local_window
        self.data_range = data_range

    def _ms_args(self, name):
        if name == "global":
            return dict(weights=GLOBAL_WEIGHTS, win_size=self.global_window)
        return dict(weights=LOCAL_WEIGHTS, win_size=self.local_window)

    def reconstruction(self, name, x, x_hat):
        """``l_m`` of eq. 8 for one branch, per sample (image or patch)."""
        return reconstruction_loss(x, x_hat, rho=self.rho, data_range=self.data_range, **self._ms_args(name))

    def reconstruction_map(self, name, x, x_hat):
        """``l_m`` of eq. 12 for one branch, per pixel: (b, H, W)."""
        return reconstruction_map(x, x_hat, rho=self.rho, data_range=self.data_range, **self._ms_args(name))

    def forward(self, y_pred, X=None):
        total = 0.0
        for name, (xb, z, x_hat, h_loss) in y_pred.items():
            total = total + self.reconstruction(name, xb, x_hat).mean() + h_loss.mean()
        return total


class IGDNet(UnsupervisedNet):
    """skorch net for IGD: EM over the Gaussian SVDD, critic/auto-encoder alternation.

    ``module_`` is an :class:`~skanomaly.igd.torch_model.IGDModel`,
    ``critic_`` the :class:`~skanomaly.igd.torch_model.IGDCritics` built to
    match it, ``optimizer_`` trains the auto-encoders and ``optimizer_critic_``
    (same optimizer class and settings) the critics.

    Each training batch of images gives one step per branch: the global
    branch on the images, the local branch on all their 32 x 32 patches in
    shuffled chunks of ``batch_size`` patches.  A step is the M-step of the
    paper: the auto-encoder minimises eq. 6 + eq. 7, then the critic eq. 5 on
    the same interpolants (detached).  The E-step re-estimates each branch's
    ``(mu, sigma^2)`` from all training embeddings before epoch 1, every
    ``e_step_interval`` epochs, and once after the last epoch.  The learning
    rate of both optimizers decays as ``lr * (1 - t / T) ** 0.9`` over the
    ``T`` image batches of training.

    Parameters
    ----------
    module, criterion : see :class:`skanomaly._training.UnsupervisedNet`
    e_step_interval : int, default=10
        Epochs between E-steps.
    kappa : float, default=0.5
        ``kappa`` of the E-step's variance estimate.
    **kwargs
        Further :class:`skorch.NeuralNet` parameters.
    """

    def __init__(self, module, criterion, e_step_interval=10, kappa=0.5, **kwargs):
        self.e_step_interval = e_step_interval
        self.kappa = kappa
        super().__init__(module, criterion, **kwargs)

    # ------------------------------------------------------------ initialisation
    def initialize_module(self):
        super().initialize_module()
        m = self.module_
        self.critic_ = IGDCritics(
            m.width,
            use_global=m.global_branch is not None,
            use_local=m.local_branch is not None,
            image_size=m.image_size,
            patch_size=m.patch_size,
        )
        return self

    def initialize_optimizer(self, triggered_directly=None):
        args, kwargs = self.get_params_for_optimizer("optimizer", self.module_.named_parameters())
        self.optimizer_ = self.optimizer(*args, **kwargs)
        args, kwargs = self.get_params_for_optimizer("optimizer", self.critic_.named_parameters())
        self.optimizer_critic_ = self.optimizer(*args, **kwargs)
        return self

    # ------------------------------------------------------------------ E-step
    @torch.no_grad()
    def e_step(self, dataset):
        """Set every branch's ``(mu, sigma^2)`` from the embeddings of ``dataset`` (eval mode)."""
        module = self.module_
        was_training = module.training
        module.eval()
        moments = {name: [0.0, 0.0, 0] for name, _ in module.branches()}
        for batch in self.get_iterator(dataset, training=False):
            x = as_rgb(to_device(unpack_data(batch)[0], self.device))
            for name, branch in module.branches():
                for chunk in module.branch_input(name, x).split(self._chunk()):
                    z = branch.encoder(chunk).double()
                    acc = moments[name]
                    acc[0] = acc[0] + z.sum(0)
                    acc[1] = acc[1] + (z**2).sum()
                    acc[2] += len(z)
        for name, branch in module.branches():
            mu, sigma2 = gaussian_from_moments(*moments[name], kappa=self.kappa)
            branch.mu.copy_(mu)
            branch.sigma2.copy_(sigma2)
        module.train(was_training)

    def _chunk(self):
        return max(1, int(self.batch_size))

    # ------------------------------------------------------------------- hooks
    def on_train_begin(self, net, X=None, y=None, **kwargs):
        super().on_train_begin(net, X=X, y=y, **kwargs)
        self._iteration = 0
        self._total_iterations = None
        self._e_step_data = None
        self._base_lrs = [
            [group["lr"] for group in opt.param_groups] for opt in (self.optimizer_, self.optimizer_critic_)
        ]

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        super().on_epoch_begin(net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs)
        if self._total_iterations is None:
            self._e_step_data = dataset_train
            per_epoch = math.ceil(len(dataset_train) / self.batch_size)
            self._total_iterations = max(1, per_epoch * self.max_epochs)
        epoch = len(self.history)
        if (epoch - 1) % self.e_step_interval == 0:
            self.e_step(dataset_train)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        super().on_train_end(net, X=X, y=y, **kwargs)
        if self._e_step_data is not None:
            self.e_step(self._e_step_data)

    # -------------------------------------------------------------- train step
    def _decay_lr(self):
        factor = max(0.0, 1.0 - self._iteration / self._total_iterations) ** POLY_POWER
        for opt, bases in zip((self.optimizer_, self.optimizer_critic_), self._base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor
        self._iteration += 1

    def _branch_step(self, name, branch, x):
        """One M-step on a batch of branch inputs: auto-encoder, then critic."""
        critic = self.critic_.critic(name)
        z, x_hat = branch(x)
        reconstruction = self.criterion_.reconstruction(name, x, x_hat)
        alpha = sample_alpha(len(x), device=x.device, dtype=x.dtype)
        x_alpha = branch.decoder(interpolate_latents(z, alpha))
        d_alpha = critic(x_alpha)
        h_loss = gsvdd_loss(z, branch.mu, branch.sigma2)
        loss = autoencoder_loss(reconstruction, d_alpha, self.criterion_.lam) + h_loss.mean()
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()

        mix = CRITIC_GAMMA * x + (1.0 - CRITIC_GAMMA) * x_hat.detach()
        d_loss = critic_loss(critic(x_alpha.detach()), alpha, critic(mix))
        self.optimizer_critic_.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer_critic_.step()
        return loss.detach(), d_loss.detach()

    def train_step(self, batch, **fit_params):
        self._set_training(True)
        x = as_rgb(to_device(unpack_data(batch)[0], self.device))
        self._decay_lr()
        module = self.module_
        total = x.new_zeros(())
        critic_total = x.new_zeros(())
        for name, branch in module.branches():
            xb = module.branch_input(name, x)
            if name == "local":
                xb = xb[torch.randperm(len(xb), device=xb.device)]
                chunks = xb.split(self._chunk())
            else:
                chunks = [xb]
            losses = [self._branch_step(name, branch, chunk) for chunk in chunks]
            total = total + torch.stack([a for a, _ in losses]).mean()
            critic_total = critic_total + torch.stack([b for _, b in losses]).mean()
        self.history.record_batch("critic_loss", float(critic_total))
        return {"loss": total, "y_pred": None}

    def infer(self, x, **fit_params):
        x = as_rgb(to_device(x, self.device))
        out = self.module_(x, **fit_params)
        return {
            name: (xb, z, x_hat, gsvdd_loss(z, branch.mu, branch.sigma2))
            for (name, branch), (xb, z, x_hat) in zip(self.module_.branches(), out.values())
        }


def distill(network, teacher, images, *, iterations, batch_size, device, lr=1e-4, weight_decay=1e-5):
    """Knowledge-distillation pre-training of each branch's encoder (eq. 10), then freeze it.

    Each iteration draws ``batch_size`` inputs: training images (shuffled,
    epoch after epoch) for the global branch, random 32 x 32 grid patches of
    random training images for the local one.  The student's pooled
    features (through the branch's ``kd_head``) regress the teacher's with
    Adam (lr 1e-4, weight decay 1e-5, the paper's settings).  Afterwards the
    encoder's convolutional part is frozen; its final linear projection to
    ``latent_dim`` trains with IGD.

    Parameters
    ----------
    network : IGDModel
    teacher : TeacherFeatures
    images : Tensor of shape (n, C, S, S)
        Training images at the working size, in [0, 1], on the CPU.
    iterations, batch_size : int
    device : str

    Returns
    -------
    losses : dict
        Per branch, the mean distillation loss over the first and the last
        ``min(50, iterations // 2)`` iterations: ``{name: (first, last)}``.
    """
    n = len(images)
    size = images.shape[-1]
    result = {}
    for name, branch in network.branches():
        encoder = branch.encoder
        params = [p for m in (encoder.stem, encoder.blocks, encoder.norm, branch.kd_head) for p in m.parameters()]
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        branch.train()
        order = torch.randperm(n)
        cursor = 0
        history = []
        for _ in range(iterations):
            if name == "global":
                if cursor + min(batch_size, n) > n:
                    order, cursor = torch.randperm(n), 0
                idx = order[cursor : cursor + batch_size]
                cursor += len(idx)
                x = as_rgb(images[idx].to(device))
            else:
                starts = torch.as_tensor(patch_starts(size, network.patch_size, network.patch_stride))
                img = torch.randint(n, (batch_size,))
                r = starts[torch.randint(len(starts), (batch_size,))]
                c = starts[torch.randint(len(starts), (batch_size,))]
                p = network.patch_size
                x = torch.stack([images[i, :, a : a + p, b : b + p] for i, a, b in zip(img, r, c)])
                x = as_rgb(x.to(device))
            target = teacher(x)
            student = branch.kd_head(encoder.features(network.normalize(x)))
            loss = distillation_loss(student, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
        k = max(1, min(50, iterations // 2))
        result[name] = (sum(history[:k]) / k, sum(history[-k:]) / k) if history else (float("nan"),) * 2
        branch.freeze_backbone()
    return result
