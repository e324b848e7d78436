"""Tests for tlcore.data.folders: dataset folders are laid out here, in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tlcore.data.folders import FolderError, FolderScan, scan_folder


def _touch(root: Path, *names: str) -> None:
    """Create files (content is irrelevant: scanning must not decode)."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded")


def _rel(scan_pairs: list[tuple[Path, int]], root: Path) -> list[tuple[str, int]]:
    return [(p.relative_to(root.resolve()).as_posix(), i) for p, i in scan_pairs]


def test_flat_layout_with_classes_at_different_depths(tmp_path: Path) -> None:
    _touch(tmp_path, "b/sub/deeper/y.PNG", "a/x.jpg", "a/x2.JPEG", "c/z.webp")
    scan = scan_folder(tmp_path)
    assert isinstance(scan, FolderScan)
    assert scan.class_names == ["a", "b", "c"]
    assert _rel(scan.train, tmp_path) == [
        ("a/x.jpg", 0),
        ("a/x2.JPEG", 0),
        ("b/sub/deeper/y.PNG", 1),
        ("c/z.webp", 2),
    ]
    assert scan.val is None
    assert scan.skipped == [] and scan.warnings == []
    assert all(p.is_absolute() and p.is_file() for p, _ in scan.train)


def test_train_val_split(tmp_path: Path) -> None:
    _touch(tmp_path, "train/cats/1.jpg", "train/dogs/1.jpg", "train/dogs/2.jpg")
    _touch(tmp_path, "val/cats/9.jpg", "val/dogs/9.jpg")
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["cats", "dogs"]
    assert _rel(scan.train, tmp_path) == [
        ("train/cats/1.jpg", 0),
        ("train/dogs/1.jpg", 1),
        ("train/dogs/2.jpg", 1),
    ]
    assert scan.val is not None
    assert _rel(scan.val, tmp_path) == [("val/cats/9.jpg", 0), ("val/dogs/9.jpg", 1)]


@pytest.mark.parametrize("val_name", ["valid", "validation", "test", "Val"])
def test_other_validation_folder_names(tmp_path: Path, val_name: str) -> None:
    _touch(tmp_path, "train/a/1.jpg", "train/b/1.jpg", f"{val_name}/a/2.jpg")
    scan = scan_folder(tmp_path)
    assert scan.val is not None
    assert _rel(scan.val, tmp_path) == [(f"{val_name}/a/2.jpg", 0)]


def test_val_preferred_over_test_with_warning(tmp_path: Path) -> None:
    _touch(tmp_path, "train/a/1.jpg", "train/b/1.jpg", "val/a/2.jpg", "test/b/3.jpg")
    scan = scan_folder(tmp_path)
    assert _rel(scan.val or [], tmp_path) == [("val/a/2.jpg", 0)]
    assert any("'test' ignored" in w for w in scan.warnings)


def test_val_class_missing_from_train_is_warned_and_skipped(tmp_path: Path) -> None:
    _touch(tmp_path, "train/a/1.jpg", "train/b/1.jpg", "val/a/2.jpg", "val/zebra/3.jpg")
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["a", "b"]
    assert _rel(scan.val or [], tmp_path) == [("val/a/2.jpg", 0)]
    assert any("'zebra'" in w for w in scan.warnings)
    assert ("val/zebra/3.jpg", "class not in train") in scan.skipped


def test_empty_val_folder_falls_back_to_none(tmp_path: Path) -> None:
    _touch(tmp_path, "train/a/1.jpg", "train/b/1.jpg")
    (tmp_path / "val").mkdir()
    scan = scan_folder(tmp_path)
    assert scan.val is None
    assert any("validation" in w for w in scan.warnings)


def test_train_without_val_is_a_plain_class_root(tmp_path: Path) -> None:
    _touch(tmp_path, "train/a/1.jpg", "train/b/1.jpg")
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["a", "b"] and scan.val is None


def test_non_images_and_junk(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "a/1.jpg",
        "a/notes.txt",
        "a/model.pt",
        "b/2.gif",
        "b/.DS_Store",
        "b/._2.gif",
        "b/.hidden/3.jpg",
        "__MACOSX/a/._1.jpg",
        ".ipynb_checkpoints/x.jpg",
        "loose.jpg",
        "labels.csv",
    )
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["a", "b"]
    assert _rel(scan.train, tmp_path) == [("a/1.jpg", 0), ("b/2.gif", 1)]
    assert sorted(scan.skipped) == [
        ("a/model.pt", "not an image file"),
        ("a/notes.txt", "not an image file"),
        ("labels.csv", "not an image file"),
        ("loose.jpg", "image not inside a class folder"),
    ]


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _touch(outside, "secret.jpg", "more/secret2.jpg")
    root = tmp_path / "data"
    _touch(root, "a/1.jpg", "b/1.jpg")
    (root / "a" / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "b" / "linkdir").symlink_to(outside / "more", target_is_directory=True)
    (root / "c").symlink_to(outside, target_is_directory=True)
    scan = scan_folder(root)
    assert scan.class_names == ["a", "b"]
    assert len(scan.train) == 2
    assert sorted(scan.skipped) == [
        ("a/link.jpg", "symlink"),
        ("b/linkdir", "symlink"),
        ("c", "symlink"),
    ]
    assert all("secret" not in p.name for p, _ in scan.train)


def test_unicode_and_spaces(tmp_path: Path) -> None:
    _touch(tmp_path, "chats noirs/été 1.jpg", "子犬/写真 2.png")
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["chats noirs", "子犬"]
    assert _rel(scan.train, tmp_path) == [("chats noirs/été 1.jpg", 0), ("子犬/写真 2.png", 1)]


def test_empty_class_is_dropped_with_warning(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.jpg", "b/1.jpg", "c/readme.txt")
    (tmp_path / "d").mkdir()
    scan = scan_folder(tmp_path)
    assert scan.class_names == ["a", "b"]
    assert "class 'c' has no images: skipped" in scan.warnings
    assert "class 'd' has no images: skipped" in scan.warnings


def test_scanning_thousands_of_files_is_fast(tmp_path: Path) -> None:
    for c in range(3):
        folder = tmp_path / f"class{c}"
        folder.mkdir()
        for i in range(1000):
            (folder / f"{i}.jpg").write_bytes(b"")
    start = time.perf_counter()
    scan = scan_folder(tmp_path)
    elapsed = time.perf_counter() - start
    assert len(scan.train) == 3000
    assert elapsed < 10.0, f"scan took {elapsed:.1f}s"


# --- errors --------------------------------------------------------------------------------


def _error(root: Path) -> str:
    with pytest.raises(FolderError) as exc_info:
        scan_folder(root)
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_missing_root(tmp_path: Path) -> None:
    assert "not found" in _error(tmp_path / "nope")


def test_root_is_a_file(tmp_path: Path) -> None:
    _touch(tmp_path, "data.zip")
    assert "not a folder" in _error(tmp_path / "data.zip")


def test_no_class_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "1.jpg", "2.jpg")
    message = _error(tmp_path)
    assert "has no class folders" in message and "one sub-folder per class" in message


def test_a_single_class_folder_points_to_its_parent(tmp_path: Path) -> None:
    """Given `train/cats` (images, no sub-folders), the message names `train`, not `train/cats/cats/1.jpg`."""
    _touch(tmp_path, "train/cats/1.jpg", "train/cats/2.jpg")
    message = _error(tmp_path / "train" / "cats")
    assert "only 2 images: it looks like the folder of one class" in message
    assert f"(perhaps {(tmp_path / 'train').resolve()})" in message
    assert "cats/cats" not in message and f"{(tmp_path / 'train' / 'cats').resolve()}/<class>/1.jpg" in message


def test_only_one_class(tmp_path: Path) -> None:
    _touch(tmp_path, "cats/1.jpg", "cats/2.jpg")
    message = _error(tmp_path)
    assert "only one class 'cats'" in message and "at least 2" in message


def test_empty_class_leaving_one_class_is_an_error(tmp_path: Path) -> None:
    _touch(tmp_path, "cats/1.jpg")
    (tmp_path / "dogs").mkdir()
    assert "only one class 'cats'" in _error(tmp_path)


def test_class_folders_without_any_images(tmp_path: Path) -> None:
    _touch(tmp_path, "a/x.txt", "b/y.heic")
    message = _error(tmp_path)
    assert "no images found" in message and ".jpg" in message


def test_train_folder_without_classes(tmp_path: Path) -> None:
    _touch(tmp_path, "train/1.jpg", "val/a/1.jpg")
    assert "train has no class folders" in _error(tmp_path)
