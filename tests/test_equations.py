"""Value-level tests of each detector's scoring path against its paper's equations.

Each test fits a tiny model, recomputes the anomaly map and the image score
by hand from the fitted networks (their public modules) and the paper's
equation, and compares values, not just shapes or orderings.  Weights that
enter an equation (SCADN's ``lambda_rm``/``lambda_rec``/``lambda_adv``,
IGD's ``xi``/``beta``/``lam``) are set to asymmetric values so that a
swapped, ignored or hard-coded weight changes the result.  The tests use the public API, the fitted networks named in the
estimators' docstrings (``net_.module_``, ``net_.criterion_``) and the
methods' pure functions.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from skanomaly import DFRDetector, IGDDetector, InpaintingAE, SCADNDetector
from skanomaly.inpainting._estimator import largest_component_level
from skanomaly.scadn.masks import striped_masks


# One intra-op thread (tests/conftest.py: one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n, size, channels=None, seed=0):
    """Smooth random float images in [0.1, 0.9]: ``(n, size, size[, channels])``."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    x = ndimage.gaussian_filter(rng.uniform(size=shape), sigma=(0, 1.5, 1.5) + (0,) * (len(shape) - 3))
    x = (x - x.min()) / (x.max() - x.min())
    return (0.1 + 0.8 * x).astype(np.float32)


def _as_tensor(X):
    """``(n, H, W[, C])`` floats to a ``(n, C, H, W)`` float32 tensor."""
    t = torch.from_numpy(np.asarray(X, dtype=np.float32))
    return t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------- DFR
def test_dfr_map_is_upsampled_l2_feature_distance_and_score_its_max():
    """Eq. (5): ``||f_ij - f_hat_ij||_2`` per region, bilinearly upsampled; score = max."""
    X = _images(6, 40, seed=1)
    det = DFRDetector(weights=None, scales=3, latent_dim=6, image_size=32, max_epochs=2,
                      batch_size=3, device="cpu", random_state=0).fit(X)
    X_test = _images(3, 40, seed=2)
    x = _as_tensor(X_test)
    with torch.no_grad():
        f = det.feature_extractor_(det._to_working_size(x))  # (3, c_o, 8, 8)
        f_hat = det.net_.module_(f)
        distance = torch.sqrt(((f - f_hat) ** 2).sum(dim=1))  # not squared
    assert distance.shape == (3, 8, 8)
    expected = F.interpolate(distance[:, None], size=(40, 40), mode="bilinear",
                             align_corners=False)[:, 0].numpy()
    scores, maps = det.score_and_transform(X_test)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    # the image anomaly score is the map's maximum (not its mean)
    np.testing.assert_allclose(-scores, expected.max(axis=(1, 2)), rtol=1e-5)


# -------------------------------------------------------------- InpaintingAE
def test_inpainting_map_is_smoothed_channel_rms_error_and_score_its_level():
    """Map: Gaussian-smoothed RMS over channels of ``F(X) - X``; score: §4.2 level."""
    X = _images(6, 24, channels=3, seed=3)
    det = InpaintingAE(width=4, image_size=16, smoothing_sigma=1.3, min_defect_area=5,
                       max_epochs=2, batch_size=3, device="cpu", random_state=0).fit(X)
    X_test = _images(3, 24, channels=3, seed=4)
    xw = F.interpolate(_as_tensor(X_test), size=(16, 16), mode="bilinear", align_corners=False,
                       antialias=True)
    with torch.no_grad():
        residual = det.net_.module_(xw) - xw
    rms = residual.pow(2).mean(dim=1).sqrt().numpy()  # per-pixel channel RMS
    smoothed = ndimage.gaussian_filter(rms, sigma=(0, det.smoothing_sigma, det.smoothing_sigma),
                                       mode="reflect")
    expected = F.interpolate(torch.from_numpy(smoothed)[:, None], size=(24, 24), mode="bilinear",
                             align_corners=False)[:, 0].numpy()
    scores, maps = det.score_and_transform(X_test)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    levels = [largest_component_level(m, 5) for m in expected]
    np.testing.assert_allclose(-scores, levels, rtol=1e-4, atol=1e-7)
    # with a minimal area of one pixel the score is the map's maximum
    det1 = InpaintingAE(**{**det.get_params(), "min_defect_area": 1}).fit(X)
    scores1, maps1 = det1.score_and_transform(X_test)
    np.testing.assert_allclose(-scores1, maps1.max(axis=(1, 2)), rtol=1e-6)


# --------------------------------------------------------------------- SCADN
SCADN_TINY = dict(width=2, image_size=24, mask_scales=(1 / 4, 1 / 12), max_epochs=1,
                  batch_size=4, lr=1e-3, device="cpu", random_state=0)


@pytest.fixture(scope="module")
def scadn_weighted():
    """A tiny SCADN fitted with asymmetric loss weights."""
    X = _images(4, 24, seed=5)
    det = SCADNDetector(**SCADN_TINY, lambda_rm=2.5, lambda_rec=0.7, lambda_adv=0.3).fit(X)
    return det, X


def test_scadn_reconstruction_loss_is_eq_2_with_the_given_lambda_rm(scadn_weighted):
    det, _ = scadn_weighted
    g = torch.Generator().manual_seed(0)
    out, target = torch.rand(2, 1, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    expected = ((1 + 2.5 * (1 - mask)) * (out - target) ** 2).mean()
    assert det.net_.criterion_(out, target, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_scadn_generator_loss_is_eq_4_with_the_given_weights(scadn_weighted):
    """One train step of the fitted net: loss = 0.7 * L_rec(2.5) + 0.3 * L_adv (eqs. 2-4)."""
    det, X = scadn_weighted
    net, by_hand = copy.deepcopy(det.net_), copy.deepcopy(det.net_)
    x = _as_tensor(X)
    net.history.new_epoch()
    net.history.new_batch()
    torch.manual_seed(7)
    step = net.train_step((x, torch.zeros(len(x))))

    torch.manual_seed(7)
    masks = striped_masks(24, 24, SCADN_TINY["mask_scales"]).reshape(-1, 1, 24, 24)
    m = masks[torch.randint(len(masks), (len(x),))]
    G, D = by_hand.module_, by_hand.discriminator_
    G.train()
    D.train()  # spectral norm's power iteration runs in training mode, as in the step
    fake = G(x * m)
    # the discriminator's step first (eq. 3), with the net's own optimizer
    d_loss = -(torch.log(torch.sigmoid(D(x))).mean()
               + torch.log(1 - torch.sigmoid(D(fake.detach()))).mean())
    by_hand.optimizer_discriminator_.zero_grad()
    d_loss.backward()
    by_hand.optimizer_discriminator_.step()
    with torch.no_grad():
        adv = torch.log(1 - torch.sigmoid(D(fake))).mean()  # minimax, eq. 3
        rec = ((1 + 2.5 * (1 - m)) * (fake - x) ** 2).mean()  # eq. 2
    expected = 0.7 * rec + 0.3 * adv  # eq. 4
    assert step["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    batch = net.history[-1, "batches", -1]
    assert batch["reconstruction_loss"] == pytest.approx(rec.item(), rel=1e-5)
    # the weights matter: the same step with the weights swapped differs
    assert abs((0.3 * rec + 0.7 * adv).item() - expected.item()) > 1e-3


def test_scadn_scoring_follows_eqs_5_to_10():
    """Maps per scale (eqs. 5-7), mu_i (eq. 9), the scale choice and score (eqs. 8-10)."""
    X = _images(6, 32, seed=6)
    det = SCADNDetector(**{**SCADN_TINY, "mask_scales": (1 / 4, 1 / 8, 1 / 24)}).fit(X)
    G = det.net_.module_
    masks = striped_masks(24, 24, det.mask_scales)

    def scale_maps(images):
        xw = F.interpolate(_as_tensor(images), size=(24, 24), mode="bilinear",
                           align_corners=False, antialias=True)
        out = []
        with torch.no_grad():
            for s in range(masks.shape[0]):
                errs = [((G(xw * masks[s, j]) - xw) ** 2).mean(1) * (1 - masks[s, j, 0])
                        for j in range(4)]  # eqs. 5-6 on the removed region
                out.append(torch.stack(errs).amax(0))  # eq. 7
        return torch.stack(out, dim=1)  # (n, n_scales, 24, 24)

    mu = scale_maps(X).mean(dim=(2, 3)).mean(dim=0)
    np.testing.assert_allclose(det.mu_, mu.numpy(), rtol=1e-4)
    # Planted bright bars of two widths push different scales above mu_i.
    X_test = _images(6, 32, seed=7)
    X_test[:3, :, 4:6] = 1.0
    X_test[3:, 8:24, 8:24] = 1.0
    maps = scale_maps(X_test)
    chosen = torch.argmax(maps.mean(dim=(2, 3)) - mu, dim=1)  # eqs. 8-9
    final = maps[torch.arange(len(X_test)), chosen]
    expected_maps = F.interpolate(final[:, None], size=(32, 32), mode="bilinear",
                                  align_corners=False)[:, 0]
    np.testing.assert_array_equal(det.chosen_scales(X_test), chosen.numpy())
    scores, heatmaps = det.score_and_transform(X_test)
    np.testing.assert_allclose(heatmaps, expected_maps.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(-scores, final.mean(dim=(1, 2)).numpy(), rtol=1e-4)  # eq. 10


# ----------------------------------------------------------------------- IGD
# IGD's scoring code is being restructured: these tests reach the fitted
# branches only through ``net_.module_`` (``branches()``, ``branch_input``,
# each branch's ``encoder``/``decoder`` and ``mu``/``sigma2`` buffers, as the
# estimator's docstring documents) and compute eqs. 7, 8 and 12 with the
# pure functions of ``skanomaly.igd.losses`` (``reconstruction_loss``,
# ``reconstruction_map``), which both the old and the restructured code keep.
IGD_TINY = dict(teacher=None, image_size=48, width=2, latent_dim=4, max_epochs=1, batch_size=4,
                e_step_interval=1, device="cpu", random_state=0)


def _igd_terms(det, X):
    """Per-branch ``l_m`` (eq. 8), ``l_h`` (eq. 7) and ``l_m`` maps (eq. 12), by hand."""
    from skanomaly.igd.losses import LOCAL_WINDOW, reconstruction_loss, reconstruction_map
    from skanomaly.igd.ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS
    from skanomaly.igd.torch_model import DATA_RANGE, fold_patch_maps

    module = det.net_.module_
    x = F.interpolate(_as_tensor(X), size=(48, 48), mode="bilinear", align_corners=False,
                      antialias=True).expand(-1, 3, -1, -1)
    terms = {}
    with torch.no_grad():
        for name, branch in module.branches():
            ms = (dict(weights=GLOBAL_WEIGHTS, win_size=det.global_window_) if name == "global"
                  else dict(weights=LOCAL_WEIGHTS, win_size=LOCAL_WINDOW))
            xb = module.branch_input(name, x)
            z = branch.encoder(xb)
            x_hat = branch.decoder(z)
            l_m = reconstruction_loss(xb, x_hat, rho=det.rho, data_range=DATA_RANGE, **ms)
            l_h = 1.0 - torch.exp(-((z - branch.mu) ** 2).sum(1) / branch.sigma2)  # eq. 7
            maps = reconstruction_map(xb, x_hat, rho=det.rho, data_range=DATA_RANGE, **ms)
            if name == "local":  # 4 patches of 32 px per 48 px image: mean over them
                l_m, l_h = l_m.view(len(x), -1).mean(1), l_h.view(len(x), -1).mean(1)
                maps = fold_patch_maps(maps, 48, 48, 16)
            terms[name] = (l_m.numpy(), l_h.numpy(), maps.numpy())
    return terms


@pytest.fixture(scope="module")
def igd_weighted():
    X = _images(6, 48, seed=8)
    det = IGDDetector(**IGD_TINY, beta=0.3, xi=0.2, lam=0.37).fit(X)
    return det, X


def test_igd_score_is_eq_11_with_beta_weighted_branches(igd_weighted):
    """score = xi * l_m + (1 - xi) * l_h, each term beta * global + (1 - beta) * local."""
    det, X = igd_weighted
    terms = _igd_terms(det, X[:3])
    (gm, gh, gmap), (lm, lh, lmap) = terms["global"], terms["local"]
    l_m = 0.3 * gm + 0.7 * lm
    l_h = 0.3 * gh + 0.7 * lh
    assert np.abs(l_m - l_h).min() > 1e-2  # xi and 1 - xi are told apart
    assert np.abs(gm - lm).min() > 1e-2  # and beta and 1 - beta (l_h is ~0 for both here)
    scores, maps = det.score_and_transform(X[:3])
    np.testing.assert_allclose(-scores, 0.2 * l_m + 0.8 * l_h, rtol=1e-4, atol=1e-6)
    # eq. 12: the heatmap holds l_m only, with the same branch weights
    np.testing.assert_allclose(maps, 0.3 * gmap + 0.7 * lmap, rtol=1e-4, atol=1e-6)


def test_igd_fits_differing_only_in_xi_follow_eq_11(igd_weighted):
    det, X = igd_weighted
    terms = _igd_terms(det, X[:3])
    l_m = 0.3 * terms["global"][0] + 0.7 * terms["local"][0]
    l_h = 0.3 * terms["global"][1] + 0.7 * terms["local"][1]
    scores = {xi: -IGDDetector(**{**det.get_params(), "xi": xi}).fit(X).score_samples(X[:3])
              for xi in (0.0, 1.0, 0.75)}
    np.testing.assert_allclose(scores[1.0], l_m, rtol=1e-4, atol=1e-6)  # xi = 1: l_m alone
    np.testing.assert_allclose(scores[0.0], l_h, rtol=1e-4, atol=1e-6)  # xi = 0: l_h alone
    np.testing.assert_allclose(scores[0.75], 0.75 * scores[1.0] + 0.25 * scores[0.0], rtol=1e-4,
                               atol=1e-6)


def test_igd_training_loss_is_eq_6_plus_eq_7_with_the_given_lam():
    """One M-step of the global branch: l_m + lam * ||d(x_hat_alpha)||^2 + l_h (eqs. 6-7)."""
    from skanomaly.igd.losses import interpolate_latents, sample_alpha

    X = _images(4, 32, seed=9)
    det = IGDDetector(**{**IGD_TINY, "image_size": 32}, beta=1.0, lam=0.37).fit(X)
    assert det.net_.criterion_.lam == 0.37
    net, by_hand = copy.deepcopy(det.net_), copy.deepcopy(det.net_)
    x = _as_tensor(X).expand(-1, 3, -1, -1)
    net.on_train_begin(net)
    net._total_iterations = 10
    net.history.new_epoch()
    net.history.new_batch()
    torch.manual_seed(3)
    loss = net.train_step((x, torch.zeros(len(x))))["loss"].item()

    module, branch = by_hand.module_, by_hand.module_.global_branch
    module.train()
    by_hand.critic_.train()
    torch.manual_seed(3)
    with torch.no_grad():
        xb = module.branch_input("global", x)
        z = branch.encoder(xb)
        x_hat = branch.decoder(z)
        l_m = by_hand.criterion_.reconstruction("global", xb, x_hat).mean()
        alpha = sample_alpha(len(x))
        d = by_hand.critic_.critic("global")(branch.decoder(interpolate_latents(z, alpha)))
        l_h = (1.0 - torch.exp(-((z - branch.mu) ** 2).sum(1) / branch.sigma2)).mean()
    expected = l_m + 0.37 * (d**2).mean() + l_h
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert abs(0.37 * (d**2).mean().item()) > 1e-4  # lam's term is not negligible
