"""One GPU check of every detector, sized to finish in under 8 minutes on one GPU.

For each registered detector it

1. fits briefly on the device (``--device``, default ``cuda``) with a fixed
   ``random_state``, twice: same-seed determinism (largest score difference);
2. saves the fitted model with joblib and, where available, the safe format
   (``det.save``), and scores the same images in a subprocess that sees no
   GPU (``CUDA_VISIBLE_DEVICES=""``): a device-fitted model loads and scores
   on a CPU-only machine (largest relative score and map differences);
3. measures scoring throughput at the paper's image size in float32 (TF32
   off), ``precision="tf32"`` and ``precision="bfloat16"`` (autocast), with
   the TF32 map difference and the bfloat16 parity against
   float32 (Pearson correlation of the maps, Spearman correlation of the
   image scores);

and writes one markdown table.  ``--tiny`` shrinks everything (32 px, one
epoch, tiny widths) so that CI runs the same code with ``--device cpu``.

Usage::

    python benchmarks/gpu_check.py --out benchmarks/results_gpu.md      # on a GPU
    python benchmarks/gpu_check.py --device cpu --tiny                  # CI smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import joblib
import numpy as np
import torch
from scipy.stats import spearmanr

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from skanomaly.registry import detector_names, get_detector  # noqa: E402

#: Per detector: brief-fit parameters (small, seconds on a GPU) and the
#: paper's architecture for the throughput row (random/offline weights: no
#: download happens).
FIT_PARAMS = {
    "dfr": dict(weights=None, scales=8, image_size=128, max_epochs=3, batch_size=8),
    "inpainting": dict(width=16, image_size=128, max_epochs=3, batch_size=8),
    "scadn": dict(width=16, image_size=128, max_epochs=3, batch_size=8),
    "igd": dict(teacher=None, width=16, image_size=128, max_epochs=3, batch_size=16,
                latent_dim=32, kd_iterations=100),
}
PAPER_PARAMS = {
    "dfr": dict(weights=None, backbone="vgg19", scales=12, image_size=256, latent_dim=200,
                max_epochs=1, batch_size=4),
    "inpainting": dict(width=32, image_size=512, max_epochs=1, batch_size=8),
    "scadn": dict(width=64, image_size=512, max_epochs=1, batch_size=4),
    "igd": dict(teacher=None, width=64, image_size=256, max_epochs=1, batch_size=64,
                kd_iterations=20),
}
TINY = {
    "dfr": dict(weights=None, scales=4, image_size=32, max_epochs=1, batch_size=4),
    "inpainting": dict(width=4, image_size=32, max_epochs=1, batch_size=8,
                       smoothing_sigma=1.0, min_defect_area=4),
    "scadn": dict(width=4, image_size=32, max_epochs=1, batch_size=8),
    "igd": dict(teacher=None, width=4, image_size=32, max_epochs=1, batch_size=8,
                latent_dim=8, beta=1.0),
}


def _images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        f1, f2, ph = rng.uniform(0.05, 0.3, 2).tolist() + [rng.uniform(0, 6)]
        img = 0.5 + 0.25 * np.sin(f1 * xx + ph) * np.cos(f2 * yy)
        out.append(img + 0.05 * rng.standard_normal((size, size)))
    return (np.clip(np.stack(out), 0, 1) * 255).astype(np.uint8)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


_CPU_SCORER = r"""
import json, sys
import joblib, numpy as np, torch
assert not torch.cuda.is_available()
X = np.load(sys.argv[2])
out = {}
det = joblib.load(sys.argv[1])
s, m = det.score_and_transform(X)
np.save(sys.argv[3], s); np.save(sys.argv[4], m)
out["joblib"] = True
if len(sys.argv) > 5:
    import skanomaly
    det2 = skanomaly.load(sys.argv[5])
    s2, m2 = det2.score_and_transform(X)
    out["safe_score_diff"] = float(np.max(np.abs(s2 - s)))
print(json.dumps(out))
"""


def _cpu_reload(det, X, tmp):
    """Scores/maps of ``det`` loaded in a process that sees no GPU."""
    model = os.path.join(tmp, "model.joblib")
    joblib.dump(det, model)
    safe = os.path.join(tmp, "model.skan")
    args = []
    if hasattr(det, "save"):
        det.save(safe)
        args = [safe]
    np.save(os.path.join(tmp, "X.npy"), X)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _CPU_SCORER, model, os.path.join(tmp, "X.npy"),
         os.path.join(tmp, "s.npy"), os.path.join(tmp, "m.npy"), *args],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode:
        raise RuntimeError(f"CPU reload failed:\n{proc.stderr[-2000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return np.load(os.path.join(tmp, "s.npy")), np.load(os.path.join(tmp, "m.npy")), info


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / (np.ptp(b) + 1e-12))


def _throughput(det, X, device, repeat=2):
    det.score_samples(X[: det.batch_size])  # warm-up
    best = np.inf
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        det.score_samples(X)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return len(X) / best


def check_detector(name, device, tiny, n_fit, n_score):
    cls = get_detector(name)
    fit_params = dict(TINY[name] if tiny else FIT_PARAMS[name])
    size = fit_params["image_size"]
    X = _images(n_fit, size)
    X_test = _images(n_score, size, seed=1)
    row = {"detector": name}

    t0 = time.perf_counter()
    det = cls(**fit_params, device=device, random_state=0).fit(X)
    row["fit_s"] = time.perf_counter() - t0
    s1, m1 = det.score_and_transform(X_test)
    again = cls(**fit_params, device=device, random_state=0).fit(X)
    s2 = again.score_samples(X_test)
    row["same_seed_max_diff"] = float(np.max(np.abs(s1 - s2)))

    with tempfile.TemporaryDirectory() as tmp:
        s_cpu, m_cpu, info = _cpu_reload(det, X_test, tmp)
    row["cpu_reload_score_rel"] = _rel(s_cpu, s1)
    row["cpu_reload_map_rel"] = _rel(m_cpu, m1)
    row["safe_vs_joblib"] = info.get("safe_score_diff", float("nan"))

    paper = dict(TINY[name] if tiny else PAPER_PARAMS[name])
    psize = paper["image_size"]
    Xp = _images(max(4, paper["batch_size"]), psize)
    Xs = _images(n_score, psize, seed=2)
    big = cls(**paper, device=device, random_state=0).fit(Xp)
    row["paper_size"] = psize
    row["fp32_img_s"] = _throughput(big, Xs, device)
    s32, m32 = big.score_and_transform(Xs)
    big.set_params(precision="tf32")
    row["tf32_img_s"] = _throughput(big, Xs, device)
    s_tf, m_tf = big.score_and_transform(Xs)
    row["tf32_map_rel"] = _rel(m_tf, m32)
    big.set_params(precision="bfloat16")
    row["bf16_img_s"] = _throughput(big, Xs, device)
    s16, m16 = big.score_and_transform(Xs)
    row["bf16_map_corr"] = float(np.corrcoef(m16.ravel(), m32.ravel())[0, 1])
    row["bf16_rank_corr"] = float(spearmanr(s16, s32).statistic)
    return row


COLUMNS = [
    ("detector", "{}"), ("fit_s", "{:.1f}"), ("same_seed_max_diff", "{:.2g}"),
    ("cpu_reload_score_rel", "{:.2g}"), ("cpu_reload_map_rel", "{:.2g}"),
    ("safe_vs_joblib", "{:.2g}"), ("paper_size", "{}"), ("fp32_img_s", "{:.1f}"),
    ("tf32_img_s", "{:.1f}"), ("tf32_map_rel", "{:.2g}"),
    ("bf16_img_s", "{:.1f}"), ("bf16_map_corr", "{:.4f}"), ("bf16_rank_corr", "{:.4f}"),
]


def table(rows, device):
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "CPU"
    lines = [
        f"GPU check on {name} (torch {torch.__version__}); `python benchmarks/gpu_check.py`",
        "",
        "| " + " | ".join(c for c, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in rows:
        cells = [fmt.format(r[c]) if c in r else "error" for c, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    for r in rows:
        if "error" in r:
            lines.append(f"\n{r['detector']}: {r['error']}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="CI smoke sizes")
    parser.add_argument("--detectors", nargs="+", default=detector_names(),
                        choices=detector_names())
    parser.add_argument("--out", default=None, help="write the table here too")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible; use --device cpu --tiny")
    n_fit, n_score = (8, 8) if args.tiny else (32, 64)
    rows = []
    for name in args.detectors:
        t0 = time.perf_counter()
        try:
            rows.append(check_detector(name, args.device, args.tiny, n_fit, n_score))
        except Exception as exc:  # one detector's failure is reported, not fatal
            rows.append({"detector": name, "error": f"{type(exc).__name__}: {exc}"})
        print(f"[{name}] {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    text = table(rows, args.device)
    print(text)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, args.out)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
