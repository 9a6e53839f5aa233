"""Memory benchmark: peak resident memory of ``fit`` at large image sizes.

``fit`` sets the pixel threshold ``threshold_`` from the maps of every
training image.  It streams them through
:class:`skanomaly.base.StreamingFPRThreshold` (exact, keeping only the top
``segmentation_fpr`` share of the values) instead of concatenating all maps,
so fit memory no longer grows with ``n_images * H * W``.

Each configuration runs in a fresh subprocess, which reports its resident
memory before ``fit`` (imports and data loaded), its peak resident memory
(``ru_maxrss``) after ``fit``, and the fit time.  The column "all maps" is
what keeping every training map in float32 would have added (once; the old
concatenation briefly held it twice).

Usage::

    python benchmarks/bench_memory.py --sizes 256 512 --n-images 8 --out memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import _common

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {root!r})
from skanomaly import DFRDetector

{probes}
rng = np.random.default_rng(0)
X = (rng.uniform(size=({n}, {size}, {size})) * 255).astype(np.uint8)
det = DFRDetector(weights=None, scales={scales}, image_size={size}, max_epochs={epochs},
                  batch_size={batch}, device="cpu", random_state=0)
before = rss_mib()
start = time.perf_counter()
det.fit(X)
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(before=before, peak=peak, seconds=elapsed)))
"""


def measure(size, n, scales, epochs, batch, threads):
    """Run one ``fit`` in a subprocess; return its memory figures (MiB) and time."""
    code = _CHILD.format(
        probes=_common.CHILD_MEMORY_PROBES, threads=threads, root=_ROOT, n=n, size=size, scales=scales, epochs=epochs,
        batch=batch,
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    """Run the benchmark and print (or write) a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--scales", type=int, default=4, help="DFR scales (VGG19 layers)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="markdown file (default: print)")
    args = parser.parse_args(argv)
    lines = [
        f"DFR (VGG19, weights=None, scales={args.scales}), {args.n_images} images, "
        f"{args.epochs} epoch(s), batch {args.batch}, {args.threads} thread(s); "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
        "",
        "| image size | RSS before fit (MiB) | peak RSS of fit (MiB) | fit adds (MiB) "
        "| all maps (MiB) | fit time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for size in args.sizes:
        r = measure(size, args.n_images, args.scales, args.epochs, args.batch, args.threads)
        maps = args.n_images * size * size * 4 / 2**20
        lines.append(
            f"| {size} | {r['before']:.0f} | {r['peak']:.0f} | {r['peak'] - r['before']:.0f} "
            f"| {maps:.0f} | {r['seconds']:.1f} |"
        )
        print(lines[-1], file=sys.stderr)
    text = "\n".join(lines) + "\n"
    if args.out:
        _common.write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
