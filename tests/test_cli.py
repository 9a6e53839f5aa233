"""End-to-end tests of the command line (in-process ``main([...])`` calls)."""

import csv

import numpy as np
import pytest
from PIL import Image

import skanomaly
from skanomaly.cli import main
from skanomaly.datasets import make_defects

TINY_DFR = [
    "--param", "weights=None", "--param", "scales=4", "--param", "image_size=32",
    "--param", "max_epochs=3", "--param", "random_state=0", "--param", "batch_size=4",
]


def _texture(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    _, xx = np.mgrid[:size, :size]
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


# ------------------------------------------------------- inputs never overwritten


@pytest.mark.parametrize("quoted", [True, False])
def test_fit_refuses_to_overwrite_a_weights_file(quoted, folders, tmp_path, capsys):
    # A file a parameter names is read by fit: the model must not replace it.
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"backbone weights")
    value = f"'{weights}'" if quoted else str(weights)
    tiny = [a for a in TINY_DFR if a != "weights=None"]
    tiny.remove("--param")
    argv = ["fit", str(folders / "good"), "-o", str(weights), "-q",
            "--param", f"weights={value}", *tiny]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "one of the inputs" in err and "-o" in err and "Traceback" not in err
    assert weights.read_bytes() == b"backbone weights"


def test_export_refuses_to_overwrite_its_model(model_path, tmp_path, capsys):
    import shutil

    model = tmp_path / "model.onnx"  # a safe model file under an ONNX name
    shutil.copy(model_path, model)
    before = model.read_bytes()
    capsys.readouterr()
    assert main(["export", str(model), "-o", str(model)]) == 2
    err = capsys.readouterr().err
    assert "one of the inputs" in err and "-o" in err
    assert model.read_bytes() == before
    assert skanomaly.load(model).input_shape_ == (32, 32, 1)


def test_rewritten_files_keep_their_permissions(model_path, folders, tmp_path):
    import os
    import stat

    from skanomaly._files import atomic_path

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    private = tmp_path / "private.csv"
    private.write_text("old scores\n")
    private.chmod(0o600)
    assert main(["score", str(model_path), str(folders / "new"), "-o", str(private),
                 "-q"]) == 0
    assert private.read_text().startswith("path,score,label")
    assert mode(private) == 0o600
    # det.save over a private model keeps it private too.
    saved = tmp_path / "private.skan"
    saved.write_bytes(b"")
    saved.chmod(0o640)
    skanomaly.load(model_path).save(saved)
    assert mode(saved) == 0o640
    # A new file gets what open() gives it: 0666 less the umask.
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(tmp_path / "new.txt") as tmp:
        tmp.write_text("x")
    assert mode(tmp_path / "new.txt") == 0o666 & ~umask


# --------------------------------------------------------------- out of memory


def _huge_numpy_array(*args, **kwargs):
    return np.empty(2**62, dtype=np.uint8)  # beyond any address space: MemoryError


def _cpu_allocator(*args, **kwargs):
    raise RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 36000000000000 bytes. Error code 12 (Cannot "
        "allocate memory)"
    )


def _cuda_allocator(*args, **kwargs):
    import torch

    raise torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
        "79.19 GiB of which 3.12 GiB is free.\nIf reserved but unallocated memory is large "
        "try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    )


@pytest.mark.parametrize(
    "fail, amount",
    [(_huge_numpy_array, "4.00 EiB"), (_cpu_allocator, "32.7 TiB"),
     (_cuda_allocator, "20.00 GiB")],
    ids=["numpy", "torch-cpu", "torch-cuda"],
)
def test_out_of_memory_is_one_line(fail, amount, folders, tmp_path, monkeypatch, capsys):
    from skanomaly import DFRDetector

    monkeypatch.setattr(DFRDetector, "fit", fail)
    out = tmp_path / "m.skan"
    capsys.readouterr()
    assert main(["fit", str(folders / "good"), "-o", str(out), "-q", *TINY_DFR]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("skanomaly: error: out of memory")
    assert amount in lines[0]
    assert all(knob in lines[0] for knob in ("image_size", "batch_size", "width", "--resize"))
    assert not out.exists()


def test_other_runtime_errors_and_interrupts_are_not_user_errors(folders, tmp_path,
                                                                 monkeypatch):
    from skanomaly import DFRDetector

    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    argv = ["fit", str(folders / "good"), "-o", str(tmp_path / "m.skan"), "-q", *TINY_DFR]
    monkeypatch.setattr(DFRDetector, "fit", bug)
    with pytest.raises(RuntimeError, match="mat1"):
        main(argv)
    monkeypatch.setattr(DFRDetector, "fit", interrupt)
    assert main(argv) == 130


# ------------------------------------------------------------ file names, sizes


def test_heatmap_of_a_file_name_with_dollars(model_path, folders, tmp_path):
    import shutil

    name = "cost_$\\alpha^$.png"  # mathtext, and invalid mathtext at that
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(folders / "new" / "ok0.png", images / name)
    out = tmp_path / "maps"
    assert main(["heatmap", str(model_path), str(images), "-o", str(out), "--dpi", "20",
                 "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cost_$\\alpha^$_heatmap.png"]


def test_fit_on_mixed_sizes_names_resize(tmp_path, capsys):
    from skanomaly.datasets import ImageFolderSequence

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(_texture(1)[0]).save(folder / "a.png")
    Image.fromarray(_texture(1, size=24)[0]).save(folder / "b.png")
    capsys.readouterr()
    assert main(["fit", str(folder), "-o", str(tmp_path / "m.skan"), "-q", *TINY_DFR]) == 2
    err = capsys.readouterr().err
    assert "--resize" in err and "size=(H, W)" not in err and "b.png" in err
    # The library names its own argument.
    with pytest.raises(ValueError, match=r"pass size=\(H, W\)"):
        ImageFolderSequence(folder)[1]


# -------------------------------------------------------------------- demo -o


@pytest.mark.parametrize(
    "output, message",
    [("{tmp}/missing/demo.png", "does not exist"), ("{tmp}", "is a folder"),
     ("{tmp}/demo", "ending in .png"), ("{tmp}/demo.tmp", "ending in .png")],
    ids=["no-folder", "folder", "no-extension", "unknown-extension"],
)
def test_demo_checks_its_output_first(output, message, tmp_path, monkeypatch, capsys):
    import skanomaly.datasets

    def no_data(*args, **kwargs):
        raise AssertionError("the demo made its data before checking -o")

    monkeypatch.setattr(skanomaly.datasets, "make_texture_defects", no_data)
    capsys.readouterr()
    assert main(["demo", "-o", output.format(tmp=tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "-o" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ tiled models


@pytest.fixture(scope="module")
def tiled(folders):
    from skanomaly import DFRDetector, TiledDetector

    inner = DFRDetector(weights=None, scales=4, image_size=None, max_epochs=1,
                        batch_size=4, random_state=0, verbose=0)
    det = TiledDetector(inner, tile_size=16).fit(_texture(3))
    path = folders / "tiled.skan"
    det.save(path)
    return det, path


def test_tiled_model_score_heatmap_evaluate(tiled, folders, tmp_path, capsys):
    det, path = tiled
    out = tmp_path / "scores.csv"
    assert main(["score", str(path), str(folders / "new"), "-o", str(out), "-q"]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    X = np.stack([np.asarray(Image.open(r["path"])) for r in rows])
    np.testing.assert_allclose([float(r["score"]) for r in rows], -det.score_samples(X),
                               rtol=1e-4)
    maps = tmp_path / "maps"
    assert main(["heatmap", str(path), str(folders / "new" / "bad0.png"), "-o", str(maps),
                 "--dpi", "20", "-q"]) == 0
    assert [p.name for p in maps.iterdir()] == ["bad0_heatmap.png"]
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(masks / "bad0_mask.png")
    report = tmp_path / "report.html"
    assert main(["evaluate", str(path), str(folders / "new"), "--masks", str(masks), "-o",
                 str(report), "--n-gallery", "1", "-q"]) == 0
    assert "TiledDetector" in report.read_text()


def test_tiled_model_export_is_refused(tiled, tmp_path, capsys):
    _, path = tiled
    capsys.readouterr()
    assert main(["export", str(path), "-o", str(tmp_path / "t.onnx")]) == 2
    err = capsys.readouterr().err
    assert "TiledDetector" in err and "cannot be exported" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
