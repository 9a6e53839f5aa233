"""How close each detector's scoring and training come to a least-work reference.

For every detector, a reference written in plain torch runs only the forward
passes the method needs, with the fitted detector's own networks and
weights:

* DFR: VGG19 stages, regional features (nearest resize + 4x4 mean, eqs. 1-3),
  the 1x1 CAE and the per-location distance (eq. 5); max over the map.
* SCADN: the ``4 * n_scales`` (12) masked generator passes of every image in
  one call, the masked squared errors, the per-scale maximum and the scale
  selection (eqs. 5-10).
* IGD: the global branch on the images and the local branch on all their
  32 x 32 patches (stride 16), each once, eq. 8's loss and eq. 12's MS-SSIM
  maps, Gaussian SVDD (eq. 7), patch maps folded back.
* InpaintingAE: one forward, the squared error, a separable Gaussian
  smoothing in float32 and the largest-component area rule (Sec. 4.2).

Each is timed in the same run as the detector's ``score_samples`` on the
same images (least of ``--repeat`` calls after a warm-up).  One training
epoch (skorch's ``dur``, least of the epochs after the first of a
``1 + repeat``-epoch ``fit``; the batch is all the images, so one step) is
compared
with the reference's forward and backward of the method's losses on the same
batch (no optimizer steps): SCADN one masked image per image, discriminator
on real and fake, generator losses; IGD per branch the auto-encoder, the
interpolated decoding and the critic, local patches in one step; DFR the CAE
on cached features; InpaintingAE the auto-encoder on a distorted batch.

FLOPs are counted on the references with
:class:`torch.utils.flop_counter.FlopCounterMode`; "GFLOP/s" divides the
reference's FLOPs by each time, so the library's and the reference's rates
compare the same work.  The machine's rate is a large float32 matrix
multiply.  Everything runs on the CPU with one torch thread.

Run::

    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py \\
        [--n 8] [--size 128] [--scadn-n 8] [--scadn-size 64] [--igd-n 8] [--igd-size 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from skanomaly import DFRDetector, IGDDetector, InpaintingAE, SCADNDetector
from skanomaly.igd.losses import (
    critic_loss,
    gsvdd_loss,
    interpolate_latents,
    ms_ssim_settings,
    reconstruction_loss,
    reconstruction_map,
)
from skanomaly.igd.torch_model import DATA_RANGE, IMAGENET_MEAN, IMAGENET_STD
from skanomaly.inpainting.postprocess import largest_component_level
from skanomaly.scadn.masks import striped_masks


def best_time(fn, repeat=2):
    """Least wall time of ``repeat`` calls of ``fn`` after one warm-up call.

    Parameters
    ----------
    fn : callable
        Called without arguments.
    repeat : int, default=2
        Timed calls.

    Returns
    -------
    seconds : float
    """
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def count_flops(fn):
    """Floating-point operations torch counts in one call of ``fn``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_rate(n=2048, repeat=5):
    """Measured float32 matrix-multiply rate in GFLOP/s (``n x n`` by ``n x n``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = best_time(lambda: a @ b, repeat)
    return 2 * n**3 / seconds / 1e9


def epoch_time(det):
    """Least duration of a fitted detector's training epochs after the first (skorch ``dur``)."""
    return float(min(det.net_.history[1:, "dur"]))


# ------------------------------------------------------------------ DFR
def dfr_reference(det, x):
    """Score and train references of a fitted DFRDetector on ``x`` (b, 3, S, S)."""
    backbone = det.feature_extractor_.backbone
    cae = det.net_.module_
    size = det.image_size

    def features(x):
        maps = backbone(x)
        aligned = [
            F.avg_pool2d(F.interpolate(m, size=(size, size), mode="nearest"), 4) for m in maps
        ]
        return torch.cat(aligned, dim=1)

    def score():
        with torch.inference_mode():
            f = features(x)
            dist = (cae(f) - f).square().sum(1).sqrt()
            maps = F.interpolate(dist[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
            return maps.amax(dim=(1, 2))

    with torch.no_grad():
        cached = features(x)

    def train():
        cae.train()
        loss = (cae(cached) - cached).square().sum(1).mean()
        loss.backward()
        cae.zero_grad(set_to_none=True)

    return score, train


# ---------------------------------------------------------------- SCADN
def scadn_reference(det, x):
    """Score and train references of a fitted SCADNDetector on ``x``."""
    gen = det.net_.module_
    disc = det.net_.discriminator_
    b, c, h, w = x.shape
    masks = striped_masks(h, w, det.mask_scales_)  # (n_scales, 4, 1, H, W)
    n_scales = masks.shape[0]
    flat = masks.reshape(-1, 1, h, w)
    mu = torch.as_tensor(det.mu_, dtype=torch.float32)

    def score():
        with torch.inference_mode():
            gen.eval()
            xm = (x[:, None] * flat[None]).reshape(-1, c, h, w)
            out = gen(xm).reshape(b, -1, c, h, w)
            err = (out - x[:, None]).square().mean(2) * (1 - flat[None, :, 0])
            maps = err.reshape(b, n_scales, 4, h, w).amax(2)
            chosen = (maps.mean((2, 3)) - mu).argmax(1)
            return maps[torch.arange(b), chosen].mean((1, 2))

    pick = torch.randint(len(flat), (b,), generator=torch.Generator().manual_seed(0))

    def train():
        gen.train()
        disc.train()
        m = flat[pick]
        fake = gen(x * m)
        d_loss = F.softplus(-disc(x)).mean() + F.softplus(disc(fake.detach())).mean()
        d_loss.backward()
        weight = 1 + det.lambda_rm * (1 - m)
        rec = (weight * (fake - x).square()).mean()
        adv = -F.softplus(disc(fake)).mean()
        (det.lambda_rec * rec + det.lambda_adv * adv).backward()
        gen.zero_grad(set_to_none=True)
        disc.zero_grad(set_to_none=True)

    return score, train


# ------------------------------------------------------------------ IGD
def _patches(x, size=32, stride=16):
    c = x.shape[1]
    p = x.unfold(2, size, stride).unfold(3, size, stride)  # b, c, nh, nw, s, s
    return p.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, size, size)


def _fold(maps, b, h, w, size=32, stride=16):
    cols = maps.reshape(b, -1, size * size).transpose(1, 2)
    total = F.fold(cols, (h, w), size, stride=stride)
    count = F.fold(torch.ones_like(cols), (h, w), size, stride=stride)
    return (total / count)[:, 0]


def igd_reference(det, x):
    """Score and train references of a fitted IGDDetector (``teacher=None``) on ``x``."""
    model = det.net_.module_
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    b, _, h, w = x.shape
    xn = (x - mean) / std
    inputs = {"global": xn, "local": _patches(xn)}
    weights = {"global": det.beta, "local": 1.0 - det.beta}

    def score():
        with torch.inference_mode():
            score = maps = 0.0
            for name, branch in model.branches():
                branch.eval()
                xb = inputs[name]
                settings = ms_ssim_settings(name, det.global_window_)
                z, xh = branch(xb)
                rec = reconstruction_loss(xb, xh, rho=det.rho, data_range=DATA_RANGE, **settings)
                hl = gsvdd_loss(z, branch.mu, branch.sigma2)
                m = reconstruction_map(xb, xh, rho=det.rho, data_range=DATA_RANGE, **settings)
                if name == "local":
                    rec, hl = rec.view(b, -1).mean(1), hl.view(b, -1).mean(1)
                    m = _fold(m, b, h, w)
                s = det.xi * rec + (1 - det.xi) * hl
                score = score + weights[name] * s
                maps = maps + weights[name] * m
            return score, maps

    alpha_gen = torch.Generator().manual_seed(0)

    def train():
        for name, branch in model.branches():
            branch.train()
            critic = det.net_.critic_.critic(name)
            xb = inputs[name]
            settings = ms_ssim_settings(name, det.global_window_)
            z, xh = branch(xb)
            rec = reconstruction_loss(xb, xh, rho=det.rho, data_range=DATA_RANGE, **settings)
            alpha = torch.rand(len(xb), 1, generator=alpha_gen) * 0.5
            xa = branch.decoder(interpolate_latents(z, alpha))
            d_alpha = critic(xa)
            loss = rec.mean() + det.lam * d_alpha.square().mean()
            loss = loss + gsvdd_loss(z, branch.mu, branch.sigma2).mean()
            loss.backward()
            mix = 0.2 * xb + 0.8 * xh.detach()
            critic_loss(critic(xa.detach()), alpha, critic(mix)).backward()
        model.zero_grad(set_to_none=True)
        det.net_.critic_.zero_grad(set_to_none=True)

    return score, train


# ----------------------------------------------------------- Inpainting
def inpainting_reference(det, x):
    """Score and train references of a fitted InpaintingAE on ``x``."""
    model = det.net_.module_
    sigma = float(det.smoothing_sigma)
    radius = int(4.0 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()

    def smooth(maps):
        m = F.pad(maps[:, None], (radius, radius, 0, 0), mode="reflect")
        m = F.conv2d(m, kernel.view(1, 1, 1, -1))
        m = F.pad(m, (0, 0, radius, radius), mode="reflect")
        return F.conv2d(m, kernel.view(1, 1, -1, 1))[:, 0]

    def score():
        with torch.inference_mode():
            model.eval()
            maps = smooth((model(x) - x).square().mean(1))
            area = det.min_defect_area_
            return [largest_component_level(m, area) for m in maps.numpy()]

    distorted = x.clone()
    side = x.shape[-1] // 4
    distorted[:, :, :side, :side] = x[:, :, :side, :side].flip(-1)

    def train():
        model.train()
        (model(distorted) - x).square().mean().backward()
        model.zero_grad(set_to_none=True)

    return score, train


# ------------------------------------------------------------------ run
def run(args):
    """Fit every detector, time it against its reference, return table rows."""
    rng = np.random.default_rng(0)
    # Epoch 1 warms up; the least of the next ``repeat`` epochs is kept.
    common = {"device": "cpu", "random_state": 0, "max_epochs": 1 + args.repeat}
    n, s = args.n, args.size
    cases = [
        ("DFR (VGG19, weights=None)", n, s, dfr_reference,
         lambda: DFRDetector(weights=None, image_size=s, batch_size=n, **common)),
        ("SCADN (width 64)", args.scadn_n, args.scadn_size, scadn_reference,
         lambda: SCADNDetector(image_size=args.scadn_size, batch_size=args.scadn_n, **common)),
        ("IGD (width 64, teacher=None)", args.igd_n, args.igd_size, igd_reference,
         lambda: IGDDetector(teacher=None, image_size=args.igd_size, batch_size=args.igd_n,
                             **common)),
        ("InpaintingAE (width 32)", n, s, inpainting_reference,
         lambda: InpaintingAE(image_size=s, batch_size=n, progressive_resizing=False, **common)),
    ]
    rows = []
    for name, n_img, size, reference, make in cases:
        if args.only and not any(k.lower() in name.lower() for k in args.only):
            continue
        X = rng.uniform(size=(n_img, size, size, 3)).astype(np.float32)
        x = torch.from_numpy(X).permute(0, 3, 1, 2).contiguous()
        start = time.perf_counter()
        det = make().fit(X)
        fit_s = time.perf_counter() - start
        score_ref, train_ref = reference(det, x)
        score_flops = count_flops(score_ref)
        train_flops = count_flops(train_ref)
        t_score_ref = best_time(score_ref, args.repeat)
        t_score_lib = best_time(lambda det=det, X=X: det.score_samples(X), args.repeat)
        t_train_ref = best_time(train_ref, args.repeat)
        t_epoch = epoch_time(det)
        rows.append({
            "name": name, "images": f"{n_img} x {size} px", "fit_s": fit_s,
            "score_ref": t_score_ref, "score_lib": t_score_lib, "score_flops": score_flops,
            "train_ref": t_train_ref, "epoch": t_epoch, "train_flops": train_flops,
        })
        print(f"done {name}: fit {fit_s:.1f} s", file=sys.stderr, flush=True)
    return rows


def table(rows, rate):
    """The markdown table of ``rows`` against the matmul ``rate`` (GFLOP/s)."""
    lines = [
        f"Machine float32 matmul rate (1 thread, 2048^3): {rate:.1f} GFLOP/s",
        "",
        (
            "| detector | images | score: ref s | score: lib s | ratio | GFLOP | "
            "GFLOP/s ref / lib (% matmul) | epoch: ref fwd+bwd s | epoch: lib s | ratio | "
            "GFLOP | GFLOP/s ref / lib (% matmul) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sg, tg = r["score_flops"] / 1e9, r["train_flops"] / 1e9

        def rates(g, ref, lib):
            return (f"{g / ref:.1f} / {g / lib:.1f} "
                    f"({100 * g / ref / rate:.0f}% / {100 * g / lib / rate:.0f}%)")

        lines.append(
            f"| {r['name']} | {r['images']} | {r['score_ref']:.3f} | {r['score_lib']:.3f} | "
            f"{r['score_lib'] / r['score_ref']:.2f} | {sg:.1f} | "
            f"{rates(sg, r['score_ref'], r['score_lib'])} | {r['train_ref']:.3f} | "
            f"{r['epoch']:.3f} | {r['epoch'] / r['train_ref']:.2f} | {tg:.1f} | "
            f"{rates(tg, r['train_ref'], r['epoch'])} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Command-line entry point: print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8, help="images (one batch)")
    parser.add_argument("--size", type=int, default=128, help="working size in px")
    parser.add_argument("--scadn-n", type=int, default=8)
    parser.add_argument("--scadn-size", type=int, default=64)
    parser.add_argument("--igd-n", type=int, default=8)
    parser.add_argument("--igd-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="timed calls (least kept)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="substrings of detector names to run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rate = matmul_rate()
    rows = run(args)
    print(table(rows, rate))


if __name__ == "__main__":
    main()
