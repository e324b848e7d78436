"""The run report: confusion matrix, per-class figures, most confused, top losses, other test sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support
from vega_data import layer

from tlcore.analysis.holdout import HoldoutError, evaluate_on
from tlcore.analysis.lr_find import LRFinderResult
from tlcore.analysis.report import NO_RESULTS, Interpretation, NoResults, item_picture, run_report
from tlcore.cli import main
from tlcore.runs import RunNotFound, RunStore
from tlcore.views.insight_charts import (
    CELL_SELECTION,
    cells,
    clicked_cell,
    confusion_figure,
    lr_find_figure,
    most_confused_table,
    per_class_table,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config, make_class_folders) -> tuple[Path, str, str, Path]:
    """(runs folder, folder-data run id, digits run id, its photo folder): two tiny finished runs."""
    from tlcore.training.jobs import JobManager

    base = tmp_path_factory.mktemp("report")
    photos = make_class_folders(base / "photos", per_class=8)
    manager = JobManager(base / "runs")
    folder_run = manager.submit(tiny_config(data=str(photos), subset=None, val_fraction=0.5, epochs=3))
    digits_run = manager.submit(tiny_config())
    for rid in (folder_run, digits_run):
        manager.wait(rid)
        assert manager.snapshot(rid)["status"] == "finished", manager.snapshot(rid)
    return base / "runs", folder_run, digits_run, photos


def _fixed() -> Interpretation:
    # 3 classes, 8 images; rows are probabilities (argmax gives the prediction).
    probs = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .2, .7],
                      [.1, .8, .1], [.3, .6, .1], [.5, .4, .1], [.1, .1, .8]])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    return Interpretation(["ant", "bee", "wasp"], [f"img{i}.jpg" for i in range(8)], labels, probs)


@pytest.mark.parametrize("which", ["folder", "digits"])
def test_matrix_sums_to_the_val_count_and_its_diagonal_is_the_best_accuracy(runs, which) -> None:
    root, folder_run, digits_run, _ = runs
    run_id = folder_run if which == "folder" else digits_run
    store = RunStore(root)
    record = store.load(run_id)
    interp = run_report(store, run_id)
    cm = interp.confusion()
    assert cm.sum() == record.status["num_val"] == len(interp.items)
    assert np.trace(cm) / cm.sum() == pytest.approx(record.status["best_val_acc"])
    assert np.allclose(interp.confusion(normalize=True).sum(1)[cm.sum(1) > 0], 1.0)
    kind = str if which == "folder" else int
    assert all(isinstance(item, kind) for item in interp.items)


def test_per_class_figures_match_scikit_learn_on_a_fixed_example() -> None:
    interp = _fixed()
    rows = {r["class"]: r for r in interp.per_class()}
    p, r, f, s = precision_recall_fscore_support(interp.labels, interp.preds, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(interp.classes):
        assert rows[name]["precision"] == pytest.approx(p[i]) and rows[name]["recall"] == pytest.approx(r[i])
        assert rows[name]["f1"] == pytest.approx(f[i]) and rows[name]["support"] == s[i]
    # By hand: preds are [0,0,1,2,1,1,0,2]; "ant": 2 of the 3 predicted are right, 2 of its 4 found.
    assert (rows["ant"]["precision"], rows["ant"]["recall"], rows["ant"]["support"]) == (pytest.approx(2 / 3), 0.5, 4)
    assert interp.confusion().tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 1]]
    assert interp.accuracy == pytest.approx(5 / 8)


def test_most_confused_and_the_gallery_are_ordered() -> None:
    interp = _fixed()
    assert interp.most_confused() == [{"actual": "ant", "predicted": "bee", "count": 1},
                                      {"actual": "ant", "predicted": "wasp", "count": 1},
                                      {"actual": "bee", "predicted": "ant", "count": 1}]
    gallery = interp.top_losses()
    losses = [g["loss"] for g in gallery]
    assert losses == sorted(losses, reverse=True) and len(gallery) == 8
    assert gallery[0]["item"] == "img3.jpg" and gallery[0]["loss"] == pytest.approx(-np.log(0.1))
    assert gallery[0]["predicted"] == "wasp" and gallery[0]["prob"] == pytest.approx(0.7)
    cell = interp.top_losses(actual="ant", predicted="bee")
    assert [g["item"] for g in cell] == ["img2.jpg"]
    assert len(interp.top_losses(k=3)) == 3
    assert cells(interp)[0][0] != cells(interp)[0][1], "mistakes come first in the cell list"
    assert list(most_confused_table(interp).columns) == ["actual", "predicted", "count"]
    assert per_class_table(interp)["support"].sum() == 8


def test_an_old_run_without_results_says_retrain_it(runs, tmp_path, capsys) -> None:
    root, folder_run, _, _ = runs
    old = tmp_path / "runs"
    shutil.copytree(root / folder_run, old / folder_run)
    (old / folder_run / "val_results.json").unlink()
    with pytest.raises(NoResults, match="retrain it"):
        run_report(RunStore(old), folder_run)
    with pytest.raises(RunNotFound):
        run_report(RunStore(old), "20990101-000000-nope")
    assert main(["report", folder_run, "--runs-dir", str(old)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert NO_RESULTS in line


def test_report_json_has_every_view(runs, capsys) -> None:
    root, folder_run, _, _ = runs
    assert main(["report", folder_run, "--runs-dir", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"classes", "confusion", "per_class", "accuracy", "most_confused", "top_losses"} <= set(out)
    assert out["classes"] == ["cat", "coffee", "rocket"]
    assert set(out["per_class"][0]) == {"class", "precision", "recall", "f1", "support"}
    assert set(out["top_losses"][0]) >= {"item", "true", "predicted", "prob", "loss"}
    assert Path(out["top_losses"][0]["item"]).is_file()


def test_evaluate_on_another_folder_reports_unknown_folders(runs, tmp_path, make_zip, make_class_folders,
                                                            capsys) -> None:
    root, folder_run, _, _ = runs
    test = make_class_folders(tmp_path / "test", per_class=3, classes=("cat", "coffee"), seed=7)
    shutil.copytree(test / "coffee", test / "tea")  # a class the run does not know
    interp = evaluate_on(folder_run, str(test), root, device="cpu")
    assert interp.classes == ["cat", "coffee", "rocket"]
    assert len(interp.items) == 6 and interp.unknown_folders == {"tea": 3}
    assert interp.confusion().sum() == 6 and interp.confusion()[2].sum() == 0
    zipped = evaluate_on(folder_run, str(make_zip(test, tmp_path / "test.zip")), root, device="cpu")
    assert zipped.confusion().tolist() == interp.confusion().tolist()

    assert main(["report", folder_run, "--runs-dir", str(root), "--data", str(test)]) == 0
    assert "folder 'tea' (3 images) is not one of the run's classes" in capsys.readouterr().out

    strangers = make_class_folders(tmp_path / "strangers", per_class=2, classes=("cat", "rocket"))
    for name, new in (("cat", "dog"), ("rocket", "car")):
        (strangers / name).rename(strangers / new)
    with pytest.raises(HoldoutError, match="none of the run's classes"):
        evaluate_on(folder_run, str(strangers), root, device="cpu")
    assert main(["report", folder_run, "--runs-dir", str(root), "--data", str(strangers)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "none of the run's classes" in line


def test_item_pictures_for_files_and_array_rows(runs) -> None:
    root, folder_run, digits_run, _ = runs
    store = RunStore(root)
    for run_id in (folder_run, digits_run):
        interp, config = run_report(store, run_id), store.load(run_id).config
        picture = item_picture(interp.items[0], config, size=96)
        assert picture is not None and max(picture.size) == 96
    digits = run_report(store, digits_run)
    # Row i of the validation split is the digit its label says: a blank picture would not vary.
    assert np.asarray(item_picture(digits.items[0], store.load(digits_run).config)).std() > 10
    assert item_picture("/no/such/file.png", {}) is None


def test_confusion_chart_has_every_cell_in_class_order_and_a_cell_selection() -> None:
    fixed = _fixed()
    # Names like "8" are names: the axes keep the classes' order, not a numeric or text sort.
    interp = Interpretation(["8", "10", "2"], fixed.items, fixed.labels, fixed.probs)
    chart = confusion_figure(interp, normalize=True)
    spec, rows = layer(chart, "rect")
    assert spec["encoding"]["x"]["sort"] == spec["encoding"]["y"]["sort"] == ["8", "10", "2"]
    assert spec["encoding"]["x"]["type"] == spec["encoding"]["y"]["type"] == "nominal"
    by_cell = {(r.actual, r.predicted): r for r in rows.itertuples()}
    assert {k: v.images for k, v in by_cell.items() if v.images} == {
        ("8", "8"): 2, ("8", "10"): 1, ("8", "2"): 1, ("10", "8"): 1, ("10", "10"): 2, ("2", "2"): 1}
    assert len(by_cell) == 9 and by_cell[("8", "8")].label == "50%" and by_cell[("2", "8")].label == "0%"
    assert spec["encoding"]["color"]["title"] == "share of row"
    [param] = [p for p in chart.to_dict()["params"] if p["name"] == CELL_SELECTION]
    assert param["select"]["type"] == "point" and param["select"]["fields"] == ["actual", "predicted"]
    assert param["views"] == [spec["name"]]  # the cells, not the numbers written on them
    counts = layer(confusion_figure(interp), "text")[1]
    assert counts.set_index(["actual", "predicted"]).loc[("10", "10"), "label"] == "2"
    assert layer(confusion_figure(interp), "rect")[0]["encoding"]["color"]["title"] == "images"


def test_clicked_cell_reads_the_event_streamlit_returns_for_a_point_selection() -> None:
    from streamlit.elements.vega_charts import VegaLiteStateSerde

    serde = VegaLiteStateSerde([CELL_SELECTION])  # what st.altair_chart(on_select="rerun") returns, from the UI's JSON
    click = serde.deserialize(json.dumps({"selection": {CELL_SELECTION: [{"actual": "8", "predicted": "2"}]}}))
    assert clicked_cell(click) == ("8", "2")
    assert clicked_cell(serde.deserialize(None)) is None  # nothing clicked yet
    assert clicked_cell(serde.deserialize(json.dumps({"selection": {CELL_SELECTION: {}}}))) is None  # cleared
    assert clicked_cell(None) is None


def test_lr_finder_chart_has_a_log_axis_and_marks_the_suggestion() -> None:
    chart = lr_find_figure(LRFinderResult([1e-5, 1e-4, 1e-3], [2.0, 1.0, 3.0], 1e-4))
    spec, sweep = layer(chart, "line")
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
    assert sweep.to_dict("list") == {"lr": [1e-5, 1e-4, 1e-3], "loss": [2.0, 1.0, 3.0]}
    assert layer(chart, "point", 1)[1].to_dict("records") == [{"lr": 1e-4, "loss": 1.0}]
