"""Tests for tlcore.views.charts (figures and tables from runs) and the display helpers in tlcore.views.ui."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from vega_data import chart_layers, layer

from tlcore.predict import Prediction
from tlcore.runs import RunRecord
from tlcore.views import charts, ui


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


def _curve(chart, metric: str, series: str) -> pd.DataFrame:
    """The rows of one curve of `curves_figure`, in epoch order."""
    rows = chart_layers(chart)[0][1]
    return rows[(rows["metric"] == metric) & (rows["series"] == series)].sort_values("epoch")


def test_curves_figure_has_train_and_val_loss_and_accuracy() -> None:
    chart = charts.curves_figure(FE.metrics)
    loss, acc = chart.to_dict()["vconcat"]  # stacked on one epoch axis, each as wide as the card
    assert [v["encoding"]["y"]["title"] for v in (loss, acc)] == ["loss", "accuracy"]
    loss_val, acc_val = _curve(chart, "loss", "val"), _curve(chart, "acc", "val")
    assert list(loss_val["epoch"]) == [1, 2, 3] and list(loss_val["value"]) == pytest.approx([1.0, 0.7, 0.8])
    assert list(acc_val["value"]) == [0.5, 0.8, 0.7]
    assert list(_curve(chart, "acc", "train")["value"]) == pytest.approx([0.45, 0.75, 0.65])
    # Train dashed, validation solid, both with points; the live trail thin, its points hover-only.
    style = {name: dict(zip(enc["scale"]["domain"], enc["scale"]["range"], strict=True))
             for name, enc in loss["encoding"].items() if name in charts.CURVE_STYLE}
    assert style["strokeDash"]["train"] != [1, 0] and style["strokeDash"]["val"] == [1, 0]
    assert style["strokeWidth"]["val"] == style["strokeWidth"]["train"] > style["strokeWidth"][charts.LIVE]
    assert style["fillOpacity"]["val"] == style["fillOpacity"]["train"] == 1 and not style["fillOpacity"][charts.LIVE]
    # Each series its own value (Vega-Lite spread a nominal width's range over the series: val thin, no points).
    assert all(loss["encoding"][name]["scale"]["type"] == "ordinal" for name in ("strokeWidth", "fillOpacity"))
    # The accuracy axis 0-100%, the loss axis from 0.
    assert acc["encoding"]["y"]["scale"]["domain"] == [0, 1.02]
    assert loss["encoding"]["y"]["scale"]["zero"] is True
    # Hover: every curve's points carry the split, the epoch and the value.
    tips = [t["field"] for t in layer(chart, "line")[0]["encoding"]["tooltip"]]
    assert tips == ["series", "epoch", "value"] and layer(chart, "line")[0]["mark"]["point"]


def test_curves_figure_of_a_run_without_epochs_is_empty_not_an_error() -> None:
    chart = charts.curves_figure([])
    assert all(rows.empty for _, rows in chart_layers(chart))
    assert chart.to_dict()  # a valid spec


def test_the_epoch_axis_ticks_whole_epochs_only() -> None:
    """d3 prints a tick at 0.5 as "1" in whole numbers: ticks a whole epoch apart, on a domain that
    starts and ends on whole epochs."""
    x = layer(charts.curves_figure(FE.metrics), "line")[0]["encoding"]["x"]
    assert (x["scale"]["domain"], x["axis"]["tickMinStep"], x["axis"]["format"]) == ([1, 3], 1, "d")
    first_epoch = layer(charts.curves_figure([], live=[(0.25, 2.0), (0.5, 1.9)]), "line")[0]["encoding"]["x"]
    assert first_epoch["scale"]["domain"] == [0, 1]
    one = layer(charts.compare_figure([_record("20250101-120000-x", "finetune", [0.5])], "acc"), "line")[0]
    assert one["encoding"]["x"]["scale"]["domain"] == [1, 2]  # one epoch: never an empty span
    assert layer(charts.compare_figure([FE], "acc"), "point")[0]["encoding"]["x"]["scale"]["domain"] == [1, 3]


def _lines(chart) -> pd.DataFrame:
    """Rows of the run curves of `compare_figure` (not the best-epoch stars)."""
    return layer(chart, "line")[1]


def _legend(chart) -> list[str]:
    """The colour legend's entries: one per run, in order."""
    return layer(chart, "line")[0]["encoding"]["color"]["scale"]["domain"]


def test_compare_figure_one_line_per_run_named_by_backbone_and_strategy() -> None:
    chart = charts.compare_figure([FE, FT], "acc")
    lines = _lines(chart)
    assert list(lines["run"].unique()) == ["efficientnet_lite0 + feature_extraction", "efficientnet_lite0 + finetune"]
    assert list(lines[lines["run"] == "efficientnet_lite0 + finetune"]["value"]) == [0.6, 0.9]
    assert set(lines["split"]) == {"val"} and "strokeDash" not in layer(chart, "line")[0]["encoding"]
    with_train = charts.compare_figure([FE, FT], "loss", include_train=True)
    lines = _lines(with_train)
    assert list(lines[["run", "split"]].drop_duplicates().itertuples(index=False, name=None)) == [
        (run, split) for run in ("efficientnet_lite0 + feature_extraction", "efficientnet_lite0 + finetune")
        for split in ("val", "train")]
    encoding = layer(with_train, "line")[0]["encoding"]
    assert encoding["color"]["field"] == "legend" and encoding["strokeDash"]["field"] == "split"  # colour per run,
    assert dict(zip(*encoding["strokeDash"]["scale"].values(), strict=True)) == charts.SPLIT_DASH  # dash per split
    assert "solid: validation · dashed: train" in with_train.to_dict()["title"]["subtitle"]
    with pytest.raises(ValueError, match="unknown metric"):
        charts.compare_figure([FE], "top5")


def test_compare_accepts_live_snapshots_too() -> None:
    snapshot = {"run_id": FT.run_id, "config": FT.config, "status": "running", "metrics": FT.metrics}
    lines = _lines(charts.compare_figure([snapshot], "acc"))
    assert set(lines["run"]) == {"efficientnet_lite0 + finetune"} and list(lines["value"]) == [0.6, 0.9]


def test_run_names_are_made_unique() -> None:
    twin = _record("20250101-130102-efficientnet_lite0-finetune-cccccc", "finetune", [0.1])
    same_second = _record("20250101-130102-efficientnet_lite0-finetune-dddddd", "finetune", [0.2])
    names = charts.run_names([FE, FT, twin, same_second])
    assert names[0] == "efficientnet_lite0 + feature_extraction"
    assert names[1] == "efficientnet_lite0 + finetune · 12:05:00"  # alike in every setting: the time tells
    assert names[2] == "efficientnet_lite0 + finetune · 13:01:02"
    assert names[3] == "efficientnet_lite0 + finetune · 13:01:02 #2"
    assert len(set(names)) == 4


def _with(record: RunRecord, run_id: str | None = None, name: str = "", **config) -> RunRecord:
    return RunRecord(run_id or record.run_id, {**record.config, **config}, record.status, record.metrics,
                     record.class_names, name)


def test_runs_are_named_by_what_differs_between_them(tmp_path) -> None:
    """Two runs differing in image size, subset and lr are told apart by those, not by their start times."""
    from tlcore.data.uploads import save_upload

    zip_path = save_upload(b"PK\x05\x06" + bytes(18), "cats and dogs.zip", tmp_path)
    a = _with(FT, image_size=64, subset=20, lr=1e-3, data=str(zip_path))
    b = _with(FT, "20250101-120600-x", image_size=128, subset=None, lr=1e-4, data=str(zip_path))
    assert charts.run_names([a, b]) == ["efficientnet_lite0 + finetune · 64 px · 20/class · lr 0.001",
                                        "efficientnet_lite0 + finetune · 128 px · all images · lr 0.0001"]
    # The dataset, by the user's file name of an upload (never its content hash), when it differs.
    names = charts.run_names([a, _with(FT, "20250101-120700-y", image_size=64, subset=20, lr=1e-3)])
    assert names == ["efficientnet_lite0 + finetune · cats and dogs.zip", "efficientnet_lite0 + finetune · digits"]
    # Settings that do not apply to a run do not name it: N for partial only, hidden sizes for mlp only.
    partial = _with(FT, "20250101-120800-z", strategy="partial", unfreeze_groups=3, head="mlp", hidden=[64])
    assert charts.run_names([_with(FT, unfreeze_groups=1, head="linear"), partial]) == [
        "efficientnet_lite0 + finetune · linear head", "efficientnet_lite0 + partial · mlp head · 64 · last 3 groups"]
    # A user's own name wins, and stays unique.
    named = [_with(FT, name="baseline"), _with(FE, name="baseline"), _with(FT, "20250101-120900-w")]
    assert charts.run_names(named) == ["baseline", "baseline #2", "efficientnet_lite0 + finetune"]


def test_epoch_table_is_epoch_by_run() -> None:
    table = charts.epoch_table([FE, FT])
    assert table.index.name == "epoch" and list(table.index) == [1, 2, 3]
    assert list(table.columns) == [f"{split} {metric} · {run}" for split, metric in (
        ("val", "acc"), ("val", "loss"), ("train", "acc"), ("train", "loss"))
        for run in ("efficientnet_lite0 + feature_extraction", "efficientnet_lite0 + finetune")]
    assert table.loc[2, "val acc · efficientnet_lite0 + finetune"] == 0.9
    assert table.loc[2, "train acc · efficientnet_lite0 + finetune"] == pytest.approx(0.85)
    assert pd.isna(table.loc[3, "val acc · efficientnet_lite0 + finetune"])  # the shorter run
    # On the page: blanks where the shorter run has no epoch 3, never "None".
    shown = charts.display_table(table)
    assert shown.loc[3, "val acc · efficientnet_lite0 + finetune"] == ""
    assert shown.loc[2, "val acc · efficientnet_lite0 + finetune"] == "90.0%"
    assert shown.loc[1, "val loss · efficientnet_lite0 + feature_extraction"] == "1.0000"
    assert "None" not in shown.to_string() and "nan" not in shown.to_string().lower()


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
    assert list(back.columns) == list(epochs.columns) and back.shape == (3, 8)  # train columns too
    last = charts.to_csv(epochs).decode().splitlines()[-1].split(",")  # epoch 3: the shorter run's 4 blanks
    assert last[2::2] == ["", "", "", ""] and "None" not in last
    summary = pd.read_csv(io.BytesIO(charts.to_csv(charts.summary_table([FE]))))
    assert summary.loc[0, "run"] == "efficientnet_lite0 + feature_extraction" and "Unnamed: 0" not in summary


def test_dataset_names_for_display() -> None:
    assert charts.dataset_name("digits") == "digits"
    assert charts.dataset_name("/home/me/photos/flowers") == "flowers"
    assert charts.dataset_name("/data/hymenoptera_data/train") == "hymenoptera_data/train"  # not "train"
    assert charts.dataset_name("/data/flowers/Val") == "flowers/Val"
    assert charts.dataset_name(None) == "?"


def test_topk_figure_puts_the_most_likely_class_on_top() -> None:
    preds = [Prediction("tabby", 0.6), Prediction("tiger cat", 0.3), Prediction("lynx", 0.1)]
    chart = charts.topk_figure(preds, "lite0")
    bars, rows = layer(chart, "bar")
    assert bars["encoding"]["x"]["field"] == "prob" and bars["encoding"]["y"]["field"] == "class"  # horizontal
    assert bars["encoding"]["y"]["sort"] == ["tabby", "tiger cat", "lynx"]  # the first on top
    assert list(rows["prob"]) == [0.6, 0.3, 0.1] and list(rows["text"]) == ["60.0%", "30.0%", "10.0%"]
    assert bars["encoding"]["x"]["scale"]["domain"] == [0, 1]
    # Each bar's percentage is written once: inside a long bar, beside a short one.
    texts = [spec["transform"][0]["filter"] for spec, _ in chart_layers(chart) if spec["mark"]["type"] == "text"]
    assert texts == ["(datum.prob >= 0.25)", "(datum.prob < 0.25)"]
    # Each in a colour of its own: Vega's default black could not be read on Streamlit's dark theme.
    assert all(spec["mark"].get("color") for spec, _ in chart_layers(chart) if spec["mark"]["type"] == "text")
    digits = layer(charts.topk_figure([Prediction("8", 0.7), Prediction("3", 0.2)]), "bar")
    assert digits[0]["encoding"]["y"]["type"] == "nominal"  # class "8" is a name, not a position on an axis
    assert list(digits[1]["class"]) == ["8", "3"]
    assert list(layer(charts.topk_figure([("a", 1.0)]), "bar")[1]["class"]) == ["a"]


# ---- tlcore.views.ui display helpers ------------------------------------------------------------


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
    shown = ui.runs_to_show([queued, FT, FE], active=[queued.run_id], limit=1)
    assert [r.run_id for r in shown] == [queued.run_id, FT.run_id]
    assert len(ui.runs_to_show([FT, FE], active=[], limit=1)) == 1


def test_runs_to_show_puts_the_running_run_on_top_then_queued_then_recent() -> None:
    """Newest first on disk; the card list is running, the queue in the order it starts, then the rest."""
    def rec(i: int, state: str) -> RunRecord:
        return _record(f"20250101-16{i:02d}00-efficientnet_lite0-finetune-{i:06d}", "finetune", [0.5], state)

    newest_first = [rec(9, "queued"), rec(8, "queued"), rec(7, "failed"), rec(6, "running"), rec(5, "failed"),
                    *[rec(i, "finished") for i in range(4, -1, -1)]]
    order = [r.run_id[9:13] for r in ui.runs_to_show(newest_first, active=[], limit=4)]
    assert order == ["1606", "1608", "1609", "1607", "1605", "1604", "1603"]
    hidden = [r.run_id[9:13] for r in ui.runs_to_show(newest_first, active=[], limit=4, hide_failed=True)]
    assert hidden == ["1606", "1608", "1609", "1604", "1603", "1602", "1601"]
    assert len(ui.runs_to_show(newest_first, active=[], limit=4, show_all=True)) == 10


def test_backbone_rows_are_quick_and_label_offline_weights() -> None:
    rows = ui.backbone_rows()
    assert rows["efficientnet_lite0"]["available_offline"] is True
    assert rows["vgg16"]["params"] == 138_357_544  # counted on the meta device, same number
    assert ui.backbone_label(rows["efficientnet_lite0"]) == "efficientnet_lite0 · 4.7M params · offline"
    assert ui.backbone_label(rows["simple_cnn"]).startswith("simple_cnn · 95K params")


def test_compare_legend_lists_each_run_once_below_the_plot_with_room() -> None:
    """Ten runs with train curves: one legend entry per run, a colour each, under the plot, never cut short."""
    runs = [_record(f"20250101-17{i:02d}00-efficientnet_lite0-finetune-{i:06d}", "finetune", [0.5 + i / 40, 0.6])
            for i in range(10)]
    chart = charts.compare_figure(runs, "acc", include_train=True)
    names = charts.run_names(runs)
    color = layer(chart, "line")[0]["encoding"]["color"]
    assert _legend(chart) == names and len(set(color["scale"]["range"])) == 10  # a colour per run
    assert color["legend"]["orient"] == "bottom"  # under the plot
    # Lines cut (with an ellipsis) only where wider than the plot: a narrow column, not the chart's edge.
    assert "width" in color["legend"]["labelLimit"]["expr"]
    spec = chart.to_dict()
    assert spec["height"] == 300 and spec["autosize"]["type"] == "fit-x"  # the plot keeps its height; the chart grows


def test_long_run_labels_wrap_in_the_legend_instead_of_running_off_the_chart() -> None:
    label = "efficientnet_lite0 + feature_extraction · cats vs dogs.zip · 64 px · all images · lr 0.001 · 3 epochs"
    assert charts.legend_name(label) == (
        "efficientnet_lite0 + feature_extraction · cats vs dogs.zip\n64 px · all images · lr 0.001 · 3 epochs")
    assert charts.legend_name("resnet18 + finetune") == "resnet18 + finetune"
    run = _record("20250101-171000-x", "finetune", [0.5])
    chart = charts.compare_figure([run], "acc", names=[label])
    assert _legend(chart) == [charts.legend_name(label)]
    assert "split(datum.label" in layer(chart, "line")[0]["encoding"]["color"]["legend"]["labelExpr"]  # lines drawn
    assert set(_lines(chart)["run"]) == {label}  # the hover shows the label on one line


def _acc_axis(chart) -> dict:
    return layer(chart, "line")[0]["encoding"]["y"]


def test_accuracy_axis_fits_the_data_unless_asked_for_0_to_100() -> None:
    high = [_record("20250101-180000-a", "finetune", [0.86, 0.93]), _record("20250101-180100-b", "finetune", [0.9, 0.97])]
    low, top = _acc_axis(charts.compare_figure(high, "acc"))["scale"]["domain"]
    assert 0.8 <= low < 0.86 and 0.97 < top <= 1.02
    assert _acc_axis(charts.compare_figure(high, "acc", full_range=True))["scale"]["domain"] == [0, 1.02]


def test_a_narrow_accuracy_axis_shows_a_decimal_so_its_ticks_do_not_repeat() -> None:
    # Runs at 22-23%: the fitted axis spans 4 points and its ticks half a point apart read
    # "22%, 22%, 23%, 23%" in whole percents (seen on Compare with 300 copied runs).
    close = [_record("20250101-180000-a", "finetune", [0.22, 0.23]), _record("20250101-180100-b", "finetune", [0.225])]
    assert _acc_axis(charts.compare_figure(close, "acc"))["axis"]["format"] == ".1%"
    assert _acc_axis(charts.compare_figure(close, "acc", full_range=True))["axis"]["format"] == ".0%"
    wide = [_record("20250101-180000-a", "finetune", [0.3, 0.9])]
    assert _acc_axis(charts.compare_figure(wide, "acc"))["axis"]["format"] == ".0%"


def test_each_run_s_best_epoch_is_starred_on_both_charts() -> None:
    for metric, y in (("acc", 0.8), ("loss", 0.7)):
        chart = charts.compare_figure([FE, FT], metric)
        star, rows = layer(chart, "point")
        assert list(zip(rows["run"], rows["epoch"], strict=True)) == [
            ("efficientnet_lite0 + feature_extraction", 2), ("efficientnet_lite0 + finetune", 2)]
        assert rows["value"][0] == pytest.approx(y) and star["mark"]["shape"] == charts.STAR
        assert star["encoding"]["color"] == layer(chart, "line")[0]["encoding"]["color"]  # the run's colour
        assert "★ best epoch" in " ".join(chart.to_dict()["title"]["subtitle"])


def test_summary_names_size_subset_lr_head_and_counts_before_ids() -> None:
    run = RunRecord("20250101-190000-r", {**FT.config, "image_size": None, "subset": 20, "lr": 1e-4, "head": "mlp",
                                          "hidden": [256]}, {**FT.status, "num_train": 40, "num_val": 100}, FT.metrics)
    row = charts.summary_table([run]).iloc[0]
    assert (row["image size"], row["images per class"], row["lr"], row["head"]) == (224, "20", 1e-4, "mlp 256")
    assert (row["train images"], row["val images"]) == (40, 100)
    columns = list(charts.SUMMARY_COLUMNS)
    assert columns[:5] == ["run", "status", "best val acc", "best epoch", "final val acc"]  # key figures first
    assert columns[-1] == "run id" and "dataset" in columns


def test_curves_show_the_batches_of_the_epoch_in_progress() -> None:
    chart = charts.curves_figure(FE.metrics[:1], live=[(1.25, 0.9), (1.5, 0.8)])
    live = _curve(chart, "loss", charts.LIVE)
    assert list(live["epoch"]) == [1.25, 1.5] and list(live["value"]) == [0.9, 0.8]
    assert _curve(chart, "acc", charts.LIVE).empty  # on the loss plot only
    legend = layer(chart, "line")[0]["encoding"]["color"]["legend"]
    assert legend["orient"] == "bottom" and legend["values"] == ["train", charts.LIVE, "val"]  # below the plots
    assert layer(charts.curves_figure(FE.metrics), "line")[0]["encoding"]["color"]["legend"]["values"] == [
        "train", "val"]  # no live entry once the run ended


def test_result_line_says_1_epoch() -> None:
    one = {"best_val_acc": 0.5, "best_epoch": 1, "seconds": 3.0, "metrics": FE.metrics[:1]}
    assert "1 epoch in 3.0 s" in ui.result_line(one) and "1 epochs" not in ui.result_line(one)


def test_image_size_labels_fit_a_narrow_box() -> None:
    assert ui.image_size_label(None, "efficientnet_lite0") == "224 (auto)"
    assert ui.image_size_label(64) == "64 px" and ui.image_size_label(None) == "auto"


def test_literal_markdown_shows_times_and_names_as_written() -> None:
    # Streamlit's frontend loads its emoji plugin for any text matching this pattern (its
    # StreamlitMarkdown bundle), and turns `$...$` into math.
    shortcode = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")
    assert shortcode.search("run at 13:31:48") and not shortcode.search(ui.literal("run at 13:31:48"))
    assert ui.literal("my :tada: run, $5 and $6, C:\\data") == "my \\:tada\\: run, \\$5 and \\$6, C\\:\\\\data"
