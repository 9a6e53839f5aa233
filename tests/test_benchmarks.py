"""The benchmark runners' shared helpers (no detector is trained here)."""

import os
import sys

import numpy as np
import pytest

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

pytest.importorskip("skimage")
_common = pytest.importorskip("_common")


def test_texture_source_fits_large_crops():
    # 205 test rows at 512 px: larger crops need the texture resized.
    assert _common.texture_source("brick", 200) == "brick"
    big = _common.texture_source("grass", 256)
    assert big.dtype == np.uint8 and big.shape == (640, 640)
    data = _common.texture_data("grass", 256, n_train=3, n_test=4, seed=0)
    assert data.X_train.shape == (3, 256, 256)
    assert data.masks_test.shape == (4, 256, 256)
    assert data.masks_test[data.y_test == 1].any(axis=(1, 2)).all()
    assert data.texture == "grass"


def test_complete_rows_marks_what_did_not_run():
    rows = [{"texture": "brick", "detector": "dfr", "image AUROC": 0.7, "error": ""}]
    grid = [("brick", "dfr"), ("brick", "igd")]
    out = _common.complete_rows(rows, ["texture", "detector"], grid, ("image AUROC",))
    assert out[0]["image AUROC"] == 0.7
    assert out[1]["image AUROC"] == _common.NOT_RUN
    table = _common.markdown_table(out, ["texture", "detector"], ("image AUROC",))
    assert "| brick | igd | not run |" in table
    assert "| brick | dfr | 0.700 |" in table


def test_rows_round_trip_through_json(tmp_path):
    path = str(tmp_path / "rows.json")
    rows = [{"texture": "brick", "image AUROC": np.float64(0.5), "PRO": np.nan}]
    _common.save_rows(path, rows, {"command": "x"})
    loaded, settings = _common.load_rows([path])
    assert loaded[0]["image AUROC"] == 0.5 and np.isnan(loaded[0]["PRO"])
    assert "command=x" in settings[0]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_kind_measures_separate_the_kinds_of_defect():
    from _common import kind_measures

    masks = np.zeros((4, 4, 4), bool)
    masks[1, :2, :2] = True  # a scratch, found
    masks[2, 2:, 2:] = True  # a patch, missed
    maps = np.zeros((4, 4, 4))
    maps[1][masks[1]] = 1.0
    maps[0, 0, 0] = 0.5  # one normal pixel above the missed patch
    y = np.array([0, 1, 1, 0])
    kinds = [(), ("scratch",), ("patch",), ()]
    out = kind_measures(y, masks, kinds, maps.max(axis=(1, 2)), maps)
    assert out["pixel AUROC scratch"] == 1.0 and out["image AUROC scratch"] == 1.0
    # Patch pixels (0) against 63 - 8 = 56 defect-free pixels, one of them 0.5.
    assert out["pixel AUROC patch"] == pytest.approx(0.5 - 0.5 / 56)
    assert out["image AUROC patch"] == pytest.approx(0.25)
    assert out["defect pixels scratch"] == out["defect pixels patch"] == 0.5


def test_patch_figure_shows_patched_crops(tmp_path):
    pytest.importorskip("matplotlib")
    import bench_patch_smoothness as bench

    X, masks = bench.patched_crops("brick", 3, seed=0, size=64)
    assert X.shape == (3, 64, 64) and masks.shape == (3, 64, 64)
    assert masks.any(axis=(1, 2)).all()  # one patch in every crop
    assert (X != bench.patched_crops("brick", 3, seed=1, size=64)[0]).any()
    path = tmp_path / "patches.jpg"
    bench.save_figure(str(path), ("brick", "grass"), per_texture=2, seed=0, size=64)
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG, chosen by the extension
    assert os.listdir(tmp_path) == ["patches.jpg"]  # no temporary file left


def test_paper_preset_runs_once_not_once_per_budget():
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quick")
    _common.add_run_options(parser)
    quick = parser.parse_args([])
    assert _common.run_budgets(quick) == list(_common.BUDGETS)
    assert _common.run_budgets(parser.parse_args(["--budget", "small"])) == ["small"]
    paper = parser.parse_args(["--preset", "paper"])
    assert _common.run_budgets(paper) == ["paper"]
    # The budgets change the quick preset only: a paper run has one line of settings.
    assert _common.budget_text(["dfr"], preset="paper")[0].startswith("paper: ")
    assert len(_common.budget_text(["dfr"])) == len(_common.BUDGETS)
    # Combined reports show the paper column only when some rows ran it.
    assert _common.report_budgets(quick, [{"budget": "small"}]) == list(_common.BUDGETS)
    assert _common.report_budgets(quick, [{"budget": "paper"}]) == [*_common.BUDGETS, "paper"]
    # A labelled run (--budget-label) gets its own column, after the budgets.
    labelled = parser.parse_args(["--budget", "large", "--budget-label", "100 epochs"])
    assert _common.budget_label(labelled, "large") == "100 epochs"
    assert _common.budget_label(quick, "small") == "small"
    assert _common.report_budgets(quick, [{"budget": "-"}, {"budget": "100 epochs"}]) == [
        *_common.BUDGETS, "100 epochs"]
    with pytest.raises(ValueError, match="--budget-label names one budget"):
        _common.budget_label(parser.parse_args(["--budget-label", "x"]), "small")


def test_reports_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    _common.write_text(str(path), "old\n")
    _common.write_report(str(path), "T", {"a": 1}, [("S", "body")])
    assert "## S" in path.read_text()

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(_common.os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        _common.write_report(str(path), "T", {}, [("New", "x")])
    assert "## S" in path.read_text()  # the previous report is whole
    assert sorted(os.listdir(tmp_path)) == ["report.md"]  # no temporary file left


def test_fashion_mnist_tables_give_each_auroc_its_standard_error():
    import run_fashion_mnist as fm

    labels = np.array([0] * 40 + [1] * 60)
    counts = fm.class_counts(labels, [0, 1])
    assert counts == {"0 T-shirt/top": (60, 40), "1 Trouser": (40, 60)}
    rows = [{"class": "0 T-shirt/top", "detector": "dfr", "budget": "large",
             "image AUROC": 0.9, "fit s": 1.0, "score s": 1.0, "error": ""},
            {"class": "1 Trouser", "detector": "dfr", "budget": "large", "image AUROC": 0.8,
             "fit s": 1.0, "score s": 1.0, "error": "", "n defective": 10, "n normal": 10}]
    table, means = fm._tables(rows, [0, 1], ["dfr"], ["large"], counts)
    se0 = _common.auroc_se(0.9, 60, 40)  # from the protocol's counts
    se1 = _common.auroc_se(0.8, 10, 10)  # the row's own counts win
    assert f"| 0 T-shirt/top | dfr | large | 0.900 | {se0:.3f} |" in table
    assert f"| 1 Trouser | dfr | large | 0.800 | {se1:.3f} |" in table
    assert f"| dfr | large | 2/2 | 0.850 | {np.hypot(se0, se1) / 2:.3f} |" in means
