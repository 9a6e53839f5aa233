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
    estimate_gaussian,
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


def test_estep_statistics():
    g = torch.Generator().manual_seed(1)
    z = 3.0 * torch.randn(500, 8, generator=g) + torch.arange(8.0)
    mu, sigma2 = estimate_gaussian(z, kappa=0.5)
    torch.testing.assert_close(mu, z.mean(0))
    expected = 0.5 * ((z - z.mean(0)) ** 2).sum(1).mean()
    torch.testing.assert_close(sigma2, expected)
    assert abs(float(sigma2) - 0.5 * 8 * 9) < 4  # kappa * d * variance
    # sigma^2 is bounded below by 1 for tight clusters.
    _, tight = estimate_gaussian(0.01 * torch.randn(100, 8, generator=g), kappa=0.5)
    assert float(tight) == 1.0
    # kappa scales the estimate.
    _, s1 = estimate_gaussian(z, kappa=1.0)
    torch.testing.assert_close(s1, 2 * sigma2)


def test_gsvdd_loss_matches_branch_and_grows_with_distance():
    branch = IGDBranch("global", 16, latent_dim=4, width=2)
    branch.mu.copy_(torch.tensor([1.0, 0.0, -1.0, 2.0]))
    branch.sigma2.fill_(2.0)
    z = branch.mu + torch.tensor([[0.0], [0.5], [1.0], [3.0]]) * torch.ones(4)
    loss = gsvdd_loss(z, branch.mu, branch.sigma2)
    torch.testing.assert_close(loss, 1 - branch.gsvdd(z))
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
    critics = IGDCritics(width=4, use_local=False)
    assert critics("global", x_hat if size < 32 else out["global"][2]).shape == (3,)


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

import joblib  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from skanomaly.igd import IGDDetector  # noqa: E402
from tests.detectors import HAS_PRETRAINED  # noqa: E402

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
        terms = {name: det._branch_terms(name, b, x) for name, b in module.branches()}
    rec = 0.5 * terms["global"][0] + 0.5 * terms["local"][0]
    h = 0.5 * terms["global"][1] + 0.5 * terms["local"][1]
    np.testing.assert_allclose(-scores, (0.5 * rec + 0.5 * h).numpy(), rtol=1e-5)
    np.testing.assert_allclose(maps, (0.5 * terms["global"][2] + 0.5 * terms["local"][2]).numpy(), rtol=1e-4, atol=1e-6)


def test_validation_fraction_records_valid_loss():
    det = IGDDetector(**{**SMALL, "validation_fraction": 0.25, "beta": 0.5}).fit(_stripes(12))
    valid = det.net_.history[:, "valid_loss"]
    assert len(valid) == 2 and np.all(np.isfinite(valid)) and np.all(np.asarray(valid) > 0)


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


def test_quality_one_class_fashion_mnist_and_defect_maps(fmnist):
    """The paper's protocol at a tiny scale: trousers normal, other classes anomalous."""
    from skanomaly.datasets import make_defects

    X_train, y_train, X_test, y_test = fmnist
    normal = 1
    det = IGDDetector(**{**SMALL, "latent_dim": 16, "batch_size": 16, "max_epochs": 5, "lr": 1e-3})
    det.fit(X_train[y_train == normal][:120])
    idx = np.random.default_rng(0).choice(len(X_test), 300, replace=False)
    auroc = roc_auc_score(y_test[idx] != normal, -det.score_samples(X_test[idx]))
    assert auroc > 0.85, auroc
    # Heatmaps find defects planted on unseen normal images.
    good = X_test[y_test == normal][:30]
    bad, masks = make_defects(good, kinds=("scratch", "stain", "patch"), random_state=0)
    pixel_auroc = roc_auc_score(masks.ravel(), det.transform(bad).ravel())
    assert pixel_auroc > 0.7, pixel_auroc
