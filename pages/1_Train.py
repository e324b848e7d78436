"""Train: pick a backbone, data, strategy and knobs; runs train in the background and report live."""

import streamlit as st

from tlcore import ui
from tlcore.charts import curves_figure
from tlcore.config import AUGMENTS, OPTIMIZERS, SCHEDULES, TrainConfig
from tlcore.data import BUILTIN
from tlcore.heads import HEAD_KINDS
from tlcore.jobs import JobManager, get_manager
from tlcore.paths import runs_root
from tlcore.strategies import STRATEGIES


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


jobs, d, rows = manager(str(runs_root().resolve())), TrainConfig(), ui.backbone_rows()
st.title("Train")
left, right = st.columns(2)
with left:
    backbone = st.selectbox("Backbone", list(rows), index=list(rows).index(d.backbone), key="backbone",
                            format_func=lambda name: ui.backbone_label(rows[name]))
    st.caption(rows[backbone]["description"])
    source = st.radio("Dataset", ui.DATA_SOURCES, horizontal=True, key="data_source")
    builtin = folder = upload = None
    if source == ui.DATA_SOURCES[0]:
        builtin = st.selectbox("Built-in dataset", BUILTIN, index=BUILTIN.index(d.data), key="dataset")
    elif source == ui.DATA_SOURCES[1]:
        folder = st.text_input("Folder of class folders", key="data_folder", placeholder="~/photos/flowers")
    else:
        upload = st.file_uploader("Zip of class folders", type=["zip"], key="data_zip")
    strategy = st.selectbox("Strategy", list(STRATEGIES), index=list(STRATEGIES).index(d.strategy), key="strategy")
    st.caption(STRATEGIES[strategy].summary)
with right:
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 1000, d.epochs, key="epochs")
    batch_size = c2.selectbox("Batch size", ui.BATCH_SIZES, index=ui.BATCH_SIZES.index(d.batch_size), key="batch_size")
    lr = c3.number_input("Learning rate", 1e-6, 10.0, d.lr, step=1e-4, format="%g", key="lr")
    optimizer = c1.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(d.optimizer), key="optimizer")
    schedule = c2.selectbox("LR schedule", SCHEDULES, index=SCHEDULES.index(d.schedule), key="schedule")
    head = c3.selectbox("Head", HEAD_KINDS, index=HEAD_KINDS.index(d.head), key="head")
    augment = c1.selectbox("Augmentation", AUGMENTS, index=AUGMENTS.index(d.augment), key="augment")
    image_size = c2.selectbox("Image size", ui.IMAGE_SIZES, key="image_size",
                              format_func=lambda s: ui.image_size_label(s, backbone))
    seed = c3.number_input("Seed", 0, 2**31 - 1, d.seed, key="seed")
    subset = c1.number_input("Images per class", 1, None, None, key="subset", placeholder="all",
                             help="at most this many training images per class: quick trial runs")
    if st.button("Start training", type="primary", key="start"):
        try:
            with st.spinner("Checking the dataset..."):
                data = ui.dataset_spec(source, builtin, folder, upload)
            cfg = ui.make_config(backbone=backbone, data=data, strategy=strategy, epochs=int(epochs),
                                 batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule, head=head,
                                 augment=augment, image_size=image_size, seed=int(seed),
                                 subset=int(subset) if subset else None)
            st.success(f"Queued run {jobs.submit(cfg)}: it trains in the background, watch it below.")
        except ValueError as exc:
            st.error(f"Cannot start: {exc}")

st.subheader("Runs")
live = ui.live_ids(jobs.list_runs())  # queued or running, here or in another process


@st.fragment(run_every=1.0 if live else None)  # poll only while something trains
def runs_panel(watching: bool) -> None:
    records, active = jobs.list_runs(), jobs.active()
    if watching and not ui.live_ids(records):
        st.rerun()  # the last run ended: redraw the whole page once, which stops the polling
    shown = ui.runs_to_show(records, active)
    if not shown:
        st.info("No runs yet: pick your settings above and press **Start training**.")
    for record in shown:
        snap = jobs.snapshot(record.run_id) if record.run_id in active else record.snapshot()
        with st.container(border=True):
            st.markdown(f"**{ui.run_title(snap)}** {ui.state_badge(snap['status'])}")
            if snap["status"] in ("queued", "running"):
                st.progress(*ui.progress_of(snap))
                if record.run_id in active and st.button("Cancel", key=f"cancel_{record.run_id}"):
                    jobs.cancel(record.run_id)
            elif snap["status"] == "failed":
                st.error(snap.get("message") or "the run failed: see its log")
            elif snap.get("message"):
                st.warning(snap["message"])
            st.caption(" · ".join(filter(None, (ui.epoch_line(snap), ui.result_line(snap)))))
            if snap.get("metrics"):
                st.plotly_chart(curves_figure(snap["metrics"]), theme="streamlit", key=f"curves_{record.run_id}")


runs_panel(bool(live))
st.page_link("pages/2_Compare.py", label="Compare all runs", icon=":material/stacked_line_chart:")
