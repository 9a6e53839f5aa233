"""Tests of the inpainting autoencoder: network, objectives, distortions, detector."""

import types

import numpy as np
import pytest
import torch
from torch import nn

from skanomaly.inpainting.distortions import (
    DistortionDataset,
    augment,
    distort,
    elastic_displacement,
    progressive_size,
    random_shape_mask,
)
from skanomaly.inpainting.losses import InpaintingLoss, inpainting_loss
from skanomaly.inpainting.postprocess import largest_component_level, remove_small_components
from skanomaly.inpainting.torch_model import (
    InpaintingAutoencoder,
    StackedDilatedConv,
    gaussian_smooth,
)
from functools import partial

from tests.detectors import make_detector, trained_callback

small_detector = partial(make_detector, "inpainting")


def _texture(size=64, channels=1, seed=0):
    """A brick crop (C, size, size) in [0, 1] with no flat area; ``seed`` moves it."""
    from skimage import data
    from skimage.transform import resize

    brick = data.brick().astype(np.float32) / 255.0
    top = (37 * seed) % 256
    img = resize(brick[top : top + 256, :256], (size, size), anti_aliasing=True)
    img = img.astype(np.float32)
    img = np.stack([np.roll(img, 7 * c, axis=1) for c in range(channels)])
    return torch.from_numpy(img)


# ------------------------------------------------------------------ network
def _layers(net):
    """(kind, in, out, kernel, dilation, followed_by_bn) in forward order."""
    mods = list(net.modules())
    out = []
    for i, m in enumerate(mods):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            kind = "tconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
            out.append(
                (kind, m.in_channels, m.out_channels, m.kernel_size[0], m.dilation[0],
                 isinstance(nxt, nn.BatchNorm2d))
            )
    return out


def test_network_matches_table_1():
    net = InpaintingAutoencoder(in_channels=3)
    layers = _layers(net)
    expected_outs = [32, 32, 64, 64, 128, 128] + [64] * 20 + [
        256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 3,
    ]
    assert [layer[2] for layer in layers] == expected_outs
    kinds = [layer[0] for layer in layers]
    assert [i for i, k in enumerate(kinds) if k == "tconv"] == [27, 30, 33]
    # SDC blocks: 5x5 kernels with dilations 1..16, 320 = 5 x 64 channels in/out
    sdc = layers[6:26]
    assert [layer[4] for layer in sdc] == [1, 2, 4, 8, 16] * 4
    assert all(layer[3] == 5 for layer in sdc)
    assert [layer[1] for layer in sdc] == [128] * 5 + [320] * 15
    assert layers[26][1] == 320
    # every other convolution is 3x3; the last one is 1x1 without batch norm
    assert all(layer[3] == 3 for layer in layers[:6] + layers[26:-1])
    assert layers[-1][3] == 1 and not layers[-1][5]
    assert all(layer[5] for layer in layers[:-1])
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == len(layers) - 1


def test_network_shapes_and_width_scaling():
    torch.manual_seed(0)
    net = InpaintingAutoencoder(in_channels=1, width=4).eval()
    x = torch.rand(2, 1, 24, 40)
    feats = net.bottleneck(net.encoder(x))
    assert feats.shape == (2, 5 * 8, 3, 5)  # SDC: 5 branches of 2 * width
    y = net(x)
    assert y.shape == x.shape
    assert torch.all((y > 0) & (y < 1))  # sigmoid output
    small = sum(p.numel() for p in net.parameters())
    big = sum(p.numel() for p in InpaintingAutoencoder(in_channels=1, width=8).parameters())
    assert 3.5 < big / small < 4.1  # conv weights grow with width ** 2
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.rand(1, 1, 20, 24))


def test_sdc_block_sees_far_with_dilation():
    block = StackedDilatedConv(1, 1, dilations=(16,)).eval()
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
    x = torch.rand(1, 1, 80, 80, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = block(x)
    grad = torch.autograd.grad(y[0, 0, 40, 40], x)[0][0, 0]
    rows, cols = torch.nonzero(grad, as_tuple=True)
    # a 5x5 kernel with dilation 16 reads exactly the pixels 0, 16 and 32 away
    taps = [8, 24, 40, 56, 72]
    assert sorted(set(rows.tolist())) == taps and sorted(set(cols.tolist())) == taps
    assert len(rows) == 25
    assert StackedDilatedConv(1, 1, dilations=(1,)).branches[0][0].padding == (2, 2)
    assert block.branches[0][0].padding == (32, 32)
    assert block(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("shape, sigma", [((2, 32, 24), 4.0), ((1, 5, 3), 2.5), ((1, 4, 4), 0.6)])
def test_gaussian_smooth_is_scipy_reflect(shape, sigma):
    from scipy import ndimage

    maps = np.random.default_rng(0).random(shape, dtype=np.float32)
    expected = ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect")
    out = gaussian_smooth(torch.from_numpy(maps), sigma)
    assert out.dtype == torch.float32
    # kernel radius 10 > side 5: the reflection repeats, as scipy's does
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(gaussian_smooth(torch.from_numpy(maps), 0), torch.from_numpy(maps))


# --------------------------------------------------------------- objectives
def _loss_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:5, 1:4] = 1
    mask[1, :, 0:2, 0:8] = 1
    distorted = torch.where(mask.bool(), torch.rand(2, 3, 8, 8, generator=g), target)
    output = torch.rand(2, 3, 8, 8, generator=g)
    return output, target, distorted, mask


def test_restore_loss_is_equation_1():
    output, target, distorted, mask = _loss_inputs()
    lam = 0.3
    expected = []
    for i in range(2):
        d = output[i] - target[i]
        m = mask[i].expand(3, 8, 8)
        mb = 1 - m
        expected.append(
            lam / mb.sum() * torch.sqrt((mb * d).pow(2).sum())
            + (1 - lam) / m.sum() * torch.sqrt((m * d).pow(2).sum())
        )
    got = inpainting_loss(output, target, distorted, mask, objective="restore", lam=lam)
    assert torch.allclose(got, torch.stack(expected).mean())
    # a perfect reconstruction costs nothing
    assert inpainting_loss(target, target, distorted, mask).item() == 0.0


def test_amplify_loss_is_equation_3():
    output, target, distorted, mask = _loss_inputs(1)
    lam = 0.7
    expected = []
    for i in range(2):
        d = output[i] - target[i]
        mb = 1 - mask[i].expand(3, 8, 8)
        soft = (distorted[i] - target[i]).abs()
        expected.append(
            lam / mb.sum() * torch.sqrt((mb * d).pow(2).sum())
            - (1 - lam) / soft.sum() * torch.sqrt((soft * d).pow(2).sum())
        )
    loss = InpaintingLoss("amplify", lam)
    assert torch.allclose(loss(output, target, distorted, mask), torch.stack(expected).mean())


def test_amplify_rewards_error_only_where_pixels_changed():
    output, target, distorted, mask = _loss_inputs(2)
    # inside the mask, leave half of the pixels unchanged
    distorted[:, :, 2:5, 1:2] = target[:, :, 2:5, 1:2]
    base = target.clone()
    loss = lambda out: inpainting_loss(out, target, distorted, mask, objective="amplify").item()
    changed = base.clone()
    changed[0, :, 3, 3] = 1 - target[0, :, 3, 3]  # a changed pixel inside M
    unchanged = base.clone()
    unchanged[0, :, 3, 1] = 1 - target[0, :, 3, 1]  # unchanged pixel inside M
    outside = base.clone()
    outside[0, :, 7, 7] = 1 - target[0, :, 7, 7]  # outside M
    assert loss(changed) < loss(base) == 0.0
    assert loss(unchanged) == 0.0  # the real-valued mask is 0 there
    assert loss(outside) > 0.0
    # restore penalises every error in the mask instead
    restore = lambda out: inpainting_loss(out, target, distorted, mask).item()
    assert restore(changed) > 0 and restore(unchanged) > 0


def test_loss_weights_and_gradients():
    output, target, distorted, mask = _loss_inputs(3)
    output.requires_grad_(True)
    # lam = 1 ignores the distorted region entirely
    inpainting_loss(output, target, distorted, mask, lam=1.0).backward()
    assert torch.all(output.grad[mask.expand_as(output).bool()] == 0)
    assert torch.all(torch.isfinite(output.grad))
    with pytest.raises(ValueError, match="objective"):
        inpainting_loss(output, target, distorted, mask, objective="segment")
    with pytest.raises(ValueError, match="objective"):
        InpaintingLoss("nope")


# -------------------------------------------------------------- distortions
@pytest.mark.parametrize("seed", range(20))
def test_distortion_mask_matches_changed_pixels(seed):
    image = _texture(64, channels=3, seed=seed)
    rng = np.random.default_rng(seed)
    distorted, mask = distort(image, rng)
    assert distorted.shape == image.shape and mask.shape == (1, 64, 64)
    assert distorted.dtype == torch.float32 and mask.dtype == torch.float32
    m = mask[0].bool()
    changed = (distorted != image).any(dim=0)
    assert 0 < m.sum() < m.numel()
    # nothing changes outside M; (almost) every pixel of M changes on a texture
    assert not changed[~m].any()
    assert changed[m].float().mean() > 0.8
    assert distorted.min() >= 0 and distorted.max() <= 1
    # the pasted content comes from the image: same intensity range, not noise
    assert abs(distorted[:, m].mean() - image[:, m].mean()) < 0.15


def test_distortion_is_elastic_not_noise():
    # a warp of a smooth ramp is smooth: neighbouring pixels stay close
    ramp = torch.linspace(0, 1, 64).expand(64, 64).clone()[None]
    for seed in range(5):
        distorted, mask = distort(ramp, np.random.default_rng(seed), patch_size=(0.3, 0.35))
        assert (distorted != ramp).any()
        assert (distorted - ramp).abs().max() < 0.4
        assert torch.diff(distorted[0], dim=1).abs().max() < 0.2


def test_distortion_brightness_and_flat_images():
    image = _texture(32)
    base, _ = distort(image, np.random.default_rng(0))
    bright, mask = distort(image, np.random.default_rng(0), brightness=0.5)
    m = mask[0].bool()
    assert not torch.equal(base, bright)
    assert torch.equal(base[:, ~m], bright[:, ~m])
    # a flat image cannot be warped: the fallback still changes every pixel of M
    for value in (0.0, 0.5, 1.0):
        flat = torch.full((3, 16, 16), value)
        distorted, mask = distort(flat, np.random.default_rng(1))
        m = mask[0].bool()
        assert (distorted - flat).abs().sum() > 0
        assert torch.all((distorted != flat).any(0) == m)


def test_distortion_tiny_images():
    for size in [(2, 2), (8, 8), (8, 40)]:
        image = torch.rand(1, *size, generator=torch.Generator().manual_seed(0))
        for seed in range(10):
            distorted, mask = distort(image, np.random.default_rng(seed))
            assert 0 < mask.sum() < mask.numel()
            assert (distorted != image).any()


def test_shape_masks_are_varied_and_non_empty():
    rng = np.random.default_rng(0)
    fills = []
    for _ in range(200):
        h, w = rng.integers(1, 60, size=2)
        m = random_shape_mask(int(h), int(w), rng)
        assert m.shape == (h, w) and m.any()
        if h > 10 and w > 10:
            fills.append(m.mean())
    assert min(fills) < 0.3 and max(fills) > 0.6


def test_elastic_displacement_follows_torchvision_recipe():
    rng = np.random.default_rng(0)
    d = elastic_displacement(40, 60, alpha=100.0, sigma=0.0, rng=rng)
    assert d.shape == (1, 40, 60, 2)
    # no smoothing: uniform noise scaled by alpha / size in normalised coordinates
    assert d[..., 0].abs().max() <= 100.0 / 60 and d[..., 0].abs().max() > 0.9 * 100 / 60
    assert d[..., 1].abs().max() <= 100.0 / 40
    smooth = elastic_displacement(40, 60, alpha=100.0, sigma=4.0, rng=np.random.default_rng(0))
    assert smooth[..., 0].std() < d[..., 0].std() / 5
    again = elastic_displacement(40, 60, alpha=100.0, sigma=4.0, rng=np.random.default_rng(0))
    assert torch.equal(smooth, again)


def test_augment_is_a_dihedral_transform():
    image = torch.arange(16.0).reshape(1, 4, 4)
    group = set()
    for seed in range(64):
        out = augment(image, np.random.default_rng(seed))
        assert sorted(out.flatten().tolist()) == list(range(16))
        group.add(tuple(out.flatten().tolist()))
    assert len(group) == 8
    assert all(
        torch.equal(augment(image, np.random.default_rng(s), rotate90=False, flip=False), image)
        for s in range(5)
    )
    only_flips = {
        tuple(augment(image, np.random.default_rng(s), rotate90=False).flatten().tolist())
        for s in range(64)
    }
    assert len(only_flips) == 4
    rect = torch.arange(12.0).reshape(1, 3, 4)
    assert all(augment(rect, np.random.default_rng(s)).shape == rect.shape for s in range(20))


def test_progressive_schedule():
    sizes = [progressive_size(e, 8, 64) for e in range(8)]
    assert sizes == [(16, 16)] * 2 + [(32, 32)] * 2 + [(64, 64)] * 4
    assert progressive_size(0, 1, 64) == (64, 64)
    assert [progressive_size(e, 2, 64) for e in range(2)] == [(32, 32), (64, 64)]
    assert progressive_size(0, 4, (24, 40)) == (16, 16)
    assert progressive_size(1, 4, (32, 48)) == (16, 24)
    assert progressive_size(0, 4, (32, 64), min_size=8) == (8, 16)
    assert progressive_size(3, 4, (24, 40)) == (24, 40)
    assert all(s % 8 == 0 for e in range(10) for s in progressive_size(e, 10, 200))


def test_dataset_is_seeded_per_sample_and_epoch():
    images = torch.stack([_texture(32, seed=i) for i in range(3)])
    ds = DistortionDataset(images, random_state=3, max_epochs=4)
    assert len(ds) == 3
    x_hat, target = ds[1]
    assert x_hat.shape == (1, 16, 16) and target.shape == (2, 16, 16)
    ds.set_epoch(3)
    x_hat, target = ds[1]
    assert x_hat.shape == (1, 32, 32)
    image, mask = target[:1], target[1:]
    assert not ((x_hat != image)[:, mask[0] == 0]).any()
    # independent of access order and of the instance; changes with the epoch and seed
    other = DistortionDataset(images, random_state=3, max_epochs=4)
    other.set_epoch(3)
    _ = other[2], other[0]
    assert all(torch.equal(a, b) for a, b in zip(other[1], ds[1]))
    later = DistortionDataset(images, random_state=3, max_epochs=4)
    later.set_epoch(2)
    reseeded = DistortionDataset(images, random_state=4, max_epochs=4)
    reseeded.set_epoch(3)
    assert later[1][0].shape == (1, 32, 32)
    assert not torch.equal(later[1][1][1], ds[1][1][1])  # other epoch, other mask
    assert not torch.equal(reseeded[1][1][1], ds[1][1][1])  # other seed, other mask
    fixed = DistortionDataset(images, random_state=3, max_epochs=4, progressive=False)
    assert fixed[0][0].shape == (1, 32, 32)


# ----------------------------------------------------------- §4.2 helpers
def test_largest_component_level_by_hand():
    heat = np.zeros((10, 10), np.float32)
    heat[1:4, 1:4] = 0.8  # a 9-pixel region
    heat[7, 7] = 1.0  # an isolated peak
    heat[7, 2] = 0.9
    heat[8, 2] = 0.9  # a 2-pixel region
    assert largest_component_level(heat, 1) == pytest.approx(1.0)
    assert largest_component_level(heat, 2) == pytest.approx(0.9)
    assert largest_component_level(heat, 3) == pytest.approx(0.8)
    assert largest_component_level(heat, 9) == pytest.approx(0.8)
    assert largest_component_level(heat, 10) == pytest.approx(0.0)
    # diagonal neighbours are separate regions (4-connectivity)
    diag = np.zeros((4, 4))
    diag[0, 0] = diag[1, 1] = 1.0
    assert largest_component_level(diag, 2) == 0.0


def test_largest_component_level_matches_brute_force():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(20):
        heat = ndimage.gaussian_filter(rng.random((12, 14)), 1.0)
        area = int(rng.integers(1, 30))
        expected = min(
            t for t in np.unique(heat)
            if max(np.bincount(ndimage.label(heat > t)[0].ravel())[1:], default=0) < area
        )
        assert largest_component_level(heat, area) == expected


def test_remove_small_components():
    masks = np.zeros((2, 6, 6), bool)
    masks[0, :2, :2] = True  # 4 pixels
    masks[0, 5, 5] = True  # 1 pixel
    masks[1, 2:5, 2] = True  # 3 pixels
    out = remove_small_components(masks, 3)
    assert out[0, :2, :2].all() and not out[0, 5, 5]
    assert out[1].sum() == 3
    assert remove_small_components(masks, 5).sum() == 0


# -------------------------------------------------------------- estimator
@pytest.fixture(scope="module")
def bricks():
    """32x32 brick crops: 12 normal training images, 8 test images (4 defective)."""
    from skanomaly.datasets import make_texture_defects

    return make_texture_defects("brick", n_train=12, n_test=8, image_size=32, random_state=0)


@pytest.fixture(scope="module")
def heldout_detector(bricks):
    return small_detector(validation_fraction=0.25, max_epochs=2).fit(bricks.X_train)


def test_threshold_follows_section_4_2(heldout_detector, bricks):
    det = heldout_detector
    area = det.min_defect_area_
    assert area == 4 and len(det.reference_scores_) == 3
    assert det.threshold_ == pytest.approx(det.reference_scores_.max())
    assert det.offset_ == pytest.approx(-det.threshold_)
    assert np.isfinite(det.net_.history[-1, "valid_loss"])  # held-out images give valid_loss
    rng = np.random.default_rng(1)
    X = bricks.X_train
    noisy = np.clip(X[4:8] + rng.integers(-90, 90, X[4:8].shape), 0, 255)
    Xt = np.concatenate([X[:4], noisy]).astype(np.uint8)
    maps = det.transform(Xt)
    # the image score is the level at which a region of min_defect_area pixels appears
    np.testing.assert_allclose(
        -det.score_samples(Xt), [largest_component_level(m, area) for m in maps], rtol=1e-6
    )
    # anomalous exactly when a region of >= min_defect_area pixels exceeds threshold_
    big_region = remove_small_components(maps > det.threshold_, area).any(axis=(1, 2))
    np.testing.assert_array_equal(det.predict(Xt) == -1, big_region)
    assert big_region[4:].all()
    seg = det.segment(Xt)
    np.testing.assert_array_equal(seg, remove_small_components(maps > det.threshold_, area))
    # the held-out normal images themselves are all below the threshold
    assert det.reference_scores_.max() <= det.threshold_
    # the fitted net keeps no training images (they would bloat pickles)
    assert len(dict(det.net_.callbacks_)["distortion_schedule"].dataset) == 0
    assert len(det.net_.train_split.keywords["valid_ds"]) == 0


def _reachable_buffers(root):
    """The bytes of every tensor storage and array buffer reachable from ``root``.

    Walks attributes, containers, partials, bound methods and module state
    dicts.  A tensor contributes its whole storage (``untyped_storage()``),
    so an empty view that still owns a large storage is seen in full.
    """
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
            str, bytes, int, float, complex, bool, type(None), torch.device, torch.dtype)
    seen, stack, buffers = set(), [root], []
    while stack:
        obj = stack.pop()
        if isinstance(obj, skip) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage().cpu()
            raw = torch.empty(0, dtype=torch.uint8).set_(storage)
            buffers.append(raw.numpy().tobytes())
            continue
        if isinstance(obj, np.ndarray):
            while isinstance(obj.base, np.ndarray):
                obj = obj.base
            buffers.append(obj.tobytes())
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, partial):
            stack.extend([obj.func, obj.args, obj.keywords])
        elif isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
        if isinstance(obj, nn.Module):
            stack.extend(obj.state_dict(keep_vars=True).values())
        if hasattr(obj, "__dict__"):
            stack.append(vars(obj))
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    stack.append(getattr(obj, slot))
    return buffers


def test_fitted_detector_holds_no_training_image(heldout_detector, bricks):
    from skanomaly.validation import check_images

    det = heldout_detector
    X = bricks.X_train
    working = det._working_images(check_images(X)).numpy()
    patterns = [x.tobytes() for x in X] + [x.tobytes() for x in working]
    buffers = _reachable_buffers(det)
    assert len(buffers) > 10  # the walk reaches the net's parameters
    leaks = [i for i, pattern in enumerate(patterns) if any(pattern in b for b in buffers)]
    assert not leaks, f"training images {leaks} are reachable from the fitted detector"


def test_heatmap_is_smoothed_channel_rms_of_the_residual(bricks):
    from scipy import ndimage

    X = bricks.X_train[:6]
    rgb = np.stack([X, X[:, ::-1], X[:, :, ::-1]], axis=-1)
    det = small_detector(smoothing_sigma=1.5, min_defect_area=0.01, max_epochs=1).fit(rgb)
    assert det.min_defect_area_ == 11  # a share of the 32 x 32 input, rounded up
    assert det.net_.module_.head.out_channels == 3
    x = torch.from_numpy(rgb[:2].astype(np.float32) / 255).permute(0, 3, 1, 2)
    with torch.no_grad():
        residual = det.net_.module_(x) - x
    expected = ndimage.gaussian_filter(
        residual.pow(2).mean(1).sqrt().numpy(), sigma=(0, 1.5, 1.5), mode="reflect"
    )
    np.testing.assert_allclose(det.transform(rgb[:2]), expected, rtol=1e-4, atol=1e-6)
    # maps computed at another working size come back at the input resolution
    small = small_detector(image_size=16, max_epochs=1).fit(X[:4])
    assert small.transform(X[:2]).shape == (2, 32, 32)


def test_training_uses_progressive_sizes_and_objective(bricks):
    from skorch.callbacks import Callback

    class Sizes(Callback):
        def initialize(self):
            self.sizes = []
            return self

        def on_batch_begin(self, net, batch=None, training=None, **kwargs):
            if training:
                self.sizes.append((len(net.history) - 1, tuple(batch[0].shape[-2:])))

    X = bricks.X_train[:4]
    det = small_detector(image_size=64, max_epochs=4, objective="amplify", lam=0.7,
                         squared_norm=True, callbacks=[Sizes()]).fit(X)
    rec = trained_callback(det, Sizes)
    assert sorted(set(rec.sizes)) == [(0, (16, 16)), (1, (32, 32)), (2, (64, 64)), (3, (64, 64))]
    crit = det.net_.criterion_
    assert (crit.objective, crit.lam, crit.squared) == ("amplify", 0.7, True)
    det2 = small_detector(image_size=64, max_epochs=2, progressive_resizing=False,
                          callbacks=[Sizes()]).fit(X)
    rec2 = trained_callback(det2, Sizes)
    assert {s for _, s in rec2.sizes} == {(64, 64)}


def test_other_seed_other_model(heldout_detector, bricks):
    X = bricks.X_train
    other = small_detector(validation_fraction=0.25, max_epochs=2, random_state=2).fit(X)
    assert not np.allclose(other.score_samples(X), heldout_detector.score_samples(X))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(image_size=36), "multiple of 8"),
        (dict(image_size=8), "at least 16"),
        (dict(patch_size=(0.4, 0.2)), "patch_size"),
        (dict(patch_size=(0.1,)), "patch_size"),
        (dict(objective="segment"), "objective"),
        (dict(lam=1.5), "lam"),
        (dict(min_defect_area=0), "min_defect_area"),
        (dict(brightness=-0.1), "brightness"),
        (dict(squared_norm="yes"), "squared_norm"),
    ],
)
def test_bad_parameters(params, match, bricks):
    with pytest.raises(ValueError, match=match):
        small_detector(**params).fit(bricks.X_train[:4])


def test_parameters_are_checked_before_images():
    # X=None would fail validation; the parameter error must come first.
    with pytest.raises(ValueError, match="image_size=36"):
        small_detector(image_size=36).fit(None)
    with pytest.raises(ValueError, match="patch_size"):
        small_detector(patch_size=(0.4, 0.2)).fit(None)


def test_grid_search_over_lam_and_objective(bricks):
    from sklearn.model_selection import GridSearchCV

    from skanomaly.metrics import pixel_auroc_scorer
    from skanomaly.model_selection import NormalOnlyKFold

    X = np.concatenate([bricks.X_train[:8], bricks.X_test])
    masks = np.concatenate([np.zeros((8, 32, 32), bool), bricks.masks_test])
    grid = {"objective": ["restore", "amplify"], "lam": [0.3, 0.7]}
    search = GridSearchCV(
        small_detector(max_epochs=1), grid, scoring=pixel_auroc_scorer,
        cv=NormalOnlyKFold(2, random_state=0),
    ).fit(X, masks)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_ in search.cv_results_["params"]
    best = search.best_estimator_.net_.criterion_
    assert (best.objective, best.lam) == (search.best_params_["objective"],
                                          search.best_params_["lam"])


