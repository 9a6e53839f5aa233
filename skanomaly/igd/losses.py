"""IGD's losses (Chen et al., 2022, eqs. 5-12): tensor functions and skorch criteria.

Every function returns per-sample values (or a scalar where the paper's
quantity is a batch statistic) so that the training step, the anomaly score
and the tests share one definition.  :class:`IGDLoss` (the criterion of
:class:`~skanomaly.igd._net.IGDNet`) and :class:`DistillationLoss` (that of
the distillation net) wrap them with their settings.
"""

from __future__ import annotations

import torch
from torch import nn

from .ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS, ms_ssim_map, ms_ssim_value

__all__ = [
    "IGDLoss",
    "DistillationLoss",
    "ms_ssim_settings",
    "sample_alpha",
    "interpolate_latents",
    "critic_loss",
    "autoencoder_loss",
    "gsvdd_loss",
    "gaussian_from_moments",
    "reconstruction_loss",
    "reconstruction_map",
    "distillation_loss",
    "global_window_size",
    "LOCAL_WINDOW",
]

#: Gaussian window of the local (32 x 32 patch) MS-SSIM: four scales 32-16-8-4 leave room for 3 pixels.
LOCAL_WINDOW = 3


def global_window_size(image_size, n_scales=len(GLOBAL_WEIGHTS)):
    """Window of the global MS-SSIM for a working size: the standard 11 when it fits.

    The largest odd window, at most 11 (Wang et al.'s), no wider than the
    coarsest of the ``n_scales`` scales, and at least 3: 11 at 256 px, 7 at
    128, 3 at 64 and below (at 32 px the coarsest scale, 2 x 2, is then left
    unfiltered, as :mod:`pytorch_msssim` does).
    """
    coarsest = int(image_size)
    for _ in range(n_scales - 1):
        coarsest = (coarsest + coarsest % 2) // 2
    win = min(11, coarsest if coarsest % 2 == 1 else coarsest - 1)
    return max(3, win)


def sample_alpha(n, *, device=None, dtype=torch.float32, generator=None):
    """Mixing coefficients ``alpha ~ U[0, 0.5]`` (eq. 2), shape (n, 1)."""
    return torch.rand(n, 1, device=device, dtype=dtype, generator=generator) * 0.5


def interpolate_latents(z, alpha):
    """``alpha * z + (1 - alpha) * z_reversed``: each embedding mixed with the batch read backwards.

    Parameters
    ----------
    z : Tensor of shape (b, d)
    alpha : Tensor of shape (b, 1)
    """
    return alpha * z + (1.0 - alpha) * torch.flip(z, dims=[0])


def critic_loss(d_interp, alpha, d_mix):
    """Critic loss, eq. 5, averaged over the batch.

    Parameters
    ----------
    d_interp : Tensor of shape (b,)
        ``d_psi(x_hat_alpha)``, the critic on decoded interpolants; its target is ``alpha``.
    alpha : Tensor of shape (b,) or (b, 1)
    d_mix : Tensor of shape (b,)
        ``d_psi(gamma x + (1 - gamma) x_hat)`` with ``gamma = 0.2``; its target is 0.

    Returns
    -------
    loss : scalar Tensor
    """
    alpha = alpha.reshape(d_interp.shape)
    return ((d_interp - alpha) ** 2).mean() + (d_mix**2).mean()


def autoencoder_loss(reconstruction, d_interp, lam=0.1):
    """Encoder/decoder loss, eq. 6: ``l_m(x, x_hat) + lam * ||d_psi(x_hat_alpha)||^2`` (batch mean)."""
    return reconstruction.mean() + lam * (d_interp**2).mean()


def gsvdd_loss(z, mu, sigma2):
    """Gaussian SVDD loss, eq. 7: ``1 - exp(-||z - mu||^2 / sigma^2)`` per row of ``z``."""
    return 1.0 - torch.exp(-((z - mu) ** 2).sum(1) / sigma2)


def gaussian_from_moments(sum_z, sum_sq, n, *, kappa=0.5, min_sigma2=1.0):
    """E-step of IGD: Gaussian SVDD statistics of the training embeddings, from streamed moments.

    Parameters
    ----------
    sum_z : Tensor of shape (d,)
        Sum of the embeddings.
    sum_sq : Tensor of shape ()
        Sum of their squared norms.
    n : int
        Number of embeddings.
    kappa : float, default=0.5
        Scale of the variance estimate (the paper's ``kappa``).
    min_sigma2 : float, default=1.0
        The paper's lower bound on ``sigma^2``.

    Returns
    -------
    mu : Tensor of shape (d,)
        Gaussian SVDD centre ``mu_gamma = mean(z)``.
    sigma2 : Tensor of shape ()
        Gaussian SVDD variance
        ``sigma_gamma^2 = max(min_sigma2, kappa * mean ||z - mu||^2)``.

    Notes
    -----
    ``mean ||z - mu||^2 = mean ||z||^2 - ||mu||^2``, accumulated in float64,
    so the E-step never holds all embeddings (the local branch has 225 per
    256-pixel image).
    """
    if n < 1:
        raise ValueError("The E-step needs at least one embedding.")
    sum_z = torch.as_tensor(sum_z, dtype=torch.float64)
    mu = sum_z / n
    spread = torch.as_tensor(sum_sq, dtype=torch.float64) / n - (mu**2).sum()
    sigma2 = torch.clamp(kappa * torch.clamp(spread, min=0.0), min=min_sigma2)
    return mu.to(torch.float32), sigma2.to(torch.float32)


def reconstruction_loss(x, x_hat, *, rho=0.15, data_range, weights=GLOBAL_WEIGHTS, win_size=11):
    """MS-SSIM + MAE reconstruction loss of one branch, eq. 8, per sample.

    ``rho * MAE(x, x_hat) / L + (1 - rho) * (1 - MS-SSIM(x, x_hat))``.

    Parameters
    ----------
    x, x_hat : Tensor of shape (b, C, H, W)
        Images (or patches) and their reconstructions, ImageNet-normalised.
    rho : float, default=0.15
    data_range : float
        ``L``; the MAE is divided by it so both terms lie in [0, 1].
    weights : sequence of float
        MS-SSIM scale weights (global: five scales, local: four).
    win_size : int
        Gaussian window of the MS-SSIM.

    Returns
    -------
    loss : Tensor of shape (b,)
    """
    mae = (x - x_hat).abs().flatten(1).mean(1) / data_range
    msssim = ms_ssim_value(x, x_hat, data_range=data_range, weights=weights, win_size=win_size)
    return rho * mae + (1.0 - rho) * (1.0 - msssim)


def reconstruction_map(x, x_hat, *, rho=0.15, data_range, weights=GLOBAL_WEIGHTS, win_size=11):
    """Per-pixel reconstruction loss of one branch, eq. 12, shape (b, H, W).

    ``rho * |x - x_hat| / L`` (channel mean) ``+ (1 - rho) * (1 - MS-SSIM map)``.
    """
    mae = (x - x_hat).abs().mean(1) / data_range
    msssim = ms_ssim_map(x, x_hat, data_range=data_range, weights=weights, win_size=win_size)
    return rho * mae + (1.0 - rho) * (1.0 - msssim)


def distillation_loss(student, teacher):
    """Knowledge-distillation loss, eq. 10: ``||f_I(x) - f_theta(x)||^2`` averaged over the batch."""
    return ((teacher - student) ** 2).sum(1).mean()


def ms_ssim_settings(name, global_window, local_window=LOCAL_WINDOW):
    """MS-SSIM scale weights and window of a branch.

    Parameters
    ----------
    name : {"global", "local"}
        The branch: five scales on whole images, four on 32 x 32 patches.
    global_window : int
        Gaussian window of the global MS-SSIM (:func:`global_window_size`).
    local_window : int, default=LOCAL_WINDOW

    Returns
    -------
    settings : dict
        ``weights`` and ``win_size`` for :func:`reconstruction_loss` and
        :func:`reconstruction_map`.
    """
    if name == "global":
        return {"weights": GLOBAL_WEIGHTS, "win_size": int(global_window)}
    if name == "local":
        return {"weights": LOCAL_WEIGHTS, "win_size": int(local_window)}
    raise ValueError(f"name must be 'global' or 'local'; got {name!r}.")


class IGDLoss(nn.Module):
    """IGD's per-branch losses with their settings (the criterion of ``IGDNet``).

    Parameters
    ----------
    data_range : float
        ``L`` of eq. 8, the pixel range of the branch inputs.
    rho : float, default=0.15
        Weight of the MAE in eq. 8.
    lam : float, default=0.1
        Weight of the adversarial term in eq. 6.
    global_window : int, default=11
        Gaussian window of the global MS-SSIM (five scales).
    local_window : int, default=LOCAL_WINDOW
        Gaussian window of the local MS-SSIM (four scales).

    Notes
    -----
    Called as ``criterion(y_pred)``, with ``y_pred`` a dict
    ``{name: (x, z, x_hat, h_loss)}`` of branch inputs, embeddings,
    reconstructions and per-sample Gaussian SVDD losses, it returns the sum
    over branches of the mean of ``l_m + l_h`` (eqs. 8 and 7), without the
    critic's term: the validation loss.
    """

    def __init__(self, data_range, rho=0.15, lam=0.1, global_window=11, local_window=LOCAL_WINDOW):
        super().__init__()
        self.data_range = data_range
        self.rho = rho
        self.lam = lam
        self.global_window = global_window
        self.local_window = local_window

    def reconstruction(self, name, x, x_hat):
        """``l_m`` of eq. 8 for one branch, per sample (image or patch): (b,)."""
        settings = ms_ssim_settings(name, self.global_window, self.local_window)
        return reconstruction_loss(x, x_hat, rho=self.rho, data_range=self.data_range, **settings)

    def forward(self, y_pred, X=None):
        total = 0.0
        for name, (xb, z, x_hat, h_loss) in y_pred.items():
            total = total + self.reconstruction(name, xb, x_hat).mean() + h_loss.mean()
        return total


class DistillationLoss(nn.Module):
    """Eq. 10 against a frozen teacher: the criterion of the distillation net.

    Parameters
    ----------
    teacher : nn.Module
        Maps images in [0, 1] to the target features ``f_I(x)`` (e.g.
        :class:`~skanomaly.igd.torch_model.TeacherFeatures`); never trained.

    Notes
    -----
    Called as ``criterion(student_features, x)``: the student's features of
    the batch ``x`` and the batch itself, whose teacher features are the
    targets.
    """

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def forward(self, student, x):
        with torch.no_grad():
            target = self.teacher(x)
        return distillation_loss(student, target)
