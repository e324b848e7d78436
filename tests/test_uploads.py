"""Tests for tlcore.data.uploads: dataset zips from the browser are checked and stored by content hash."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlcore.data.sources import check_data_spec, resolve_data
from tlcore.data.uploads import MAX_UPLOAD_BYTES, UploadError, recent_uploads, save_upload, upload_name
from tlcore.views import ui

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _tlcore_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TLCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TLCORE_DATA", raising=False)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _dataset_zip(per_class: int = 3) -> bytes:
    """A zip of two class folders of tiny PNGs, as a user would make it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for label, value in (("cats", 30), ("dogs", 220)):
            for i in range(per_class):
                zf.writestr(f"pets/{label}/{i}.png", _png(value + i))
    return buf.getvalue()


class FakeUpload:
    """What Streamlit's UploadedFile offers the pages: a name and the bytes."""

    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_stores_under_content_hash_in_dest(tmp_path: Path) -> None:
    data = _dataset_zip()
    path = save_upload(data, "My Pets.ZIP", tmp_path / "uploads")
    assert path == tmp_path / "uploads" / f"{hashlib.sha256(data).hexdigest()}.zip"
    assert path.read_bytes() == data
    # No temp file left behind: the zip and the user's file name beside it, as data.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.with_suffix(".json").name, path.name]
    assert upload_name(path) == "My Pets.ZIP"


def test_same_content_twice_is_one_file(tmp_path: Path) -> None:
    data = _dataset_zip()
    first = save_upload(data, "a.zip", tmp_path)
    second = save_upload(data, "b.zip", tmp_path)
    assert first == second and len(list(tmp_path.glob("*.zip"))) == 1
    assert upload_name(second) == "b.zip"  # the latest name it was uploaded under


def test_recent_uploads_are_listed_newest_first_by_their_names(tmp_path: Path) -> None:
    """After a reload the page offers earlier uploads again, named as the user named them."""
    older = save_upload(_dataset_zip(per_class=2), "cats vs dogs.zip", tmp_path)
    newer = save_upload(_dataset_zip(per_class=3), "pets.zip", tmp_path)
    os.utime(older.with_suffix(".json"), (1, 1))
    assert recent_uploads(tmp_path) == [(newer, "pets.zip"), (older, "cats vs dogs.zip")]
    newer.unlink()  # a zip removed by hand is not offered
    assert recent_uploads(tmp_path) == [(older, "cats vs dogs.zip")]
    assert upload_name("digits") is None and upload_name(tmp_path / "elsewhere.zip") is None


@pytest.mark.parametrize("filename", ["../../evil.zip", "/etc/passwd.zip", "..\\..\\win.zip", "a/b/c.zip"])
def test_user_file_name_never_becomes_a_path(tmp_path: Path, filename: str) -> None:
    dest = tmp_path / "out" / "uploads"
    path = save_upload(_dataset_zip(), filename, dest)
    assert path.parent == dest
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "out", "out/uploads", f"out/uploads/{path.stem}.json", f"out/uploads/{path.name}"]


@pytest.mark.parametrize(("data", "filename", "says"), [
    (b"PK\x03\x04whatever", "pets.tar.gz", "must be a .zip"),
    (b"", "pets.zip", "empty"),
    (b"hello, I am text", "pets.zip", "not a zip"),
    (_dataset_zip()[:-30], "pets.zip", "damaged"),
])
def test_rejects_bad_uploads_with_what_to_do(tmp_path: Path, data: bytes, filename: str, says: str) -> None:
    with pytest.raises(UploadError, match=says) as info:
        save_upload(data, filename, tmp_path)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_size_limit_is_checked_in_code(tmp_path: Path) -> None:
    data = _dataset_zip()
    with pytest.raises(UploadError, match="over the .* upload limit"):
        save_upload(data, "pets.zip", tmp_path, max_bytes=len(data) - 1)
    assert save_upload(data, "pets.zip", tmp_path, max_bytes=len(data)).is_file()


def test_limit_matches_streamlit_config() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, from PyPI (requirements-dev.txt)
        import tomli as tomllib
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == MAX_UPLOAD_BYTES
    assert config["server"]["address"] == "localhost"
    assert config["browser"]["gatherUsageStats"] is False


def test_stored_zip_is_a_dataset_spec(tmp_path: Path) -> None:
    path = save_upload(_dataset_zip(per_class=4), "pets.zip", tmp_path)
    check_data_spec(str(path))
    source = resolve_data(str(path), val_fraction=0.25)
    assert source.class_names == ["cats", "dogs"]
    assert source.num_images == 8


def test_train_page_upload_choice_saves_the_zip(tmp_path: Path) -> None:
    spec = ui.dataset_spec(ui.DATA_SOURCES[2], upload=FakeUpload("pets.zip", _dataset_zip()), dest_dir=tmp_path)
    assert Path(spec).parent == tmp_path and spec.endswith(".zip")
    with pytest.raises(ValueError, match="upload a .zip"):
        ui.dataset_spec(ui.DATA_SOURCES[2], upload=None, dest_dir=tmp_path)
    with pytest.raises(UploadError, match="not a zip"):
        ui.dataset_spec(ui.DATA_SOURCES[2], upload=FakeUpload("x.zip", b"nope"), dest_dir=tmp_path)


def test_train_page_folder_and_builtin_choices(tmp_path: Path) -> None:
    assert ui.dataset_spec(ui.DATA_SOURCES[0], builtin="digits") == "digits"
    (tmp_path / "photos").mkdir()
    assert ui.dataset_spec(ui.DATA_SOURCES[1], folder=f" {tmp_path / 'photos'} ") == str(tmp_path / "photos")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="is a file: give a folder"):
        ui.dataset_spec(ui.DATA_SOURCES[1], folder=str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="does not exist"):
        ui.dataset_spec(ui.DATA_SOURCES[1], folder=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="type the path"):
        ui.dataset_spec(ui.DATA_SOURCES[1], folder="  ")
