"""Tests of the evaluation report (``skanomaly.report`` and ``skanomaly evaluate``).

The browser test opens the page in headless Chromium (Debian's ``chromium``
package): every image must decode and the numbers shown must equal
:mod:`skanomaly.metrics` on the same data.
"""

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import NotFittedError
from sklearn.metrics import confusion_matrix

pytest.importorskip("matplotlib")

from skanomaly import DFRDetector, metrics  # noqa: E402
from skanomaly.cli import main  # noqa: E402
from skanomaly.datasets import make_defects  # noqa: E402
from skanomaly.report import evaluation_report, masks_for_images  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium); the report is "
           "checked in a real headless browser",
)


def _stripes(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    xx = np.mgrid[:size, :size][1]
    images = [
        np.clip(0.5 + 0.25 * np.sin(xx / 2.0 + rng.uniform(0, 2 * np.pi))
                + rng.normal(0, 0.02, (size, size)), 0, 1)
        for _ in range(n)
    ]
    return np.rint(np.stack(images) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny fitted DFR, and 5 normal + 5 defective 32-px test images on disk."""
    root = tmp_path_factory.mktemp("report")
    det = DFRDetector(weights=None, scales=4, image_size=32, max_epochs=2, batch_size=4,
                      device="cpu", random_state=0).fit(_stripes(8))
    good = _stripes(5, seed=1)
    bad, bad_masks = make_defects(_stripes(5, seed=2), kinds="stain",
                                  size_range=(0.3, 0.4), random_state=0)
    X = np.concatenate([good, bad])
    masks = np.concatenate([np.zeros_like(bad_masks), bad_masks])
    # Flag half the test images, so that this weak detector both misses
    # anomalous images and flags normal ones: every gallery has entries.
    det.offset_ = float(np.median(det.score_samples(X)))
    model = root / "model.skan"
    det.save(model)
    names = [f"ok{i}.png" for i in range(5)] + [f"bad{i}.png" for i in range(5)]
    (root / "test").mkdir()
    (root / "masks").mkdir()
    for name, image, mask in zip(names, X, masks):
        Image.fromarray(image).save(root / "test" / name)
        if mask.any():
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                root / "masks" / name.replace(".png", "_mask.png"))
    # A normal image may have a mask file without foreground.
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "ok0_mask.png")
    order = np.argsort(names)  # the CLI reads a folder in sorted order
    return dict(root=root, model=model, det=det, X=X[order], masks=masks[order],
                names=[names[i] for i in order])


class _Elements(HTMLParser):
    """Attributes and text of the elements with an id, the <body>'s attributes,
    the number of <img> and the image indices of each gallery's figures."""

    def __init__(self):
        super().__init__()
        self.by_id, self.body, self.n_img, self._open = {}, {}, 0, []
        self.galleries, self._section = {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        if tag == "section":
            self._section = attrs.get("id")
        if tag == "figure":
            self.galleries.setdefault(self._section, []).append(int(attrs["data-index"]))
        if tag == "img":
            self.n_img += 1
            return
        self._open.append(attrs.get("id"))
        if attrs.get("id"):
            self.by_id[attrs["id"]] = dict(attrs, text="")

    def handle_endtag(self, tag):
        if tag != "img" and self._open:
            self._open.pop()

    def handle_data(self, text):
        for key in self._open:
            if key:
                self.by_id[key]["text"] += text


def _parse(text):
    parser = _Elements()
    parser.feed(text)
    return parser


def _chromium(tmp_path, page, *extra):
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *extra, page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@needs_chromium
def test_report_renders_in_browser_with_the_metrics(data, tmp_path, capsys):
    root = data["root"]
    page = tmp_path / "report.html"
    status = main(["evaluate", str(data["model"]), str(root / "test"),
                   "--masks", str(root / "masks"), "-o", str(page), "--threads", "1"])
    assert status == 0
    assert "Evaluated 10 images (5 anomalous)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp file left

    source = page.read_text(encoding="utf-8")
    # Self-contained: every image is a data URI, nothing is linked.
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', source)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?:|href=|url\(|@import", source)

    dom = _parse(_chromium(tmp_path, page, "--dump-dom"))
    det, X, masks = data["det"], data["X"], data["masks"]
    y = masks.reshape(len(masks), -1).any(axis=1)
    anomaly = -det.score_samples(X)
    maps = det.transform(X)
    expected = {
        "image-auroc": metrics.image_auroc(y, anomaly),
        "pixel-auroc": metrics.pixel_auroc(masks, maps),
        "pro": metrics.pro_score(masks, maps),
    }
    for key, value in expected.items():
        assert dom.by_id[key]["text"] == f"{value:.3f}", key
        assert float(dom.by_id[key]["data-value"]) == pytest.approx(value, rel=1e-9, abs=0)
    assert dom.by_id["image-threshold"]["text"] == f"{det.offset_:.6g}"
    assert dom.by_id["pixel-threshold"]["text"] == f"{det.threshold_:.6g}"
    tn, fp, fn, tp = confusion_matrix(y, det.predict(X) == -1, labels=[0, 1]).ravel()
    shown = {k: int(dom.by_id[f"image-{k}"]["text"]) for k in ("tn", "fp", "fn", "tp")}
    assert shown == dict(tn=tn, fp=fp, fn=fn, tp=tp)
    ptn, pfp, pfn, ptp = confusion_matrix(masks.ravel(), det.segment(X).ravel()).ravel()
    shown = {k: int(dom.by_id[f"pixel-{k}"]["text"]) for k in ("tn", "fp", "fn", "tp")}
    assert shown == dict(tn=ptn, fp=pfp, fn=pfn, tp=ptp)
    assert fn > 0 and fp > 0  # the fixture's threshold makes both kinds of error
    assert dom.by_id["gallery-missed"]["data-count"] == str(fn)
    assert dom.by_id["gallery-false"]["data-count"] == str(fp)
    assert dom.by_id["gallery-top"]["data-shown"] == "8"
    predicted = det.predict(X) == -1
    ascending = np.argsort(anomaly).tolist()
    assert dom.galleries == {
        "gallery-top": ascending[::-1][:8],
        "gallery-missed": [i for i in ascending if y[i] and not predicted[i]],
        "gallery-false": [i for i in ascending[::-1] if not y[i] and predicted[i]],
    }
    # ROC, PRO, histogram and one overlay per gallery entry; all decoded.
    n_images = 3 + 8 + min(8, fn) + min(8, fp)
    assert dom.n_img == n_images
    assert dom.body["data-images-total"] == str(n_images)
    assert dom.body["data-images-loaded"] == str(n_images)

    shot = tmp_path / "report.png"
    _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,3000")
    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        assert np.asarray(im.convert("L")).std() > 10  # not a blank page


def test_mvtec_layout_needs_no_masks_option(data, tmp_path, capsys):
    category = tmp_path / "stripes"
    names, X, masks = data["names"], data["X"], data["masks"]
    (category / "train" / "good").mkdir(parents=True)
    Image.fromarray(X[0]).save(category / "train" / "good" / "000.png")
    for sub in ("test/good", "test/stain", "ground_truth/stain"):
        (category / sub).mkdir(parents=True)
    for name, image, mask in zip(names, X, masks):
        stem = Path(name).stem
        if mask.any():
            Image.fromarray(image).save(category / "test" / "stain" / f"{stem}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                category / "ground_truth" / "stain" / f"{stem}_mask.png")
        else:
            Image.fromarray(image).save(category / "test" / "good" / f"{stem}.png")
    page = tmp_path / "mvtec.html"
    assert main(["evaluate", str(data["model"]), str(category / "test"), "-o", str(page)]) == 0
    dom = _parse(page.read_text(encoding="utf-8"))
    det = data["det"]
    y = masks.reshape(len(masks), -1).any(axis=1)
    assert dom.by_id["image-auroc"]["text"] == (
        f"{metrics.image_auroc(y, -det.score_samples(X)):.3f}")
    assert dom.by_id["pro"]["text"] == f"{metrics.pro_score(masks, det.transform(X)):.3f}"
    assert "stain/bad0.png" in page.read_text(encoding="utf-8")
    assert "Evaluated 10 images (5 anomalous)" in capsys.readouterr().out
    # Defective test images only: all anomalous, not read as scikit-learn's +1.
    shutil.rmtree(category / "test" / "good")
    assert main(["evaluate", str(data["model"]), str(category / "test"), "-o", str(page)]) == 0
    assert "Evaluated 5 images (5 anomalous)" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("no-masks", "is not an MVTec AD category"),
    ("not-html", "ending in .html"),
    ("overwrite-model", "would overwrite one of the inputs"),
    ("unmatched-masks", "matches a test image"),
    ("masks-are-images", "holds the test images themselves"),
    ("bad-gallery", "--n-gallery must be at least 1, got 0"),
    ("mvtec-and-masks", "is an MVTec AD category whose masks are read from ground_truth/"),
])
def test_evaluate_errors_exit_2_in_one_line(case, message, data, tmp_path, capsys):
    root = data["root"]
    model, test, mask_dir = str(data["model"]), str(root / "test"), str(root / "masks")
    out = str(tmp_path / "r.html")
    argv = {
        "no-masks": [model, test, "-o", out],
        "not-html": [model, test, "--masks", mask_dir, "-o", str(tmp_path / "r.png")],
        "overwrite-model": None,
        "unmatched-masks": None,
        "masks-are-images": [model, test, "--masks", test, "-o", out],
        "bad-gallery": [model, test, "--masks", mask_dir, "-o", out, "--n-gallery", "0"],
        "mvtec-and-masks": None,
    }[case]
    if case == "mvtec-and-masks":
        category = tmp_path / "category"
        (category / "test").mkdir(parents=True)
        (category / "ground_truth").mkdir()
        argv = [model, str(category), "--masks", mask_dir, "-o", out]
    if case == "overwrite-model":
        out = str(tmp_path / "model.html")
        shutil.copy(model, out)
        argv = [out, test, "--masks", mask_dir, "-o", out]
    if case == "unmatched-masks":
        other = tmp_path / "other"
        other.mkdir()
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(other / "unrelated.png")
        argv = [model, test, "--masks", str(other), "-o", out]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skanomaly: error: ") and err.count("\n") == 1, err
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_api_checks_ground_truth(data, tmp_path):
    det, X, masks = data["det"], data["X"], data["masks"]
    page = tmp_path / "r.html"
    with pytest.raises(ValueError, match="needs ground truth"):
        evaluation_report(det, X, path=page)
    y = np.zeros(len(X), dtype=int)  # says normal where masks show defects
    with pytest.raises(ValueError, match="labelled normal in y have defect pixels"):
        evaluation_report(det, X, y, masks=masks, path=page)
    with pytest.raises(ValueError, match="names"):
        evaluation_report(det, X, masks=masks, names=["a"], path=page)
    with pytest.raises(ValueError, match="n_gallery must be a positive integer; got 0"):
        evaluation_report(det, X, masks=masks, path=page, n_gallery=0)
    with pytest.raises(NotFittedError):
        evaluation_report(DFRDetector(), X, masks=masks, path=page)
    assert not page.exists()


def test_api_defective_images_only(data, tmp_path):
    # A folder of defects evaluated alone: 1s could mean all anomalous (0/1)
    # or all normal (scikit-learn's +1), so they are refused; booleans say it.
    det, X, masks = data["det"], data["X"], data["masks"]
    bad = masks.reshape(len(masks), -1).any(axis=1)
    page = tmp_path / "r.html"
    with pytest.raises(ValueError, match="y holds only 1s"):
        evaluation_report(det, X[bad], np.ones(bad.sum()), path=page)
    result = evaluation_report(det, X[bad], np.ones(bad.sum(), bool), path=page, n_gallery=2)
    assert result.n_anomalous == bad.sum()
    assert result.confusion["tp"] + result.confusion["fn"] == bad.sum()


def test_api_one_class_shows_na_and_write_is_atomic(data, tmp_path, monkeypatch):
    det, X, masks = data["det"], data["X"], data["masks"]
    normal = ~masks.reshape(len(masks), -1).any(axis=1)
    page = tmp_path / "r.html"
    result = evaluation_report(det, X[normal], np.zeros(normal.sum()), path=page,
                               n_gallery=2)
    assert (result.image_auroc, result.pixel_auroc, result.pro) == (None, None, None)
    assert result.confusion["tn"] + result.confusion["fp"] == normal.sum()
    dom = _parse(page.read_text(encoding="utf-8"))
    assert [dom.by_id[k]["text"] for k in ("image-auroc", "pixel-auroc", "pro")] == ["n/a"] * 3
    assert dom.by_id["gallery-top"]["data-shown"] == "2"
    # No ROC or PRO curve without both classes: the histogram and the galleries.
    assert dom.n_img == 1 + 2 + min(2, result.confusion["fp"])
    # A failure while replacing leaves the previous report whole and no temp file.
    before = page.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("skanomaly.report.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        evaluation_report(det, X, masks=masks, path=page)
    assert page.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_masks_for_images(tmp_path):
    for name, fill in (("a_mask.png", 255), ("b.png", 0), ("c_mask.png", 200),
                       ("e.png", 255), ("e_mask.bmp", 255)):
        Image.fromarray(np.full((8, 8), fill, np.uint8)).save(tmp_path / name)
    masks, found = masks_for_images(["x/a.png", "x/b.jpg", "x/d.png"], tmp_path, (4, 4))
    assert masks.shape == (3, 4, 4) and masks.dtype == bool
    assert [bool(m.all()) for m in masks] == [True, False, False]
    assert not masks[1:].any()
    assert [None if f is None else Path(f).name for f in found] == ["a_mask.png", "b.png", None]
    with pytest.raises(ValueError, match=r"2 files in .* could be the mask of x/e.png "
                                         r"\(e_mask.bmp, e.png\); keep one"):
        masks_for_images(["x/a.png", "x/e.png"], tmp_path, (4, 4))
