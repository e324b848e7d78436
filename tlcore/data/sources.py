"""Dataset specs -> train/validation splits of decoded images with class names.

Resolution happens in two steps. `resolve_data` finds the data and returns a `DataSource`:
file lists or small arrays plus a content fingerprint, cheap to compute. `DataSource.decode`
then decodes and resizes every image once into uint8 tensors. The split lets the feature
cache (keyed by the fingerprint) skip decoding entirely on a hit.

Specs: `digits` (scikit-learn, offline), `mnist`, `fashion_mnist`, `cifar10` (torchvision
downloads), `hymenoptera`, `cats_dogs` (tutorial zips), or a path to an image folder or zip.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tlcore import paths
from tlcore.data.archive import extract_zip
from tlcore.data.folders import scan_folder
from tlcore.data.spill import SpilledImages
from tlcore.data.stream import decode_workers, load_row
from tlcore.models.weights import download, host_reachable
from tlcore.names import BUILTIN  # the built-in datasets (defined there so the CLI needs no torch)

DOWNLOADS = {
    "hymenoptera": ("https://download.pytorch.org/tutorial/hymenoptera_data.zip", "hymenoptera_data"),
    "cats_dogs": (
        "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
        "cats_and_dogs_filtered",
    ),
}
# Decoded images beyond this many bytes go to a spill file on disk (spill.py) instead of RAM.
# Reading a spilled batch (16 rows of 196 KB at 256 px, from the page cache, in a prefetch thread)
# costs about a millisecond against a second for a CPU training step, so a small budget costs no
# speed; at 2 GiB a fine-tuning run of 20,000 images peaked at 3.5 GiB RSS (bench/RESULTS.md).
DEFAULT_MEMORY_BUDGET = int(os.environ.get("TLCORE_MEMORY_BUDGET", 512 * 2**20))
# With a training subset (quick runs), validation keeps at most this many images per class:
# every image of digits and of the tutorial folders, 250 of MNIST's or CIFAR-10's 1,000. An
# accuracy measured on a handful of images moves in steps of many points.
VAL_CAP_PER_CLASS = 250


class DataError(ValueError):
    """A dataset spec cannot be used; the message says why and what to do."""


@dataclass
class Split:
    """Decoded images of one split: uint8 (N, 3, R, R) and int64 labels (N,).

    `images` is a tensor, or over the memory budget a `SpilledImages` read a batch at a time.
    """

    images: torch.Tensor | SpilledImages
    labels: torch.Tensor
    # Positions in the split's item list of the rows kept (None: all, in order); unreadable
    # files are dropped, and per-image results must still name the right file.
    index: list[int] | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Decoded:
    """A dataset ready for training."""

    class_names: list[str]
    train: Split
    val: Split
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DataSource:
    """Where a dataset's images are, before decoding.

    Items are either file paths (folders) or rows of a uint8 array (built-in arrays), each with
    a label; `fingerprint` hashes the content so caches can key on it.
    """

    name: str
    class_names: list[str]
    train_items: list
    train_labels: list[int]
    val_items: list
    val_labels: list[int]
    fingerprint: str
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def decode(self, resize: int, memory_budget: int | None = None, workers: int | None = None) -> Decoded:
        """Decode and resize every image once to (3, resize, resize) uint8.

        Both splits together keep at most `memory_budget` bytes (default DEFAULT_MEMORY_BUDGET) in
        memory: the training split first, the validation split in what is left; a split that does
        not fit goes to a spill file. Unreadable files are skipped and listed in `Decoded.skipped`
        with the reason.
        """
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
        skipped = list(self.skipped)
        train = _decode_split(self.train_items, self.train_labels, resize, budget, skipped, workers, self.fingerprint + "-train")
        if isinstance(train.images, torch.Tensor):
            budget -= len(self.train_items) * 3 * resize * resize  # what it took, before unreadable rows were dropped
        val = _decode_split(self.val_items, self.val_labels, resize, budget, skipped, workers, self.fingerprint + "-val")
        if len(train) == 0 or len(val) == 0:
            raise DataError(f"{self.name}: no readable images left in the {'train' if len(train) == 0 else 'validation'} split")
        return Decoded(self.class_names, train, val, skipped)

    @property
    def num_images(self) -> int:
        return len(self.train_items) + len(self.val_items)


# ---- decoding -----------------------------------------------------------------------------


def _allocate(n: int, resize: int, budget: int, key: str) -> torch.Tensor | SpilledImages:
    """A uint8 (n, 3, resize, resize) buffer: in RAM within the budget, else in a spill file.

    The spill file (spill.py) is private to this buffer and unlinked at once: nothing is left on
    disk when the run ends, even if the process dies, and its rows are read a batch at a time
    without becoming the process's memory.
    """
    shape = (n, 3, resize, resize)
    if n * 3 * resize * resize <= budget:
        return torch.empty(shape, dtype=torch.uint8)
    return SpilledImages(shape, paths.cache_root() / "spill", f"{key}-{resize}-")


def _decode_split(items, labels, resize, budget, skipped, workers, key) -> Split:
    if items and isinstance(items[0], np.ndarray):
        return _resize_arrays(items, labels, resize, budget, key)
    out = _allocate(len(items), resize, budget, key)
    keep = []

    def work(i_path):
        i, path = i_path
        row, error = load_row(path, resize)
        if error is None:
            out[i] = row
        return i, error

    with ThreadPoolExecutor(max_workers=decode_workers(workers)) as pool:
        for i, error in pool.map(work, enumerate(items)):
            if error is None:
                keep.append(i)
            else:
                skipped.append((Path(items[i]).name, error))
    if len(keep) == len(items):
        return Split(out, torch.tensor(labels, dtype=torch.long))
    return Split(_compact(out, keep), torch.tensor(labels, dtype=torch.long)[keep], keep)


def _compact(out: torch.Tensor | SpilledImages, keep: list[int]) -> torch.Tensor | SpilledImages:
    """Move the kept rows (ascending) to the front, in place, and return that view.

    `out[idx]` would copy the whole split into fresh memory: for a spilled split, exactly the
    RAM the spill exists to save.
    """
    for new, old in enumerate(keep):
        if new != old:
            out[new] = out[old]
    return out.head(len(keep)) if isinstance(out, SpilledImages) else out[: len(keep)]


def _resize_arrays(items, labels, resize, budget, key) -> Split:
    out = _allocate(len(items), resize, budget, key)
    for start in range(0, len(items), 256):
        chunk = np.stack(items[start : start + 256])
        x = torch.from_numpy(chunk).float()
        x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + len(chunk)] = x.round().clamp(0, 255).to(torch.uint8)
    return Split(out, torch.tensor(labels, dtype=torch.long))


# ---- resolving specs ----------------------------------------------------------------------


def _hash_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _hash_files(root: Path, items: list, labels: list) -> str:
    h = hashlib.sha256()
    for path, label in zip(items, labels, strict=True):
        h.update(f"{Path(path).relative_to(root)}|{label}|".encode())
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()[:16]


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): each class split by `val_fraction`, seeded, at least one each side."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    train, val = [], []
    for c in np.unique(labels_arr):
        idx = rng.permutation(np.flatnonzero(labels_arr == c)).tolist()
        n_val = min(max(1, round(len(idx) * val_fraction)), len(idx) - 1) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def _subset(labels: list[int], per_class: int | None, seed: int) -> list[int]:
    """Indices keeping at most `per_class` items of each class (seeded)."""
    if not per_class:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    keep = []
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        keep += rng.permutation(idx)[:per_class].tolist()
    return sorted(keep)


def _take(seq, idx):
    return [seq[i] for i in idx]


def _array_source(name, classes, x_train, y_train, x_val, y_val, subset, seed) -> DataSource:
    tr = _subset(list(y_train), subset, seed)
    va = _subset(list(y_val), subset and VAL_CAP_PER_CLASS, seed + 1)
    x_tr, y_tr = [x_train[i] for i in tr], [int(y_train[i]) for i in tr]
    x_va, y_va = [x_val[i] for i in va], [int(y_val[i]) for i in va]
    fp = _hash_arrays(np.stack(x_tr), np.asarray(y_tr), np.stack(x_va), np.asarray(y_va))
    return DataSource(name, classes, x_tr, y_tr, x_va, y_va, f"{name}-{fp}")


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as (8x8 values 0..16, labels), read from the file sklearn ships.

    `sklearn.datasets.load_digits` reads this same CSV, but importing sklearn pulls scipy and
    pandas: 1.5 s of a 3 s cached run. Falls back to load_digits if the file is not where it was.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    csv = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if csv is not None and csv.is_file():
        with gzip.open(csv, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def _digits(subset, val_fraction, seed) -> DataSource:
    values, target = _digits_arrays()
    # 8x8 values 0..16 -> 0..255 grey levels.
    images = (values * (255.0 / 16.0)).round().astype(np.uint8)
    labels = target.tolist()
    # Split first, then subset the training side: the validation set stays whole.
    tr, va = stratified_split(labels, val_fraction, seed)
    return _array_source("digits", [str(i) for i in range(10)], images[tr], [labels[i] for i in tr],
                         images[va], [labels[i] for i in va], subset, seed)


def check_builtin(name: str) -> None:
    """Raise DataError at once when built-in `name` is not on this machine and cannot be downloaded now.

    The Train page calls it on Start: a run queued offline for a dataset it cannot get would only
    fail when it starts. A folder that is there counts as there (a damaged one fails in the run).
    """
    if name in DOWNLOADS:
        url, folder = DOWNLOADS[name]
        if _local_folder(name) is None and not host_reachable(url):
            raise _offline(name, paths.data_root() / folder)
    elif name != "digits":
        root = paths.data_root() / name
        if not (root.is_dir() and any(root.iterdir())) and not host_reachable(_torchvision_url(_torchvision_class(name))):
            raise _offline(name, root)


def _offline(name: str, where: Path) -> DataError:
    return DataError(f"{name} is not downloaded and there is no network: connect once so it can be saved "
                     f"to {where}, or use digits (works offline) or an image folder")


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    return {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]


def _torchvision_url(cls) -> str:
    return getattr(cls, "mirrors", [getattr(cls, "url", "https://download.pytorch.org")])[0]


def _torchvision_dataset(name: str, subset, seed) -> DataSource:
    cls = _torchvision_class(name)
    root = paths.data_root() / name
    try:
        train, val = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError:
        if not host_reachable(_torchvision_url(cls)):
            raise _offline(name, root) from None
        train, val = cls(root, train=True, download=True), cls(root, train=False, download=True)
    x_tr, x_va = np.asarray(train.data), np.asarray(val.data)
    y_tr, y_va = np.asarray(train.targets), np.asarray(val.targets)
    return _array_source(name, list(train.classes), x_tr, y_tr, x_va, y_va, subset, seed)


def _local_folder(name: str) -> Path | None:
    """Where a downloadable built-in's folder already is on this machine, or None."""
    folder = DOWNLOADS[name][1]
    return next((base / folder for base in [paths.data_root(), *paths.shared_data_dirs()]
                 if (base / folder).is_dir()), None)


def _downloaded_folder(name: str) -> Path:
    url, folder = DOWNLOADS[name]
    if (local := _local_folder(name)) is not None:
        return local
    if not host_reachable(url):
        raise _offline(name, paths.data_root() / folder)
    zip_path = download(url, paths.data_root() / f"{folder}.zip", timeout=120)
    extract_zip(zip_path, paths.data_root())
    return paths.data_root() / folder


def _folder_source(root: Path, name: str, val_fraction: float, subset, seed) -> DataSource:
    root = root.resolve()  # the scan returns absolute paths; the fingerprint hashes names relative to root
    scan = scan_folder(root)
    items = [p for p, _ in scan.train]
    labels = [label for _, label in scan.train]
    # Split first, then subset the training side only: the validation set stays whole
    # (capped per class), whatever the subset.
    if scan.val is None:
        tr, va = stratified_split(labels, val_fraction, seed)
        x_tr, y_tr, x_va, y_va = _take(items, tr), _take(labels, tr), _take(items, va), _take(labels, va)
    else:
        x_tr, y_tr = items, labels
        x_va, y_va = [p for p, _ in scan.val], [label for _, label in scan.val]
    keep = _subset(y_tr, subset, seed)
    x_tr, y_tr = _take(x_tr, keep), _take(y_tr, keep)
    keep = _subset(y_va, subset and VAL_CAP_PER_CLASS, seed + 1)
    x_va, y_va = _take(x_va, keep), _take(y_va, keep)
    if not x_va:
        raise DataError(f"{name}: the validation split is empty: add images or raise --val-fraction")
    fp = _hash_files(root, x_tr + x_va, y_tr + y_va)
    return DataSource(name, scan.class_names, x_tr, y_tr, x_va, y_va, f"folder-{fp}",
                      notes=list(scan.warnings), skipped=list(scan.skipped))


def _zip_root(zip_path: Path) -> Path:
    with open(zip_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    base = paths.data_root() / "extracted"
    dest = base / digest
    done = dest / ".complete"
    if not done.exists():
        # Extract into a private folder and rename it into place: two processes extracting
        # the same zip at once each write their own copy, and the loser's is dropped.
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=base))
        try:
            result = extract_zip(zip_path, tmp)
            (tmp / ".complete").write_text(str(result.root.relative_to(tmp)))
            if dest.exists() and not done.exists():
                shutil.rmtree(dest, ignore_errors=True)  # left half-done by an older version
            with contextlib.suppress(OSError):  # another process finished first: use theirs
                os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    root = Path(done.read_text())
    return root if root.is_absolute() else dest / root  # absolute: written by an older version


def check_data_spec(spec: str) -> None:
    """Cheap check that a spec names a built-in dataset or an existing path; raises DataError."""
    if spec in BUILTIN:
        return
    path = Path(spec).expanduser()
    if not path.exists() and (os.sep in spec or "/" in spec or path.suffix):
        raise DataError(f"dataset path not found: {spec}: check the path, or use one of {', '.join(BUILTIN)}")
    if not path.exists():
        raise DataError(
            f"unknown dataset {spec!r}: use one of {', '.join(BUILTIN)}, a folder of class "
            "folders, or a .zip of one"
        )


def resolve_data(spec: str, *, val_fraction: float = 0.2, subset: int | None = None, seed: int = 0) -> DataSource:
    """Turn a dataset spec into a `DataSource`.

    Args:
        spec: a built-in name (see BUILTIN) or a path to an image folder or `.zip`.
        val_fraction: validation share when a folder has no train/val split.
        subset: keep at most this many training images per class; the validation split keeps
            all its images, at most VAL_CAP_PER_CLASS per class.
        seed: seeds the split and the subset.

    Raises:
        DataError: unknown spec, missing path, or data that cannot be had offline.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    if spec == "digits":
        return _digits(subset, val_fraction, seed)
    if spec in ("mnist", "fashion_mnist", "cifar10"):
        return _torchvision_dataset(spec, subset, seed)
    if spec in DOWNLOADS:
        return _folder_source(_downloaded_folder(spec), spec, val_fraction, subset, seed)
    check_data_spec(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DataError(f"{path.name}: a dataset file must be a .zip of class folders")
        return _folder_source(_zip_root(path), path.name, val_fraction, subset, seed)
    return _folder_source(path, path.name, val_fraction, subset, seed)
