"""Train: pick a backbone, data, strategy and knobs; runs train in the background and report live."""

import streamlit as st

import nav
from tlcore import build_form as bf
from tlcore import builder, experiment_views, export, form, run_filters, ui
from tlcore.charts import curves_figure
from tlcore.config import AUGMENTS, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig, default_lr
from tlcore.data import BUILTIN
from tlcore.device import check_precision, gpu_count
from tlcore.experiments import cancel_experiment, progress, start_experiment
from tlcore.heads import HEAD_KINDS
from tlcore.insight_charts import lr_find_figure
from tlcore.jobs import JobManager, get_manager
from tlcore.lr_find import lr_find
from tlcore.paths import runs_root
from tlcore.strategies import STRATEGIES

nav.through_app("pages/1_Train.py")  # a fresh server's first request: the app's own navigation


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


def use_default_lr() -> None:
    """A new strategy or optimizer brings its own default learning rate (the user may change it)."""
    st.session_state.lr = default_lr(st.session_state.strategy, st.session_state.optimizer)


def build_here() -> str | None:
    """'Build it here': pick or create a dataset, then add classes and photos (upload or camera) class by class."""
    state, sets = st.session_state, {ds.id: ds for ds in builder.list_datasets()}
    pick = st.selectbox("Your dataset", [*sets, bf.NEW], key=bf.PICK, format_func=lambda i: bf.picker_label(sets, i))
    for kind, line in bf.take_messages(state):
        (st.error if kind == "error" else st.success)(line)
    if pick not in sets:
        name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        name_col.text_input("New dataset name", key=bf.NEW_NAME, placeholder="e.g. my plants", max_chars=60)
        button_col.button("Create", key="built_create", on_click=bf.on_create, args=(state,))
        return None
    ds = sets[pick]
    for name, count in ds.counts.items():
        with st.container(border=True):
            title, remove = st.columns([5, 1], vertical_alignment="center")
            title.markdown(f"**{name}** · {count} image{'' if count == 1 else 's'}")
            remove.button(":material/delete:", key=f"built_rmclass_{name}", help=f"remove class {name} and its images",
                          on_click=bf.on_remove_class, args=(state, ds.id, name))
            thumbs = builder.thumbnails(ds.id, name)
            for start in range(0, len(thumbs), 6):
                for col, (file_name, picture) in zip(st.columns(6), thumbs[start : start + 6], strict=False):
                    col.image(picture, width="stretch")
                    col.button(":material/close:", key=f"built_rm_{name}_{file_name}", help="remove this image",
                               on_click=bf.on_remove_image, args=(state, ds.id, name, file_name))
            if count > len(thumbs):
                st.caption(f"the newest {len(thumbs)} of {count} shown")
            key = bf.widget_key(state, "upload", ds.id, name)
            st.file_uploader(f"Add images to {name}", type=list(ui.IMAGE_TYPES), accept_multiple_files=True,
                             key=key, on_change=bf.on_files, args=(state, ds.id, name, key))
            if st.toggle("Use the camera", key=f"built_camera_{ds.id}_{name}"):
                key = bf.widget_key(state, "camera", ds.id, name)
                st.camera_input(f"Photo for {name}", key=key, on_change=bf.on_files, args=(state, ds.id, name, key))
    class_col, add_col = st.columns([3, 2], vertical_alignment="bottom")
    class_col.text_input("New class", key=bf.NEW_CLASS, placeholder="e.g. cat", max_chars=60)
    add_col.button("Add class", key="built_add", on_click=bf.on_add_class, args=(state, ds.id))
    ready, line = bf.status_line(ds)
    (st.caption if ready else st.warning)(line)
    with st.popover("Delete dataset", icon=":material/delete:"):
        st.button(f"Yes, delete '{ds.name}' and its images", key="built_delete", type="primary",
                  on_click=bf.on_delete, args=(state, ds.id))
    return ds.id


jobs, d, rows = manager(str(runs_root().resolve())), TrainConfig(), ui.backbone_rows()
if "lr" not in st.session_state:
    st.session_state.lr = default_lr(d.strategy, d.optimizer)
st.title("Train")
left, right = st.columns(2)
with left:
    backbone = st.selectbox("Backbone", list(rows), index=list(rows).index(d.backbone), key="backbone",
                            format_func=lambda name: ui.backbone_label(rows[name]))
    st.caption(rows[backbone]["description"])
    source = st.radio("Dataset", ui.DATA_SOURCES, horizontal=True, key="data_source")
    builtin = folder = upload = earlier = built = None
    if source == ui.DATA_SOURCES[0]:
        builtin = st.selectbox("Built-in dataset", BUILTIN, index=BUILTIN.index(d.data), key="dataset")
    elif source == ui.DATA_SOURCES[1]:
        folder = st.text_input("Folder of class folders", key="data_folder", placeholder="~/photos/flowers")
    elif source == ui.DATA_SOURCES[3]:
        built = build_here()
    else:
        upload = st.file_uploader("Zip of class folders", type=["zip"], key="data_zip")
        earlier_zips = ui.earlier_uploads()  # uploads outlive a reload: pick one again
        if earlier_zips and upload is None:
            earlier = st.selectbox("or an earlier upload", list(earlier_zips), key="earlier_zip",
                                   format_func=earlier_zips.get)
    strategy = st.selectbox("Strategy", list(STRATEGIES), index=list(STRATEGIES).index(d.strategy), key="strategy",
                            on_change=use_default_lr)
    st.caption(STRATEGIES[strategy].summary)
    if weights_note := form.weights_note(backbone, strategy):
        st.warning(weights_note, icon=":material/cloud_download:")
with right:
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 1000, d.epochs, key="epochs")
    batch_size = c2.selectbox("Batch size", ui.BATCH_SIZES, index=ui.BATCH_SIZES.index(d.batch_size), key="batch_size")
    optimizer = st.session_state.get("optimizer", d.optimizer)
    lr = c3.number_input("Learning rate", 1e-6, 10.0, step=1e-4, format="%g", key="lr",
                         help=f"default for {strategy} with {optimizer}: {default_lr(strategy, optimizer):g}")
    optimizer = c1.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(d.optimizer), key="optimizer",
                             on_change=use_default_lr)
    schedule = c2.selectbox("LR schedule", SCHEDULES, index=SCHEDULES.index(d.schedule), key="schedule")
    head = c3.selectbox("Head", HEAD_KINDS, index=HEAD_KINDS.index(d.head), key="head")
    augment = c1.selectbox("Augmentation", AUGMENTS, index=AUGMENTS.index(d.augment), key="augment")
    image_size = c2.selectbox("Image size", ui.IMAGE_SIZES, key="image_size",
                              format_func=lambda s: ui.image_size_label(s, backbone),
                              help="pixels per side; auto: the backbone's own input size")
    seed = c3.number_input("Seed", 0, 2**31 - 1, d.seed, key="seed")
    subset = c1.number_input("Images per class", 1, None, None, key="subset", placeholder="all",
                             help="training images per class, for quick trial runs; validation keeps all its images")
    gpus = 1  # one device: the run trains in the app's own process, as always
    if (gpus_here := gpu_count()) > 1:
        gpus = int(c2.number_input("GPUs", 1, gpus_here, 1, key="gpus",
                                   help="over 1: one run over N GPUs with torchrun (DDP), the batch size split "
                                        "over them"))
    with st.expander("Advanced"):
        shown = form.advanced_fields(strategy, head, builtin)
        a1, a2 = st.columns(2)
        advanced = {
            "unfreeze_groups": lambda: a1.number_input("Stages to train (partial: the last N)", 1, 100,
                                                       d.unfreeze_groups, key="unfreeze_groups"),
            "hidden": lambda: a2.text_input("MLP hidden sizes", key="hidden", placeholder="1024-1024-512",
                                            help="widths of the MLP head's hidden layers, e.g. 512-256"),
            "lr_factor": lambda: a1.number_input("LR factor between layer groups", 0.01, 1.0, d.lr_factor, 0.05,
                                                 key="lr_factor", help="each earlier group's LR is this times the next's"),
            "head_epochs": lambda: a2.number_input("Head-only epochs (gradual)", 0, 1000, d.head_epochs,
                                                   key="head_epochs"),
            "val_fraction": lambda: a1.slider("Validation fraction", 0.05, 0.5, d.val_fraction, 0.05,
                                              key="val_fraction", help="used when the data has no val/ folder"),
            "weight_decay": lambda: a2.number_input("Weight decay", 0.0, 1.0, d.weight_decay, 1e-4, format="%g",
                                                    key="weight_decay"),
            "precision": lambda: a1.selectbox("Precision", PRECISIONS, index=PRECISIONS.index(d.precision),
                                              key="precision", help=form.PRECISION_HELP),
        }
        extra = {name: advanced[name]() for name in shown}
    def settings(backbone: str, strategy: str) -> TrainConfig:
        """The form's settings for one backbone and strategy (the dataset located, not yet scanned)."""
        data = ui.dataset_spec(source, builtin, folder, upload, earlier=earlier, built=built)
        return ui.make_config(backbone=backbone, data=data, strategy=strategy, epochs=int(epochs),
                              batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule, head=head,
                              augment=augment, image_size=image_size, seed=int(seed),
                              subset=int(subset) if subset else None, **form.advanced_values(shown, extra))

    if st.button("Start training", type="primary", key="start"):
        try:
            with st.spinner("Checking the dataset..."):
                cfg = settings(backbone, strategy)
                form.check_weights(backbone, strategy)
                check_precision(cfg.device, cfg.precision, cfg.backbone)
                found = form.check_dataset(cfg.data, cfg.val_fraction, cfg.subset, cfg.seed)
            st.success(f"Queued run {jobs.submit(cfg, processes=gpus)}{f' on {found}' if found else ''}"
                       f"{f' over {gpus} GPUs' if gpus > 1 else ''}: it trains in the background, watch it below.")
        except ValueError as exc:
            st.error(f"Cannot start: {exc}")
    with st.expander("Learning-rate finder", icon=":material/search_insights:"):  # fastai's lr_find
        st.caption("Trains up to 100 batches while the learning rate grows from 1e-7 to 10, then restores every "
                   "weight. Seconds with a frozen backbone (feature cache); fine-tuning takes longer.")
        if st.button("Find a learning rate", key="lr_find"):
            try:
                with st.spinner("Sweeping the learning rate..."):
                    st.session_state.lr_found = lr_find(settings(backbone, strategy))
            except (ValueError, RuntimeError) as exc:  # RuntimeError: weights unavailable
                st.error(f"Cannot sweep: {exc}")
        if found := st.session_state.get("lr_found"):
            st.plotly_chart(lr_find_figure(found), theme="streamlit", key="lr_find_chart")
            suggestion = float(f"{min(max(found.suggested_lr, 1e-6), 10.0):.2g}")
            st.button(f"Use {suggestion:g} as the learning rate", key="lr_use",
                      on_click=st.session_state.__setitem__, args=("lr", suggestion))
with st.expander("Experiment: several strategies and backbones, over seeds", icon=":material/science:"):
    st.caption(f"Runs each pick with the settings above, all on the same validation images; the seeds vary "
               f"initialisation, shuffling and augmentation. {strategy} keeps the learning rate above, the "
               "other strategies get their defaults.")
    if not st.session_state.get("exp_picked"):  # follow the picks above until the user picks here
        st.session_state.exp_strategies, st.session_state.exp_backbones = [strategy], [backbone]

    def picked() -> None:
        st.session_state.exp_picked = True

    exp_strategies = st.multiselect("Strategies", list(STRATEGIES), key="exp_strategies", on_change=picked)
    e1, e2 = st.columns([4, 1])
    exp_backbones = e1.multiselect("Backbones", list(rows), key="exp_backbones", on_change=picked)
    exp_seeds = e2.number_input("Seeds", 1, 20, 3, key="exp_seeds", help="runs per strategy and backbone")
    if st.button("Plan experiment", key="exp_plan"):
        st.session_state.exp_planned = None
        try:
            with st.spinner("Counting images..."):
                for b, s in ((b, s) for b in exp_backbones for s in exp_strategies):
                    form.check_weights(b, s)
                lrs = experiment_views.strategy_lrs(exp_strategies, strategy, lr, optimizer)
                st.session_state.exp_planned = experiment_views.plan(
                    settings(backbone, strategy), exp_strategies, exp_backbones, int(exp_seeds), lrs,
                    jobs.list_runs())
        except ValueError as exc:
            st.error(f"Cannot plan: {exc}")
    if planned := st.session_state.get("exp_planned"):
        st.info(f"This queues {planned.text}.")
        if st.button(f"Start {planned.runs} runs", type="primary", key="exp_start"):
            record = start_experiment(jobs, planned.base, planned.grid)
            st.session_state.exp_planned, st.session_state.exp_started = None, record["experiment_id"]
            st.success(f"Queued experiment {record['experiment_id']}: follow it below, then see it on Compare.")

experiments_live = experiment_views.live_experiments(jobs.store.root)


@st.fragment(run_every=1.0 if experiments_live else None)
def experiments_panel() -> None:
    """Each running experiment (and the one started here): run k of n, the current run's curves, cancel."""
    for record in experiment_views.experiments_to_show(jobs.store.root, st.session_state.get("exp_started")):
        with st.container(border=True):
            st.markdown(f"**Experiment** {experiment_views.experiment_label(record)}")
            st.progress(*experiment_views.progress_line(record))
            current = progress(record)["current_run"]
            if current and (metrics := jobs.snapshot(current).get("metrics")):
                st.plotly_chart(curves_figure(metrics), theme="streamlit", key=f"exp_curves_{record['experiment_id']}")
            if record["status"] in ("queued", "running"):
                if st.button("Cancel experiment", key=f"cancel_{record['experiment_id']}"):
                    cancel_experiment(jobs, record["experiment_id"])
            else:
                st.page_link("pages/2_Compare.py", label="See its bands and verdict on Compare",
                             icon=":material/stacked_line_chart:")


experiments_panel()
title_col, all_col, failed_col = st.columns([4, 1, 1], vertical_alignment="bottom")
title_col.subheader("Runs")
show_all = all_col.toggle("Show all runs", key="show_all")
hide_failed = failed_col.toggle("Hide failed runs", key="hide_failed")
records = jobs.list_runs()  # from the runs folder's index: only runs that changed are read again
live = ui.live_ids(records)  # queued or running, here or in another process
labels = ui.run_labels(records)
ended = run_filters.ended_runs(records, hide_failed)
if show_all and len(ended) > run_filters.CARDS_PER_PAGE:  # every ended run, a page at a time
    pages = run_filters.page_count(len(ended))
    page_col, _ = st.columns([1, 5])
    ended = run_filters.page_of(ended, page_col.number_input(f"Page (of {pages})", 1, pages, key="runs_page"))[0]
elif not show_all:
    ended = ended[:run_filters.RECENT_CARDS]
trails = st.session_state.setdefault("trails", {})  # per run: the batches this session saw (pace, live loss)


def download_model(rid: str) -> None:
    """The run as a model bundle zip: built on the first click (ONNX checked), then kept in the run's folder."""
    st.download_button("Download model", lambda: export.bundle_zip(rid, jobs.store.root).read_bytes(),
                       export.download_name(rid), "application/zip", key=f"model_{rid}", on_click="ignore",
                       icon=":material/download:", help="model.onnx + model.safetensors + tlcore.json + README: "
                       "runs with onnxruntime anywhere, or Predict > an exported model")


def manage(record) -> None:
    """Rename or delete an ended run (deleting asks first)."""
    rid = record.run_id
    with st.popover("Rename or delete", icon=":material/edit:"):
        name = st.text_input("Your name for this run", record.name, key=f"name_{rid}", max_chars=80)
        if st.button("Save name", key=f"rename_{rid}"):
            jobs.store.set_name(rid, name)
            st.rerun()
        if st.button("Delete run", key=f"delete_{rid}", icon=":material/delete:"):
            st.session_state[f"confirm_{rid}"] = True
        if st.session_state.get(f"confirm_{rid}"):
            st.warning("Delete this run, its curves and its weights? This cannot be undone.")
            yes, no = st.columns(2)
            if yes.button("Yes, delete", key=f"delete_yes_{rid}", type="primary"):
                jobs.store.delete(rid)
                del st.session_state[f"confirm_{rid}"]
                st.rerun()
            if no.button("Keep it", key=f"delete_no_{rid}"):
                del st.session_state[f"confirm_{rid}"]
                st.rerun()


def run_card(record, active: list[str]) -> None:
    """One run's card: label and state, progress or outcome, curves, and what can be done with it."""
    snap = jobs.snapshot(record.run_id) if record.run_id in active else record.snapshot()
    trail = ui.track(trails.setdefault(record.run_id, []), snap)
    with st.container(border=True):
        st.markdown(f"**{labels.get(record.run_id) or ui.run_title(record)}** {ui.state_badge(snap['status'])}")
        st.caption(ui.run_details(snap))
        if snap["status"] in ("queued", "running"):
            frac, where = ui.progress_of(snap)
            st.progress(frac, " · ".join(filter(None, (where, ui.time_left(trail, snap)))))
            if record.run_id in active and st.button("Cancel", key=f"cancel_{record.run_id}"):
                jobs.cancel(record.run_id)
        elif snap["status"] == "failed":
            st.error(ui.run_message(snap))
        elif snap.get("message"):
            st.warning(ui.run_message(snap))
        st.caption(" · ".join(filter(None, (ui.epoch_line(snap), ui.result_line(snap)))))
        if snap.get("metrics") or ui.live_losses(trail):
            st.plotly_chart(curves_figure(snap.get("metrics") or [], live=ui.live_losses(trail)
                                          if snap["status"] == "running" else None),
                            theme="streamlit", key=f"curves_{record.run_id}")
        if record.run_id not in active and record.state not in ("queued", "running"):
            manage(record)
        if snap["status"] == "finished":
            download_model(record.run_id)


@st.fragment(run_every=1.0 if live else None)  # poll only while something trains
def active_runs(watching: bool) -> None:
    # The poll rereads and redraws the active runs only; the ended runs' cards are drawn once per page run.
    live_now, active = jobs.store.active(), jobs.active()
    if watching and {r.run_id for r in live_now} != set(live):
        st.rerun()  # a run ended or another process started one: redraw the whole page once
    for record in ui.runs_to_show(live_now, active, show_all=True):
        run_card(record, active)


hidden = len(records) - len(live) - len(ended)
if not records:
    st.info("No runs yet: pick your settings above and press **Start training**.")
elif hidden and not show_all:
    st.caption(f"{hidden} older or failed runs not shown: turn on **Show all runs**.")
active_runs(bool(live))
for ended_record in ended:
    run_card(ended_record, [])
st.page_link("pages/2_Compare.py", label="Compare all runs", icon=":material/stacked_line_chart:")
