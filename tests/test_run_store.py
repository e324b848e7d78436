"""RunStore.list over a runs folder that holds damaged and foreign folders beside real runs."""

from __future__ import annotations

import json
from pathlib import Path

from tlcore.runs import RunStore


def _folder(root: Path, name: str, **files: str | bytes) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file_name, content in files.items():
        path = folder / file_name.replace("_json", ".json")
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return folder


def test_list_skips_damaged_and_foreign_folders_and_keeps_the_runs(tmp_path: Path, make_finished_run) -> None:
    runs = tmp_path / "runs"
    older = make_finished_run(runs)
    newer = make_finished_run(runs, classes=("x", "y", "z"))
    config = json.dumps({"backbone": "simple_cnn", "strategy": "scratch"})
    _folder(runs, "half-written-config", config_json='{"backbone": "simple_')
    _folder(runs, "binary-config", config_json=b"\xff\xfe\x00garbage")
    _folder(runs, "bad-status", config_json=config, status_json="{")
    _folder(runs, "bad-metrics", config_json=config, status_json='{"status": "finished"}', metrics_json="[{")
    _folder(runs, "bad-classes", config_json=config, status_json='{"status": "finished"}', classes_json="[")
    _folder(runs, "no-config", status_json='{"status": "finished"}')
    _folder(runs, "config-is-a-folder").joinpath("config.json").mkdir()
    _folder(runs, "has space", config_json=config)  # not a run id
    (runs / "notes.txt").write_text("not a run")

    records = RunStore(runs).list()
    assert [r.run_id for r in records] == [newer, older]
    assert records[0].class_names == ["x", "y", "z"] and records[0].state == "finished"


def test_list_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert RunStore(tmp_path / "nowhere").list() == []
