"""What a new user needs around runs and the Train form (issue 9): names, delete, the form's checks, pace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tlcore.data.uploads import save_upload
from tlcore.runs import RunStore
from tlcore.training.config import default_lr
from tlcore.views import form, ui


def _finished(store: RunStore, run_id: str, **config) -> str:
    store.create(run_id, {"backbone": "simple_cnn", "strategy": "scratch", "data": "digits", **config})
    store.write_status(run_id, {"status": "finished", "created": 1.0})
    return run_id


# ---- names and deletion ------------------------------------------------------------------------


def test_a_user_name_is_saved_with_the_run_and_becomes_its_label(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a, b = _finished(store, "20260101-000000-a"), _finished(store, "20260101-000100-b")
    assert store.set_name(a, "  baseline\n at 64 px ") == "baseline at 64 px"  # one line
    assert store.load(a).name == "baseline at 64 px" and store.load(a).snapshot()["name"] == "baseline at 64 px"
    assert sorted(p.name for p in (tmp_path / a).iterdir() if p.name.startswith(".")) == []  # atomic: no temp left
    assert ui.run_labels(store.list()) == {b: "simple_cnn + scratch", a: "baseline at 64 px"}
    store.set_name(a, "")
    assert store.load(a).name == "" and ui.run_labels(store.list())[a].startswith("simple_cnn + scratch · ")
    (tmp_path / b / "name.json").write_text("{not json")
    assert store.load(b).name == ""  # a damaged name file never hides the run


def test_delete_removes_an_ended_run_and_refuses_an_active_one(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    done = _finished(store, "20260101-000000-done")
    store.create("20260101-000100-queued", {"backbone": "simple_cnn", "strategy": "scratch"})  # owned by us: alive
    store.delete(done)
    assert not (tmp_path / done).exists() and [r.run_id for r in store.list()] == ["20260101-000100-queued"]
    with pytest.raises(ValueError, match="is queued: cancel it first"):
        store.delete("20260101-000100-queued")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".deleted")]


# ---- the Train form ------------------------------------------------------------------------------


def test_default_learning_rates_per_strategy_and_optimizer() -> None:
    assert default_lr("feature_extraction") == default_lr("scratch") == 1e-3
    assert {default_lr(s) for s in ("finetune", "partial", "discriminative", "gradual")} == {1e-4}
    assert default_lr("finetune", "sgd") == pytest.approx(1e-3) and default_lr("feature_extraction", "sgd") == 1e-2


def test_advanced_settings_are_offered_only_where_they_apply() -> None:
    assert form.advanced_fields("feature_extraction", "linear", "digits") == ["val_fraction", "weight_decay",
                                                                              "precision"]
    assert form.advanced_fields("feature_extraction", "linear", "cifar10") == ["weight_decay", "precision"]  # own test set
    assert form.advanced_fields("partial", "mlp", None) == ["unfreeze_groups", "hidden", "val_fraction", "weight_decay",
                                                            "precision"]
    assert form.advanced_fields("gradual", "linear", "hymenoptera") == ["lr_factor", "head_epochs", "weight_decay",
                                                                        "precision"]
    assert form.advanced_fields("discriminative", "linear", "digits")[0] == "lr_factor"
    assert form.advanced_values(["hidden", "weight_decay"], {"hidden": "512-256", "weight_decay": 0.01,
                                                             "unfreeze_groups": 5}) == {
        "hidden": (512, 256), "weight_decay": 0.01}
    assert form.parse_hidden("") == () and form.parse_hidden("64, 32") == (64, 32)
    with pytest.raises(ValueError, match="whole numbers from 1 to 65536"):
        form.parse_hidden("big")


def test_a_zip_without_class_folders_is_refused_with_its_own_name(tmp_path: Path, make_zip,
                                                                  make_class_folders) -> None:
    loose = tmp_path / "photos"
    make_class_folders(tmp_path / "tmp", per_class=2, classes=("cat",))
    loose.mkdir()
    for image in (tmp_path / "tmp" / "cat").iterdir():
        image.rename(loose / image.name)
    stored = save_upload(make_zip(loose, tmp_path / "x.zip").read_bytes(), "my photos.zip")
    with pytest.raises(ValueError) as info:
        form.check_dataset(str(stored))
    message = str(info.value)
    assert message.startswith("my photos.zip/photos has no class folders, only 2 images")
    assert "extracted" not in message and stored.stem[:16] not in message and str(stored.parent) not in message


def test_a_good_folder_is_described_before_queueing(image_folder: Path) -> None:
    assert form.check_dataset(str(image_folder)) == (
        "photos: 3 classes (cat, coffee, rocket), 15 training and 3 validation images")
    assert form.check_dataset("digits") == ""  # built-ins are not scanned (some download first)


def test_missing_weights_are_said_before_queueing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_OFFLINE", "1")  # TORCH_HOME is empty in tests: resnet18 is not cached
    note = form.weights_note("resnet18", "finetune")
    assert "resnet18-f37072fd.pth" in note and "efficientnet_lite0" in note
    with pytest.raises(ValueError, match="not on this machine and there is no network: put resnet18-f37072fd.pth"):
        form.check_weights("resnet18", "finetune")
    assert form.weights_note("resnet18", "scratch") is None  # random weights: nothing to fetch
    assert form.weights_note("efficientnet_lite0", "finetune") is None
    form.check_weights("efficientnet_lite0", "finetune")


def test_earlier_uploads_stay_selectable(tmp_path: Path, image_zip: Path) -> None:
    stored = save_upload(image_zip.read_bytes(), "holiday.zip", tmp_path)
    assert ui.earlier_uploads(tmp_path) == {str(stored): "holiday.zip"}
    assert ui.dataset_spec(ui.DATA_SOURCES[2], upload=None, earlier=str(stored)) == str(stored)


# ---- a running run's pace ------------------------------------------------------------------------


def _snap(epoch: int, batch: int, loss: float = 0.5, metrics=()) -> dict:
    return {"status": "running", "config": {"epochs": 2}, "metrics": list(metrics),
            "progress": {"phase": "train", "epoch": epoch, "epochs": 2, "batch": batch, "batches": 10, "loss": loss}}


def test_time_left_from_the_pace_seen_and_live_batch_losses() -> None:
    trail: list[dict] = []
    ui.track(trail, _snap(1, 1, 2.0), now=100.0)
    ui.track(trail, _snap(1, 1, 2.0), now=101.0)  # the same batch twice: one point
    assert ui.time_left(trail, _snap(1, 1), now=101.0) == ""  # no pace yet
    ui.track(trail, _snap(1, 5, 1.0), now=110.0)
    assert len(trail) == 2
    # 4 batches of 10 (90% of an epoch is training) in 10 s: 0.18 of the run per 10 s.
    frac = ui.progress_of(_snap(1, 5))[0]
    rate = (frac - ui.progress_of(_snap(1, 1))[0]) / 10
    assert ui.time_left(trail, _snap(1, 5), now=110.0) == f"about {(1 - frac) / rate:.0f} s left"
    assert ui.live_losses(trail) == [(0.1, 2.0), (0.5, 1.0)]
    # Right after a reload (one point seen), finished epochs' durations give the estimate:
    # 2 epochs of 120 s, 72.5% done.
    fresh = ui.track([], _snap(2, 5, metrics=[{"epoch": 1, "seconds": 120.0}]), now=0.0)
    assert ui.time_left(fresh, _snap(2, 5, metrics=[{"epoch": 1, "seconds": 120.0}])) == "about 66 s left"
    assert ui.track([], {"status": "queued", "progress": {}}) == []


def test_top_k_is_limited_to_the_run_s_classes() -> None:
    assert ui.top_k_limit(["cats", "dogs"]) == 2
    assert ui.top_k_limit(None) == 10 and ui.top_k_limit([str(i) for i in range(20)]) == 10


def test_internal_upload_paths_in_run_messages_become_file_names(tmp_path: Path, image_zip: Path) -> None:
    from tlcore import paths

    stored = save_upload(image_zip.read_bytes(), "pets.zip")
    extracted = paths.data_root().resolve() / "extracted" / stored.stem[:16] / "photos"
    snap = {"status": "failed", "message": f"{extracted} has no class folders; {stored} unreadable"}
    assert ui.run_message(snap) == "pets.zip/photos has no class folders; pets.zip unreadable"
    assert os.fspath(tmp_path) not in ui.run_message({"status": "failed", "message": str(stored)})
