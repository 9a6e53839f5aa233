"""End-to-end tests of the command line (in-process ``main([...])`` calls)."""

import csv

import skanomaly
import numpy as np
import pytest
from PIL import Image

from skanomaly.cli import main
from skanomaly.datasets import make_defects

TINY_DFR = [
    "--param", "weights=None", "--param", "scales=4", "--param", "image_size=32",
    "--param", "max_epochs=3", "--param", "random_state=0", "--param", "batch_size=4",
]


def _texture(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.25 * np.sin(xx / 2.0 + phase) + rng.normal(0, 0.02, (size, size))
        images.append(np.clip(stripes, 0, 1))
    return np.rint(np.stack(images) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    good = _texture(8)
    test = _texture(4, seed=1)
    bad, _ = make_defects(test, kinds="stain", size_range=(0.3, 0.4), random_state=0)
    (root / "good").mkdir()
    (root / "new").mkdir()
    for i, im in enumerate(good):
        Image.fromarray(im).save(root / "good" / f"g{i}.png")
    for i, im in enumerate(test):
        Image.fromarray(im).save(root / "new" / f"ok{i}.png")
    for i, im in enumerate(bad):
        Image.fromarray(im).save(root / "new" / f"bad{i}.png")
    return root


@pytest.fixture(scope="module")
def model_path(folders):
    path = folders / "model.skan"
    status = main(["fit", str(folders / "good"), "-o", str(path), "-q", *TINY_DFR])
    assert status == 0
    return path


def test_fit_writes_a_usable_model(model_path, folders):
    from skanomaly import DFRDetector

    det = skanomaly.load(model_path)
    assert isinstance(det, DFRDetector)
    assert det.max_epochs == 3 and det.weights is None and det.scales == 4
    assert det.input_shape_ == (32, 32, 1)


def test_score_csv(model_path, folders, capsys):
    out = folders / "scores.csv"
    assert main(["score", str(model_path), str(folders / "new"), "-o", str(out), "-q"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == sorted(
        p.name for p in (folders / "new").iterdir()
    )
    assert set(rows[0]) == {"path", "score", "label"}
    assert {r["label"] for r in rows} <= {"normal", "anomalous"}
    # Scores equal the detector's own anomaly scores (= -score_samples).
    det = skanomaly.load(model_path)
    X = np.stack([np.asarray(Image.open(r["path"])) for r in rows])
    expected = -det.score_samples(X)
    got = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    labels = np.array([r["label"] == "anomalous" for r in rows])
    np.testing.assert_array_equal(labels, det.predict(X) == -1)
    # Standard output when no file is given.
    capsys.readouterr()
    assert main(["score", str(model_path), str(folders / "new" / "ok0.png"), "-q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "path,score,label" and len(lines) == 2


def test_heatmap_pngs(model_path, folders):
    out = folders / "maps"
    status = main(["heatmap", str(model_path), str(folders / "new" / "bad0.png"),
                   str(folders / "new" / "ok1.png"), "-o", str(out), "--dpi", "30", "-q"])
    assert status == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bad0_heatmap.png", "ok1_heatmap.png"]
    with Image.open(out / "bad0_heatmap.png") as im:
        assert im.size == (120, 120)
        assert np.asarray(im.convert("L")).std() > 5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "{root}/missing", "-o", "{root}/m.skan"], "does not exist"),
        (["fit", "{root}/good", "-o", "{root}/m.skan", "--param", "oops"], "key=value"),
        (["fit", "{root}/good", "-o", "{root}/m.skan", "--param", "max_epochs=-1"],
         "max_epochs"),
        (["fit", "{root}/good", "-o", "{root}/m.skan", "--param", "colour=1"], "colour"),
        (["score", "{root}/absent.skan", "{root}/new"], "does not exist"),
        (["score", "{root}/good/g0.png", "{root}/new"], "cannot load model"),
        (["score", "{model}", "{root}/broken.png"], "Cannot read image"),
        (["score", "{model}", "{root}/empty"], "no image files"),
        (["heatmap", "{model}", "{root}/nothing.png", "-o", "{root}/x"], "does not exist"),
    ],
)
def test_errors_exit_2_without_traceback(argv, message, folders, model_path, capsys):
    (folders / "broken.png").write_bytes(b"\x89PNG not really")
    (folders / "empty").mkdir(exist_ok=True)
    argv = [a.format(root=folders, model=model_path) for a in argv]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("skanomaly: error:") and message in last
    assert "Traceback" not in err


def test_usage_errors(capsys):
    assert main(["demo", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main([]) == 2
    assert main(["fit"]) == 2
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out


def test_demo_tiny(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "demo.png"
    status = main(["demo", "--n-train", "8", "--n-test", "6", "--image-size", "32",
                   "--epochs", "2", "-o", str(out), "-q"])
    assert status == 0
    assert torch.get_num_threads() == threads  # --threads 1 was restored
    text = capsys.readouterr().out
    values = {}
    for line in text.splitlines():
        if ":" in line and line.split(":")[0].strip() in (
            "image AUROC", "pixel AUROC", "PRO (AUPRO@0.3)"
        ):
            name, value = line.split(":")
            values[name.strip()] = float(value)
    assert set(values) == {"image AUROC", "pixel AUROC", "PRO (AUPRO@0.3)"}
    assert all(0.0 <= v <= 1.0 for v in values.values())
    # Even two epochs on tiny crops localise planted defects better than chance.
    assert values["pixel AUROC"] > 0.6
    with Image.open(out) as im:
        assert im.size[0] > 400 and im.size[1] > 150
