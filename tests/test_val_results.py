"""The val_results.json contract: each run saves its best epoch's per-image validation results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlcore.data.sources import resolve_data
from tlcore.runs import RunStore
from tlcore.training.jobs import JobManager


def _check_contract(results: dict, summary: dict) -> None:
    n = len(results["labels"])
    assert results["format"] == 1
    assert results["epoch"] == summary["best_epoch"]
    assert len(results["items"]) == len(results["probs"]) == n > 0
    assert all(len(row) == len(results["classes"]) for row in results["probs"])
    assert all(abs(sum(row) - 1) < 1e-4 for row in results["probs"])
    # The saved probabilities reproduce the best epoch's accuracy.
    correct = sum(max(range(len(row)), key=row.__getitem__) == y
                  for row, y in zip(results["probs"], results["labels"], strict=True))
    assert correct / n == pytest.approx(summary["best_val_acc"])


def test_builtin_arrays_save_val_indices_labels_and_probs(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path)
    run_id = manager.submit(tiny_config(epochs=2))
    assert manager.wait(run_id, 120)
    snap = manager.snapshot(run_id)
    assert snap["status"] == "finished"
    results = manager.store.load_val_results(run_id)
    _check_contract(results, snap)
    source = resolve_data("digits", subset=5, seed=0)
    assert results["items"] == list(range(len(source.val_items)))
    assert results["labels"] == source.val_labels
    assert results["classes"] == source.class_names
    on_disk = json.loads((tmp_path / run_id / "val_results.json").read_text())
    assert on_disk == results


@pytest.mark.parametrize("feature_cache", [True, False])
def test_folder_runs_name_each_val_file_and_leave_out_unreadable_ones(
        tmp_path: Path, run_training, image_folder: Path, feature_cache: bool) -> None:
    broken = image_folder / "cat" / "cat_zz_broken.jpg"
    broken.write_bytes(b"not a jpeg")
    overrides = {"backbone": "efficientnet_lite0", "strategy": "feature_extraction", "data": str(image_folder),
                 "image_size": 32, "val_fraction": 0.5, "subset": None, "feature_cache": feature_cache}
    for _attempt in range(2):  # with the cache: a miss, then a hit that must give the same list
        result, _ = run_training(**overrides)
        source = resolve_data(str(image_folder), val_fraction=0.5, seed=0)
        assert str(broken) in map(str, source.val_items), "the broken file must land in validation"
        _check_contract(result.val_results, result.summary)
        kept = [str(p) for p in source.val_items if Path(p) != broken]
        assert result.val_results["items"] == kept
        assert result.val_results["labels"] == [y for p, y in zip(source.val_items, source.val_labels, strict=True)
                                                if Path(p) != broken]


def test_runs_from_before_have_no_val_results(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.create("old-run", {"backbone": "simple_cnn"})
    assert store.load_val_results("old-run") is None


def test_cancelled_run_with_a_best_epoch_keeps_its_val_results(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path)
    stop_after_epoch = []

    def listener(kind: str, data: dict) -> None:
        if kind == "epoch":
            stop_after_epoch.append(manager.cancel(run_id))

    run_id = manager.submit(tiny_config(epochs=50), listener=listener)
    assert manager.wait(run_id, 120)
    snap = manager.snapshot(run_id)
    assert snap["status"] == "cancelled" and stop_after_epoch
    _check_contract(manager.store.load_val_results(run_id), snap)
