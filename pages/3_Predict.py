"""Predict: top-k classes for your images, from a backbone's ImageNet head or a finished run."""

import streamlit as st

from tlcore import ui
from tlcore.charts import topk_figure
from tlcore.jobs import JobManager, get_manager
from tlcore.paths import runs_root


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


runs_dir = str(runs_root().resolve())
runs = {r.run_id: r for r in ui.predictable_runs(manager(runs_dir).list_runs(), runs_dir)}
st.title("Predict")
left, right = st.columns([1, 2])
kind = left.radio("Model", ("ImageNet head of a backbone", "a finished run"), key="model_kind",
                  disabled=not runs, help=None if runs else "no finished run yet: train one on the Train page")
if kind == "a finished run" and runs:
    run_id = left.selectbox("Run", list(runs), key="run", format_func=lambda rid: ui.run_title(runs[rid]))
    choice = ui.ModelChoice(run_id=run_id)
    left.caption(f"{len(runs[run_id].class_names)} classes: {', '.join(runs[run_id].class_names[:12])}")
else:
    names = ui.imagenet_backbones()
    backbone = left.selectbox("Backbone", names, index=names.index("efficientnet_lite0"), key="backbone")
    choice = ui.ModelChoice(backbone=backbone)
k = left.slider("Top k", 1, 10, 5, key="k")
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
    cols[1].plotly_chart(topk_figure(item.top, report.model), theme="streamlit", key=f"top_{i}")
    if item.imagenet is not None:
        cols[2].plotly_chart(topk_figure(item.imagenet, report.imagenet_model), theme="streamlit", key=f"base_{i}")
