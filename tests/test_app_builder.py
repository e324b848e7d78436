"""The Train page's "build it here" section (AppTest): name a dataset, add classes, upload and shoot photos, train."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import photo_patches
from PIL import Image
from streamlit.testing.v1 import AppTest

from tlcore.data import builder
from tlcore.training.jobs import get_manager
from tlcore.views import build_form

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def files(photo: str, n: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    return [(f"{photo} {i}.jpg", jpeg(img), "image/jpeg") for i, img in enumerate(photo_patches(photo, n, 48, seed))]


def train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/1_Train.py").run()
    at.radio(key="data_source").set_value("build it here").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def uploader(at: AppTest, name: str):
    [found] = [u for u in at.get("file_uploader") if u.label == f"Add images to {name}"]
    return found


def messages(at: AppTest) -> str:
    return " | ".join(e.value for e in [*at.error, *at.success, *at.warning])


def test_build_a_dataset_in_the_page_and_train_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    at = train_page()
    assert at.selectbox(key="built_id").value is None  # "+ new dataset"
    at.text_input(key="built_new").set_value("My pets")
    at.button(key="built_create").click().run()
    [ds] = builder.list_datasets()
    assert at.selectbox(key="built_id").value == ds.id and "created 'My pets'" in messages(at)

    for name in ("cat", "../coffee", "coffee"):
        at.text_input(key="built_class").set_value(name)
        at.button(key="built_add").click().run()
        if name.startswith(".."):  # each message shows until the next action
            assert "the class name '../coffee' contains /" in messages(at)
    assert builder.get_dataset(ds.id).classes == ["cat", "coffee"]

    uploader(at, "cat").set_value([*files("chelsea", 3), ("notes.jpg", b"not a photo", "image/jpeg")]).run()
    assert "cat: 3 added, 1 refused" in messages(at) and "refused notes.jpg: not an image" in messages(at)
    uploader(at, "coffee").set_value(files("coffee", 1)).run()
    assert "1 image" in " ".join(m.value for m in at.markdown)
    assert "'coffee' has 1" in messages(at)  # the status line says what is missing
    at.button(key="start").click().run()
    assert "Cannot start: each class needs at least 2 images (one is kept for validation): 'coffee' has 1" in messages(at)

    # The camera adds one photo per shot; a second shot of the same picture is stored once.
    at.toggle(key=f"built_camera_{ds.id}_coffee").set_value(True).run()
    shot = files("coffee", 2, seed=5)[1]
    at.camera_input[0].set_value(("camera.jpg", shot[1], "image/jpeg")).run()
    assert builder.get_dataset(ds.id).counts == {"cat": 3, "coffee": 2}
    at.camera_input[0].set_value(("camera.jpg", shot[1], "image/jpeg")).run()
    assert builder.get_dataset(ds.id).counts == {"cat": 3, "coffee": 2} and "1 already there" in messages(at)

    # Remove one image by its thumbnail's button.
    [(victim, _), *_] = builder.thumbnails(ds.id, "cat")
    at.button(key=f"built_rm_cat_{victim}").click().run()
    assert builder.get_dataset(ds.id).counts["cat"] == 2
    assert "Ready to train: 2 classes, 4 images" in " ".join(c.value for c in at.caption)

    at.selectbox(key="backbone").set_value("simple_cnn")
    at.selectbox(key="strategy").set_value("scratch")
    at.selectbox(key="image_size").set_value(32)
    at.number_input(key="epochs").set_value(1)
    at.button(key="start").click().run()
    assert not at.exception and "Queued run" in at.success[0].value, messages(at)
    manager = get_manager(tmp_path / "runs")
    [record] = manager.list_runs()
    assert manager.wait(record.run_id, timeout=120)
    assert manager.snapshot(record.run_id)["status"] == "finished"
    assert record.config["data"] == str(ds.path)

    # A new session (reload, restart) finds the dataset by its name; the run shows it too.
    again = train_page()
    assert build_form.picker_label({ds.id: builder.get_dataset(ds.id)}, ds.id) == "My pets"
    assert again.selectbox(key="built_id").value == ds.id
    assert "My pets" in " ".join(c.value for c in again.caption)  # the run card names the data as the user did


def test_remove_a_class_and_delete_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    ds = builder.create_dataset("Throwaway")
    builder.add_class(ds.id, "a")
    builder.add_class(ds.id, "b")
    at = train_page()
    at.button(key="built_rmclass_b").click().run()
    assert builder.get_dataset(ds.id).classes == ["a"]
    assert "needs at least 2 classes to train (it has 1: 'a')" in messages(at)
    at.button(key="built_delete").click().run()
    assert not at.exception and builder.list_datasets() == []
    assert at.selectbox(key="built_id").value is None
