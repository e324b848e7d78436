"""Predict: top-k classes for your images, from a backbone's ImageNet head, a finished run or an exported model."""

import streamlit as st

from tlcore import run_filters
from tlcore.paths import runs_root
from tlcore.training.jobs import JobManager, get_manager
from tlcore.views import ui
from tlcore.views.charts import topk_figure
from widgets import nav, run_finder

nav.through_app("pages/3_Predict.py")  # a fresh server's first request: the app's own navigation


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


runs_dir = str(runs_root().resolve())
runs = {r.run_id: r for r in ui.predictable_runs(manager(runs_dir).list_runs(), runs_dir)}
st.title("Predict")
left, right = st.columns(2)
kinds = ("ImageNet head of a backbone", "a finished run", "an exported model (.zip)")
kind = left.radio("Model", kinds if runs else kinds[::2], key="model_kind",
                  help=None if runs else "no finished run yet: train one on the Train page")
class_names = None  # an exported model's, for Top k
if kind == kinds[2]:
    model_zip = left.file_uploader("Model zip (from Download model on Train)", type=["zip"], key="model_zip")
    if model_zip is None:
        left.info("Upload the zip that **Download model** gave you (or `python -m tlcore export` zipped).")
        st.stop()
    try:
        choice, class_names = ui.bundle_choice(model_zip)
    except ui.ModelUnavailable as exc:
        left.error(f"Cannot use this model: {exc}")
        st.stop()
    left.caption(f"{len(class_names)} classes: {', '.join(class_names[:12])}")
elif kind == kinds[1] and runs:
    labels = ui.run_labels(manager(runs_dir).list_runs())  # the same labels as on Train and Compare
    with left:
        found = run_filters.apply(runs.values(), run_finder.run_filter(list(runs.values()), "predict"), labels)
    if not found:
        left.info("No finished run matches: clear the search or a filter.")
        st.stop()
    if st.session_state.get("run") not in (options := run_filters.options(found, [])):
        st.session_state.pop("run", None)  # filtered out: the picker starts on the newest match
    run_id = left.selectbox("Run", options, key="run", format_func=labels.get)
    left.caption(run_filters.picker_note(len(found), len(runs)))
    choice = ui.ModelChoice(run_id=run_id)
    left.caption(ui.literal(f"{labels[run_id]} · created {ui.run_time(run_id)}"))  # the whole label, wrapped
    left.caption(f"{len(runs[run_id].class_names)} classes: {', '.join(runs[run_id].class_names[:12])}")
else:
    names = ui.imagenet_backbones()
    backbone = left.selectbox("Backbone", names, index=names.index("efficientnet_lite0"), key="backbone")
    choice = ui.ModelChoice(backbone=backbone)
top = ui.top_k_limit(runs[choice.run_id].class_names if choice.run_id else class_names)
k = left.slider("Top k", 1, top, min(5, top), key="k") if top > 1 else 1
show_cam = left.toggle("Grad-CAM: where the model looked", key="cam", disabled=choice.bundle is not None,
                       help="a heatmap of the pixels that most raised the top class, for each model shown")
files = right.file_uploader("Images", type=list(ui.IMAGE_TYPES), accept_multiple_files=True, key="images")
if not files:
    right.info("Upload one or more images (jpg, png, gif, webp, bmp) to see what the model thinks they are.")
    st.stop()

try:
    with st.spinner("Loading the model and predicting..."):
        report = ui.predict_uploads(files, choice, k, runs_dir)
except ui.ModelUnavailable as exc:
    st.error(f"Cannot load the model: {exc}")
    st.stop()
if report.imagenet_note:
    st.caption(report.imagenet_note)
for i, item in enumerate(report.items):
    st.divider()
    if item.error:
        st.error(f"{item.error}: upload a JPEG, PNG, GIF, WebP or BMP image instead")
        continue
    cols = st.columns([1, 2, 2] if item.imagenet is not None else [1, 2])
    cols[0].image(item.image, caption=item.name)
    # Keyed containers: st.altair_chart drops the key (the st-key- class) of a chart without selections.
    cols[1].container(key=f"top_{i}").altair_chart(topk_figure(item.top, report.model))
    if item.imagenet is not None:
        cols[2].container(key=f"base_{i}").altair_chart(topk_figure(item.imagenet, report.imagenet_model))
    if show_cam:  # the photo, then each model's heatmap for its top class
        try:
            with st.spinner("Computing Grad-CAM..."):
                views = ui.cam_views(files[i], choice, runs_dir)
        except ValueError as exc:  # ModelUnavailable, ImageError
            st.warning(f"No Grad-CAM: {exc}")
            continue
        for col, (title, cam) in zip(st.columns(3), [("photo", None), *views], strict=False):
            col.image(item.image if cam is None else cam.overlay, width="stretch",
                      caption=title if cam is None else ui.cam_caption(title, cam))
