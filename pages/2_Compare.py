"""Compare: overlaid validation curves, an epoch-by-run table and a summary of any set of runs."""

import streamlit as st

from tlcore import run_filters
from tlcore.analysis import experiment_report
from tlcore.experiments import ExperimentStore
from tlcore.paths import runs_root
from tlcore.training.jobs import JobManager, get_manager
from tlcore.views import charts, experiment_views, ui
from widgets import nav, run_finder

nav.through_app("pages/2_Compare.py")  # a fresh server's first request: the app's own navigation


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


st.title("Compare runs")
records = {r.run_id: r for r in manager(str(runs_root().resolve())).list_runs()}
if not records:
    st.info("No runs yet: train a few on the Train page, then come back to compare them.")
    st.page_link("pages/1_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()


def experiment_view(experiments: dict[str, dict]) -> None:
    """One experiment: each cell's mean curve with a ± std band, the ranked table and the verdict."""
    exp_id = st.selectbox("Experiment", list(experiments), key="experiment",
                          format_func=lambda eid: experiment_views.experiment_label(experiments[eid]))
    store = ExperimentStore(runs_root().resolve())
    groups = experiment_report.groups_of(store.runs, experiments[exp_id])
    names, best = [g["name"] for g in groups], experiment_report.best_two(groups)
    pick = None
    if len(best) == 2:
        a_col, b_col = st.columns(2)
        pick = (a_col.selectbox("Compare", names, names.index(best[0]), key="cell_a"),
                b_col.selectbox("with", names, names.index(best[1]), key="cell_b"))
    with st.spinner("Comparing on the same validation images..."):
        result = experiment_report.report(store.runs.root, exp_id, pick=pick)
    st.markdown(f"**Verdict:** {result['verdict']}")
    acc_col, loss_col = st.columns(2)
    for col, metric in ((acc_col, "acc"), (loss_col, "loss")):
        # A keyed container: st.altair_chart drops the key (its st-key- class) of a chart without selections.
        col.container(key=f"band_{metric}").altair_chart(experiment_views.band_figure(store.runs, groups, metric),
                                                          width="stretch")
    summary, seeds = experiment_views.summary_frame(groups), experiment_views.seeds_frame(store.runs, groups)
    st.dataframe(experiment_views.display_frame(summary), hide_index=True, key="experiment_summary")
    st.download_button("Download cells (CSV)", charts.to_csv(summary), f"{exp_id}-cells.csv", "text/csv",
                       key="download_cells", on_click="ignore")
    st.dataframe(experiment_views.display_seeds(seeds), hide_index=True, key="experiment_seeds")
    st.download_button("Download runs (CSV)", charts.to_csv(seeds), f"{exp_id}-runs.csv", "text/csv",
                       key="download_seed_runs", on_click="ignore")


experiments = {e["experiment_id"]: e for e in ExperimentStore(runs_root().resolve()).list()}
if experiments and st.radio("Compare", ("Runs", "An experiment"), horizontal=True, key="compare_what",
                            label_visibility="collapsed") == "An experiment":
    experiment_view(experiments)
    st.stop()

labels = ui.run_labels(records.values())  # one label per run, the same on every page
matches = run_filters.apply(records.values(), run_finder.run_filter(list(records.values()), "compare"), labels)
if "runs" not in st.session_state:  # open on something small: the latest experiment, or the newest runs
    st.session_state.runs, st.session_state.compare_why = run_filters.default_compare(
        list(records.values()), list(experiments.values()))
st.session_state.runs = [rid for rid in st.session_state.runs if rid in records]  # deleted meanwhile
chosen = st.multiselect(
    "Runs", run_filters.options(matches, st.session_state.runs), key="runs",
    max_selections=run_filters.MAX_COMPARE, format_func=lambda rid: f"{labels[rid]} · {records[rid].state}",
)
matched = {r.run_id for r in matches}
st.caption(run_filters.picker_note(len(matches), len(records), len(chosen), st.session_state.get("compare_why"),
                                   outside=sum(rid not in matched for rid in chosen)))
runs = [records[rid] for rid in chosen]
if not runs:
    st.info("Pick one or more runs above.")
    st.stop()
names = [labels[r.run_id] for r in runs]
if not any(r.metrics for r in runs):
    st.warning("None of these runs has finished an epoch yet, so there are no curves to draw.")

train_col, range_col = st.columns(2)
show_train = train_col.toggle("Show train curves too", key="show_train")
full_range = range_col.toggle("Accuracy axis from 0 to 100%", key="acc_full",
                              help="off: the axis fits the runs' accuracies, so close runs stay apart")
acc_col, loss_col = st.columns(2)
# Keyed containers, as the bands' above: st.altair_chart drops the key of a chart without selections.
acc_col.container(key="acc_chart").altair_chart(charts.compare_figure(runs, "acc", show_train, names,
                                                                      full_range=full_range))
loss_col.container(key="loss_chart").altair_chart(charts.compare_figure(runs, "loss", show_train, names))

st.subheader("Summary")
summary = charts.summary_table(runs, names)
# Shown as text: blanks where a value is missing (Streamlit would print "None"); the CSV keeps numbers.
# The run label pinned at a fixed width: in full it pushed every number off a laptop's screen.
st.dataframe(charts.display_table(summary), hide_index=True, key="summary_table",
             column_config={"run": st.column_config.TextColumn(width="large", pinned=True)})
st.download_button("Download summary (CSV)", charts.to_csv(summary), "summary.csv", "text/csv",
                   key="download_summary", on_click="ignore")

st.subheader("Epoch by run")
epochs = charts.epoch_table(runs, names)
st.dataframe(charts.display_table(epochs), key="epoch_table")
st.download_button("Download epoch table (CSV)", charts.to_csv(epochs), "epochs.csv", "text/csv",
                   key="download_epochs", on_click="ignore")

failed = [(name, r) for name, r in zip(names, runs, strict=True) if r.state == "failed"]
for name, record in failed:
    st.error(f"{name} failed: {ui.run_message(record.status)}")
