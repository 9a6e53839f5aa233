"""Tests of IGD: SSIM maps, losses, modules, E-step, critic target, the estimator."""

import numpy as np
import pytest
import pytorch_msssim
import torch

from skanomaly.igd.losses import (
    LOCAL_WINDOW,
    autoencoder_loss,
    critic_loss,
    distillation_loss,
    gaussian_from_moments,
    global_window_size,
    gsvdd_loss,
    interpolate_latents,
    reconstruction_loss,
    reconstruction_map,
    sample_alpha,
)
from skanomaly.igd.ssim import (
    GLOBAL_WEIGHTS,
    LOCAL_WEIGHTS,
    ms_ssim,
    ms_ssim_map,
    ms_ssim_value,
    pytorch_msssim_accepts,
    ssim_maps,
)
from skanomaly.igd.torch_model import (
    DATA_RANGE,
    Critic,
    Decoder,
    IGDBranch,
    IGDCritics,
    IGDModel,
    branch_anomaly,
    extract_patches,
    fold_patch_maps,
    patch_starts,
)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # The CPU is shared: one intra-op thread avoids oversubscription, which
    # slows these small convolutions by an order of magnitude.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(n=3, size=64, noise=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    y = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    return x, y


# --------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("win_size", [3, 7, 11])
def test_ssim_map_mean_equals_pytorch_msssim(win_size):
    x, y = _pair()
    ssim_map, _ = ssim_maps(x, y, data_range=1.0, win_size=win_size)
    expected = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=False, win_size=win_size)
    assert ssim_map.shape == (3, 3, 64 - win_size + 1, 64 - win_size + 1)
    torch.testing.assert_close(ssim_map.flatten(1).mean(1), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size, win_size, data_range", [(64, 3, 1.0), (180, 11, DATA_RANGE)])
def test_ms_ssim_equals_pytorch_msssim(size, win_size, data_range):
    x, y = _pair(n=2, size=size)
    expected = pytorch_msssim.ms_ssim(
        x, y, data_range=data_range, size_average=False, win_size=win_size, weights=list(GLOBAL_WEIGHTS)
    )
    ours = ms_ssim(x, y, data_range=data_range, weights=GLOBAL_WEIGHTS, win_size=win_size)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    assert pytorch_msssim_accepts(size, size, n_scales=5, win_size=win_size)
    torch.testing.assert_close(
        ms_ssim_value(x, y, data_range=data_range, weights=GLOBAL_WEIGHTS, win_size=win_size), expected
    )


def test_local_ms_ssim_on_32px_patches_where_pytorch_msssim_refuses():
    x, y = _pair(n=4, size=32, noise=0.1)
    with pytest.raises(AssertionError):
        pytorch_msssim.ms_ssim(x, y, data_range=1.0, win_size=LOCAL_WINDOW, weights=list(LOCAL_WEIGHTS))
    assert not pytorch_msssim_accepts(32, 32, n_scales=4, win_size=LOCAL_WINDOW)
    value = ms_ssim_value(x, y, data_range=1.0, weights=LOCAL_WEIGHTS, win_size=LOCAL_WINDOW)
    # Same formula evaluated by hand from the per-scale SSIM maps.
    factors, a, b = [], x, y
    for level, w in enumerate(LOCAL_WEIGHTS):
        s, cs = ssim_maps(a, b, data_range=1.0, win_size=LOCAL_WINDOW)
        m = s if level == 3 else cs
        factors.append(m.flatten(2).mean(-1).clamp(min=0) ** w)
        a, b = torch.nn.functional.avg_pool2d(a, 2), torch.nn.functional.avg_pool2d(b, 2)
    torch.testing.assert_close(value, torch.stack(factors).prod(0).mean(1))
    assert torch.all(value < 1) and torch.all(value > 0.5)
    noisier = ms_ssim_value(*_pair(n=4, size=32, noise=0.4), data_range=1.0, weights=LOCAL_WEIGHTS, win_size=3)
    assert torch.all(noisier < value)


def test_ms_ssim_map_is_one_for_identical_images_and_low_at_a_defect():
    x, _ = _pair(n=2, size=64)
    ones = ms_ssim_map(x, x.clone(), data_range=1.0, win_size=3)
    assert ones.shape == (2, 64, 64)
    torch.testing.assert_close(ones, torch.ones_like(ones))
    y = x.clone()
    y[:, :, 20:30, 36:46] = 0.5  # a flat grey square: structure lost
    m = ms_ssim_map(x, y, data_range=1.0, win_size=3)
    inside = m[:, 22:28, 38:44].mean()
    outside = torch.cat([m[:, :10].flatten(), m[:, 50:].flatten()]).mean()
    assert inside < 0.5 < outside
    # The lowest value lies in (or next to) the square.
    idx = torch.argmin(m[0])
    r, c = divmod(int(idx), 64)
    assert 16 <= r <= 34 and 32 <= c <= 50


def test_single_scale_map_interior_matches_valid_map():
    x, y = _pair(n=2, size=40)
    valid, _ = ssim_maps(x, y, data_range=1.0, win_size=7)
    same, _ = ssim_maps(x, y, data_range=1.0, win_size=7, padding="same")
    assert same.shape == x.shape
    torch.testing.assert_close(same[..., 3:-3, 3:-3], valid, atol=1e-5, rtol=0)
    # One-scale map averaged over channels equals ms_ssim_map with one weight.
    torch.testing.assert_close(
        ms_ssim_map(x, y, data_range=1.0, weights=(1.0,), win_size=7), same.clamp(min=0).mean(1)
    )


def test_ms_ssim_value_is_differentiable_for_small_and_large_images():
    for size in (32, 64):
        x, y = _pair(n=2, size=size)
        y.requires_grad_(True)
        win = global_window_size(size)
        loss = (1 - ms_ssim_value(x, y, data_range=1.0, weights=GLOBAL_WEIGHTS, win_size=win)).sum()
        loss.backward()
        assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_global_window_sizes():
    assert [global_window_size(s) for s in (16, 32, 64, 128, 256)] == [3, 3, 3, 7, 11]
    for s in (64, 128, 256):
        assert pytorch_msssim_accepts(s, s, n_scales=5, win_size=global_window_size(s))


# ------------------------------------------------------------------------- losses


def _estimate_gaussian(z, kappa=0.5, min_sigma2=1.0):
    """Test-only reference of the E-step: statistics from all embeddings at once."""
    z = z.double()
    mu = z.mean(0)
    sigma2 = torch.clamp(kappa * ((z - mu) ** 2).sum(1).mean(), min=min_sigma2)
    return mu.float(), sigma2.float()


def _moments(z):
    z = z.double()
    return z.sum(0), (z**2).sum(), len(z)


def test_estep_statistics():
    g = torch.Generator().manual_seed(1)
    z = 3.0 * torch.randn(500, 8, generator=g) + torch.arange(8.0)
    mu, sigma2 = gaussian_from_moments(*_moments(z), kappa=0.5)
    ref_mu, ref_sigma2 = _estimate_gaussian(z, kappa=0.5)
    torch.testing.assert_close(mu, ref_mu)
    torch.testing.assert_close(sigma2, ref_sigma2)
    torch.testing.assert_close(mu, z.mean(0))
    assert abs(float(sigma2) - 0.5 * 8 * 9) < 4  # kappa * d * variance
    # sigma^2 is bounded below by 1 for tight clusters.
    _, tight = gaussian_from_moments(*_moments(0.01 * torch.randn(100, 8, generator=g)), kappa=0.5)
    assert float(tight) == 1.0
    # kappa scales the estimate.
    _, s1 = gaussian_from_moments(*_moments(z), kappa=1.0)
    torch.testing.assert_close(s1, 2 * sigma2)


def test_gsvdd_loss_matches_branch_and_grows_with_distance():
    branch = IGDBranch("global", 16, latent_dim=4, width=2)
    branch.mu.copy_(torch.tensor([1.0, 0.0, -1.0, 2.0]))
    branch.sigma2.fill_(2.0)
    z = branch.mu + torch.tensor([[0.0], [0.5], [1.0], [3.0]]) * torch.ones(4)
    loss = gsvdd_loss(z, branch.mu, branch.sigma2)
    torch.testing.assert_close(loss, 1 - torch.exp(-((z - branch.mu) ** 2).sum(1) / branch.sigma2))
    assert float(loss[0]) == 0.0
    assert torch.all(loss[1:] > loss[:-1]) and float(loss[-1]) > 0.99
    torch.testing.assert_close(loss[1], 1 - torch.exp(torch.tensor(-4 * 0.25 / 2.0)))


def test_critic_target_and_interpolation():
    alpha = sample_alpha(10000, generator=torch.Generator().manual_seed(0))
    assert alpha.shape == (10000, 1)
    assert float(alpha.min()) >= 0 and float(alpha.max()) <= 0.5
    assert abs(float(alpha.mean()) - 0.25) < 0.01
    z = torch.arange(12.0).view(4, 3)
    torch.testing.assert_close(interpolate_latents(z, torch.ones(4, 1)), z)
    torch.testing.assert_close(interpolate_latents(z, torch.zeros(4, 1)), z.flip(0))
    half = interpolate_latents(z, torch.full((4, 1), 0.5))
    torch.testing.assert_close(half, (z + z.flip(0)) / 2)
    # The critic's targets: alpha for decoded interpolants, 0 for the gamma-mix.
    a = torch.tensor([0.1, 0.4])
    assert float(critic_loss(a.clone(), a, torch.zeros(2))) == 0.0
    torch.testing.assert_close(
        critic_loss(torch.tensor([0.3, 0.4]), a.view(2, 1), torch.tensor([0.2, 0.0])),
        torch.tensor((0.2**2 + 0.0) / 2 + (0.2**2) / 2),
    )
    # The auto-encoder's adversarial term pushes the critic's output on interpolants to 0.
    rec = torch.tensor([0.2, 0.4])
    torch.testing.assert_close(autoencoder_loss(rec, torch.tensor([0.5, 0.5]), lam=0.1), torch.tensor(0.3 + 0.025))


def test_reconstruction_loss_and_map():
    x, y = _pair(n=2, size=32, noise=0.3)
    xn, yn = (x - 0.45) / 0.225, (y - 0.45) / 0.225
    win = global_window_size(32)
    zero = reconstruction_loss(xn, xn.clone(), rho=0.15, data_range=DATA_RANGE, win_size=win)
    torch.testing.assert_close(zero, torch.zeros(2), atol=1e-6, rtol=0)
    loss = reconstruction_loss(xn, yn, rho=0.15, data_range=DATA_RANGE, win_size=win)
    mae = (xn - yn).abs().flatten(1).mean(1) / DATA_RANGE
    ms = ms_ssim(xn, yn, data_range=DATA_RANGE, weights=GLOBAL_WEIGHTS, win_size=win)
    torch.testing.assert_close(loss, 0.15 * mae + 0.85 * (1 - ms))
    only_mae = reconstruction_loss(xn, yn, rho=1.0, data_range=DATA_RANGE, win_size=win)
    torch.testing.assert_close(only_mae, mae)
    m = reconstruction_map(xn, yn, rho=0.15, data_range=DATA_RANGE, win_size=win)
    assert m.shape == (2, 32, 32) and torch.all(m >= 0)
    torch.testing.assert_close(
        reconstruction_map(xn, xn.clone(), data_range=DATA_RANGE, win_size=win), torch.zeros(2, 32, 32)
    )


def test_distillation_loss():
    s = torch.zeros(2, 3)
    t = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(distillation_loss(s, t), torch.tensor((9.0 + 1.0) / 2))


# ------------------------------------------------------------------------ modules


@pytest.mark.parametrize("size", [28, 32, 48])
def test_network_shapes(size):
    net = IGDModel(size, latent_dim=8, width=4, use_local=size >= 32)
    x = torch.rand(3, 3, size, size)
    out = net(x)
    xb, z, x_hat = out["global"]
    assert z.shape == (3, 8) and x_hat.shape == (3, 3, size, size)
    torch.testing.assert_close(xb, net.normalize(x))
    if size >= 32:
        n_patches = len(patch_starts(size, 32, 16)) ** 2
        xb, z, x_hat = out["local"]
        assert xb.shape == (3 * n_patches, 3, 32, 32) and z.shape == (3 * n_patches, 8)
        assert x_hat.shape == xb.shape
    critics = IGDCritics(width=4, use_local=False, image_size=size)
    assert critics.critic("global")(out["global"][2]).shape == (3,)
    assert critics.critic("local") is None


def test_widths_follow_the_paper():
    net = IGDModel(256, use_local=True)
    enc = [b.conv2.out_channels for b in net.global_branch.encoder.blocks]
    dec = [b.conv2.out_channels for b in net.global_branch.decoder.blocks]
    assert enc == [64, 128, 256, 512] and dec == [512, 512, 256, 128, 64]
    assert [b.conv2.out_channels for b in net.local_branch.encoder.blocks] == [128, 256, 512]
    assert [b.conv2.out_channels for b in net.local_branch.decoder.blocks] == [256, 128, 64]
    critics = IGDCritics()
    assert [b.conv2.out_channels for b in critics.global_critic.blocks] == [128, 256, 512, 512]
    assert [b.conv2.out_channels for b in critics.local_critic.blocks] == [128, 256, 512]
    assert net.global_branch.encoder.n_features == 512  # ResNet18's pooled feature size
    assert net.global_branch.decoder.start == 8 and net.local_branch.decoder.start == 4


def test_patches_cover_the_image_and_fold_back():
    assert patch_starts(64, 32, 16) == [0, 16, 32]
    assert patch_starts(40, 32, 16) == [0, 8]  # last patch touches the border
    assert len(patch_starts(256, 32, 16)) ** 2 == 225  # the paper's 225 patches
    x = torch.rand(2, 3, 40, 56)
    p = extract_patches(x, 32, 16)
    assert p.shape == (2 * 2 * 3, 3, 32, 32)
    torch.testing.assert_close(p[1], x[0, :, 0:32, 16:48])  # row-major within an image
    torch.testing.assert_close(p[6], x[1, :, 0:32, 0:32])
    # Folding each patch's own pixels back gives the image (overlaps averaged).
    folded = fold_patch_maps(p[:, 0], 40, 56)
    torch.testing.assert_close(folded, x[:, 0])
    torch.testing.assert_close(fold_patch_maps(torch.ones(12, 32, 32), 40, 56), torch.ones(2, 40, 56))


def test_frozen_backbone_keeps_encoder_fixed():
    torch.manual_seed(0)
    branch = IGDBranch("global", 16, latent_dim=4, width=2).freeze_backbone()
    branch.train()
    assert not branch.encoder.norm.training and branch.decoder.norm.training
    trainable = {n for n, p in branch.named_parameters() if p.requires_grad}
    assert "encoder.project.weight" in trainable
    assert not any(n.startswith(("encoder.stem", "encoder.blocks", "encoder.norm")) for n in trainable)
    before = branch.encoder.norm.running_mean.clone()
    branch(torch.randn(4, 3, 16, 16) + 3)
    torch.testing.assert_close(branch.encoder.norm.running_mean, before)


def test_decoder_and_critic_small_sizes():
    dec = Decoder(5, (4, 4, 2), image_size=20)
    assert dec.start == 3 and dec(torch.randn(2, 5)).shape == (2, 3, 20, 20)
    crit = Critic((2, 4))
    assert crit(torch.randn(5, 3, 9, 9)).shape == (5,)
    assert np.isfinite(crit(torch.randn(2, 3, 16, 16)).detach().numpy()).all()


# ---------------------------------------------------------------------- estimator

import math  # noqa: E402
import types  # noqa: E402
from functools import partial  # noqa: E402

import joblib  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from skorch.callbacks import Callback, GradientNormClipping, LRScheduler  # noqa: E402

from skanomaly._training import TrainingDivergedError  # noqa: E402
from skanomaly.igd import IGDDetector  # noqa: E402
from skanomaly.igd._net import IGDNet, distill  # noqa: E402
from skanomaly.igd.losses import IGDLoss  # noqa: E402
from tests.detectors import HAS_PRETRAINED, trained_callback  # noqa: E402

SMALL = dict(teacher=None, image_size=32, beta=1.0, width=4, latent_dim=8, max_epochs=2, batch_size=8, random_state=0)


def _stripes(n, size=32, seed=0):
    """Normal images: soft horizontal stripes with a random phase and contrast."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None] * np.ones((1, size))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    amp = rng.uniform(0.25, 0.35, size=(n, 1, 1))
    return (0.5 + amp * np.sin(2 * np.pi * rows / 8.0 + phase)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    X = _stripes(24)
    return IGDDetector(**SMALL).fit(X), X


def test_contract_shapes_and_signs(fitted):
    det, X = fitted
    scores = det.score_samples(X)
    assert scores.shape == (24,) and np.all(np.isfinite(scores))
    np.testing.assert_allclose(det.decision_function(X), scores - det.offset_)
    assert set(np.unique(det.predict(X))) <= {-1, 1}
    assert np.all(det.predict(X) == 1)  # contamination="auto" flags no training image
    maps = det.transform(X)
    assert maps.shape == (24, 32, 32) and maps.dtype == np.float32
    flat = det.transform(X.reshape(24, -1)) if det.image_shape else None
    assert flat is None
    assert det.segment(X).dtype == bool
    assert det.net_.module_.local_branch is None and det.net_.critic_.local_critic is None


def test_flattened_input_and_image_shape():
    X = _stripes(10)
    det = IGDDetector(**{**SMALL, "max_epochs": 1}, image_shape=(32, 32)).fit(X.reshape(10, -1))
    maps = det.transform(X.reshape(10, -1))
    assert maps.shape == (10, 32 * 32)
    np.testing.assert_allclose(det.score_samples(X.reshape(10, -1)), det.score_samples(X), rtol=1e-6)


def test_deterministic_and_joblib_roundtrip(fitted, tmp_path):
    det, X = fitted
    again = clone(det).fit(X)
    np.testing.assert_array_equal(again.score_samples(X), det.score_samples(X))
    path = tmp_path / "igd.joblib"
    joblib.dump(det, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X), det.score_samples(X))
    np.testing.assert_array_equal(loaded.transform(X), det.transform(X))


def test_errors():
    X = _stripes(6)
    with pytest.raises(NotFittedError):
        IGDDetector(**SMALL).score_samples(X)
    with pytest.raises(ValueError, match="image_size"):
        IGDDetector(**{**SMALL, "image_size": 16, "beta": 0.5}).fit(X)
    with pytest.raises(ValueError, match="beta"):
        IGDDetector(**{**SMALL, "beta": 1.5}).fit(X)
    with pytest.raises(ValueError, match="callbacks.*e_step"):
        IGDDetector(**SMALL, callbacks=[("e_step", GradientNormClipping(1.0))]).fit(X)
    det = IGDDetector(**{**SMALL, "max_epochs": 1}).fit(X)
    with pytest.raises(ValueError, match="32x32"):
        det.score_samples(_stripes(2, size=40))


def test_estep_statistics_of_the_fitted_model(fitted):
    det, X = fitted
    module = det.net_.module_
    branch = module.global_branch
    with torch.no_grad():
        x = torch.as_tensor(X)[:, None].expand(-1, 3, -1, -1)
        z = branch.encoder(module.normalize(x))
    mu = z.mean(0)
    torch.testing.assert_close(branch.mu, mu, atol=1e-5, rtol=1e-4)
    spread = 0.5 * ((z - mu) ** 2).sum(1).mean()
    torch.testing.assert_close(branch.sigma2, torch.clamp(spread, min=1.0), atol=1e-5, rtol=1e-4)
    # The image score is eq. 11 with the fitted statistics.
    with torch.no_grad():
        scores, maps = det._anomaly_batch(torch.as_tensor(X[:4])[:, None])
        x4 = module.normalize(torch.as_tensor(X[:4])[:, None].expand(-1, 3, -1, -1))
        z4, xh4 = branch(x4)
        rec = det.net_.criterion_.reconstruction("global", x4, xh4)
        expected = 0.5 * rec + 0.5 * (1 - torch.exp(-((z4 - branch.mu) ** 2).sum(1) / branch.sigma2))
    torch.testing.assert_close(scores, expected)
    np.testing.assert_allclose(-det.score_samples(X[:4]), expected.numpy(), rtol=1e-5)


def test_learning_rate_decays_polynomially_to_zero(fitted):
    det, X = fitted
    net = det.net_
    total = 2 * int(np.ceil(24 / 8))
    expected = 1e-4 * (1 - (total - 1) / total) ** 0.9
    for opt in (net.optimizer_, net.optimizer_critic_):
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        assert opt.param_groups[0]["betas"] == (0.0, 0.9)
        assert opt.param_groups[0]["weight_decay"] == 1e-6
    assert "critic_loss" in net.history[-1, "batches", -1]


def test_training_step_alternates_and_the_critic_learns_its_targets(fitted):
    import copy

    det, X = fitted
    net = copy.deepcopy(det.net_)
    module_params = {id(p) for p in net.module_.parameters()}
    critic_params = {id(p) for g in net.optimizer_critic_.param_groups for p in g["params"]}
    assert critic_params == {id(p) for p in net.critic_.parameters()}
    assert not critic_params & {id(p) for g in net.optimizer_.param_groups for p in g["params"]}
    assert module_params == {id(p) for g in net.optimizer_.param_groups for p in g["params"]}
    for opt in (net.optimizer_, net.optimizer_critic_):
        for group in opt.param_groups:
            group["lr"] = 1e-3
    net._set_training(True)
    module, branch = net.module_, net.module_.global_branch
    x = module.normalize(torch.as_tensor(X[:8])[:, None].expand(-1, 3, -1, -1))
    decoder_before = [p.clone() for p in branch.decoder.parameters()]
    torch.manual_seed(0)
    critic_losses = [float(net._branch_step("global", branch, x)[1]) for _ in range(20)]
    # The critic approaches its targets (alpha on interpolants, 0 on the gamma-mix) ...
    assert np.mean(critic_losses[-5:]) < 0.6 * np.mean(critic_losses[:5])
    # ... while the auto-encoder trains too.
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, branch.decoder.parameters()))


def test_both_branches_and_distillation():
    pytest.importorskip("timm")
    rng = np.random.default_rng(0)
    X = rng.uniform(0.3, 0.7, size=(6, 48, 48, 3)).astype(np.float32)
    det = IGDDetector(
        **{
            **SMALL,
            "beta": 0.5,
            "image_size": 48,
            "max_epochs": 1,
            "batch_size": 6,
            "teacher": "efficientnet_lite0",
            "weights": "IMAGENET1K_V1" if HAS_PRETRAINED else None,
            "kd_iterations": 40,
        }
    )
    det.fit(X)
    module = det.net_.module_
    assert module.global_branch is not None and module.local_branch is not None
    for name in ("global", "local"):
        first, last = det.distillation_loss_[name]
        assert last < first  # the student approaches the teacher
    # Distilled encoders are frozen but for their projection.
    local = module.local_branch
    assert local.backbone_frozen and not local.encoder.stem.weight.requires_grad
    assert local.encoder.project.weight.requires_grad
    scores, maps = det.score_samples(X), det.transform(X)
    assert scores.shape == (6,) and maps.shape == (6, 48, 48)
    # The score mixes the branches with beta.
    with torch.no_grad():
        x = torch.as_tensor(X).permute(0, 3, 1, 2)
        terms = {
            name: branch_anomaly(module, name, x, rho=det.rho, global_window=det.global_window_)
            for name, _ in module.branches()
        }
    rec = 0.5 * terms["global"][0] + 0.5 * terms["local"][0]
    h = 0.5 * terms["global"][1] + 0.5 * terms["local"][1]
    np.testing.assert_allclose(-scores, (0.5 * rec + 0.5 * h).numpy(), rtol=1e-5)
    np.testing.assert_allclose(maps, (0.5 * terms["global"][2] + 0.5 * terms["local"][2]).numpy(), rtol=1e-4, atol=1e-6)
    # Neither the distillation nor the training leaves the images behind.
    assert not _holds_images(det, np.moveaxis(X, -1, 1).reshape(-1, 48, 48))


def test_validation_fraction_records_valid_loss():
    det = IGDDetector(**{**SMALL, "validation_fraction": 0.25, "beta": 0.5}).fit(_stripes(12))
    valid = det.net_.history[:, "valid_loss"]
    assert len(valid) == 2 and np.all(np.isfinite(valid)) and np.all(np.asarray(valid) > 0)


# ------------------------------------------------------------- skorch components

def test_critic_is_a_skorch_component_with_its_own_optimizer():
    net = IGDNet(
        IGDModel, IGDLoss, module__image_size=32, module__latent_dim=4, module__width=2,
        module__use_local=False, critic__width=2, critic__use_local=False, critic__image_size=32,
        criterion__data_range=DATA_RANGE, optimizer_critic__lr=1e-3, lr=1e-4, max_epochs=1,
        batch_size=4, train_split=None, device="cpu",
    ).initialize()
    assert "critic" in net._modules and "optimizer_critic" in net._optimizers
    assert net.optimizer_critic_.param_groups[0]["lr"] == 1e-3
    assert net.optimizer_.param_groups[0]["lr"] == 1e-4
    net.set_params(critic__width=3)
    assert net.critic_.critic("global").stem.out_channels == 6  # first critic block: 2 * width
    critic_params = {id(p) for g in net.optimizer_critic_.param_groups for p in g["params"]}
    assert critic_params == {id(p) for p in net.critic_.parameters()}
    net.set_params(optimizer_critic__lr=5e-3)
    assert net.optimizer_critic_.param_groups[0]["lr"] == 5e-3
    assert "forward" not in vars(IGDCritics)  # a container: each critic is called itself


class _GradNormAtStep(Callback):
    """Records the gradient norm each optimizer sees right before it steps."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.norms = {"optimizer": [], "optimizer_critic": []}
        self._handles = [
            getattr(net, name + "_").register_step_pre_hook(partial(self._record, name)) for name in self.norms
        ]

    def _record(self, name, optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        self.norms[name].append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def on_train_end(self, net, X=None, y=None, **kwargs):
        for handle in self._handles:
            handle.remove()
        self._handles = []


def test_gradient_norm_clipping_clips_both_steps():
    X = _stripes(8)
    params = {**SMALL, "max_epochs": 1, "beta": 0.5, "batch_size": 4}
    det = IGDDetector(**params, callbacks=[_GradNormAtStep()]).fit(X)
    free = trained_callback(det, _GradNormAtStep)
    assert max(free.norms["optimizer"]) > 1e-3 and max(free.norms["optimizer_critic"]) > 1e-3
    det = IGDDetector(**params, callbacks=[GradientNormClipping(1e-3), _GradNormAtStep()]).fit(X)
    clipped = trained_callback(det, _GradNormAtStep)
    for name, norms in clipped.norms.items():
        assert len(norms) == len(free.norms[name]) > 0  # every step of both branches
        assert max(norms) <= 1e-3 * (1 + 1e-4), (name, max(norms))


def _final_lrs(**params):
    det = IGDDetector(**{**SMALL, "max_epochs": 2}, **params).fit(_stripes(16))
    return det.net_.optimizer_.param_groups[0]["lr"], det.net_.optimizer_critic_.param_groups[0]["lr"]


def test_lr_schedule_is_a_replaceable_callback_that_composes():
    total = 2 * 2  # epochs x batches per epoch (16 images, batches of 8)
    decayed = 1e-4 * (1 - (total - 1) / total) ** 0.9
    assert _final_lrs() == pytest.approx((decayed, decayed))
    # Replaced by name: None keeps the rates constant ...
    assert _final_lrs(callbacks=[("lr_schedule", None)]) == (1e-4, 1e-4)
    # ... and a user's scheduler runs instead (skorch's LRScheduler drives optimizer_).
    step = LRScheduler(policy=torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    assert _final_lrs(callbacks=[("lr_schedule", step)]) == pytest.approx((0.25e-4, 1e-4))
    # Another scheduler next to the default one is not overwritten: both apply.
    expo = LRScheduler(policy=torch.optim.lr_scheduler.ExponentialLR, gamma=0.5)
    assert _final_lrs(callbacks=[expo]) == pytest.approx((0.25 * decayed, decayed))


class _LocalBatchSizes(Callback):
    """Largest batch of patches the local encoder sees in training and in eval mode."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.largest = {True: 0, False: 0}
        self._handle = net.module_.local_branch.encoder.register_forward_hook(self._record)

    def _record(self, module, args, output):
        self.largest[module.training] = max(self.largest[module.training], len(args[0]))

    def on_train_end(self, net, X=None, y=None, **kwargs):
        self._handle.remove()
        self._handle = None


def test_validation_chunks_the_local_patches_like_training():
    X = _stripes(8, size=48)  # 4 patches per image
    det = IGDDetector(
        **{**SMALL, "image_size": 48, "beta": 0.5, "batch_size": 4, "max_epochs": 1},
        validation_fraction=0.5, callbacks=[_LocalBatchSizes()],
    ).fit(X)
    spy = trained_callback(det, _LocalBatchSizes)
    assert spy.largest[True] == 4  # training: chunks of batch_size patches
    assert 0 < spy.largest[False] <= spy.largest[True]  # validation and E-step
    assert math.isfinite(det.net_.history[-1, "valid_loss"])


def _reachable_arrays(root):
    """Every tensor and array reachable from ``root`` through attributes and containers."""
    seen, stack, found = set(), [root], []
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (str, bytes, int, float, bool)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.append(obj.detach().cpu().numpy())
            continue
        if isinstance(obj, np.ndarray):
            found.append(obj)
            continue
        if isinstance(obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)):
            continue
        if isinstance(obj, torch.nn.Module):
            stack.extend(obj.state_dict().values())
        if isinstance(obj, torch.optim.Optimizer):
            stack.append(obj.state_dict())
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        if hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return found


def _holds_images(root, images):
    n, h, w = images.shape
    wanted = {row.tobytes() for row in images.astype(np.float32).reshape(n, h * w)}
    for array in _reachable_arrays(root):
        if array.size and array.size % (h * w) == 0 and np.issubdtype(array.dtype, np.floating):
            rows = np.ascontiguousarray(array, dtype=np.float32).reshape(-1, h * w)
            if any(row.tobytes() in wanted for row in rows):
                return True
    return False


def test_fitted_detector_holds_no_training_images():
    X = _stripes(8)
    det = IGDDetector(**{**SMALL, "beta": 0.5, "max_epochs": 1}, validation_fraction=0.25).fit(X)
    assert not _holds_images(det, X)
    det._probe = [{"x": torch.as_tensor(X[3:4])[:, None]}]  # the walk finds a planted image
    assert _holds_images(det, X)


class _Teacher(torch.nn.Module):
    """A fixed linear teacher for distillation tests (6 features); ``scale=nan`` diverges."""

    def __init__(self, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", scale * torch.randn(3, 6, generator=g))

    def forward(self, x):
        return x.mean(dim=(2, 3)) @ self.w


class _CountBatches(Callback):
    def __init__(self):
        self.count = 0

    def on_batch_end(self, net, **kwargs):
        self.count += 1


def test_distillation_runs_through_skorch(capsys):
    torch.manual_seed(0)
    images = torch.as_tensor(_stripes(6))[:, None]
    spy = _CountBatches()
    det = IGDDetector(**{**SMALL, "beta": 0.5, "batch_size": 4}, verbose=1, callbacks=[spy])
    det.device_, det._seed_ = "cpu", 0
    model = IGDModel(32, latent_dim=4, width=2, teacher_dim=6)
    losses = distill(det, model, _Teacher(), images, iterations=6)
    assert set(losses) == {"global", "local"} and all(map(math.isfinite, sum(losses.values(), ())))
    assert model.global_branch.backbone_frozen and model.local_branch.backbone_frozen
    captured = capsys.readouterr()
    assert captured.out + captured.err  # progress output with verbose
    assert spy.count == 0  # the user's callbacks are for the IGD training only
    with pytest.raises(TrainingDivergedError):
        distill(det, IGDModel(32, latent_dim=4, width=2, teacher_dim=6), _Teacher(float("nan")), images,
                iterations=2)


def test_small_images_drop_blocks():
    X = _stripes(6, size=16)
    det = IGDDetector(**{**SMALL, "image_size": 16, "max_epochs": 1}).fit(X)
    branch = det.net_.module_.global_branch
    assert len(branch.encoder.blocks) == 3 and branch.encoder.n_features == 8 * 4
    assert len(branch.decoder.blocks) == 3 and branch.decoder.start == 2
    assert det.transform(X).shape == (6, 16, 16)


# ------------------------------------------------------------------------ quality

FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def fmnist():
    import os

    from skanomaly.datasets import load_fashion_mnist

    if not os.path.isdir(FMNIST):
        pytest.skip("Fashion-MNIST IDX files are not installed")
    X_train, y_train = load_fashion_mnist(FMNIST, subset="train")
    X_test, y_test = load_fashion_mnist(FMNIST, subset="test")
    return X_train, y_train, X_test, y_test
