"""Find the classes and image files of a dataset folder, without decoding any image.

Two layouts are understood:

* ``root/<class>/...`` - one folder per class; the caller splits train from validation.
* ``root/train/<class>/...`` plus ``root/val/<class>/...`` (``valid``, ``validation`` or
  ``test`` also name the validation folder).

The class is the top-level folder (under ``root`` or ``root/train``); images may sit at any
depth below it. Files are recognised by extension only: decoding is left to
:mod:`tlcore.data.images`, so that scanning thousands of files stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tlcore.data.images import IMAGE_EXTENSIONS

# "training/" + "validation/" is as common as "train/" + "val/" (Kaggle, Keras examples); not
# knowing it would silently make a 2-class dataset of the two splits.
_TRAIN_NAMES = ("train", "training")
# In order of preference when several are present.
_VAL_NAMES = ("val", "valid", "validation", "test")
_JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
_NOT_IMAGE = "not an image file"
_SYMLINK = "symlink"
_LOOSE_IMAGE = "image not inside a class folder"


class FolderError(ValueError):
    """Raised with one line naming the problem with a dataset folder and the fix."""


@dataclass
class FolderScan:
    """Classes and files found by :func:`scan_folder`.

    Attributes:
        class_names: Class names, sorted; a file's class index points into this list.
        train: ``(file, class index)`` pairs, sorted by path.
        val: Validation pairs, or None when the folder has no train/val split.
        skipped: ``(path relative to root, reason)`` for files that were not used.
        warnings: Human-readable notes, e.g. ``"class 'x' has no images: skipped"``.
    """

    class_names: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]] | None
    skipped: list[tuple[str, str]]
    warnings: list[str]


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """Scan a dataset folder for class sub-folders and their image files.

    Args:
        root: The dataset folder.

    Returns:
        The classes, the image files of each split, and what was skipped and why.

    Raises:
        FolderError: The folder is missing, has no class folders, or has fewer than two
            classes with images.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise FolderError(f"{base}: folder not found: check the path (extract zips first)")
    if not base.is_dir():
        raise FolderError(
            f"{base} is a file, not a folder: pass the folder that holds one sub-folder per class"
        )
    base = base.resolve()
    skipped: list[tuple[str, str]] = []
    warnings: list[str] = []
    top_dirs = _top_level(base, base, skipped)

    train_dir = _pick(top_dirs, _TRAIN_NAMES)
    val_dir = _pick(top_dirs, _VAL_NAMES) if train_dir is not None else None
    if train_dir is None:
        class_root, train_dirs = base, top_dirs
    else:
        for name in sorted(top_dirs):
            if top_dirs[name] not in (train_dir, val_dir):
                warnings.append(
                    f"folder '{name}' ignored: with a train/ folder only train/ and "
                    f"{val_dir.name if val_dir else 'val'}/ are used"
                )
        class_root = train_dir
        train_dirs = _top_level(base, train_dir, skipped)

    if not train_dirs:
        raise FolderError(_no_class_folders(base, class_root, skipped))

    train_files = {name: _images_below(base, d, skipped) for name, d in train_dirs.items()}
    for name in sorted(train_files):
        if not train_files[name]:
            warnings.append(f"class '{name}' has no images: skipped")
    class_names = sorted(name for name, files in train_files.items() if files)
    _require_two_classes(class_root, class_names, skipped)
    index = {name: i for i, name in enumerate(class_names)}
    train = [(f, index[name]) for name in class_names for f in train_files[name]]

    val = None
    if val_dir is not None:
        val = _scan_val(base, val_dir, index, skipped, warnings)
    return FolderScan(
        class_names=class_names,
        train=sorted(train),
        val=val,
        skipped=skipped,
        warnings=warnings,
    )


def _scan_val(
    base: Path,
    val_dir: Path,
    index: dict[str, int],
    skipped: list[tuple[str, str]],
    warnings: list[str],
) -> list[tuple[Path, int]] | None:
    """Validation pairs for the classes known from train; None if val/ holds no images."""
    pairs: list[tuple[Path, int]] = []
    for name, folder in sorted(_top_level(base, val_dir, skipped).items()):
        files = _images_below(base, folder, skipped)
        if name not in index:
            if files:
                warnings.append(
                    f"validation class '{name}' is not a class in train/: its "
                    f"{len(files)} files skipped"
                )
            skipped.extend((_rel(base, f), "class not in train") for f in files)
            continue
        pairs.extend((f, index[name]) for f in files)
    if not pairs:
        # An empty val/ is more likely a mistake than a wish to validate on nothing; the
        # caller's own split is the useful fallback.
        warnings.append(
            f"validation folder '{val_dir.name}' has no images of the train classes: "
            "a validation split will be taken from train instead"
        )
        return None
    return sorted(pairs)


def _top_level(base: Path, folder: Path, skipped: list[tuple[str, str]]) -> dict[str, Path]:
    """Sub-folders of ``folder`` by name; loose files there are recorded as skipped."""
    dirs: dict[str, Path] = {}
    with os.scandir(folder) as it:
        for entry in it:
            if _is_junk(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                skipped.append((_rel(base, path), _SYMLINK))
            elif entry.is_dir(follow_symlinks=False):
                dirs[entry.name] = path
            elif _is_image_name(entry.name):
                skipped.append((_rel(base, path), _LOOSE_IMAGE))
            else:
                skipped.append((_rel(base, path), _NOT_IMAGE))
    return dirs


def _images_below(base: Path, folder: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """All image files at any depth below ``folder``, sorted; others go to ``skipped``."""
    images: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            skipped.append((_rel(base, current), f"cannot read folder ({exc.strerror})"))
            continue
        for entry in entries:
            if _is_junk(entry.name):
                continue
            # DirEntry answers these from the directory listing itself (no stat per
            # file on Linux), which keeps large folders fast.
            if entry.is_symlink():
                # Links could point outside the dataset or loop forever.
                skipped.append((_rel(base, Path(entry.path)), _SYMLINK))
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif not entry.is_file(follow_symlinks=False):
                skipped.append((_rel(base, Path(entry.path)), "not a regular file"))
            elif _is_image_name(entry.name):
                images.append(Path(entry.path))
            else:
                skipped.append((_rel(base, Path(entry.path)), _NOT_IMAGE))
    return sorted(images)


def _no_class_folders(base: Path, class_root: Path, skipped: list[tuple[str, str]]) -> str:
    """The message for a folder without class folders, with an example path that fits it."""
    loose = [path for path, why in skipped if why == _LOOSE_IMAGE]
    example = class_root / "<class>" / (PurePosixPath(loose[0]).name if loose else "1.jpg")
    if loose and class_root == base:
        # Images straight in the folder: most likely one class's folder was given, not the
        # folder that holds every class's folder (`train/cats` instead of `train`).
        images = f"{len(loose)} image{'s' if len(loose) > 1 else ''}"
        return (f"{class_root} has no class folders, only {images}: it looks like the folder of one "
                f"class. Give the folder that holds one sub-folder per class (perhaps {class_root.parent}), "
                f"or move the images into one sub-folder per class, e.g. {example}")
    return f"{class_root} has no class folders: put images in one sub-folder per class, e.g. {example}"


def _require_two_classes(
    class_root: Path, class_names: list[str], skipped: list[tuple[str, str]]
) -> None:
    """Raise FolderError unless at least two classes have images."""
    if len(class_names) >= 2:
        return
    if len(class_names) == 1:
        raise FolderError(
            f"only one class '{class_names[0]}' has images in {class_root}: need at least 2 "
            "classes, one sub-folder each"
        )
    hint = f" ({len(skipped)} other files skipped)" if skipped else ""
    raise FolderError(
        f"no images found in the class folders of {class_root}{hint}: supported file types are "
        f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
    )


def _pick(dirs: dict[str, Path], names: tuple[str, ...]) -> Path | None:
    """The first folder whose name matches one of ``names``, case-insensitively."""
    by_lower = {name.lower(): path for name, path in sorted(dirs.items())}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    return None


def _is_junk(name: str) -> bool:
    """OS metadata and hidden entries, ignored without a mention."""
    return name.startswith(".") or name in _JUNK_NAMES


def _is_image_name(name: str) -> bool:
    """True if the extension is a supported image type, in any letter case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _rel(base: Path, path: Path) -> str:
    """Path relative to the dataset root, with forward slashes."""
    return PurePosixPath(*path.relative_to(base).parts).as_posix()
