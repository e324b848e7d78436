"""Datasets built class by class in the browser, stored as ordinary image folders under the data folder.

A built dataset is `<data root>/built/<id>/` with `.dataset.json` (the name the user gave it)
and one folder per class holding `<sha256>.<ext>` files: a photo added twice is stored once,
and no uploaded file name ever becomes a path. Class names typed by the user are checked
(`class_name`) before they name a folder; the folder is then a dataset spec like any other.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tlcore import paths

if TYPE_CHECKING:
    import numpy as np

# PIL and numpy (tlcore.data.images) are imported by the functions that decode: `built_name`, which
# `python -m tlcore runs` calls for every run's dataset, needs neither.

MAX_NAME = 60  # characters; 60 x 4 UTF-8 bytes stays under the 255-byte file name limit
MAX_IMAGE_BYTES = 50 * 2**20
MIN_CLASSES, MIN_IMAGES = 2, 2  # one image of each class goes to validation
INFO_FILE = ".dataset.json"  # hidden: the image-folder scan skips dot files, so it is not "an unreadable file"
_ID = re.compile(r"^[0-9a-f]{12}$")
_FILE = re.compile(r"^[0-9a-f]{64}\.(jpg|png|gif|webp|bmp|tif)$")
_FORBIDDEN = set('/\\:*?"<>|')  # path separators, and what Windows refuses when the folder is zipped and moved
# Folder names that the image-folder scan reads as a train/val layout, not as a class.
_RESERVED = {"train", "val", "valid", "validation", "test", "__macosx", "thumbs.db", "desktop.ini"}
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
               "TIFF": ".tif"}


class BuildError(ValueError):
    """A dataset edit cannot be done; one line saying why and what to do."""


@dataclass
class BuiltDataset:
    """One built dataset: its id (folder), the user's name for it, and images per class."""

    id: str
    name: str
    path: Path
    counts: dict[str, int]  # class -> number of images, classes sorted as training numbers them

    @property
    def classes(self) -> list[str]:
        return list(self.counts)


@dataclass
class AddReport:
    """What happened to a batch of added images."""

    added: int = 0
    duplicates: int = 0  # already in this class: stored once
    refused: list[str] | None = None  # one line per file: name and reason

    def summary(self) -> str:
        parts = [f"{self.added} added"] + ([f"{self.duplicates} already there"] if self.duplicates else [])
        return ", ".join(parts) + (f", {len(self.refused)} refused" if self.refused else "")


def root() -> Path:
    """Where built datasets live (`<data root>/built`)."""
    return paths.data_root() / "built"


# ---- names ------------------------------------------------------------------------------------


def _clean(text, what: str) -> str:
    """Unicode-normalised, stripped text of 1..MAX_NAME printable characters, else BuildError."""
    name = unicodedata.normalize("NFC", str(text or "")).strip()
    if not name:
        raise BuildError(f"the {what} is empty: type a name")
    if len(name) > MAX_NAME:
        raise BuildError(f"the {what} '{name[:20]}...' is {len(name)} characters long: keep it to {MAX_NAME}")
    if any(not c.isprintable() for c in name):
        raise BuildError(f"the {what} {name!r} has control characters or line breaks: use letters, digits and spaces")
    return name


def class_name(text) -> str:
    """A class name safe to use as a folder name, or BuildError naming the problem.

    Letters of any script, digits, spaces and most punctuation are fine; path separators,
    `..`, a leading dot, Windows-forbidden characters and the split-folder names are not.
    """
    name = _clean(text, "class name")
    bad = sorted(set(name) & _FORBIDDEN)
    if bad:
        raise BuildError(f"the class name {name!r} contains {' '.join(bad)}: use letters, digits, spaces, - or _")
    if name.startswith(".") or name.endswith("."):
        raise BuildError(f"the class name {name!r} starts or ends with a dot: remove the dot")
    if name.casefold() in _RESERVED:
        raise BuildError(f"'{name}' is a reserved folder name in image datasets: call the class e.g. '{name} images'")
    return name


def _dataset_dir(dataset_id: str) -> Path:
    if not isinstance(dataset_id, str) or not _ID.match(dataset_id):
        raise BuildError(f"no built dataset {dataset_id!r}: pick one from the list")
    folder = root() / dataset_id
    if not (folder / INFO_FILE).is_file():
        raise BuildError(f"no built dataset {dataset_id!r} (deleted?): pick one from the list")
    return folder


def _class_dir(dataset_id: str, name: str) -> Path:
    """An existing class folder of a dataset, found by comparing names (never by joining raw text)."""
    folder = _dataset_dir(dataset_id)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name == name:
            return entry
    raise BuildError(f"no class {name!r} in this dataset: add it first")


# ---- datasets ---------------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)


def _classes(folder: Path) -> dict[str, int]:
    counts = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            counts[entry.name] = sum(1 for f in entry.iterdir() if _FILE.match(f.name))
    return counts


def get_dataset(dataset_id: str) -> BuiltDataset:
    """A built dataset by id; BuildError if there is none."""
    folder = _dataset_dir(dataset_id)
    try:
        name = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))["name"]
    except (OSError, ValueError, KeyError, TypeError):
        name = dataset_id
    return BuiltDataset(dataset_id, str(name), folder, _classes(folder))


def list_datasets() -> list[BuiltDataset]:
    """Every built dataset, newest first."""
    if not root().is_dir():
        return []
    found = [entry for entry in root().iterdir() if _ID.match(entry.name) and (entry / INFO_FILE).is_file()]
    found.sort(key=lambda e: (e / INFO_FILE).stat().st_mtime, reverse=True)
    return [get_dataset(entry.name) for entry in found]


def create_dataset(name) -> BuiltDataset:
    """A new, empty dataset called `name` (unique, case-insensitively, among built datasets)."""
    name = _clean(name, "dataset name")
    if any(d.name.casefold() == name.casefold() for d in list_datasets()):
        raise BuildError(f"a dataset called '{name}' already exists: pick it from the list or use another name")
    dataset_id = uuid.uuid4().hex[:12]
    folder = root() / dataset_id
    folder.mkdir(parents=True)
    _write_json(folder / INFO_FILE, {"name": name, "created": time.time()})
    return get_dataset(dataset_id)


def delete_dataset(dataset_id: str) -> None:
    """Remove a built dataset and its images (runs trained on it keep their weights)."""
    shutil.rmtree(_dataset_dir(dataset_id))


def add_class(dataset_id: str, name) -> str:
    """Add an empty class; returns the checked name. A name equal up to case to another is refused."""
    name = class_name(name)
    folder = _dataset_dir(dataset_id)
    clash = [c for c in _classes(folder) if c.casefold() == name.casefold()]
    if clash:
        raise BuildError(f"there is already a class '{clash[0]}': add images to it, or pick another name")
    target = folder / name
    # Defence in depth: class_name() already refused separators and dots.
    if target.resolve().parent != folder.resolve():
        raise BuildError(f"the class name {name!r} cannot be a folder name: use letters, digits and spaces")
    target.mkdir()
    return name


def remove_class(dataset_id: str, name: str) -> None:
    """Remove a class and its images."""
    shutil.rmtree(_class_dir(dataset_id, name))


def remove_image(dataset_id: str, name: str, file_name: str) -> None:
    """Remove one stored image (its `<sha256>.<ext>` name) from a class."""
    if not _FILE.match(str(file_name)):
        raise BuildError(f"{file_name!r} is not an image of this dataset")
    (_class_dir(dataset_id, name) / file_name).unlink(missing_ok=True)


# ---- images -----------------------------------------------------------------------------------


def _extension(data: bytes) -> str:
    from PIL import Image

    # The decoders tlcore.data.images allows (its JPEG entry also opens phone photos Pillow calls MPO).
    with Image.open(io.BytesIO(data), formats=[f for f in _EXTENSIONS if f != "MPO"]) as img:
        return _EXTENSIONS[img.format]


def add_images(dataset_id: str, name: str, files) -> AddReport:
    """Store images into a class, each checked by decoding it; refused files are named with the reason.

    Args:
        files: (file name, bytes) pairs, or uploads with `.name` and `.getvalue()` (Streamlit's
            UploadedFile, camera photos included). The file name only appears in messages.
    """
    from tlcore.data.images import ImageError, open_image

    target = _class_dir(dataset_id, name)
    folder = target.parent
    report = AddReport(refused=[])
    for item in files:
        label, data = (item if isinstance(item, tuple) else (getattr(item, "name", "upload"), item.getvalue()))
        label = Path(str(label).replace("\\", "/")).name.replace("\n", " ")[:100] or "upload"
        data = bytes(data)
        if len(data) > MAX_IMAGE_BYTES:
            report.refused.append(f"{label}: {len(data) / 2**20:.0f} MiB is over the {MAX_IMAGE_BYTES // 2**20} MiB limit")
            continue
        try:
            open_image(data, label)  # every pixel decoded: broken files are refused now, not at training
            stored = f"{hashlib.sha256(data).hexdigest()}{_extension(data)}"
        except ImageError as exc:
            report.refused.append(str(exc))
            continue
        owner = next((d for d in folder.iterdir() if d.is_dir() and (d / stored).is_file()), None)
        if owner == target:
            report.duplicates += 1
        elif owner is not None:
            report.refused.append(f"{label}: already in class '{owner.name}': a photo can be in one class only")
        else:
            fd, tmp = tempfile.mkstemp(dir=target, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target / stored)
            report.added += 1
    _write_json(folder / INFO_FILE, {**json.loads((folder / INFO_FILE).read_text(encoding="utf-8")),
                                     "changed": time.time()})
    return report


def thumbnails(dataset_id: str, name: str, limit: int = 12, size: int = 96) -> list[tuple[str, np.ndarray]]:
    """(stored file name, size x size RGB array) of a class's newest `limit` images."""
    from tlcore.data.images import ImageError, load_square

    target = _class_dir(dataset_id, name)
    files = sorted((f for f in target.iterdir() if _FILE.match(f.name)), key=lambda f: f.stat().st_mtime, reverse=True)
    out = []
    for f in files[:limit]:
        try:
            out.append((f.name, load_square(f, size)))
        except ImageError:
            continue  # checked at upload; a file damaged on disk since just shows no thumbnail
    return out


# ---- training on it ---------------------------------------------------------------------------


def trainable_spec(dataset_id: str) -> str:
    """The dataset's folder as a training spec, or BuildError saying which class needs what."""
    ds = get_dataset(dataset_id)
    if len(ds.counts) < MIN_CLASSES:
        have = f" (it has {len(ds.counts)}: {', '.join(repr(c) for c in ds.counts)})" if ds.counts else ""
        raise BuildError(f"'{ds.name}' needs at least {MIN_CLASSES} classes to train{have}: add a class")
    few = [(c, n) for c, n in ds.counts.items() if n < MIN_IMAGES]
    if few:
        lines = ", ".join(f"'{c}' has {n}" for c, n in few)
        raise BuildError(f"each class needs at least {MIN_IMAGES} images (one is kept for validation): {lines}")
    return str(ds.path)


def built_name(spec: str | os.PathLike) -> str | None:
    """The user's name of a built dataset given its folder (a run's data spec), else None."""
    path = Path(spec)
    if not _ID.match(path.name) or path.parent.resolve() != root().resolve():
        return None
    try:
        return str(json.loads((path / INFO_FILE).read_text(encoding="utf-8"))["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
