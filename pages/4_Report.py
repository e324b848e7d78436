"""Report: one run's confusion matrix, per-class figures, most-confused pairs and highest-loss images."""

import streamlit as st

from tlcore.analysis.holdout import evaluate_on, in_training_folder
from tlcore.analysis.report import NO_RESULTS, NoResults, item_picture, run_report
from tlcore.paths import runs_root
from tlcore.runs import RunStore
from tlcore.training.jobs import JobManager, get_manager
from tlcore.views import insight_charts as charts
from tlcore.views import ui
from widgets import nav

nav.through_app("pages/4_Report.py")  # a fresh server's first request: the app's own navigation

GALLERY = 24  # images shown, highest loss first
THUMB = 160  # px, a thumbnail's side


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


runs_dir = str(runs_root().resolve())
store = RunStore(runs_dir)
runs = {r.run_id: r for r in ui.predictable_runs(manager(runs_dir).list_runs(), runs_dir)}
st.title("Report")
if not runs:
    st.info("No finished run yet: train one on the Train page, then come back to see where it goes wrong.")
    st.page_link("pages/1_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()
left, right = st.columns([2, 1])
labels = ui.run_labels(manager(runs_dir).list_runs())  # the same labels as on Train, Compare and Predict
run_id = left.selectbox("Run", list(runs), key="report_run", format_func=lambda rid: ui.run_title(runs[rid], labels))
images = right.radio("Images", ("validation images", "another folder or zip"), key="report_images", horizontal=True)

if images == "validation images":
    try:
        interp = run_report(store, run_id)
    except NoResults:
        st.info(f"{NO_RESULTS.capitalize()}: runs trained before per-image results were saved have only their curves.")
        st.stop()
else:
    folder = left.text_input("Labelled folder or .zip on this machine (one sub-folder per class)",
                             key="report_folder", placeholder="~/photos/test")
    if left.button("Evaluate", key="report_evaluate", type="primary"):
        # The previous folder's report goes first: one left under a failed path's error read as that path's.
        st.session_state.pop("report_holdout", None)
        try:
            with st.spinner("Predicting every image of the test set..."):
                spec = ui.dataset_spec(ui.DATA_SOURCES[1], folder=folder)
                interp = evaluate_on(run_id, spec, runs_dir)
                # Counted once here, not on every rerun of the page: it resolves each image's path.
                seen = in_training_folder(interp.items, runs[run_id].config.get("data"))
                st.session_state["report_holdout"] = (run_id, spec, interp, seen)
        except (ValueError, LookupError) as exc:
            st.error(f"Cannot evaluate: {exc}")
            st.stop()
    held = st.session_state.get("report_holdout")
    if not held or held[0] != run_id:
        st.info("Type the path of a labelled folder or .zip with sub-folders named like the run's classes, "
                "then press **Evaluate**.")
        st.stop()
    _, _, interp, seen = held
    if seen:
        st.warning(f"{seen} of these {len(interp.items)} images are in the folder this run was trained on "
                   f"({runs[run_id].config['data']}): its accuracy on them is not a test on new images.")
    for name, count in interp.unknown_folders.items():
        st.warning(f"Folder '{name}' ({count} images) is not one of the run's classes: left out.")
    if interp.skipped:
        st.warning(f"{len(interp.skipped)} unreadable files skipped, e.g. {interp.skipped[0][0]}: {interp.skipped[0][1]}")

st.caption(f"{interp.source} · {len(interp.items)} images · accuracy {interp.accuracy:.1%}")
matrix, tables = st.columns(2)
normalize = matrix.toggle("Row-normalised", key="report_normalize",
                          help="each cell as a share of its actual class (its row), instead of a count")
event = matrix.altair_chart(charts.confusion_figure(interp, normalize), key="confusion", width="stretch",
                            on_select="rerun")
choices = {"all images": None, **{f"{a} → {p} ({n})": (a, p) for a, p, n in charts.cells(interp)}}
clicked = charts.clicked_cell(event)
if clicked and clicked != st.session_state.get("report_clicked"):  # a new click picks the cell once
    st.session_state["report_clicked"] = clicked
    st.session_state["report_cell"] = next((k for k, v in choices.items() if v == clicked), "all images")
if st.session_state.get("report_of") != (run_id, interp.source):  # another run or test set: start with all
    st.session_state["report_of"] = (run_id, interp.source)
    st.session_state["report_cell"] = "all images"
cell = choices[matrix.selectbox("Gallery: images in a confusion cell (or click a cell)", list(choices),
                                key="report_cell")]

per_class = charts.per_class_table(interp)
tables.markdown("**Per class**")
tables.dataframe(per_class, hide_index=True, key="per_class", column_config={
    c: st.column_config.NumberColumn(format="%.2f", width="small") for c in ("precision", "recall", "f1")})
tables.download_button("Download per-class table (CSV)", per_class.to_csv(index=False).encode(), "per_class.csv",
                       "text/csv", key="download_per_class", on_click="ignore")
confused = charts.most_confused_table(interp)
tables.markdown("**Most confused** (actual → predicted)")
tables.dataframe(confused, hide_index=True, key="most_confused")
tables.download_button("Download most confused (CSV)", confused.to_csv(index=False).encode(), "most_confused.csv",
                       "text/csv", key="download_most_confused", on_click="ignore")

shown = interp.top_losses(GALLERY, *(cell or (None, None)))
st.subheader("Highest loss" + (f": {cell[0]} predicted as {cell[1]}" if cell else ""))
config = runs[run_id].config
pictures, captions, gone = [], [], []
for row in shown:
    caption = f"{row['true']} → {row['predicted']} ({row['prob']:.0%}) · loss {row['loss']:.2f}"
    if (picture := item_picture(row["item"], config, size=THUMB)) is None:
        gone.append(f"{caption}: {row['item']}")
    else:
        pictures.append(picture)
        captions.append(caption)
# Fixed-width tiles in one wrapping row, as many a row as the window holds: a grid of 6 columns a
# row cost a new browser 0.1-0.3 s more to draw (issue 13). One st.image of them all would be
# cheaper still, but there a long caption ("golden_retriever → labrador_retriever") widens its
# tile and stretches its picture.
if pictures:
    tiles = st.container(horizontal=True, gap="small", key="gallery")
    for picture, caption in zip(pictures, captions, strict=True):
        tiles.image(picture, caption=caption, width=THUMB)
if gone:
    st.caption(f"{len(gone)} of these images are no longer where the run saw them: " + "; ".join(gone))
