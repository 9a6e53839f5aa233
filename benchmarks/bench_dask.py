"""Scoring throughput on a Dask cluster against local ``score_samples``.

Fits one detector locally, then measures images per second of

- local ``score_samples`` with 1 torch thread and with every core;
- :func:`skanomaly.distributed.score` on a ``LocalCluster`` of 1, 2, ...
  worker processes (1 thread each), from a NumPy array (partitions sent to
  the workers on each call: the time includes the transfer) and from a Dask
  array already held by the workers (``client.persist``).

Each figure is the best of ``--repeats`` runs after one warm-up run (which
starts torch in the workers and sends them the detector).  The scores of
every distributed run are compared with the local ones.

Workers run with Dask's default environment (its nanny sets
``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's adaptive mmap
threshold, so every large torch buffer is mapped and zeroed anew) and, for
comparison, with ``MALLOC_MMAP_THRESHOLD_=33554432`` added (``--worker-env``).

Example (small settings, minutes on 2 CPU cores)::

    python benchmarks/bench_dask.py --image-size 64 --n-images 256 --write
"""

import argparse
import ast
import datetime
import os
import platform
import sys
import time

import numpy as np

# Allow ``python benchmarks/bench_dask.py`` from a checkout without installing.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results_dask.md")

#: Small settings per detector (DFR: random-weight VGG19, first 4 scales).
DEFAULTS = {
    "dfr": dict(weights=None, scales=4, batch_size=8),
    "inpainting": dict(batch_size=8),
    "scadn": dict(batch_size=8),
    "igd": dict(teacher=None, batch_size=8),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="dfr", help="registry name (default: dfr)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=256, help="images to score")
    parser.add_argument("--n-train", type=int, default=16, help="images to fit on")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", default="1,2",
                        help="comma-separated worker counts (default: 1,2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker-env", default="default,mmap",
                        help="comma-separated worker environments: 'default' (Dask's) "
                             "and/or 'mmap' (adds MALLOC_MMAP_THRESHOLD_=33554432)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="extra detector parameter (Python literal), repeatable")
    parser.add_argument("--write", action="store_true",
                        help=f"also write the table to {os.path.relpath(RESULTS, _ROOT)}")
    return parser.parse_args(argv)


def textures(n, size, seed):
    """Smooth random uint8 textures ``(n, size, size)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    f = rng.uniform(4, 12, size=(n, 3))
    img = 0.5 + 0.25 * np.sin(f[:, 0, None, None] * xx + 6 * f[:, 2, None, None]) * np.cos(
        f[:, 1, None, None] * yy
    )
    img = img + 0.05 * rng.standard_normal((n, size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def best_rate(func, n_images, repeats):
    """Images per second of the fastest of ``repeats`` calls, and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return n_images / best, result


def main(argv=None):
    args = parse_args(argv)
    import dask.array as da
    import torch
    import dask
    from dask.distributed import Client, LocalCluster

    from skanomaly.distributed import score
    from skanomaly.registry import get_detector

    params = dict(DEFAULTS.get(args.detector, {}))
    params.update(image_size=args.image_size, max_epochs=args.epochs, device="cpu",
                  random_state=0)
    for item in args.param:
        key, _, value = item.partition("=")
        params[key] = ast.literal_eval(value)
    n = args.n_images
    X_train = textures(args.n_train, args.image_size, seed=0)
    X = textures(n, args.image_size, seed=1)
    cores = os.cpu_count() or 1

    torch.set_num_threads(cores)
    detector = get_detector(args.detector)(**params).fit(X_train)

    load_before = os.getloadavg()[0]
    rows = []
    reference = None  # the local 1-thread scores, as the 1-thread workers compute
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        detector.score_samples(X[: params.get("batch_size", 8)])  # warm-up
        rate, got = best_rate(lambda: detector.score_samples(X), n, args.repeats)
        reference = got if reference is None else reference
        diff = float(np.max(np.abs(got - reference)))
        rows.append((f"local `score_samples`, {threads} torch thread(s)", rate, diff))
    local_rate = rows[0][1]
    torch.set_num_threads(1)

    environments = {
        "default": ("Dask's default env", {}),
        "mmap": ("+ MALLOC_MMAP_THRESHOLD_=32 MiB",
                 {"distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 33554432}),
    }
    for env in args.worker_env.split(","):
        env_label, config = environments[env]
        for n_workers in [int(w) for w in args.workers.split(",")]:
            # Dask's nanny writes its pre-spawn environment into this process's
            # os.environ (and existing variables win over its config): reset it.
            saved_environ = dict(os.environ)
            with dask.config.set(config), LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True,
                dashboard_address=None,
            ) as cluster, Client(cluster) as client:
                score(detector, X[:8], client)  # warm-up: torch imported in the workers
                rate, got = best_rate(lambda: score(detector, X, client), n, args.repeats)
                diff = float(np.max(np.abs(got - reference)))
                label = f"Dask, {n_workers} worker(s) x 1 thread, {env_label}"
                rows.append((f"{label}, NumPy in", rate, diff))
                chunk = max(8, -(-n // (2 * n_workers)) // 8 * 8)
                held = client.persist(da.from_array(X, chunks=(chunk, *X.shape[1:])))
                rate, got = best_rate(lambda h=held: score(detector, h, client), n, args.repeats)
                diff = float(np.max(np.abs(got - reference)))
                rows.append(
                    (f"{label}, Dask array held by the workers (chunks of {chunk})",
                     rate, diff)
                )
                del held
            os.environ.clear()
            os.environ.update(saved_environ)

    settings = ", ".join(f"{k}={v!r}" for k, v in params.items())
    lines = [
        "# Dask scoring throughput",
        "",
        f"{datetime.date.today()}; {platform.platform()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {cores} CPU core(s).",
        "",
        f"`{args.detector}` ({settings}), {args.n_train} training images, {n} "
        f"{args.image_size}x{args.image_size} images scored with `score_samples`; best of "
        f"{args.repeats} after a warm-up.  Load average (1 min) {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after: other jobs share these cores, so compare rows "
        f"of one run only.",
        "",
        "Command: `python benchmarks/bench_dask.py "
        + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
        "| setting | images/s | vs local 1 thread | max abs diff vs local 1 thread |",
        "|---|---:|---:|---:|",
    ]
    for label, rate, diff in rows:
        lines.append(f"| {label} | {rate:.1f} | {rate / local_rate:.2f}x | {diff:.1e} |")
    table = "\n".join(lines) + "\n"
    sys.stdout.write(table)
    if args.write:
        with open(RESULTS, "w", encoding="utf-8") as fh:
            fh.write(table)
    return rows


if __name__ == "__main__":  # Dask's worker processes are spawned: guard required.
    main()
