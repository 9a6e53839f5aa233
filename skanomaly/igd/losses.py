"""IGD's losses (Chen et al., 2022, eqs. 5-12), as plain tensor functions.

Every function returns per-sample values (or a scalar where the paper's
quantity is a batch statistic) so that the training step, the anomaly score
and the tests share one definition.
"""

from __future__ import annotations

import torch

from .ssim import GLOBAL_WEIGHTS, ms_ssim_map, ms_ssim_value

__all__ = [
    "sample_alpha",
    "interpolate_latents",
    "critic_loss",
    "autoencoder_loss",
    "gsvdd_loss",
    "estimate_gaussian",
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


def estimate_gaussian(z, kappa=0.5, min_sigma2=1.0):
    """E-step of IGD: Gaussian SVDD statistics of training embeddings.

    ``mu = mean(z)``, ``sigma^2 = max(min_sigma2, kappa * mean ||z - mu||^2)``.

    Parameters
    ----------
    z : Tensor of shape (n, d)
        Embeddings ``f_theta(x_i)`` of the training images (or patches).
    kappa : float, default=0.5
        Scale of the variance estimate (the paper's ``kappa``).
    min_sigma2 : float, default=1.0
        The paper's lower bound on ``sigma^2``.

    Returns
    -------
    mu : Tensor of shape (d,)
        Gaussian SVDD centre ``mu_gamma``.
    sigma2 : Tensor of shape ()
        Gaussian SVDD variance ``sigma_gamma^2``.
    """
    z = z.detach().to(torch.float64)
    mu = z.mean(0)
    sigma2 = kappa * ((z - mu) ** 2).sum(1).mean()
    sigma2 = torch.clamp(sigma2, min=min_sigma2)
    return mu.to(torch.float32), sigma2.to(torch.float32)


def gaussian_from_moments(sum_z, sum_sq, n, *, kappa=0.5, min_sigma2=1.0):
    """The E-step of :func:`estimate_gaussian` from streamed moments.

    Parameters
    ----------
    sum_z : Tensor of shape (d,)
        Sum of the embeddings.
    sum_sq : Tensor of shape ()
        Sum of their squared norms.
    n : int
        Number of embeddings.
    kappa, min_sigma2 : float

    Returns
    -------
    mu, sigma2 : as :func:`estimate_gaussian`

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
