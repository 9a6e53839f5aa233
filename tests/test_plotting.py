"""Tests of skanomaly.plotting: figures render to PNG files of the expected size."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

from skanomaly.plotting import (  # noqa: E402
    plot_anomaly_map,
    plot_anomaly_maps,
    plot_pro_curve,
    plot_roc_curve,
    save_figure,
)


def _data(n=6, size=24, rgb=False, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, size, size, 3) if rgb else (n, size, size)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    masks[::2, 5:12, 6:14] = True
    heat = rng.uniform(0, 0.5, (n, size, size)) + 0.6 * masks
    return images, masks, heat


def _png(path):
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB")), im.size


def test_plot_anomaly_map_png(tmp_path):
    images, masks, heat = _data(rgb=True)
    ax = plot_anomaly_map(images[0], heat[0], mask=masks[0], threshold=0.55,
                          title="x", figsize=(3, 2), dpi=50)
    path = save_figure(ax.figure, tmp_path / "one.png")
    pixels, size = _png(path)
    assert size == (150, 100)
    # Not blank: the overlay has many distinct colours.
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    # Both contours were drawn (ground truth and thresholded prediction).
    assert len(ax.collections) >= 2 or len(ax.lines) >= 2


def test_contours_follow_masks(tmp_path):
    images, masks, heat = _data()
    ax = plot_anomaly_map(images[0], heat[0], mask=masks[0], predicted=masks[0])
    ax_none = plot_anomaly_map(images[1], heat[1], mask=masks[1])  # empty mask
    n_with = sum(len(getattr(c, "get_paths", lambda: [])()) for c in ax.collections)
    n_without = sum(len(getattr(c, "get_paths", lambda: [])()) for c in ax_none.collections)
    assert n_with > n_without


def test_plot_anomaly_maps_grid(tmp_path):
    images, masks, heat = _data(n=5)
    path = tmp_path / "grid.png"
    fig = plot_anomaly_maps(images, heat, masks=masks, scores=heat.max(axis=(1, 2)),
                            labels=masks.any(axis=(1, 2)).astype(int), n_cols=3,
                            panel_size=1.0, dpi=40, path=path)
    pixels, size = _png(path)
    # 3 columns x (image + overlay) by 2 rows, 40 px per panel.
    assert size == (240, 80)
    assert pixels.std() > 10
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert any("anomalous" in t for t in titled) and any("score" in t for t in titled)
    flat = plot_anomaly_maps(images.reshape(5, -1).reshape(5, 24, 24), heat.reshape(5, -1),
                             show_image=False, n_cols=5, panel_size=1.0, dpi=20)
    assert tuple(flat.get_size_inches()) == (5.0, 1.0)


def test_plot_roc_curve(tmp_path):
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50), np.ones(50)]
    s = y + rng.normal(0, 0.5, 100)
    ax = plot_roc_curve(y, s, label="DFR", dpi=50, path=tmp_path / "roc.png")
    _, size = _png(tmp_path / "roc.png")
    assert size == (200, 200)
    from sklearn.metrics import roc_auc_score

    assert f"{roc_auc_score(y, s):.3f}" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="both"):
        plot_roc_curve(np.zeros(4), np.arange(4))


def test_plot_pro_curve(tmp_path):
    _, masks, heat = _data(n=6, size=24)
    ax = plot_pro_curve(masks, heat, label="perfect-ish", dpi=50, path=tmp_path / "pro.png")
    _, size = _png(tmp_path / "pro.png")
    assert size == (200, 200)
    line = ax.get_lines()[0]
    x, y = line.get_xdata(), line.get_ydata()
    assert x.max() == pytest.approx(0.3)
    assert np.all(np.diff(x) >= 0) and np.all((y >= 0) & (y <= 1))
    # The separable synthetic maps reach full overlap early.
    assert y[-1] == pytest.approx(1.0)


def test_bad_inputs(tmp_path):
    images, masks, heat = _data()
    with pytest.raises(ValueError, match="size"):
        plot_anomaly_map(images[0], heat[0][:10])
    with pytest.raises(ValueError, match="heatmaps"):
        plot_anomaly_maps(images, heat[:2])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        plot_anomaly_map(np.zeros((4, 4, 2)), np.zeros((4, 4)))
    ax = plot_anomaly_map(images[0], heat[0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_figure(ax.figure, tmp_path / "missing" / "x.png")
