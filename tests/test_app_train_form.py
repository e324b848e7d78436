"""AppTest tests of the Train page for what trips a new user up (issue 9): defaults, advanced
settings, checks before queueing, earlier uploads, and managing the list of runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from vega_data import layer

from tlcore.data.uploads import save_upload
from tlcore.runs import RunStore
from tlcore.training.jobs import get_manager
from tlcore.views import form

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/1_Train.py"


@pytest.fixture
def runs_dir(tl_env) -> Path:
    return tl_env.runs


def train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text(at: AppTest) -> str:
    return " ".join(m.value for m in [*at.markdown, *at.caption])


def fake_runs(runs_dir: Path, states: list[str]) -> list[str]:
    """Runs on disk, oldest first, in the given end states (no training: only their files)."""
    store, ids = RunStore(runs_dir), []
    for i, state in enumerate(states):
        run_id = f"20260101-0000{i:02d}-simple_cnn-scratch-{i:06d}"
        store.create(run_id, {"backbone": "simple_cnn", "strategy": "scratch", "data": "digits", "lr": 1e-3 * (i + 1)})
        store.write_status(run_id, {"status": state, "created": 1000.0 + i,
                                    "message": "boom" if state == "failed" else None})
        ids.append(run_id)
    return ids


def test_the_learning_rate_follows_the_strategy_and_optimizer(runs_dir: Path) -> None:
    at = train_page()
    assert at.number_input(key="lr").value == pytest.approx(1e-3)
    at.selectbox(key="strategy").set_value("finetune").run()
    assert at.number_input(key="lr").value == pytest.approx(1e-4)
    assert "default for finetune with adam: 0.0001" in at.number_input(key="lr").help
    at.selectbox(key="optimizer").set_value("sgd").run()
    assert at.number_input(key="lr").value == pytest.approx(1e-3)
    assert not at.exception and not at.warning  # no "value set via Session State" warning


def test_advanced_settings_appear_where_they_apply_and_reach_the_run(runs_dir: Path) -> None:
    at = train_page()
    keys = {w.key for w in [*at.number_input, *at.text_input, *at.slider]}
    assert not keys & set(form.ADVANCED)  # a closed section sends no widgets (issue 13)
    at.session_state["advanced_open"] = True
    at.run()
    keys = {w.key for w in [*at.number_input, *at.text_input, *at.slider]}
    assert {"val_fraction", "weight_decay"} <= keys and not keys & {"unfreeze_groups", "hidden", "lr_factor"}
    at.selectbox(key="backbone").set_value("simple_cnn")
    at.selectbox(key="strategy").set_value("partial")
    at.selectbox(key="head").set_value("mlp").run()
    at.number_input(key="unfreeze_groups").set_value(1)
    at.text_input(key="hidden").input("32-16")
    at.slider(key="val_fraction").set_value(0.3)
    at.number_input(key="weight_decay").set_value(0.01).run()
    at.session_state["advanced_open"] = False  # closed again: its values still reach the run
    at.run()
    assert not at.slider and not any("Session State" in w.value for w in at.warning), [w.value for w in at.warning]
    for key, value in (("subset", 3), ("epochs", 1), ("image_size", 32)):
        (at.number_input if key != "image_size" else at.selectbox)(key=key).set_value(value)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (record,) = get_manager(runs_dir).list_runs()
    config = record.config
    assert (config["unfreeze_groups"], config["hidden"], config["val_fraction"], config["weight_decay"]) == (
        1, [32, 16], 0.3, 0.01)
    assert config["lr"] == pytest.approx(1e-4)  # partial's default
    assert get_manager(runs_dir).wait(record.run_id, timeout=120)


def test_the_precision_is_an_advanced_setting_that_reaches_the_run(runs_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tlcore.training import device

    at = train_page()
    at.session_state["advanced_open"] = True
    at.run()
    assert at.selectbox(key="precision").value == "auto" and "native bf16" in at.selectbox(key="precision").help
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    at.selectbox(key="precision").set_value("bf16")
    at.button(key="start").click().run()
    assert "this CPU has no native bf16" in at.error[0].value and "use --precision auto or fp32" in at.error[0].value
    assert not get_manager(runs_dir).list_runs()
    at.selectbox(key="backbone").set_value("simple_cnn")
    at.selectbox(key="precision").set_value("fp32")
    for key, value in (("subset", 3), ("epochs", 1), ("image_size", 32)):
        (at.number_input if key != "image_size" else at.selectbox)(key=key).set_value(value)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (record,) = get_manager(runs_dir).list_runs()
    assert record.config["precision"] == "fp32"
    assert get_manager(runs_dir).wait(record.run_id, timeout=120)


def test_a_folder_without_class_folders_is_refused_before_queueing(runs_dir: Path, tmp_path: Path,
                                                                   make_class_folders) -> None:
    make_class_folders(tmp_path / "train", per_class=2, classes=("cat",))
    at = train_page()
    at.radio(key="data_source").set_value("folder on this machine").run()
    at.text_input(key="data_folder").input(str(tmp_path / "train" / "cat"))
    at.button(key="start").click().run()
    assert not at.exception
    message = at.error[0].value
    assert "has no class folders, only 2 images" in message and f"perhaps {(tmp_path / 'train').resolve()}" in message
    assert not get_manager(runs_dir).list_runs()


def test_earlier_uploads_are_offered_by_name_and_checked_like_new_ones(runs_dir: Path, tmp_path: Path,
                                                                        make_zip, make_class_folders) -> None:
    make_class_folders(tmp_path / "flat" / "x", per_class=2, classes=("cat",))
    flat = save_upload(make_zip(tmp_path / "flat" / "x" / "cat", tmp_path / "flat.zip").read_bytes(), "flat photos.zip")
    at = train_page()
    at.radio(key="data_source").set_value("upload a .zip").run()
    picker = at.selectbox(key="earlier_zip")
    assert picker.value == str(flat) and picker.format_func(picker.value) == "flat photos.zip"
    at.button(key="start").click().run()
    message = at.error[0].value
    assert "flat photos.zip/cat has no class folders" in message
    assert "extracted" not in message and flat.stem[:16] not in message
    assert not get_manager(runs_dir).list_runs()


def test_a_backbone_without_weights_offline_is_flagged_and_not_queued(runs_dir: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLCORE_OFFLINE", "1")
    at = train_page()
    at.selectbox(key="backbone").set_value("resnet18")
    at.selectbox(key="strategy").set_value("finetune").run()
    assert "resnet18's pretrained weights are not on this machine" in at.warning[0].value
    at.button(key="start").click().run()
    assert "there is no network: put resnet18-f37072fd.pth in" in at.error[0].value
    assert not get_manager(runs_dir).list_runs()
    at.selectbox(key="strategy").set_value("scratch").run()
    assert not at.warning


def test_a_builtin_dataset_that_cannot_be_downloaded_is_not_queued(runs_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """QA: cifar10 offline was queued, then failed when its run started."""
    monkeypatch.setenv("TLCORE_OFFLINE", "1")
    at = train_page()
    at.selectbox(key="dataset").set_value("cifar10").run()
    at.button(key="start").click().run()
    assert at.error and "cifar10 is not downloaded and there is no network" in at.error[0].value
    assert not get_manager(runs_dir).list_runs()


def test_run_list_shows_recent_runs_hides_failed_and_shows_all(runs_dir: Path) -> None:
    ids = fake_runs(runs_dir, ["finished"] * 6 + ["failed", "finished", "failed"])
    at = train_page()
    shown = [rid for rid in ids if any(w.key == f"name_{rid}" for w in at.text_input)]
    assert shown == ids[3:]  # the 6 newest, failed ones included
    assert "3 older or failed runs not shown" in text(at)
    at.toggle(key="hide_failed").set_value(True).run()
    shown = [rid for rid in ids if any(w.key == f"name_{rid}" for w in at.text_input)]
    assert shown == [ids[i] for i in (1, 2, 3, 4, 5, 7)] and "boom" not in [e.value for e in at.error]
    at.toggle(key="show_all").set_value(True).run()
    assert len([w for w in at.text_input if w.key.startswith("name_")]) == 7


def test_rename_then_delete_with_a_confirmation(runs_dir: Path) -> None:
    keep, doomed = fake_runs(runs_dir, ["finished", "finished"])
    at = train_page()
    at.text_input(key=f"name_{keep}").input("my baseline")
    at.button(key=f"rename_{keep}").click().run()
    assert RunStore(runs_dir).load(keep).name == "my baseline" and "**my baseline**" in text(at)
    at.button(key=f"delete_{doomed}").click().run()
    assert "cannot be undone" in at.warning[0].value and (runs_dir / doomed).is_dir()  # asked, not done
    at.button(key=f"delete_no_{doomed}").click().run()
    assert (runs_dir / doomed).is_dir() and not at.warning
    at.button(key=f"delete_{doomed}").click().run()
    at.button(key=f"delete_yes_{doomed}").click().run()
    assert not at.exception and not (runs_dir / doomed).exists()
    assert [r.run_id for r in RunStore(runs_dir).list()] == [keep]


def drawn_epochs(at: AppTest) -> list[int]:
    """Per curves chart on the page, its run's number of epochs (which tells the runs below apart)."""
    return [int(layer(chart, "line")[1]["epoch"].max()) for chart in at.get("vega_lite_chart")]


def test_ended_runs_draw_their_curves_when_asked(runs_dir: Path) -> None:
    """Each chart costs the browser time to draw (the first a new browser's 0.4 s for Vega's
    bundle): ended runs' curves wait for a toggle (issue 13: the Train page drew one chart per
    card, then the newest's); those this session watched train keep theirs (test_app_train)."""
    from fake_runs import fake_run

    store = RunStore(runs_dir)
    ids = [fake_run(store, i, epochs=i + 1) for i in range(4)]  # run i has i + 1 epochs
    at = train_page()
    assert drawn_epochs(at) == [] and not any(at.toggle(key=f"show_curves_{rid}").value for rid in ids)
    at.toggle(key=f"show_curves_{ids[0]}").set_value(True).run()
    assert drawn_epochs(at) == [1]
    at.toggle(key=f"show_curves_{ids[-1]}").set_value(True).run()
    assert drawn_epochs(at) == [4, 1]


def test_freezing_a_backbone_without_pretrained_weights_is_warned_before_the_run(runs_dir: Path) -> None:
    at = train_page()
    assert not [w for w in at.warning if "no pretrained weights" in w.value]  # Lite0: pretrained
    at.selectbox(key="backbone").set_value("simple_cnn").run()
    warned = [w.value for w in at.warning if "no pretrained weights" in w.value]
    assert warned and "feature_extraction would freeze random layers" in warned[0] and "scratch" in warned[0]
    at.selectbox(key="strategy").set_value("scratch").run()
    assert not [w for w in at.warning if "no pretrained weights" in w.value]
