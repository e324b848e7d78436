"""Experiments: grid expansion, one data seed for all runs, records on disk, cancel, restart, report."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from tlcore import experiments
from tlcore.analysis.experiment_report import report
from tlcore.experiments import ExperimentStore, Grid, cancel_experiment, estimate, expand, progress, start_experiment
from tlcore.training.jobs import JobManager


def test_grid_expands_seed_major_with_each_cell_tagged(tiny_config) -> None:
    grid = Grid(strategies=["feature_extraction", "finetune"], backbones=["simple_cnn", "efficientnet_lite0"],
                seeds=[0, 1, 2], lrs=[1e-3, 1e-4])
    configs = expand(tiny_config(seed=5), grid, "exp-x")
    assert len(configs) == grid.size == 24
    cells = [(c.cell["seed"], c.cell["backbone"], c.cell["strategy"], c.cell["lr"]) for c in configs]
    assert len(set(cells)) == 24
    assert [c[0] for c in cells] == [0] * 8 + [1] * 8 + [2] * 8  # every cell's first seed comes first
    for cfg in configs:
        assert (cfg.backbone, cfg.strategy, cfg.lr, cfg.seed) == (cfg.cell["backbone"], cfg.cell["strategy"],
                                                                   cfg.cell["lr"], cfg.cell["seed"])
        assert cfg.data_seed == 5 and cfg.experiment_id == "exp-x"


def test_per_strategy_learning_rates(tiny_config) -> None:
    grid = Grid(strategies=["feature_extraction", "finetune"], backbones=["simple_cnn"], seeds=[0],
                strategy_lrs={"finetune": 1e-4})
    assert {c.strategy: c.lr for c in expand(tiny_config(lr=1e-3), grid)} == {
        "feature_extraction": 1e-3, "finetune": 1e-4}


@pytest.mark.parametrize(("grid", "message"), [
    (Grid(["bogus"], ["simple_cnn"], [0]), "unknown strategy 'bogus': choose from feature_extraction"),
    (Grid(["finetune"], ["nope"], [0]), "unknown backbone 'nope'"),
    (Grid(["finetune"], ["simple_cnn"], []), "seeds must be at least 1"),
    (Grid([], ["simple_cnn"], [0]), "pick at least one strategy"),
])
def test_bad_grids_say_what_is_valid(grid: Grid, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grid.validate()


def _wait_all(manager: JobManager, record: dict, timeout: float = 300) -> None:
    for run in record["runs"]:
        assert manager.wait(run["run_id"], timeout)


def test_experiment_runs_share_their_validation_files(tmp_path: Path, tiny_config, image_folder: Path) -> None:
    manager = JobManager(tmp_path / "runs")
    base = tiny_config(data=str(image_folder), subset=None, val_fraction=0.4, epochs=1, seed=3)
    record = start_experiment(manager, base, Grid(["scratch"], ["simple_cnn"], seeds=[0, 1, 2]))
    _wait_all(manager, record)
    items = [manager.store.load_val_results(r["run_id"])["items"] for r in record["runs"]]
    assert items[0] == items[1] == items[2] and len(items[0]) >= 6
    # Without the shared data seed, the split follows each run's seed and differs.
    solo = [manager.submit(tiny_config(data=str(image_folder), subset=None, val_fraction=0.4, epochs=1, seed=s))
            for s in (0, 1)]
    for rid in solo:
        assert manager.wait(rid, 300)
    assert manager.store.load_val_results(solo[0])["items"] != manager.store.load_val_results(solo[1])["items"]
    configs = [json.loads((tmp_path / "runs" / r["run_id"] / "config.json").read_text()) for r in record["runs"]]
    assert {c["data_seed"] for c in configs} == {3} and [c["seed"] for c in configs] == [0, 1, 2]
    assert {c["experiment_id"] for c in configs} == {record["experiment_id"]}


def test_record_is_written_at_once_and_finished_at_the_end(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path)
    events = []
    record = start_experiment(manager, tiny_config(), Grid(["scratch", "finetune"], ["simple_cnn"], [0, 1]),
                              listener=lambda rid, kind, data: events.append((rid, kind)))
    assert record["status"] in ("queued", "running") and len(record["runs"]) == 4
    assert progress(record)["total"] == 4
    _wait_all(manager, record)
    done = ExperimentStore(tmp_path).load(record["experiment_id"])
    assert done["status"] == "finished" and done["finished"] >= done["created"]
    assert progress(done)["done"] == 4
    assert {rid for rid, kind in events if kind == "finished"} == {r["run_id"] for r in record["runs"]}
    out = report(tmp_path, record["experiment_id"], resamples=500)
    assert [g["name"] for g in out["groups"]] == ["simple_cnn/scratch", "simple_cnn/finetune"]
    for g in out["groups"]:
        assert g["n"] == 2 and len(g["best_val_accs"]) == 2 and g["rank"] in (1, 2)
        assert g["wilson_low"] <= g["best_val_acc_mean"] <= g["wilson_high"]
    assert out["comparison"]["test"] == "paired bootstrap"
    assert out["verdict"] == out["comparison"]["verdict"]


def test_cancel_stops_queued_and_running_runs(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path)
    started = threading.Event()
    record = start_experiment(manager, tiny_config(epochs=200), Grid(["scratch"], ["simple_cnn"], [0, 1, 2]),
                              listener=lambda rid, kind, data: started.set() if kind == "epoch" else None)
    assert started.wait(120)
    assert cancel_experiment(manager, record["experiment_id"]) == 3
    _wait_all(manager, record)
    after = ExperimentStore(tmp_path).load(record["experiment_id"])
    assert after["status"] == "cancelled" and after["cancelled"]
    assert sorted(after["states"].values()) == ["cancelled"] * 3
    first = manager.store.load(record["runs"][0]["run_id"])
    assert 0 < len(first.metrics) < 200  # the running one stopped mid-way, the queued ones never began
    assert [len(manager.store.load(r["run_id"]).metrics) for r in record["runs"][1:]] == [0, 0]


def test_records_survive_a_restart(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path)
    record = start_experiment(manager, tiny_config(epochs=1), Grid(["scratch"], ["simple_cnn"], [0, 1]))
    _wait_all(manager, record)
    manager.close()
    again = JobManager(tmp_path)  # as after an app restart: a new manager over the same folder
    store = ExperimentStore(again.store.root)
    [listed] = store.list()
    assert listed["experiment_id"] == record["experiment_id"] and listed["status"] == "finished"
    assert [r["run_id"] for r in listed["runs"]] == [r["run_id"] for r in record["runs"]]
    assert report(tmp_path, record["experiment_id"], resamples=200)["groups"][0]["n"] == 2


def test_a_half_done_experiment_reads_as_interrupted_after_its_process_died(tmp_path: Path, tiny_config) -> None:
    manager = JobManager(tmp_path)
    record = start_experiment(manager, tiny_config(epochs=1), Grid(["scratch"], ["simple_cnn"], [0, 1]))
    _wait_all(manager, record)
    # Make the second run look like it was running in a process that is gone.
    status_path = tmp_path / record["runs"][1]["run_id"] / "status.json"
    status = json.loads(status_path.read_text())
    status_path.write_text(json.dumps({**status, "status": "running", "pid": 2**22 + 1, "token": "gone"}))
    loaded = ExperimentStore(tmp_path).load(record["experiment_id"])
    assert loaded["status"] == "interrupted"
    assert report(tmp_path, record["experiment_id"], resamples=200)["groups"][0]["n"] == 1


def test_estimate_marks_extra_feature_extraction_runs_cheap(tiny_config) -> None:
    grid = Grid(["feature_extraction", "finetune"], ["efficientnet_lite0"], [0, 1, 2])
    rows = estimate(expand(tiny_config(backbone="efficientnet_lite0", image_size=None), grid), num_images=400)
    fe = [r for r in rows if r["strategy"] == "feature_extraction"]
    assert [r["cheap"] for r in fe] == [False, True, True]
    assert not any(r["cheap"] for r in rows if r["strategy"] == "finetune")
    assert fe[1]["seconds"] < fe[0]["seconds"] / 3


def test_estimate_counts_gradual_head_epochs_as_cached(tiny_config) -> None:
    base = tiny_config(backbone="efficientnet_lite0", image_size=None, epochs=3, head_epochs=2)
    finetune, gradual, augmented = estimate([dataclasses.replace(base, strategy="finetune"),
                                             dataclasses.replace(base, strategy="gradual"),
                                             dataclasses.replace(base, strategy="gradual", augment="flip-crop")],
                                            num_images=400)
    # One full epoch plus one frozen pass, against three full epochs (and three with augmentation).
    assert gradual["seconds"] < finetune["seconds"] / 2
    assert augmented["seconds"] == finetune["seconds"]


def test_the_estimate_says_how_many_runs_are_quick() -> None:
    slow, quick = {"seconds": 60.0, "cheap": False}, {"seconds": 2.0, "cheap": True}
    assert "; 1 of them is quick (feature extraction" in experiments.estimate_text([slow, quick, slow])
    assert "; 2 of them are quick" in experiments.estimate_text([slow, quick, quick])
    assert "; all of them are quick" in experiments.estimate_text([quick, quick])
    assert "quick" not in experiments.estimate_text([slow])
