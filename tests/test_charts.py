"""Tests for tlcore.charts (figures and tables from runs) and the display helpers in tlcore.ui."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from tlcore import charts, ui
from tlcore.predict import Prediction
from tlcore.runs import RunRecord


def _metrics(accs: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "train_loss": 2.0 - a, "train_acc": a - 0.05, "val_loss": 1.5 - a, "val_acc": a,
             "lr": 1e-3, "seconds": 1.5} for i, a in enumerate(accs)]


def _record(run_id: str, strategy: str, accs: list[float], state: str = "finished", **status) -> RunRecord:
    summary = {}
    if state == "finished":
        summary = {"best_val_acc": max(accs), "best_epoch": accs.index(max(accs)) + 1, "final_val_acc": accs[-1],
                   "seconds": 12.5, "trainable_params": 12_810, "total_params": 4_020_000}
    return RunRecord(run_id, {"backbone": "efficientnet_lite0", "strategy": strategy, "data": "digits", "epochs": 5},
                     {"status": state, **summary, **status}, _metrics(accs), [str(i) for i in range(10)])


FE = _record("20250101-120000-efficientnet_lite0-feature_extraction-aaaaaa", "feature_extraction", [0.5, 0.8, 0.7])
FT = _record("20250101-120500-efficientnet_lite0-finetune-bbbbbb", "finetune", [0.6, 0.9])


def test_curves_figure_has_train_and_val_loss_and_accuracy() -> None:
    fig = charts.curves_figure(FE.metrics)
    assert [(t.name, t.line.dash) for t in fig.data] == [("train", "dash"), ("val", "solid")] * 2
    loss_val, acc_val = fig.data[1], fig.data[3]
    assert list(loss_val.x) == [1, 2, 3] and list(loss_val.y) == pytest.approx([1.0, 0.7, 0.8])
    assert list(acc_val.y) == [0.5, 0.8, 0.7]


def test_curves_figure_of_a_run_without_epochs_is_empty_not_an_error() -> None:
    fig = charts.curves_figure([])
    assert all(len(t.x) == 0 for t in fig.data)


def test_compare_figure_one_line_per_run_named_by_backbone_and_strategy() -> None:
    fig = charts.compare_figure([FE, FT], "acc")
    assert [t.name for t in fig.data] == ["efficientnet_lite0 + feature_extraction", "efficientnet_lite0 + finetune"]
    assert list(fig.data[1].y) == [0.6, 0.9]
    with_train = charts.compare_figure([FE, FT], "loss", include_train=True)
    assert len(with_train.data) == 4
    assert [t.line.dash for t in with_train.data] == ["solid", "dash"] * 2
    assert with_train.data[0].line.color == with_train.data[1].line.color  # a run's train and val pair up
    with pytest.raises(ValueError, match="unknown metric"):
        charts.compare_figure([FE], "top5")


def test_compare_accepts_live_snapshots_too() -> None:
    snapshot = {"run_id": FT.run_id, "config": FT.config, "status": "running", "metrics": FT.metrics}
    fig = charts.compare_figure([snapshot], "acc")
    assert fig.data[0].name == "efficientnet_lite0 + finetune" and list(fig.data[0].y) == [0.6, 0.9]


def test_run_names_are_made_unique() -> None:
    twin = _record("20250101-130102-efficientnet_lite0-finetune-cccccc", "finetune", [0.1])
    same_second = _record("20250101-130102-efficientnet_lite0-finetune-dddddd", "finetune", [0.2])
    names = charts.run_names([FE, FT, twin, same_second])
    assert names[0] == "efficientnet_lite0 + feature_extraction"
    assert names[1] == "efficientnet_lite0 + finetune (12:05:00)"
    assert names[2] == "efficientnet_lite0 + finetune (13:01:02)"
    assert names[3] == "efficientnet_lite0 + finetune (13:01:02) #2"
    assert len(set(names)) == 4


def test_epoch_table_is_epoch_by_run() -> None:
    table = charts.epoch_table([FE, FT])
    assert table.index.name == "epoch" and list(table.index) == [1, 2, 3]
    assert list(table.columns) == [
        "efficientnet_lite0 + feature_extraction: val loss", "efficientnet_lite0 + feature_extraction: val acc",
        "efficientnet_lite0 + finetune: val loss", "efficientnet_lite0 + finetune: val acc"]
    assert table.loc[2, "efficientnet_lite0 + finetune: val acc"] == 0.9
    assert pd.isna(table.loc[3, "efficientnet_lite0 + finetune: val acc"])  # the shorter run


def test_summary_table_rows() -> None:
    cancelled = _record("20250101-140000-efficientnet_lite0-partial-eeeeee", "partial", [0.3, 0.4], "cancelled",
                        message="cancelled by the user")
    table = charts.summary_table([FE, FT, cancelled])
    assert list(table.columns) == list(charts.SUMMARY_COLUMNS)
    fe = table.iloc[0]
    assert (fe["backbone"], fe["strategy"], fe["dataset"], fe["status"]) == (
        "efficientnet_lite0", "feature_extraction", "digits", "finished")
    assert (fe["best val acc"], fe["final val acc"], fe["best epoch"], fe["epochs"]) == (0.8, 0.7, 2, 3)
    assert (fe["seconds"], fe["trainable params"], fe["total params"]) == (12.5, 12_810, 4_020_000)
    # An early-ended run has no summary in its status: its epochs so far stand in.
    row = table.iloc[2]
    assert (row["best val acc"], row["best epoch"], row["final val acc"], row["seconds"]) == (0.4, 2, 0.4, 3.0)
    assert pd.isna(row["trainable params"])


def test_tables_download_as_csv() -> None:
    epochs = charts.epoch_table([FE, FT])
    back = pd.read_csv(io.BytesIO(charts.to_csv(epochs)), index_col="epoch")
    assert list(back.columns) == list(epochs.columns) and back.shape == (3, 4)
    summary = pd.read_csv(io.BytesIO(charts.to_csv(charts.summary_table([FE]))))
    assert summary.loc[0, "run"] == "efficientnet_lite0 + feature_extraction" and "Unnamed: 0" not in summary


def test_dataset_names_for_display() -> None:
    assert charts.dataset_name("digits") == "digits"
    assert charts.dataset_name("/home/me/photos/flowers") == "flowers"
    assert charts.dataset_name(None) == "?"


def test_topk_figure_puts_the_most_likely_class_on_top() -> None:
    preds = [Prediction("tabby", 0.6), Prediction("tiger cat", 0.3), Prediction("lynx", 0.1)]
    bar = charts.topk_figure(preds, "lite0").data[0]
    assert bar.orientation == "h"
    assert list(bar.y) == ["lynx", "tiger cat", "tabby"]  # plotly draws the last category on top
    assert list(bar.x) == [0.1, 0.3, 0.6] and list(bar.text) == ["10.0%", "30.0%", "60.0%"]
    digits = charts.topk_figure([Prediction("8", 0.7), Prediction("3", 0.2)])
    assert digits.layout.yaxis.type == "category"  # class "8" is a name, not a position on an axis
    assert charts.topk_figure([("a", 1.0)]).data[0].y == ("a",)


# ---- tlcore.ui display helpers ------------------------------------------------------------


def test_progress_over_batches_and_epochs() -> None:
    snap = {"status": "running", "config": {"epochs": 4}, "metrics": _metrics([0.5]),
            "progress": {"phase": "train", "epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "loss": 0.25}}
    frac, text = ui.progress_of(snap)
    assert frac == pytest.approx((1 + 0.45) / 4)
    assert text == "epoch 2/4 · train batch 5/10 · loss 0.2500"
    frac, text = ui.progress_of({**snap, "progress": {"phase": "val", "epoch": 2, "epochs": 4, "batch": 10,
                                                      "batches": 10}})
    assert frac == pytest.approx(2 / 4)
    frac, text = ui.progress_of({**snap, "metrics": [], "progress": {"phase": "features (train)", "epoch": 0,
                                                                     "epochs": 4, "batch": 3, "batches": 4}})
    assert frac == 0.75 and "features (train)" in text
    assert ui.progress_of({"status": "queued", "config": {"epochs": 4}}) == (
        0.0, "queued: starts when the run before it ends")
    assert ui.progress_of({"status": "running", "config": {"epochs": 4}})[1] == "loading data and model"


def test_run_lines() -> None:
    snap = FE.snapshot()
    assert ui.epoch_line(snap).startswith("epoch 3/5: train loss 1.3000, acc 65.0% · val loss 0.8000, acc 70.0%")
    assert ui.result_line(snap).startswith("best val acc 80.0% at epoch 2 · 3 epochs in 12.5 s")
    assert ui.run_title(FE) == "efficientnet_lite0 + feature_extraction on digits · 2025-01-01 12:00:00"
    assert ui.state_badge("failed") == ":red-badge[failed]"
    assert ui.epoch_line({"metrics": []}) == ""


def test_runs_to_show_keeps_every_active_run() -> None:
    queued = _record("20250101-150000-efficientnet_lite0-finetune-ffffff", "finetune", [], "queued")
    shown = ui.runs_to_show([queued, FT, FE], active=[queued.run_id], limit=2)
    assert [r.run_id for r in shown] == [queued.run_id, FT.run_id]
    assert len(ui.runs_to_show([FT, FE], active=[], limit=1)) == 1


def test_backbone_rows_are_quick_and_label_offline_weights() -> None:
    rows = ui.backbone_rows()
    assert rows["efficientnet_lite0"]["available_offline"] is True
    assert rows["vgg16"]["params"] == 138_357_544  # counted on the meta device, same number
    assert ui.backbone_label(rows["efficientnet_lite0"]) == "efficientnet_lite0 · 4.7M params · offline"
    assert ui.backbone_label(rows["simple_cnn"]).startswith("simple_cnn · 95K params")
