"""Model out: `export` writes a bundle whose ONNX model matches PyTorch, and `predict --model` runs it."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
from PIL import Image

from tlcore.export import write as export
from tlcore.export.bundle import BundleError, load_predictor, open_bundle
from tlcore.training.jobs import JobManager

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def tlcore(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tlcore", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=os.environ.copy())


def write_photos(folder: Path) -> list[Path]:
    """Whole scikit-image photos as JPEG and PNG files (other sizes than any training image)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(PHOTOS):
        path = folder / f"{name}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, make_class_folders, tiny_config) -> tuple[Path, str, Path]:
    """(runs folder, run id, base folder) of a simple_cnn run on three real-photo classes (seconds)."""
    base = tmp_path_factory.mktemp("export")
    folder = make_class_folders(base / "photos", per_class=6)
    manager = JobManager(base / "runs")
    run_id = manager.submit(tiny_config(data=str(folder), epochs=1, subset=None))
    assert manager.wait(run_id, timeout=120)
    assert manager.snapshot(run_id)["status"] == "finished"
    return base / "runs", run_id, base


@pytest.fixture(scope="module")
def small_bundle(small_run) -> tuple[Path, export.ExportResult]:
    runs, run_id, base = small_run
    return base / "bundle", export.export_run(run_id, runs, base / "bundle")


@pytest.fixture
def bundle_copy(small_bundle, tmp_path) -> Path:
    """A fresh copy of the small bundle, for tests that damage it."""
    src, _ = small_bundle
    dst = tmp_path / "bundle"
    dst.mkdir()
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return dst


# ---- the bundle ---------------------------------------------------------------------------------


def test_bundle_files_and_the_check_on_validation_images(small_bundle) -> None:
    folder, result = small_bundle
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "model.onnx", "model.safetensors", "tlcore.json"]
    assert result.files == ["model.onnx", "model.safetensors", "tlcore.json", "README.md"]
    # 6 images per class, 20% validation: 1 per class; all of them were checked.
    assert result.check_inputs == "validation images" and result.checked_images == 3
    assert result.max_abs_diff < 1e-4 and result.top1_agree == 1.0
    meta = json.loads((folder / "tlcore.json").read_text())
    assert meta["class_names"] == ["cat", "coffee", "rocket"]
    assert meta["preprocessing"] == {**meta["preprocessing"], "resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert meta["head"] == {"kind": "linear", "hidden": []} and meta["backbone"] == "simple_cnn"
    assert meta["run"]["config"]["image_size"] == 32 and 0 <= meta["run"]["best_val_acc"] <= 1
    assert meta["check"]["max_abs_diff"] == result.max_abs_diff


def test_onnx_metadata_holds_the_same_facts_and_the_batch_is_dynamic(small_bundle) -> None:
    folder, _ = small_bundle
    meta = json.loads((folder / "tlcore.json").read_text())
    model = onnx.load(str(folder / "model.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["backbone"] == "simple_cnn"
    assert json.loads(props["class_names"]) == meta["class_names"]
    assert json.loads(props["preprocessing"]) == meta["preprocessing"]
    assert json.loads(props["versions"]) == meta["versions"] and "torch" in meta["versions"]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        assert session.run(None, {"input": np.zeros((n, 3, 32, 32), np.float32)})[0].shape == (n, 3)


def test_readme_example_gives_what_tlcore_gives(small_bundle, tmp_path) -> None:
    folder, _ = small_bundle
    code = re.search(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S).group(1)
    predictor = load_predictor(folder)
    for photo in write_photos(tmp_path / "photos"):
        printed = io.StringIO()
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            exec(code.replace('"photo.jpg"', repr(str(photo))), {"print": lambda *a, out=printed: out.write(" ".join(map(str, a)))})
        finally:
            os.chdir(cwd)
        label, prob = printed.getvalue().rsplit(" ", 1)
        [result] = predictor.predict([photo], k=1)
        assert label == result.predictions[0].label
        assert float(prob) == pytest.approx(result.predictions[0].prob, abs=1e-6)


def test_onnxruntime_and_safetensors_engines_agree_with_the_run(small_run, small_bundle, tmp_path) -> None:
    from tlcore.predict import run_predictor

    runs, run_id, _ = small_run
    folder, _ = small_bundle
    photos = write_photos(tmp_path / "photos")
    reference = run_predictor(run_id, runs, device="cpu").predict(photos, k=3)
    for engine in ("onnxruntime", "pytorch"):
        predictor = load_predictor(folder, engine=engine)
        assert predictor.engine == engine
        for got, want in zip(predictor.predict(photos, k=3), reference, strict=True):
            assert [p.label for p in got.predictions] == [p.label for p in want.predictions]
            assert [p.prob for p in got.predictions] == pytest.approx([p.prob for p in want.predictions], abs=1e-5)


def test_a_disagreeing_onnx_export_fails_and_writes_nothing(small_run, tmp_path, monkeypatch) -> None:
    runs, run_id, _ = small_run
    real = export.write_onnx

    def perturbed(model, crop, path, facts):  # what a broken exporter would hand back
        import torch

        with torch.no_grad():
            model.fc.bias += 1.0
        real(model, crop, path, facts)
        with torch.no_grad():
            model.fc.bias -= 1.0

    monkeypatch.setattr(export, "write_onnx", perturbed)
    with pytest.raises(export.ExportError, match="disagrees with PyTorch"):
        export.export_run(run_id, runs, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_export_without_the_dataset_checks_random_inputs(small_run, tmp_path) -> None:
    runs, run_id, base = small_run
    config = runs / run_id / "config.json"
    saved = config.read_text()
    config.write_text(json.dumps({**json.loads(saved), "data": str(base / "gone")}))
    try:
        result = export.export_run(run_id, runs, tmp_path / "out", formats=("onnx",))
    finally:
        config.write_text(saved)
    assert result.check_inputs == "random inputs" and result.checked_images == export.CHECK_IMAGES
    assert result.files == ["model.onnx", "tlcore.json", "README.md"]
    assert load_predictor(tmp_path / "out").engine == "onnxruntime"
    with pytest.raises(BundleError, match="has no model.safetensors"):
        load_predictor(tmp_path / "out", engine="pytorch")


def test_bundle_zip_is_built_once_and_loads(small_run, monkeypatch) -> None:
    runs, run_id, _ = small_run
    first = export.bundle_zip(run_id, runs)
    assert first == runs / run_id / export.ZIP_NAME
    names = zipfile.ZipFile(first).namelist()
    assert sorted(names) == sorted(f"tlcore-{run_id}/{n}" for n in
                                   ("README.md", "model.onnx", "model.safetensors", "tlcore.json"))

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached zip should have been reused")

    monkeypatch.setattr(export, "export_run", no_rebuild)
    assert export.bundle_zip(run_id, runs) == first
    assert load_predictor(first).class_names == ["cat", "coffee", "rocket"]


# ---- damaged bundles are refused with one line ---------------------------------------------------


def _rewrite_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "tlcore.json").read_text())
    (folder / "tlcore.json").write_text(json.dumps({**meta, **changes}))


def _refresh_checksum(folder: Path, name: str) -> None:
    meta = json.loads((folder / "tlcore.json").read_text())
    meta["files"][name]["sha256"] = export.file_digest(folder / name)
    (folder / "tlcore.json").write_text(json.dumps(meta))


def test_missing_or_broken_tlcore_json(bundle_copy) -> None:
    (bundle_copy / "tlcore.json").write_text("{not json")
    with pytest.raises(BundleError, match="tlcore.json is not valid JSON"):
        open_bundle(bundle_copy)
    (bundle_copy / "tlcore.json").unlink()
    with pytest.raises(BundleError, match="no tlcore.json"):
        open_bundle(bundle_copy)


@pytest.mark.parametrize(("changes", "what"), [
    ({"format": "keras"}, "does not describe a tlcore model bundle"),
    ({"format_version": 99}, "format version 99"),
    ({"class_names": ["only one"]}, "class_names"),
    ({"backbone": "../../etc"}, "backbone"),
    ({"preprocessing": {"resize": 32, "crop": 64, "mean": [0.5] * 3, "std": [0.5] * 3}}, "preprocessing"),
    ({"files": {}}, "files list"),
])
def test_wrong_tlcore_json_fields(bundle_copy, changes, what) -> None:
    _rewrite_meta(bundle_copy, **changes)
    with pytest.raises(BundleError, match=re.escape(what)) as info:
        load_predictor(bundle_copy)
    assert "\n" not in str(info.value)


def test_tampered_onnx_is_refused(bundle_copy) -> None:
    data = bytearray((bundle_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.onnx does not match the checksum"):
        load_predictor(bundle_copy)
    # Checksum forged too: the file itself must still be a graph onnxruntime accepts.
    (bundle_copy / "model.onnx").write_bytes(b"\x08\x07" + b"garbage" * 100)
    _refresh_checksum(bundle_copy, "model.onnx")
    with pytest.raises(BundleError, match="onnxruntime cannot load model.onnx"):
        load_predictor(bundle_copy)


def test_safetensors_with_other_shapes_is_refused(bundle_copy) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(bundle_copy / "model.safetensors"))
    state["fc.weight"] = state["fc.weight"][:2]  # a head for 2 classes, not 3
    save_file(state, str(bundle_copy / "model.safetensors"))
    _refresh_checksum(bundle_copy, "model.safetensors")
    with pytest.raises(BundleError, match="model.safetensors does not fit simple_cnn") as info:
        load_predictor(bundle_copy, engine="pytorch")
    assert "fc.weight" in str(info.value)


def test_a_dataset_zip_or_a_hostile_zip_is_not_a_bundle(image_zip, tmp_path) -> None:
    with pytest.raises(BundleError, match="no tlcore.json"):
        load_predictor(image_zip)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../outside.txt", "x")
    with pytest.raises(BundleError, match="no files to extract"):
        load_predictor(evil)
    assert not (tmp_path.parent / "outside.txt").exists()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match="not a bundle folder or a zip"):
        load_predictor(tmp_path / "notes.txt")


def test_cli_refuses_a_damaged_bundle_in_one_line(bundle_copy, tmp_path) -> None:
    [photo] = write_photos(tmp_path / "p")[:1]
    (bundle_copy / "model.safetensors").write_bytes(b"not safetensors")
    proc = tlcore("predict", str(photo), "--model", str(bundle_copy))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "model.safetensors does not match the checksum" in proc.stderr


# ---- the real thing: efficientnet_lite0, through the command line -------------------------------


@pytest.fixture(scope="module")
def lite0_export(tmp_path_factory, make_class_folders) -> tuple[Path, str, dict, Path]:
    """(runs folder, run id, export --json result, photos folder) of a Lite0 feature-extraction run."""
    base = tmp_path_factory.mktemp("lite0")
    data = make_class_folders(base / "data", per_class=10, size=96)
    runs = base / "runs"
    proc = tlcore("train", "--data", str(data), "--backbone", "efficientnet_lite0", "--strategy",
                  "feature_extraction", "--image-size", "64", "--epochs", "1", "--device", "cpu",
                  "--runs-dir", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
    proc = tlcore("export", run_id, "--out", str(base / "bundle"), "--runs-dir", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    return runs, run_id, json.loads(proc.stdout.strip().splitlines()[-1]), base


@pytest.mark.slow
def test_lite0_onnx_matches_pytorch_on_real_images(lite0_export) -> None:
    _, _, result, base = lite0_export
    assert result["bundle"] == str(base / "bundle")
    assert result["files"] == ["model.onnx", "model.safetensors", "tlcore.json", "README.md"]
    assert result["checked_images"] == 6 and result["check_inputs"] == "validation images"  # 2 per class
    assert 0 <= result["max_abs_diff"] < 1e-3 and result["top1_agree"] == 1.0


@pytest.mark.slow
def test_predict_model_gives_the_same_top1_as_predict_run(lite0_export) -> None:
    runs, run_id, _, base = lite0_export
    photos = [str(p) for p in write_photos(base / "photos")]
    by_run = tlcore("predict", *photos, "--run", run_id, "--runs-dir", str(runs), "--topk", "3", "--json")
    assert by_run.returncode == 0, by_run.stderr
    for model, engine in ((base / "bundle", "onnxruntime"), (runs / run_id, None)):
        if engine is None:  # the zip the app's Download model button gives
            model = export.bundle_zip(run_id, runs)
            engine = "onnxruntime"
        by_model = tlcore("predict", *photos, "--model", str(model), "--topk", "3", "--json")
        assert by_model.returncode == 0, by_model.stderr
        assert f"model.onnx on {engine}" in by_model.stderr
        want, got = json.loads(by_run.stdout), json.loads(by_model.stdout)
        assert [r["predictions"][0]["label"] for r in got] == [r["predictions"][0]["label"] for r in want]
        for g, w in zip(got, want, strict=True):
            assert g["engine"] == engine
            assert g["predictions"][0]["prob"] == pytest.approx(w["predictions"][0]["prob"], abs=1e-4)
