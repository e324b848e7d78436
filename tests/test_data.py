"""Dataset specs: built-in digits, image folders and zips, offline failures, fingerprints, spilling."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlcore.data import sources as tldata
from tlcore.data.sources import BUILTIN, DataError, resolve_data, stratified_split
from tlcore.data.spill import SpilledImages

SHARED_HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"


def _rows(items) -> set[bytes]:
    return {np.ascontiguousarray(x).tobytes() for x in items}


# ---- digits -------------------------------------------------------------------------------


def test_digits_split_is_stratified_disjoint_and_complete() -> None:
    src = resolve_data("digits", val_fraction=0.2, seed=0)
    assert src.class_names == [str(i) for i in range(10)]
    assert src.num_images == 1797
    train, val = Counter(src.train_labels), Counter(src.val_labels)
    for c in range(10):
        assert val[c] == round((train[c] + val[c]) * 0.2), f"class {c} not split 80/20"
    # The 1797 digit images are all distinct, so content identifies them.
    assert not _rows(src.train_items) & _rows(src.val_items)
    assert len(_rows(src.train_items) | _rows(src.val_items)) == 1797


def test_digits_split_is_seeded() -> None:
    a, b, c = (resolve_data("digits", seed=s, subset=20) for s in (0, 0, 1))
    assert a.fingerprint == b.fingerprint and a.train_labels == b.train_labels
    assert all(np.array_equal(x, y) for x, y in zip(a.train_items, b.train_items, strict=True))
    assert c.fingerprint != a.fingerprint
    assert _rows(c.val_items) != _rows(a.val_items)


def test_digits_subset_keeps_n_training_images_per_class() -> None:
    src = resolve_data("digits", subset=5)
    assert Counter(src.train_labels) == {c: 5 for c in range(10)}
    assert set(src.val_labels) == set(range(10))


def test_digits_are_sklearns_without_importing_it() -> None:
    """digits read from sklearn's own file (importing sklearn costs 1.5 s): the same values and labels."""
    from sklearn.datasets import load_digits

    values, target = tldata._digits_arrays()
    digits = load_digits()
    assert np.array_equal(values, digits.images) and np.array_equal(target, digits.target)
    assert values.shape == (1797, 8, 8) and target.dtype.kind == "i"


def test_digits_decode_gives_uint8_rgb_squares() -> None:
    decoded = resolve_data("digits", subset=3).decode(24)
    assert decoded.train.images.dtype == torch.uint8
    assert decoded.train.images.shape == (30, 3, 24, 24)
    assert decoded.val.images.shape[1:] == (3, 24, 24)
    assert decoded.train.labels.dtype == torch.int64 and len(decoded.train) == 30
    assert decoded.train.images.max() > 200  # 0..16 grey levels were scaled to 0..255


def test_stratified_split_indices_are_disjoint_and_cover_all() -> None:
    labels = [0] * 10 + [1] * 7 + [2] * 2 + [3]
    train, val = stratified_split(labels, 0.3, seed=4)
    assert not set(train) & set(val) and sorted(train + val) == list(range(20))
    assert Counter(labels[i] for i in val) == {0: 3, 1: 2, 2: 1}  # a lone image stays in train
    assert stratified_split(labels, 0.3, seed=4) == (train, val)


# ---- folders and zips ---------------------------------------------------------------------


def test_class_folders_split_by_val_fraction(image_folder: Path) -> None:
    src = resolve_data(str(image_folder), val_fraction=0.5, seed=0)
    assert src.class_names == ["cat", "coffee", "rocket"]
    assert Counter(src.train_labels) == Counter(src.val_labels) == {0: 3, 1: 3, 2: 3}
    assert not set(src.train_items) & set(src.val_items)
    assert all(Path(p).parent.name == src.class_names[y] for p, y in zip(src.train_items, src.train_labels, strict=True))
    decoded = src.decode(32)
    assert decoded.train.images.shape == (9, 3, 32, 32) and decoded.skipped == []


def test_train_and_val_folders_are_used_as_given(tmp_path: Path, make_class_folders) -> None:
    root = tmp_path / "split"
    make_class_folders(root / "train", per_class=4, seed=0)
    make_class_folders(root / "val", per_class=2, seed=50)
    src = resolve_data(str(root), val_fraction=0.5)
    assert len(src.train_items) == 12 and len(src.val_items) == 6
    assert all("/train/" in Path(p).as_posix() for p in src.train_items)
    assert all("/val/" in Path(p).as_posix() for p in src.val_items)


@pytest.mark.parametrize("layout", ["flat", "train_val"])
def test_zip_of_a_dataset(tmp_path: Path, make_class_folders, make_zip, layout: str) -> None:
    root = tmp_path / "ds"
    if layout == "flat":
        make_class_folders(root, per_class=4)
    else:
        make_class_folders(root / "train", per_class=4)
        make_class_folders(root / "val", per_class=2, seed=9)
    folder_src = resolve_data(str(root), val_fraction=0.25)
    zip_src = resolve_data(str(make_zip(root, tmp_path / "ds.zip")), val_fraction=0.25)
    assert zip_src.class_names == folder_src.class_names == ["cat", "coffee", "rocket"]
    assert len(zip_src.train_items) == len(folder_src.train_items)
    assert len(zip_src.val_items) == len(folder_src.val_items)
    # Same files, same relative names: the same content fingerprint, so caches are shared.
    assert zip_src.fingerprint == folder_src.fingerprint
    assert len(zip_src.decode(16).train) == len(folder_src.train_items)


def test_relative_folder_path(image_folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(image_folder.parent)
    src = resolve_data(image_folder.name)
    assert src.fingerprint == resolve_data(str(image_folder)).fingerprint


def test_grayscale_images_become_three_channels(tmp_path: Path, make_class_folders) -> None:
    root = make_class_folders(tmp_path / "grey", per_class=3, grayscale=True)
    assert Image.open(next(root.rglob("*.png"))).mode == "L"
    images = resolve_data(str(root), val_fraction=0.34).decode(20).train.images
    assert images.shape[1] == 3
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])


def test_fake_image_is_skipped_counted_and_decode_goes_on(image_folder: Path) -> None:
    (image_folder / "cat" / "broken.jpg").write_text("<html>this is not a JPEG</html>")
    src = resolve_data(str(image_folder), val_fraction=0.25)
    assert src.num_images == 19  # found by extension; decoding finds it out
    decoded = src.decode(16)
    assert len(decoded.skipped) == 1
    name, reason = decoded.skipped[0]
    assert name == "broken.jpg" and reason
    assert len(decoded.train) + len(decoded.val) == 18


def test_non_zip_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "images.tar"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match=r"\.zip"):
        resolve_data(str(path))


# ---- specs that cannot be used ------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cats_dogs"])
def test_download_datasets_offline_fail_fast_saying_what_to_do(name: str, monkeypatch) -> None:
    import torchvision.datasets  # noqa: F401 - a slow first import is not the thing timed

    monkeypatch.setattr(tldata, "host_reachable", lambda *a, **k: False)
    t0 = time.perf_counter()
    with pytest.raises(DataError) as exc:
        resolve_data(name)
    assert time.perf_counter() - t0 < 3
    message = str(exc.value)
    assert name in message and "no network" in message and "digits" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cats_dogs"])
def test_a_builtin_that_is_neither_here_nor_downloadable_is_refused_before_a_run(name: str, monkeypatch,
                                                                                   tl_env) -> None:
    """What Start checks: the files' presence and the network, without loading the dataset."""
    monkeypatch.setattr(tldata, "host_reachable", lambda *a, **k: False)
    monkeypatch.setattr(tldata.paths, "shared_data_dirs", lambda: [])
    with pytest.raises(DataError, match=f"{name} is not downloaded and there is no network"):
        tldata.check_builtin(name)
    folder = tl_env.data / (tldata.DOWNLOADS[name][1] if name in tldata.DOWNLOADS else name)
    folder.mkdir(parents=True)
    (folder / "downloaded").write_text("")  # what is there counts as there
    tldata.check_builtin(name)
    tldata.check_builtin("digits")  # bundled


@pytest.mark.parametrize("spec", ["imagenet", "/no/such/folder", "photos.zip"])
def test_unknown_spec_or_missing_path_lists_valid_specs(spec: str) -> None:
    with pytest.raises(DataError) as exc:
        resolve_data(spec)
    for name in BUILTIN:
        assert name in str(exc.value)


def test_bad_val_fraction() -> None:
    with pytest.raises(DataError, match="val_fraction"):
        resolve_data("digits", val_fraction=1.0)


# ---- fingerprints and memory --------------------------------------------------------------


def test_fingerprint_follows_file_content(image_folder: Path) -> None:
    before = resolve_data(str(image_folder)).fingerprint
    assert resolve_data(str(image_folder)).fingerprint == before
    path = image_folder / "coffee" / "coffee_0.png"
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    assert resolve_data(str(image_folder)).fingerprint != before


@pytest.mark.parametrize("kind", ["digits", "folder"])
def test_memory_budget_spills_to_a_file_with_identical_pixels(kind: str, image_folder: Path, tl_env) -> None:
    src = resolve_data("digits", subset=4) if kind == "digits" else resolve_data(str(image_folder))
    in_ram = src.decode(24)
    spilled = src.decode(24, memory_budget=1)
    # Train and val each spill to a private file, unlinked at once (see test_correctness).
    assert isinstance(spilled.train.images, SpilledImages) and isinstance(spilled.val.images, SpilledImages)
    assert spilled.train.images._file.fd != spilled.val.images._file.fd
    assert list((tl_env.cache / "spill").iterdir()) == []
    assert torch.equal(in_ram.train.images, spilled.train.images[:])
    assert torch.equal(in_ram.val.images, spilled.val.images[:])
    assert torch.equal(in_ram.train.labels, spilled.train.labels)
    idx = torch.tensor([3, 0, 2, 3])  # a batch: any rows, any order, repeats
    assert torch.equal(in_ram.train.images[idx], spilled.train.images[idx])


def test_the_default_memory_budget_is_read_when_decoding(image_folder: Path, monkeypatch) -> None:
    monkeypatch.setattr(tldata, "DEFAULT_MEMORY_BUDGET", 1)
    assert isinstance(resolve_data(str(image_folder)).decode(24).train.images, SpilledImages)


# ---- the shared development copy ----------------------------------------------------------


@pytest.mark.shared_data
def test_hymenoptera_resolves_to_the_shared_copy() -> None:
    if not SHARED_HYMENOPTERA.is_dir():
        pytest.skip(f"{SHARED_HYMENOPTERA} is not here (a fresh clone): nothing to resolve offline")
    src = resolve_data("hymenoptera")
    assert src.class_names == ["ants", "bees"]
    assert 244 <= len(src.train_items) <= 245
    assert len(src.val_items) == 153
    assert all(Path(p).is_relative_to(SHARED_HYMENOPTERA.resolve()) for p in src.train_items)


def test_the_memory_budget_covers_both_splits_together(image_folder: Path) -> None:
    src = resolve_data(str(image_folder), val_fraction=0.3)
    row = 3 * 24 * 24
    fits_train = len(src.train_items) * row
    both = src.decode(24, memory_budget=fits_train)  # room for the training split, none left for validation
    assert isinstance(both.train.images, torch.Tensor) and isinstance(both.val.images, SpilledImages)
    whole = src.decode(24, memory_budget=fits_train + len(src.val_items) * row)
    assert isinstance(whole.train.images, torch.Tensor) and isinstance(whole.val.images, torch.Tensor)
    assert torch.equal(both.val.images[:], whole.val.images)
