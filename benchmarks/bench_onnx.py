"""ONNX export: onnxruntime CPU throughput against the library's ``score_samples``.

For each detector that supports export, a small model is fitted on random
textures, exported with ``det.export_onnx``, and both paths score the same
batch of held-out images: the library (``score_and_transform``, torch) and
onnxruntime's CPU provider on the exported graph.  Reported per detector:
images per second of each, the largest difference of the scores and of the
maps (relative to the maps' range), and whether the image ranking agrees.
Both run on ``--threads`` threads (torch's and onnxruntime's intra-op
threads); the timing is the best of ``--repeat`` runs.

Example (a small CPU setting; the report goes to stdout and no results file
is kept, see ``benchmarks/README.md``)::

    python benchmarks/bench_onnx.py --image-size 64 --n-images 32 --threads 1
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from skanomaly.export import _WORKING, require_onnx  # noqa: E402
from skanomaly.registry import get_detector  # noqa: E402

#: Small settings per detector (working size set by --image-size).
SETTINGS = {
    "dfr": dict(weights=None, backbone="vgg19", scales=4, max_epochs=2, batch_size=8),
    "scadn": dict(width=8, max_epochs=2, batch_size=8),
    "igd": dict(teacher=None, beta=1.0, width=8, latent_dim=16, max_epochs=2, batch_size=8),
    "inpainting": dict(width=8, max_epochs=2, batch_size=8, smoothing_sigma=1.0,
                       min_defect_area=1),
}


def _textures(n, size, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = [0.5 + 0.25 * np.sin(xx / 2.0 + rng.uniform(0, 2 * np.pi)) for _ in range(n)]
    return np.clip(np.stack(out) + rng.normal(0, 0.03, (n, size, size)), 0, 1).astype(np.float32)


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(name, args, folder):
    """One row of the table for detector ``name``."""
    _, ort = require_onnx(runtime=True)
    det = get_detector(name)(**SETTINGS[name], image_size=args.image_size, device="cpu",
                             random_state=0)
    det.fit(_textures(args.n_train, args.image_size, 0))
    path = os.path.join(folder, f"{name}.onnx")
    det.export_onnx(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    X = _textures(args.n_images, args.image_size, 1)
    feed = {"images": np.ascontiguousarray(X[:, None])}
    session.run(None, feed)  # warm-up
    det.score_and_transform(X[:2])
    t_lib, (normality, maps) = _best(lambda: det.score_and_transform(X), args.repeat)
    t_ort, (scores, onnx_maps) = _best(lambda: session.run(None, feed), args.repeat)
    return {
        "detector": name,
        "lib": args.n_images / t_lib,
        "ort": args.n_images / t_ort,
        "score_diff": float(np.max(np.abs(scores + normality))),
        "map_diff": float(np.max(np.abs(onnx_maps - maps)) / max(np.ptp(maps), 1e-12)),
        "ranking": bool(np.array_equal(np.argsort(scores), np.argsort(-normality))),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=16)
    parser.add_argument("--n-images", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--detectors", nargs="+", default=sorted(_WORKING))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.n_images} grey {args.image_size}x{args.image_size} images, "
          f"{args.threads} thread(s), best of {args.repeat}\n")
    print("| detector | score_samples (img/s) | onnxruntime (img/s) | speed-up "
          "| max score diff | max map diff / range | same ranking |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.detectors:
            if name not in _WORKING:
                print(f"| {name} | export not supported yet | | | | | |")
                continue
            r = run(name, args, folder)
            print(f"| {name} | {r['lib']:.1f} | {r['ort']:.1f} | {r['ort'] / r['lib']:.2f}x "
                  f"| {r['score_diff']:.2e} | {r['map_diff']:.2e} | {r['ranking']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
