"""Scaling benchmark: does peak memory grow with the number of images?

Every registered detector is fitted on, and scores, a float32 NumPy memmap
of 64x64 grey images (``np.load(..., mmap_mode="r")``), once with ``--small``
and once with ``--large`` images.  Each measurement runs in a fresh
subprocess, which resets the peak resident memory (``VmHWM``, by writing
``5`` to ``/proc/self/clear_refs``) just before the call and reports the
peak minus the resident memory at the reset: the call's *extra* peak
memory.  ``score_samples`` is measured with a model fitted on ``--small``
images (saved once, loaded by each scoring subprocess).

The table gives, per detector and call, the extra peak at both sizes, their
difference (the growth), the float32 size of the images added (``(large -
small) * 64 * 64 * 4`` bytes) and whether the growth stays below a quarter
of it: a call that held all images in memory would grow by at least their
size.  The detectors use the small settings of ``tests/detectors.py`` at
``image_size=64`` (DFR with ``feature_cache="disk"``) and ``--epochs``
training epochs.

Library caches: PyTorch's CPU convolutions (oneDNN) keep two caches of
compiled kernels, one entry per distinct tensor shape, each bounded at 1024
entries (``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and ideep's
``LRU_CACHE_CAPACITY``).  InpaintingAE's training distortions blur patches
of random sizes, so these caches fill (about 40 MB) over the first ~1,500
training samples and then stop growing: memory that is bounded, whatever the
number of images, but that would show up as growth between 300 and 3,000
images.  The subprocesses therefore run with both capacities set to
``--library-cache`` (default 16; ``--library-cache default`` keeps the
libraries' own settings).

Allocator: glibc raises its mmap threshold (dynamically, up to 32 MB) once
a large block is freed, after which the transient multi-MB tensors of each
batch come from the heap, which fragments: the peak then drifts up by 6 to
16 MB at random over a long call while the bytes in use stay constant
(measured with ``mallinfo2`` on SCADN's scoring: 140 MB in use throughout,
5 to 32 MB free in the heap).  The subprocesses therefore run with
``MALLOC_MMAP_THRESHOLD_=131072`` (glibc's initial threshold, kept fixed:
blocks above it are mapped and returned on free), ``--malloc-mmap-threshold
default`` to leave glibc's dynamic threshold.  Memory in use still counts
in full.

Usage::

    python benchmarks/bench_scaling.py --small 300 --large 3000 --epochs 1 \\
        --out benchmarks/results_scaling.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SIZE = 64

_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import torch
torch.set_num_threads({threads})
import joblib
from tests.detectors import make_detector


def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB -> B
    raise RuntimeError(key)


X = np.load({data!r}, mmap_mode="r")[: {n}]
if {task!r} == "fit":
    det = make_detector({name!r}, **{params!r})
else:
    det = joblib.load({model!r})
with open("/proc/self/clear_refs", "w") as fh:  # VmHWM := VmRSS
    fh.write("5")
before = status("VmRSS")
start = time.perf_counter()
if {task!r} == "fit":
    det.fit(X)
else:
    det.score_samples(X)
seconds = time.perf_counter() - start
peak = status("VmHWM")
if {task!r} == "fit" and {model!r}:
    joblib.dump(det, {model!r})
print(json.dumps(dict(extra=peak - before, before=before, seconds=seconds)))
"""


def detector_params(name, epochs):
    """The benchmark's settings of detector ``name``: 64 px, ``epochs`` epochs."""
    sys.path.insert(0, _ROOT)
    from tests.detectors import INIT_PARAMS

    params = {"max_epochs": epochs}
    if "image_size" in INIT_PARAMS[name]:
        params["image_size"] = _SIZE
    if name == "dfr":
        params["feature_cache"] = "disk"
    return params


def measure(
    name, task, n, data, params, model, threads, library_cache="16",
    mmap_threshold="131072",
):
    """Run one call in a fresh subprocess; its extra peak RSS (bytes) and time."""
    code = _CHILD.format(
        root=_ROOT, threads=threads, data=data, n=n, task=task, name=name,
        params=params, model=model,
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if library_cache != "default":
        env.update(
            ONEDNN_PRIMITIVE_CACHE_CAPACITY=str(library_cache),
            LRU_CACHE_CAPACITY=str(library_cache),
        )
    if mmap_threshold != "default":
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=_ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name} {task} n={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_data(path, n, seed=0):
    """``n`` smooth random 64x64 grey float32 images in [0, 1], as a .npy file."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, _SIZE, _SIZE))
    for i in range(0, n, 500):
        noise = rng.random((min(500, n - i), _SIZE, _SIZE))
        X[i : i + 500] = gaussian_filter(noise, sigma=(0, 2, 2)).clip(0, 1)
    X.flush()
    del X


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detectors", nargs="*", default=None)
    parser.add_argument(
        "--library-cache", default="16",
        help="capacity of oneDNN's and ideep's kernel caches in the subprocesses "
        "(an int, or 'default' for the libraries' own, 1024 entries each)",
    )
    parser.add_argument(
        "--malloc-mmap-threshold", default="131072",
        help="MALLOC_MMAP_THRESHOLD_ of the subprocesses (bytes, fixed), or "
        "'default' for glibc's dynamic threshold",
    )
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("--small and --large must satisfy 0 < small < large")
    if args.library_cache != "default" and not args.library_cache.isdigit():
        parser.error("--library-cache must be a non-negative int or 'default'")
    if args.malloc_mmap_threshold != "default" and not args.malloc_mmap_threshold.isdigit():
        parser.error("--malloc-mmap-threshold must be a non-negative int or 'default'")
    sys.path.insert(0, _ROOT)
    from skanomaly.registry import detector_names

    names = args.detectors or list(detector_names())
    added = (args.large - args.small) * _SIZE * _SIZE * 4
    rows = []
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "images.npy")
        make_data(data, args.large)
        for name in names:
            params = detector_params(name, args.epochs)
            model = os.path.join(tmp, f"{name}.joblib")
            for task in ("fit", "score_samples"):
                res = {}
                for n in (args.small, args.large):
                    # fit on the small set saves the model that score_samples loads
                    path = model if (task != "fit" or n == args.small) else ""
                    res[n] = measure(
                        name, task, n, data, params, path, args.threads,
                        args.library_cache, args.malloc_mmap_threshold,
                    )
                growth = res[args.large]["extra"] - res[args.small]["extra"]
                rows.append((name, task, res[args.small], res[args.large], growth))
                print(f"{name} {task}: {res}", file=sys.stderr, flush=True)
    mb = 1e6
    lines = [
        f"Extra peak RSS (VmHWM after the call minus VmRSS at a /proc/self/clear_refs "
        f"reset), float32 memmap of {_SIZE}x{_SIZE} grey images, {args.epochs} epoch(s), "
        f"{args.threads} torch thread(s), oneDNN/ideep kernel caches: "
        f"{args.library_cache} entries, MALLOC_MMAP_THRESHOLD_: "
        f"{args.malloc_mmap_threshold}; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}.",
        "",
        f"| detector | call | extra peak, {args.small} images (MB) | extra peak, "
        f"{args.large} images (MB) | growth (MB) | images added, float32 (MB) | "
        f"growth < 1/4 | time {args.small} / {args.large} (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, task, small, large, growth in rows:
        lines.append(
            f"| {name} | {task} | {small['extra'] / mb:.1f} | {large['extra'] / mb:.1f} | "
            f"{growth / mb:.1f} | {added / mb:.1f} | "
            f"{'yes' if growth < added / 4 else 'NO'} | "
            f"{small['seconds']:.1f} / {large['seconds']:.1f} |"
        )
    lines.append("")
    lines.append(f"Total benchmark time: {time.perf_counter() - total:.0f} s.")
    command = "OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    table = "\n".join([f"Command: `{command}`", "", *lines])
    print(table)
    if args.out:  # written whole or not at all
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(table + "\n")
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
