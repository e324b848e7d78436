"""The Predict page (AppTest) and the upload -> top-k function behind it, on a real photo."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data
from PIL import Image
from streamlit.testing.v1 import AppTest
from vega_data import layer

from tlcore.training.config import TrainConfig
from tlcore.training.jobs import get_manager
from tlcore.views import ui

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/3_Predict.py"
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A finished efficientnet_lite0 run on digits (feature extraction, tiny: seconds on a CPU)."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLCORE_CACHE", str(root / "cache"))
        mp.delenv("TLCORE_DATA", raising=False)
        manager = get_manager(root / "runs")
        run_id = manager.submit(TrainConfig(data="digits", subset=5, image_size=64, epochs=1, device="cpu"))
        assert manager.wait(run_id, timeout=120)
        assert manager.snapshot(run_id)["status"] == "finished"
        yield root / "runs", run_id


@pytest.fixture
def runs_dir(lite0_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TLCORE_RUNS", str(lite0_run[0]))
    return lite0_run[0]


@pytest.fixture(scope="module")
def chelsea_jpeg() -> bytes:
    """scikit-image's sample cat photo, as an uploaded JPEG."""
    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def predict_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_widgets_and_defaults_without_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "no-runs"))
    at = predict_page()
    assert at.radio(key="model_kind").value == "ImageNet head of a backbone"
    # Nothing trained yet: no "finished run" to pick, but an exported model can still be uploaded.
    assert at.radio(key="model_kind").options == ["ImageNet head of a backbone", "an exported model (.zip)"]
    assert at.selectbox(key="backbone").value == "efficientnet_lite0"
    assert "simple_cnn" not in at.selectbox(key="backbone").options  # no ImageNet head to predict with
    assert at.slider(key="k").value == 5
    assert "Upload one or more images" in at.info[0].value


def test_select_a_finished_run(runs_dir: Path, lite0_run: tuple[Path, str]) -> None:
    at = predict_page()
    at.radio(key="model_kind").set_value("a finished run").run()
    assert not at.exception
    assert at.selectbox(key="run").value == lite0_run[1]
    assert "10 classes: 0, 1, 2" in " ".join(c.value for c in at.caption)
    at.slider(key="k").set_value(3).run()
    assert not at.exception and at.slider(key="k").value == 3


def test_uploads_to_topk_with_a_real_photo_and_a_bad_file(runs_dir: Path, lite0_run: tuple[Path, str],
                                                          chelsea_jpeg: bytes) -> None:
    files = [("chelsea.jpg", chelsea_jpeg), ("notes.png", b"not an image")]

    report = ui.predict_uploads(files, ui.ModelChoice(backbone="efficientnet_lite0"), k=5, runs_dir=runs_dir)
    cat, bad = report.items
    assert cat.name == "chelsea.jpg" and cat.error is None and len(cat.top) == 5
    assert CATS & {p.label for p in cat.top}, [p.label for p in cat.top]
    assert all(a.prob >= b.prob for a, b in zip(cat.top, cat.top[1:], strict=False))
    assert cat.image is not None and max(cat.image.size) <= ui.THUMBNAIL
    assert cat.imagenet is None and report.imagenet_model is None
    assert bad.name == "notes.png" and bad.top == [] and "not an image" in bad.error and "\n" not in bad.error

    # With a run: its own classes, and the backbone's ImageNet top-k beside them.
    report = ui.predict_uploads(files, ui.ModelChoice(run_id=lite0_run[1]), k=3, runs_dir=runs_dir)
    cat, bad = report.items
    assert {p.label for p in cat.top} <= {str(d) for d in range(10)} and len(cat.top) == 3
    every_class = ui.predict_uploads(files[:1], ui.ModelChoice(run_id=lite0_run[1]), k=10, runs_dir=runs_dir)
    full = every_class.items[0].top
    assert sorted(p.label for p in full) == [str(d) for d in range(10)]
    assert sum(p.prob for p in full) == pytest.approx(1.0, abs=1e-4)  # a distribution over all classes
    assert [(p.label, p.prob) for p in cat.top] == [(p.label, p.prob) for p in full[:3]]  # its 3 largest, as they are
    assert CATS & {p.label for p in cat.imagenet}
    assert report.model == "your run: feature_extraction on digits"
    assert report.imagenet_model == "efficientnet_lite0 (ImageNet)" and report.imagenet_note is None
    assert bad.error and bad.imagenet is None


def test_models_that_cannot_load_say_why(runs_dir: Path) -> None:
    with pytest.raises(ui.ModelUnavailable, match="no pretrained ImageNet head"):
        ui.predict_uploads([], ui.ModelChoice(backbone="simple_cnn"), runs_dir=runs_dir)
    with pytest.raises(ui.ModelUnavailable, match="Pick another run"):
        ui.predict_uploads([], ui.ModelChoice(run_id="20250101-000000-gone"), runs_dir=runs_dir)


def test_top_k_goes_up_to_the_run_s_class_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2-class run offers Top k 1-2, not 1-10, and its whole label is shown."""
    from tlcore.runs import RunStore

    store = RunStore(tmp_path / "runs")
    run_id = "20260101-000000-simple_cnn-scratch-aaaaaa"
    store.create(run_id, {"backbone": "simple_cnn", "strategy": "scratch", "data": "digits"})
    store.write_status(run_id, {"status": "finished", "created": 1.0})
    store.write_classes(run_id, ["cats", "dogs"])
    (store.path(run_id) / "model.safetensors").write_bytes(b"")  # never loaded: no image is uploaded
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    at = predict_page()
    assert at.slider(key="k").max == 10  # an ImageNet head: 1000 classes
    at.radio(key="model_kind").set_value("a finished run").run()
    assert not at.exception
    assert (at.slider(key="k").max, at.slider(key="k").value) == (2, 2)
    assert any(c.value.startswith("simple_cnn + scratch · created 2026-01-01") for c in at.caption)


@pytest.mark.parametrize(("backbone", "note"), [
    ("simple_cnn", "simple_cnn has no ImageNet head to compare with"),
    ("resnet18", "no ImageNet top-k beside the run: weights for resnet18 are not cached"),  # offline, not cached
])
def test_predict_page_says_why_there_is_no_imagenet_top_k(backbone: str, note: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, make_finished_run,
                                                           chelsea_jpeg: bytes) -> None:
    runs = tmp_path / "runs"
    make_finished_run(runs, backbone=backbone, classes=("cats", "dogs"))
    monkeypatch.setenv("TLCORE_RUNS", str(runs))
    at = predict_page()
    at.radio(key="model_kind").set_value("a finished run").run()
    at.file_uploader(key="images").set_value(("chelsea.jpg", chelsea_jpeg, "image/jpeg")).run()
    assert not at.exception, [e.value for e in at.exception]
    notes = [c.value for c in at.caption if "ImageNet" in c.value]
    assert len(notes) == 1 and notes[0].startswith(note), [c.value for c in at.caption]
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1, "expected the run's top-k alone, without an ImageNet chart beside it"
    assert set(layer(charts[0], "bar")[1]["class"]) == {"cats", "dogs"}  # the run's own classes
