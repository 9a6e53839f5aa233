"""Training loss and quality against epochs: the paper's schedule and a shorter one.

For each detector, on scikit-image's brick with planted defects
(``make_texture_defects``, 64 px, 40 normal training crops, 40 test crops,
half defective), at the paper's ``lr`` and ``batch_size`` with the small
widths of the quick preset (``benchmarks/_common.py: quick_params``):

- ``paper``: ``lr_schedule="paper"`` for ``N`` epochs; the training loss of
  every epoch (``net_.history[:, "train_loss"]``) is recorded, and image
  AUROC / pixel AUROC at ``N/10`` and ``N`` epochs (a separate fit with
  ``max_epochs=N/10``: the paper schedule truncated; DFR's and SCADN's
  constant rate make its loss curve the first tenth of the long one's, not
  IGD's polynomial decay nor InpaintingAE's progressive resizing, which
  follow ``max_epochs``);
- alternatives: ``lr_schedule="warmup_cosine"`` for ``N/10`` epochs (or
  the share ``--alt`` gives) with the learning rate and batch size
  multiplied by the factors of ``--alt``; for DFR a fourth field trains
  on random batches of that many regional vectors (``vector_batch_size``).

The loss is the detector's own ``train_loss``: a per-element mean averaged
over the epoch's batches weighted by their size, so it is comparable across
batch sizes.  A run's *final training loss* is the mean of its last tenth of
epochs (at least the last epoch): with a constant rate the per-epoch loss
fluctuates.  "paper ep to same loss" is the first epoch of the paper
schedule's run whose training loss is at most the run's final one (the
speed-up in epochs; for InpaintingAE, whose progressive resizing trains
the first half of the epochs on smaller images, only full-size epochs
count).  An alternative *meets the target* when its final training loss
is at most ``(1 + tol)`` times the paper schedule's
(``--tol``, default 0.10) and its training time (the sum of the epochs'
durations, ``net_.history[:, "dur"]``) is at most a tenth of the paper
schedule's; the whole ``fit`` time, which adds the work done once per fit
(DFR's feature cache and PCA, thresholds from the training images' maps),
is shown too.  Times come from the same process (the machine may be
shared: compare times within one detector's runs only).

IGD runs without distillation (``teacher=None``): its teacher is trained by
a separate network before the epochs this measures.

Example (one detector per process; ``--report`` joins the JSON files)::

    OMP_NUM_THREADS=1 python benchmarks/bench_convergence.py --detectors dfr \\
        --threads 1 --json /tmp/conv_dfr.json
    python benchmarks/bench_convergence.py --report /tmp/conv_*.json \\
        --out benchmarks/results_convergence.md
"""

import json
import sys
import time

import numpy as np

import _common
from skanomaly import metrics

#: Paper-schedule epochs ``N`` per detector (the alternatives run ``N/10``).
EPOCHS = {"dfr": 100, "inpainting": 50, "scadn": 30, "igd": 20}

#: Network widths (small, as the quick preset's).
WIDTHS = {"inpainting": 16, "scadn": 16, "igd": 8}

#: Default alternatives: (lr factor, batch-size factor, share of N epochs,
#: DFR's vector_batch_size or None).
ALTERNATIVES = [(3.0, 1, 0.1, None), (10.0, 1, 0.1, None), (10.0, 2, 0.1, None)]


def detector_params(name, cls, image_size, seed):
    """The paper's optimiser settings (constructor defaults: lr, batch_size)
    with the quick preset's small networks."""
    defaults = cls().get_params()
    params = _common.quick_params(name, image_size)
    params.update(lr=defaults["lr"], batch_size=defaults["batch_size"],
                  random_state=seed, device="cpu")
    if name in WIDTHS:
        params["width"] = WIDTHS[name]
    if name == "igd":
        params.update(teacher=None)
        params.pop("weights", None)
        params.pop("kd_iterations", None)
    return params


def final_loss(losses):
    """Mean training loss of the last tenth of the epochs (at least the last one):
    the per-epoch loss of a constant rate fluctuates (InpaintingAE's random
    distortions, SCADN's random masks), so one epoch's value is a noisy end point."""
    tail = max(1, int(np.ceil(len(losses) / 10)))
    return float(np.mean(losses[-tail:]))


#: Distortion draws per training image of :func:`fixed_objective`, and their seed.
FIXED_DRAWS, FIXED_SEED = 8, 12345


def fixed_objective(det, X_train):
    """The training objective after fit, on fixed samples (InpaintingAE, SCADN).

    Their per-epoch ``train_loss`` averages a few batches of fresh random
    distortions (InpaintingAE) or random masks (SCADN), so one epoch's value
    is noisy (in the 50-epoch InpaintingAE paper run it moves between 0.006
    and 0.012 from one epoch to the next), and SCADN's also holds the
    adversarial term against a discriminator that changes with training.
    This measures, with the trained network in evaluation mode, the same
    samples for every run:

    - InpaintingAE: its loss, averaged over :data:`FIXED_DRAWS` seeded
      distortions of every training image at full size (the augmentations and
      distortion ranges of training, ``random_state`` :data:`FIXED_SEED`);
    - SCADN: ``lambda_rec`` times the reconstruction loss, averaged over
      every training image under every one of its striped masks (no
      randomness at all).

    ``None`` for other detectors.
    """
    import torch

    from skanomaly import InpaintingAE, SCADNDetector
    from skanomaly.inpainting.distortions import DistortionDataset
    from skanomaly.scadn.torch_model import masked_inputs
    from skanomaly.validation import check_images

    if not isinstance(det, (InpaintingAE, SCADNDetector)):
        return None
    images = check_images(X_train, image_shape=det.image_shape, value_range=det.value_range)
    working = det._working_images(images, lazy=True)
    net = det.net_
    net.module_.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        if isinstance(det, SCADNDetector):
            for i in range(len(working)):
                x = working.image(i)[None].to(net.device)
                masks = net._masks(x)
                xs = x.expand(len(masks), *x.shape[1:])
                fake = net.module_(masked_inputs(xs, masks))
                # A mean over the batch: the mean of the K masks' losses.
                total += float(net.lambda_rec * net.criterion_(fake, xs, masks)) * len(masks)
                count += len(masks)
            return total / count
        patch_size = tuple(float(v) for v in det.patch_size)
        dataset = DistortionDataset(
            working, random_state=FIXED_SEED, progressive=False,
            rotate90=bool(det.rotate90), flip=bool(det.flip), patch_size=patch_size,
            brightness=float(det.brightness))
        for draw in range(FIXED_DRAWS):
            dataset.set_epoch(draw)
            for start in range(0, len(dataset), 8):
                items = [dataset[i] for i in range(start, min(start + 8, len(dataset)))]
                X_hat = torch.stack([x for x, _ in items]).to(net.device)
                target = torch.stack([t for _, t in items]).to(net.device)
                loss = net.get_loss(net.module_(X_hat), target, X=X_hat, training=False)
                total += float(loss) * len(items)
                count += len(items)
    return total / count


def run_one(cls, params, data):
    """Fit, score; the loss curve, times and quality of one fit."""
    det = cls(**params)
    start = time.perf_counter()
    det.fit(data["X_train"])
    fit_s = time.perf_counter() - start
    history = det.net_.history
    losses = [float(v) for v in history[:, "train_loss"]]
    train_s = float(np.sum(history[:, "dur"]))
    fixed = fixed_objective(det, data["X_train"])
    normality, maps = det.score_and_transform(data["X_test"])
    return {
        "epochs": int(params["max_epochs"]), "lr": float(params["lr"]),
        "batch_size": int(params["batch_size"]), "schedule": params["lr_schedule"],
        "losses": losses, "final loss": final_loss(losses), "fit s": fit_s,
        "train s": train_s, "fixed objective": fixed,
        "image AUROC": float(metrics.image_auroc(data["y_test"], -normality)),
        "pixel AUROC": float(metrics.pixel_auroc(data["masks_test"], maps)),
    }


def measure(name, cls, data, args):
    base = detector_params(name, cls, args.image_size, args.seed)
    n = args.epochs or EPOCHS[name]
    short = max(1, n // 10)
    runs = []
    for epochs in (n, short):
        params = dict(base, max_epochs=epochs, lr_schedule="paper")
        runs.append(dict(run_one(cls, params, data), label=f"paper, {epochs} ep"))
        print(name, runs[-1]["label"], runs[-1]["final loss"], runs[-1]["fit s"],
              file=sys.stderr, flush=True)
    for lr_factor, bs_factor, fraction, vectors in args.alt:
        epochs = max(1, int(round(n * fraction)))
        params = dict(base, max_epochs=epochs, lr_schedule="warmup_cosine",
                      lr=base["lr"] * lr_factor,
                      batch_size=int(base["batch_size"] * bs_factor))
        label = f"warmup_cosine, {epochs} ep, lr x{lr_factor:g}, batch x{bs_factor:g}"
        if vectors is not None:
            if name != "dfr":
                continue
            params["vector_batch_size"] = vectors
            label += f", {vectors} vectors"
        try:
            runs.append(dict(run_one(cls, params, data), label=label))
        except Exception as exc:  # e.g. divergence: record it, go on
            print(name, label, "failed:", exc, file=sys.stderr, flush=True)
            runs.append({"label": label, "error": f"{type(exc).__name__}: {exc}"})
            continue
        print(name, label, runs[-1]["final loss"], runs[-1]["fit s"], file=sys.stderr,
              flush=True)
    return {"detector": name, "params": {k: v for k, v in base.items()
                                         if k not in ("lr", "batch_size", "max_epochs")},
            "runs": runs}


def _full_size_epochs(name, run, image_size):
    """Whether each epoch trained at full size: InpaintingAE's progressive
    resizing trains its first epochs on smaller images, whose losses are not
    comparable with full-size ones."""
    if name != "inpainting":
        return np.ones(len(run["losses"]), bool)
    from skanomaly.inpainting.distortions import progressive_size

    n = len(run["losses"])
    return np.array([progressive_size(e, n, image_size)[0] == image_size for e in range(n)])


def _epochs_to(losses, target, full_size):
    """The first full-size epoch (from 1) whose loss is at most ``target``, or ``"> N"``."""
    reached = np.flatnonzero((np.asarray(losses) <= target) & full_size)
    return str(int(reached[0]) + 1) if len(reached) else f"> {len(losses)}"


def report(results, tol, path):
    sections = []
    summary = ["| detector | run | epochs | lr | batch | final train loss | vs paper N "
               "| paper ep to same loss | fit s | train s | train / paper N | image AUROC "
               "| pixel AUROC | meets? |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    curves = []
    for res in results:
        runs = res["runs"]
        for run in runs:  # the definition of this file, whatever the JSON holds
            if "losses" in run:
                run["final loss"] = final_loss(run["losses"])
        ref = runs[0]
        ref_full = _full_size_epochs(res["detector"], ref, res["params"]["image_size"])
        for i, run in enumerate(runs):
            if "error" in run:
                summary.append(f"| {res['detector']} | {run['label']} | failed: "
                               f"{run['error']} |" + " |" * 12)
                continue
            ratio_loss = run["final loss"] / ref["final loss"]
            ratio_time = run["train s"] / ref["train s"]
            if i == 0:
                meets = "reference"
            else:
                meets = "yes" if ratio_loss <= 1 + tol and ratio_time <= 0.1 else "no"
            summary.append(
                f"| {res['detector']} | {run['label']} | {run['epochs']} | {run['lr']:g} | "
                f"{run['batch_size']} | {run['final loss']:.4g} | {ratio_loss:.3f} | "
                f"{_epochs_to(ref['losses'], run['final loss'], ref_full)} | {run['fit s']:.1f} | "
                f"{run['train s']:.1f} | {ratio_time:.3f} | "
                f"{run['image AUROC']:.3f} | {run['pixel AUROC']:.3f} | {meets} |")
        for run in runs:
            if "error" in run:
                continue
            line = (f"- {res['detector']} {run['label']}: "
                    + ", ".join(f"{v:.4g}" for v in run["losses"]))
            if line not in curves:  # each process repeats the paper runs
                curves.append(line)
    sections.append(("Final training loss, time and quality", "\n".join(summary)))
    fixed = ["| detector | seed | run | objective on fixed samples | vs paper N "
             "| train / paper N | meets? |", "|---|---:|---|---:|---:|---:|---|"]
    for res in results:
        runs = [r for r in res["runs"] if r.get("fixed objective") is not None]
        if not runs or runs[0] is not res["runs"][0]:
            continue
        ref = runs[0]
        for i, run in enumerate(runs):
            ratio_loss = run["fixed objective"] / ref["fixed objective"]
            ratio_time = run["train s"] / ref["train s"]
            meets = ("reference" if i == 0 else
                     "yes" if ratio_loss <= 1 + tol and ratio_time <= 0.1 else "no")
            fixed.append(f"| {res['detector']} | {res['params'].get('random_state')} | "
                         f"{run['label']} | {run['fixed objective']:.4g} | {ratio_loss:.3f} | "
                         f"{ratio_time:.3f} | {meets} |")
    if len(fixed) > 2:
        sections.append(("The objective on fixed samples (InpaintingAE, SCADN)",
                         "After training, with the network in evaluation mode: "
                         "InpaintingAE's loss on "
                         f"{FIXED_DRAWS} seeded distortions of every training image at "
                         "full size; SCADN's lambda_rec x reconstruction loss of every "
                         "training image under each of its striped masks "
                         "(fixed_objective: the same samples for every run).\n\n"
                         + "\n".join(fixed)))
    sections.append(("Training loss per epoch", "\n".join(curves)))
    settings = {
        "data": "make_texture_defects('brick'), 64 px, 40 train / 40 test, seed "
                + ", ".join(sorted({str(r['params'].get('random_state')) for r in results})),
        "target": f"final train loss (mean of the last tenth of the epochs) <= (1 + {tol:g}) "
                  "x the paper schedule's after N epochs, and training time (sum of the "
                  "epochs' dur) <= 0.1 x its training time (same process)",
        "parameters": "; ".join(dict.fromkeys(  # once per detector
            f"{r['detector']}: " + ", ".join(f"{k}={v!r}" for k, v in r["params"].items()
                                             if k not in ("device",))
            for r in results)),
        "times": "seconds on a shared, loaded 2-core machine, OMP_NUM_THREADS=1; "
                 "compare within one detector's runs only",
        "environments": "; ".join(sorted({r.get("environment", "") for r in results})),
        "commands (OMP_NUM_THREADS=1, one process each; this file joins their JSON "
        "with --report)": "; ".join(f"`{r['command']}`" for r in results if "command" in r),
    }
    return _common.write_report(path, "Convergence within a CPU budget", settings, sections)


def _alternative(text):
    """``"lr:bs[:fraction[:vectors]]"`` -> (lr factor, batch factor, epoch
    fraction, DFR's vector_batch_size or None)."""
    parts = text.split(":")
    if not 2 <= len(parts) <= 4:
        raise SystemExit(f"--alt expects lr:bs[:fraction[:vectors]], got {text!r}")
    values = [float(x) for x in parts[:3]] + [0.1] * (3 - len(parts[:3]))
    return (*values, int(parts[3]) if len(parts) == 4 else None)


def main(argv=None):
    parser = _common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=None,
                        help="paper-schedule epochs N (default: per detector, EPOCHS)")
    parser.add_argument("--alt", nargs="+", default=None, metavar="LRxBS",
                        help="alternatives as lr_factor:batch_factor[:epoch_share[:vectors]], "
                             "e.g. 10:2 (epoch share default 0.1; vectors: DFR's "
                             "vector_batch_size)")
    parser.add_argument("--tol", type=float, default=0.10)
    parser.add_argument("--json", default=None, help="write the measurements as JSON")
    parser.add_argument("--report", nargs="+", default=None, metavar="JSON",
                        help="only join these JSON files into the markdown report")
    args = parser.parse_args(argv)
    if args.report:
        results = []
        for path in args.report:
            with open(path) as fh:
                results.extend(json.load(fh))
        report(results, args.tol, args.out)
        return
    args.alt = [_alternative(a) for a in args.alt] if args.alt else ALTERNATIVES
    _common.setup(args)
    data = _common.texture_data("brick", args.image_size, 40, 40, args.seed)
    results = []
    for name, cls in _common.available(args.detectors):
        res = measure(name, cls, data, args)
        res["environment"] = _common.environment()
        res["command"] = "python benchmarks/bench_convergence.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        results.append(res)
        if args.json:  # after each detector, atomically
            _common.write_text(args.json, json.dumps(results, indent=1))
    report(results, args.tol, args.out)


if __name__ == "__main__":
    main()
