"""Model out in the app (AppTest): Download model on a finished run's card, and Predict from an uploaded bundle zip."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import skimage.data
from PIL import Image
from streamlit.testing.v1 import AppTest
from vega_data import layer

from tlcore.export import write as export
from tlcore.training.jobs import get_manager
from tlcore.views import ui

APP = str(Path(__file__).resolve().parent.parent / "app.py")
CLASSES = ["cat", "coffee", "rocket"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_class_folders, tiny_config) -> Iterator[tuple[Path, str, Path]]:
    """(runs folder, run id, the run's bundle zip) of a simple_cnn run on three real-photo classes."""
    base = tmp_path_factory.mktemp("model-out")
    data = make_class_folders(base / "photos", per_class=6)
    manager = get_manager(base / "runs")
    run_id = manager.submit(tiny_config(data=str(data), epochs=1, subset=None))
    assert manager.wait(run_id, timeout=120)
    assert manager.snapshot(run_id)["status"] == "finished"
    yield base / "runs", run_id, export.bundle_zip(run_id, base / "runs")


@pytest.fixture
def runs_env(finished, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, Path]:
    monkeypatch.setenv("TLCORE_RUNS", str(finished[0]))
    return finished


def page(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(name).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def cat_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_finished_run_card_has_download_model(runs_env) -> None:
    _, run_id, _ = runs_env
    at = page("pages/1_Train.py")
    button = at.get("download_button")
    assert [b.label for b in button if b.key == f"model_{run_id}"] == ["Download model"]


@pytest.fixture
def unexported(finished, tmp_path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """(runs folder, run id) of a copy of the finished run that was never exported."""
    runs = tmp_path / "runs"
    shutil.copytree(finished[0], runs, ignore=shutil.ignore_patterns(export.ZIP_NAME))
    monkeypatch.setenv("TLCORE_RUNS", str(runs))
    return runs, finished[1]


def model_buttons(at: AppTest, run_id: str) -> list:
    return [b for b in at.get("download_button") if b.key == f"model_{run_id}"]


def test_one_click_builds_the_bundle_and_downloads_it(unexported) -> None:
    # QA: the first click built the zip inside the download request and delivered nothing in Chromium.
    runs, run_id = unexported
    at = page("pages/1_Train.py")
    assert not model_buttons(at, run_id)  # not built yet: a plain button, whose click builds it
    at.button(key=f"build_{run_id}").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    assert (runs / run_id / export.ZIP_NAME).is_file()
    assert len(model_buttons(at, run_id)) == 1
    [press] = [h for h in at.get("html") if f".st-key-model_{run_id} button" in h.proto.body]
    assert press.proto.unsafe_allow_javascript  # the same click downloads it
    at.run()  # later runs: the kept zip behind the download button, pressed by the user only
    assert len(model_buttons(at, run_id)) == 1 and not at.get("html")


def test_a_failed_export_says_why_in_one_line(unexported) -> None:
    runs, run_id = unexported
    (runs / run_id / "model.safetensors").unlink()  # the run's weights are gone: nothing to export
    at = page("pages/1_Train.py")
    at.button(key=f"build_{run_id}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    [error] = at.error
    assert error.value.startswith("Cannot export this run: ") and "\n" not in error.value
    assert not model_buttons(at, run_id) and not (runs / run_id / export.ZIP_NAME).exists()


def test_predict_from_an_uploaded_bundle_zip(runs_env) -> None:
    _, _, bundle = runs_env
    at = page("pages/3_Predict.py")
    at.radio(key="model_kind").set_value("an exported model (.zip)").run()
    assert "Upload the zip that **Download model** gave you" in at.info[0].value
    at.file_uploader(key="model_zip").set_value(("my model.zip", bundle.read_bytes(), "application/zip")).run()
    assert not at.exception and not at.error
    assert "3 classes: cat, coffee, rocket" in " ".join(c.value for c in at.caption)
    assert at.slider(key="k").value == 3  # top k is limited to the bundle's classes
    at.file_uploader(key="images").set_value(("chelsea.jpg", cat_jpeg(), "image/jpeg")).run()
    assert not at.exception and not at.error
    (chart,) = at.get("vega_lite_chart")  # the bundle's top-k only: no ImageNet chart beside it
    assert set(layer(chart, "bar")[1]["class"]) == {"cat", "coffee", "rocket"}


def test_a_dataset_zip_is_refused_as_a_model(image_zip, runs_env) -> None:
    at = page("pages/3_Predict.py")
    at.radio(key="model_kind").set_value("an exported model (.zip)").run()
    at.file_uploader(key="model_zip").set_value(("photos.zip", image_zip.read_bytes(), "application/zip")).run()
    assert not at.exception
    assert "photos.zip: no tlcore.json" in at.error[0].value


def test_predict_uploads_with_a_bundle_matches_the_run(runs_env) -> None:
    runs, run_id, bundle = runs_env

    class Upload:
        name, data = "model.zip", bundle.read_bytes()

        def getvalue(self) -> bytes:
            return self.data

    choice, names = ui.bundle_choice(Upload())
    assert names == CLASSES and choice.label == "model.zip"
    by_bundle = ui.predict_uploads([("cat.jpg", cat_jpeg())], choice, 3, runs)
    by_run = ui.predict_uploads([("cat.jpg", cat_jpeg())], ui.ModelChoice(run_id=run_id), 3, runs)
    assert [p.label for p in by_bundle.items[0].top] == [p.label for p in by_run.items[0].top]
    assert by_bundle.model.startswith("your model: simple_cnn bundle model.zip")
    Upload.data = b"PK\x03\x04 not really a zip"
    with pytest.raises(ui.ModelUnavailable, match="model.zip: not a zip file"):
        ui.bundle_choice(Upload())
