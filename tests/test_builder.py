"""Data in: datasets built class by class (tlcore.data.builder), stored safely, and trained on."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from conftest import photo_patches
from PIL import Image

from tlcore.data import builder
from tlcore.data.builder import BuildError


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def photos(photo: str, n: int, seed: int = 0, fmt: str = "PNG") -> list[tuple[str, bytes]]:
    """(file name, bytes) of n different real-photo crops."""
    return [(f"{photo}_{i}.{fmt.lower()}", encoded(img, fmt)) for i, img in enumerate(photo_patches(photo, n, 48, seed))]


@pytest.fixture
def pets() -> builder.BuiltDataset:
    ds = builder.create_dataset("My pets")
    builder.add_class(ds.id, "cat")
    builder.add_class(ds.id, "coffee")
    return ds


def test_a_built_dataset_is_an_image_folder_listed_by_its_name(pets) -> None:
    assert builder.add_images(pets.id, "cat", photos("chelsea", 3)).added == 3
    assert builder.add_images(pets.id, "coffee", photos("coffee", 2, fmt="JPEG")).added == 2
    [listed] = builder.list_datasets()
    assert (listed.id, listed.name, listed.counts) == (pets.id, "My pets", {"cat": 3, "coffee": 2})
    assert listed.path.parent == builder.root() and builder.root().is_relative_to(Path(os.environ["TLCORE_DATA"]))
    stored = sorted(p.name for p in (listed.path / "coffee").iterdir())
    assert all(len(n) == 68 and n.endswith(".jpg") for n in stored)  # <sha256>.jpg, never the user's name
    assert builder.built_name(builder.trainable_spec(pets.id)) == "My pets"
    assert builder.built_name(str(listed.path.parent / "elsewhere")) is None


def test_duplicates_are_stored_once(pets) -> None:
    batch = photos("chelsea", 2)
    first = builder.add_images(pets.id, "cat", batch + [("copy.png", batch[0][1])])
    assert (first.added, first.duplicates, first.refused) == (2, 1, [])
    again = builder.add_images(pets.id, "cat", batch)
    assert (again.added, again.duplicates) == (0, 2)
    assert builder.get_dataset(pets.id).counts["cat"] == 2
    # The same photo in another class would teach the model nonsense: refused, naming the class.
    other = builder.add_images(pets.id, "coffee", [("cat again.png", batch[1][1])])
    assert other.added == 0 and other.refused == ["cat again.png: already in class 'cat': a photo can be in one class only"]


def test_unreadable_files_are_refused_with_their_name(pets) -> None:
    good = photos("chelsea", 1)
    truncated = good[0][1][: len(good[0][1]) // 2]
    report = builder.add_images(pets.id, "cat", [*good, ("notes.jpg", b"hello, not an image"),
                                                 ("half.png", truncated), ("empty.gif", b"")])
    assert report.added == 1
    assert [line.split(":")[0] for line in report.refused] == ["notes.jpg", "half.png", "empty.gif"]
    assert "not an image" in report.refused[0]
    assert report.summary() == "1 added, 3 refused"


@pytest.mark.parametrize(("name", "message"), [
    ("../x", "contains /"),
    ("..", "starts or ends with a dot"),
    (".hidden", "starts or ends with a dot"),
    ("a\\b", "contains \\"),
    ("", "empty"),
    ("   ", "empty"),
    ("x" * 61, "keep it to 60"),
    ("line\nbreak", "control characters"),
    ("train", "reserved folder name"),
    ("VAL", "reserved folder name"),
    ("what?", "contains ?"),
])
def test_hostile_class_names_are_refused(pets, name, message) -> None:
    with pytest.raises(BuildError, match=message.replace("\\", "\\\\").replace("?", "\\?")) as info:
        builder.add_class(pets.id, name)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in pets.path.iterdir()) == [".dataset.json", "cat", "coffee"]
    assert not (builder.root().parent / "x").exists()


@pytest.mark.parametrize("name", ["chat noir", "猫", "café", "Golden Retriever (adult)", "x" * 60, "🐱 cat"])
def test_unicode_and_long_names_work(pets, name) -> None:
    assert builder.add_class(pets.id, name) == name
    assert (pets.path / name).is_dir()
    assert builder.add_images(pets.id, name, photos("rocket", 1)).added == 1


def test_names_equal_up_to_case_or_normalisation_clash(pets) -> None:
    with pytest.raises(BuildError, match="already a class 'cat'"):
        builder.add_class(pets.id, "CAT")
    builder.add_class(pets.id, "caf\u00e9")
    with pytest.raises(BuildError, match="already a class"):
        builder.add_class(pets.id, "cafe\u0301")  # the same word, decomposed
    with pytest.raises(BuildError, match="already exists"):
        builder.create_dataset("  my PETS ")


def test_remove_an_image_a_class_and_the_dataset(pets) -> None:
    builder.add_images(pets.id, "cat", photos("chelsea", 3))
    [(victim, _), *_] = builder.thumbnails(pets.id, "cat")
    builder.remove_image(pets.id, "cat", victim)
    assert builder.get_dataset(pets.id).counts["cat"] == 2
    assert victim not in [n for n, _ in builder.thumbnails(pets.id, "cat")]
    with pytest.raises(BuildError, match="not an image of this dataset"):
        builder.remove_image(pets.id, "cat", "../.dataset.json")
    builder.remove_class(pets.id, "coffee")
    assert builder.get_dataset(pets.id).classes == ["cat"]
    with pytest.raises(BuildError, match="no class"):
        builder.remove_class(pets.id, "..")
    builder.delete_dataset(pets.id)
    assert builder.list_datasets() == [] and not pets.path.exists()
    with pytest.raises(BuildError, match="deleted"):
        builder.get_dataset(pets.id)
    with pytest.raises(BuildError, match="no built dataset"):
        builder.delete_dataset("../../etc")


def test_thumbnails_are_small_squares_newest_first(pets) -> None:
    builder.add_images(pets.id, "cat", photos("chelsea", 3))
    thumbs = builder.thumbnails(pets.id, "cat", limit=2, size=40)
    assert len(thumbs) == 2 and all(t.shape == (40, 40, 3) for _, t in thumbs)


def test_training_is_refused_with_fewer_than_two_classes_or_images(pets) -> None:
    with pytest.raises(BuildError, match="each class needs at least 2 images.*'cat' has 0, 'coffee' has 0"):
        builder.trainable_spec(pets.id)
    builder.add_images(pets.id, "cat", photos("chelsea", 2))
    builder.add_images(pets.id, "coffee", photos("coffee", 1))
    with pytest.raises(BuildError, match="'coffee' has 1$"):
        builder.trainable_spec(pets.id)
    builder.remove_class(pets.id, "coffee")
    with pytest.raises(BuildError, match=r"needs at least 2 classes to train \(it has 1: 'cat'\)"):
        builder.trainable_spec(pets.id)


def test_a_built_dataset_survives_a_restart_and_trains(pets, run_training) -> None:
    builder.add_images(pets.id, "cat", photos("chelsea", 5))
    builder.add_images(pets.id, "coffee", photos("coffee", 5, fmt="JPEG"))
    # A "restart": nothing but the data folder is kept.
    [again] = builder.list_datasets()
    spec = builder.trainable_spec(again.id)
    result, events = run_training(backbone="efficientnet_lite0", strategy="feature_extraction", data=spec,
                                  image_size=32, subset=None, epochs=1, lr=1e-3)
    started = next(data for kind, data in events if kind == "started")
    assert started["class_names"] == ["cat", "coffee"]
    assert started["num_train"] + started["num_val"] == 10
    assert result.summary["skipped"] == 0  # the dataset's own .dataset.json is not "an unreadable file"
    assert 0.0 <= result.summary["best_val_acc"] <= 1.0
