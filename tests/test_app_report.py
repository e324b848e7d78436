"""AppTest tests of the Report page: no runs, a run's report, a picked cell, an old run, another folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from vega_data import layer

from tlcore.analysis.report import run_report
from tlcore.runs import RunStore
from tlcore.training.config import TrainConfig
from tlcore.training.jobs import get_manager
from tlcore.views.insight_charts import CELL_SELECTION

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/4_Report.py"


@pytest.fixture
def one_run(tl_env, image_folder) -> str:
    manager = get_manager(tl_env.runs)
    run_id = manager.submit(TrainConfig(backbone="simple_cnn", data=str(image_folder), strategy="scratch",
                                        epochs=2, image_size=32, val_fraction=0.5, device="cpu"))
    assert manager.wait(run_id, timeout=120) and manager.snapshot(run_id)["status"] == "finished"
    return run_id


def report_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def gallery(at) -> list[str]:
    """The captions of the gallery's thumbnails, highest loss first."""
    return [picture.caption for element in at.get("image") for picture in element.proto.imgs]


def test_without_runs_it_says_to_train_one() -> None:
    at = report_page()
    assert "No finished run yet" in at.info[0].value


def test_a_runs_report_and_one_cell(one_run) -> None:
    at = report_page()
    assert "9 images" in at.caption[0].value
    [chart] = at.get("vega_lite_chart")  # the confusion matrix
    cells = layer(chart, "rect")[1]
    assert cells["images"].sum() == 9 and set(cells["actual"]) == set(cells["predicted"]) == {"cat", "coffee", "rocket"}
    assert list(chart.proto.selection_mode) == [CELL_SELECTION]  # a click on a cell reruns the page
    assert len(at.dataframe) == 2 and list(at.dataframe[0].value["class"]) == ["cat", "coffee", "rocket"]
    assert len(gallery(at)) == 9 and at.subheader[0].value == "Highest loss"
    assert len(at.columns) == 4  # run and images, matrix and tables: the tiles wrap in one row container
    options = at.selectbox(key="report_cell").options
    assert options[0] == "all images" and len(options) > 1
    cell = options[1]  # e.g. "cat → coffee (2)": the biggest mistake first
    at.selectbox(key="report_cell").select(cell).run()
    assert not at.exception, at.exception
    actual, rest = cell.split(" → ")
    predicted, count = rest[:-1].split(" (")
    assert at.subheader[0].value == f"Highest loss: {actual} predicted as {predicted}"
    assert len(gallery(at)) == int(count) and all(c.startswith(f"{actual} → {predicted} (") for c in gallery(at))


def test_a_validation_image_deleted_since_training_is_named_under_the_gallery(one_run, tl_env) -> None:
    at = report_page()
    first = gallery(at)[0]
    item = run_report(RunStore(tl_env.runs), one_run).top_losses(1)[0]["item"]  # the highest loss: shown first
    Path(item).unlink()
    at.run()
    assert not at.exception and len(gallery(at)) == 8
    assert at.caption[-1].value == f"1 of these images are no longer where the run saw them: {first}: {item}"


def test_an_old_run_says_retrain_it(one_run, tl_env) -> None:
    (tl_env.runs / one_run / "val_results.json").unlink()
    at = report_page()
    assert "retrain it" in at.info[0].value


def test_another_folder_reports_unknown_folders(one_run, tmp_path, make_class_folders) -> None:
    test = make_class_folders(tmp_path / "test", per_class=2, classes=("cat", "coffee"), seed=3)
    shutil.copytree(test / "cat", test / "dog")
    at = report_page()
    at.radio(key="report_images").set_value("another folder or zip").run()
    at.text_input(key="report_folder").input(str(test)).run()
    at.button(key="report_evaluate").click().run()
    assert not at.exception, at.exception
    assert any("'dog' (2 images)" in w.value for w in at.warning)
    assert "test · 4 images" in at.caption[0].value


def test_evaluating_the_runs_own_folder_warns_that_it_is_no_test(one_run, image_folder, tmp_path,
                                                                 make_class_folders) -> None:
    """QA: the whole dataset folder (train/ included) reported 56% with no word that the run saw it."""
    at = report_page()
    at.radio(key="report_images").set_value("another folder or zip").run()
    at.text_input(key="report_folder").input(str(image_folder)).run()
    at.button(key="report_evaluate").click().run()
    assert not at.exception, at.exception
    seen = [w.value for w in at.warning if "the folder this run was trained on" in w.value]
    assert seen and seen[0].startswith("18 of these 18 images")
    new = make_class_folders(tmp_path / "new", per_class=2, classes=("cat", "coffee"), seed=3)
    at.text_input(key="report_folder").input(str(new)).run()
    at.button(key="report_evaluate").click().run()
    assert not [w for w in at.warning if "the folder this run was trained on" in w.value]


@pytest.mark.parametrize("bad", ["missing", "one_class"])
def test_a_failed_evaluation_clears_the_previous_report(one_run, tmp_path, make_class_folders, bad) -> None:
    # QA: the error showed and the previous folder's report stayed under it, now under the new path.
    good = make_class_folders(tmp_path / "good", per_class=2, classes=("cat", "coffee"), seed=3)
    wrong = tmp_path / "nowhere" if bad == "missing" else make_class_folders(tmp_path / "one", per_class=2,
                                                                              classes=("cat",), seed=4)
    at = report_page()
    at.radio(key="report_images").set_value("another folder or zip").run()
    at.text_input(key="report_folder").input(str(good)).run()
    at.button(key="report_evaluate").click().run()
    assert "good · 4 images" in at.caption[0].value and len(at.get("vega_lite_chart")) == 1
    at.text_input(key="report_folder").input(str(wrong)).run()
    at.button(key="report_evaluate").click().run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("Cannot evaluate:")
    assert not at.get("vega_lite_chart") and not at.dataframe and not at.get("image")
    assert not any("good · " in c.value for c in at.caption)
    at.run()  # and it stays cleared on the next rerun, not back to the old folder's report
    assert not at.get("vega_lite_chart") and not at.dataframe
