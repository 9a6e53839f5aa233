"""Memory of full-resolution and tiled DFR on large images.

Three ways to run DFR on images of 1024 x 1024 pixels without resizing them:

- ``full``: ``DFRDetector(image_size=None)``, the whole image through the
  network at once (padded to the layers' multiple, map cropped back);
- ``tiled T``: ``TiledDetector(DFRDetector(image_size=None), tile_size=T)``,
  tiles of T x T overlapping by half, scored in batches of the detector's
  ``batch_size`` and stitched.

Each configuration is fitted in a fresh subprocess (peak RSS of ``fit``),
dumped with joblib, then loaded in another fresh subprocess per scoring size,
which scores one image with ``score_and_transform`` (peak RSS of scoring
above the RSS with the model loaded and the image in memory).  The peak is
the kernel's ``VmHWM``, reset just before the measured step (Linux's
``/proc/self/clear_refs``), so making the data does not count.  Full
resolution grows with the image area; tiled scoring is bounded by the tile
size and batch (plus the image and its map, 4 bytes a pixel, and a float64
accumulator of 8 bytes a pixel).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_tiling.py --out benchmarks/results_tiling.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import _common

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PRELUDE = r"""
import json, resource, sys, time
import numpy as np
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {root!r})
import joblib
from skanomaly import DFRDetector, TiledDetector

{probes}
def images(n, size, seed):
    # A smooth texture with noise, uint8 (1 byte a pixel).
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    out = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        a, b = rng.uniform(0, 2 * np.pi, 2)
        im = 0.5 + 0.15 * np.sin(xx / 7.0 + a) * np.cos(yy / 9.0 + b)
        im += rng.normal(0, 0.03, (size, size)).astype(np.float32)
        out[i] = (np.clip(im, 0, 1) * 255).astype(np.uint8)
    return out
"""

_FIT = _PRELUDE + r"""
inner = DFRDetector(backbone={backbone!r}, weights={weights!r}, scales={scales},
                    image_size=None, max_epochs={epochs}, batch_size={batch},
                    feature_cache="disk", device="cpu", random_state=0)
tile = {tile!r}
det = inner if tile is None else TiledDetector(inner, tile_size=tile)
X = images({n_fit}, {size}, 0)
reset = reset_peak()
before = rss_mib()
start = time.perf_counter()
det.fit(X)
seconds = time.perf_counter() - start
peak = peak_mib()
joblib.dump(det, {path!r})
print(json.dumps(dict(before=before, peak=peak, seconds=seconds, reset=reset)))
"""

_SCORE = _PRELUDE + r"""
det = joblib.load({path!r})
X = images(1, {size}, 1)
tile = {tile!r}
det.score_samples(images(1, 64 if tile is None else tile, 2))  # warm-up, small
reset = reset_peak()
before = rss_mib()
start = time.perf_counter()
scores, maps = det.score_and_transform(X)
seconds = time.perf_counter() - start
peak = peak_mib()
assert maps.shape == (1, {size}, {size}) and np.all(np.isfinite(maps))
print(json.dumps(dict(before=before, peak=peak, seconds=seconds, reset=reset)))
"""


def _run(code):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    """Run the benchmark and print (or write) markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-size", type=int, default=1024)
    parser.add_argument("--n-fit", type=int, default=2, help="training images")
    parser.add_argument("--score-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--tiles", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="IMAGENET1K_V1",
                        help="'none' for random weights (memory is the same)")
    parser.add_argument("--scales", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-full", action="store_true", help="skip full resolution")
    parser.add_argument("--out", default=None, help="markdown file (default: print)")
    args = parser.parse_args(argv)
    weights = None if args.weights.lower() == "none" else args.weights
    configs = ([] if args.no_full else [None]) + list(args.tiles)
    common = dict(threads=args.threads, root=_ROOT, probes=_common.CHILD_MEMORY_PROBES)
    fit_rows, score_rows, resets = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for tile in configs:
            name = "full resolution" if tile is None else f"tiled {tile} (stride {tile // 2})"
            path = os.path.join(tmp, f"model-{tile}.joblib")
            r = _run(_FIT.format(
                backbone=args.backbone, weights=weights, scales=args.scales,
                epochs=args.epochs, batch=args.batch, tile=tile, n_fit=args.n_fit,
                size=args.fit_size, path=path, **common,
            ))
            resets.append(r["reset"])
            fit_rows.append(
                f"| {name} | {r['before']:.0f} | {r['peak']:.0f} | "
                f"{r['peak'] - r['before']:.0f} | {r['seconds']:.1f} |"
            )
            print(fit_rows[-1], file=sys.stderr)
            for size in args.score_sizes:
                r = _run(_SCORE.format(path=path, size=size, tile=tile, **common))
                resets.append(r["reset"])
                score_rows.append(
                    f"| {name} | {size} x {size} | {r['before']:.0f} | {r['peak']:.0f} | "
                    f"{r['peak'] - r['before']:.0f} | {r['seconds']:.1f} |"
                )
                print(score_rows[-1], file=sys.stderr)
    setting = (
        f"DFR ({args.backbone}, weights={weights}, scales={args.scales}), "
        f"batch_size={args.batch}, feature_cache='disk', {args.threads} thread(s); "
        f"{platform.machine()}, Python {platform.python_version()}"
    )
    lines = [
        "# Full-resolution and tiled DFR: peak memory",
        "",
        f"`OMP_NUM_THREADS={args.threads} python benchmarks/bench_tiling.py "
        + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        setting + ". Each row is a fresh subprocess; RSS in MiB; peak = "
        + ("VmHWM reset just before the step" if all(resets) else
           "the process's lifetime peak (VmHWM could not be reset)")
        + "; times on a shared, loaded 2-core machine.",
        "",
        f"## fit on {args.n_fit} images of {args.fit_size} x {args.fit_size}, "
        f"{args.epochs} epoch(s)",
        "",
        "| configuration | RSS before fit | peak RSS | fit adds | fit s |",
        "|---|---:|---:|---:|---:|",
        *fit_rows,
        "",
        "## scoring one image (`score_and_transform`)",
        "",
        "| configuration | image | RSS before | peak RSS | scoring adds | score s |",
        "|---|---|---:|---:|---:|---:|",
        *score_rows,
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        tmp_out = args.out + ".tmp"
        with open(tmp_out, "w") as fh:
            fh.write(text)
        os.replace(tmp_out, args.out)
    print(text)


if __name__ == "__main__":
    main()
