"""Train: pick a backbone, data, strategy and knobs; runs train in the background and report live."""

import streamlit as st

from tlcore import run_filters
from tlcore.analysis.lr_find import lr_find
from tlcore.data.sources import BUILTIN
from tlcore.experiments import cancel_experiment, progress, start_experiment
from tlcore.models.heads import HEAD_KINDS
from tlcore.paths import runs_root
from tlcore.training.config import AUGMENTS, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig, default_lr
from tlcore.training.device import check_precision, gpu_count
from tlcore.training.jobs import JobManager, get_manager
from tlcore.training.strategies import STRATEGIES
from tlcore.views import experiment_views, form, ui
from tlcore.views.charts import curves_figure
from tlcore.views.insight_charts import lr_find_figure
from widgets import build_here, nav, run_cards

nav.through_app("pages/1_Train.py")  # a fresh server's first request: the app's own navigation


@st.cache_resource(show_spinner=False)
def manager(runs_dir: str) -> JobManager:
    return get_manager(runs_dir)


def use_default_lr() -> None:
    """A new strategy or optimizer brings its own default learning rate (the user may change it)."""
    st.session_state.lr = default_lr(st.session_state.strategy, st.session_state.optimizer)


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
        built = build_here.build_here()
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
    if random_note := form.random_backbone_note(backbone, strategy):
        st.warning(random_note, icon=":material/casino:")
with right:
    # The knobs flow in a wrapping row of fixed-width fields: three a row on a wide screen, two on a
    # laptop, where three columns cut values to "adar" and "linea" (seen at 1000 px).
    knobs = st.container(horizontal=True, gap="small", key="knobs")
    KNOB = 116  # px: three a row in the right half of a 1400 px window, two at 1000 px
    # No min or max on the number fields: Streamlit keeps the last value in range and shows the typed
    # one, so a run would start with numbers the user did not see. Start checks them and says which.
    epochs = knobs.number_input("Epochs", value=d.epochs, step=1, key="epochs", width=KNOB)
    batch_size = knobs.selectbox("Batch size", ui.BATCH_SIZES, index=ui.BATCH_SIZES.index(d.batch_size),
                                 key="batch_size", width=KNOB)
    optimizer = st.session_state.get("optimizer", d.optimizer)
    lr = knobs.number_input("Learning rate", step=1e-4, format="%g", key="lr", width=KNOB,  # its value: session_state.lr
                            help=f"default for {strategy} with {optimizer}: {default_lr(strategy, optimizer):g}")
    optimizer = knobs.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(d.optimizer), key="optimizer",
                                width=KNOB, on_change=use_default_lr)
    schedule = knobs.selectbox("LR schedule", SCHEDULES, index=SCHEDULES.index(d.schedule), key="schedule", width=KNOB)
    head = knobs.selectbox("Head", HEAD_KINDS, index=HEAD_KINDS.index(d.head), key="head", width=KNOB)
    augment = knobs.selectbox("Augmentation", AUGMENTS, index=AUGMENTS.index(d.augment), key="augment", width=KNOB)
    image_size = knobs.selectbox("Image size", ui.IMAGE_SIZES, key="image_size", width=KNOB,
                                 format_func=lambda s: ui.image_size_label(s, backbone),
                                 help="pixels per side; auto: the backbone's own input size")
    seed = knobs.number_input("Seed", value=d.seed, step=1, key="seed", width=KNOB)
    subset = knobs.number_input("Images per class", value=None, step=1, key="subset", width=KNOB, placeholder="all",
                                help="training images per class, for quick trial runs; validation keeps all its images")
    gpus = 1  # one device: the run trains in the app's own process, as always
    if (gpus_here := gpu_count()) > 1:
        gpus = int(knobs.number_input("GPUs", 1, gpus_here, 1, key="gpus", width=KNOB,
                                      help="over 1: one run over N GPUs with torchrun (DDP), the batch size split "
                                           "over them"))
    # Advanced runs only when opened, like the sections below: its fields and the slider's script
    # bundle cost a new browser about 0.3 s on every visit (issue 13). Its values outlive closing it:
    # Streamlit forgets the state of a widget not drawn in a run unless the script sets it, as here.
    for name, value in form.advanced_defaults(d).items():
        st.session_state[name] = st.session_state.get(name, value)
    shown = form.advanced_fields(strategy, head, builtin)
    extra = {name: st.session_state[name] for name in shown}
    advanced_section = st.expander("Advanced", key="advanced_open", on_change="rerun")
    if advanced_section.open:
        with advanced_section:
            a1, a2 = st.columns(2)
            advanced = {
                "unfreeze_groups": lambda: a1.number_input("Stages to train (partial: the last N)", step=1,
                                                           key="unfreeze_groups"),
                "hidden": lambda: a2.text_input("MLP hidden sizes", key="hidden", placeholder="1024-1024-512",
                                                help="widths of the MLP head's hidden layers, e.g. 512-256"),
                "lr_factor": lambda: a1.number_input("LR factor between layer groups", step=0.05, key="lr_factor",
                                                     help="each earlier group's LR is this times the next's"),
                "head_epochs": lambda: a2.number_input("Head-only epochs (gradual)", step=1, key="head_epochs"),
                "val_fraction": lambda: a1.slider("Validation fraction", 0.05, 0.5, step=0.05, key="val_fraction",
                                                  help="used when the data has no val/ folder"),
                "weight_decay": lambda: a2.number_input("Weight decay", step=1e-4, format="%g", key="weight_decay"),
                "precision": lambda: a1.selectbox("Precision", PRECISIONS, key="precision",
                                                  help=form.PRECISION_HELP),
            }
            extra = {name: advanced[name]() for name in shown}
    def settings(backbone: str, strategy: str) -> TrainConfig:
        """The form's settings for one backbone and strategy (the dataset located, not yet scanned)."""
        data = ui.dataset_spec(source, builtin, folder, upload, earlier=earlier, built=built)
        return ui.make_config(backbone=backbone, data=data, strategy=strategy, epochs=int(epochs),
                              batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule, head=head,
                              augment=augment, image_size=image_size, seed=int(seed),
                              subset=None if subset is None else int(subset), **form.advanced_values(shown, extra))

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
            st.error(f"Cannot start: {form.error_line(exc)}")
    # Collapsed sections run only when opened (on_change="rerun"): each widget costs the browser
    # time to lay out on every visit (issue 13: the page's first render under 2 s).
    lr_finder = st.expander("Learning-rate finder", icon=":material/search_insights:", key="lr_find_open",
                            on_change="rerun")  # fastai's lr_find
    if lr_finder.open:
        with lr_finder:
            st.caption("Trains up to 100 batches while the learning rate grows from 1e-7 to 10, then restores every "
                       "weight. Seconds with a frozen backbone (feature cache); fine-tuning takes longer.")
            if st.button("Find a learning rate", key="lr_find"):
                try:
                    with st.spinner("Sweeping the learning rate..."):
                        st.session_state.lr_found = lr_find(settings(backbone, strategy))
                except (ValueError, RuntimeError) as exc:  # RuntimeError: weights unavailable
                    st.error(f"Cannot find a learning rate: {form.error_line(exc)}")
            if found := st.session_state.get("lr_found"):
                st.container(key="lr_find_chart").altair_chart(lr_find_figure(found), width="stretch")  # keyed: see Compare
                suggestion = float(f"{min(max(found.suggested_lr, 1e-6), 10.0):.2g}")
                st.button(f"Use {suggestion:g} as the learning rate", key="lr_use",
                          on_click=st.session_state.__setitem__, args=("lr", suggestion))
# The experiment's picks outlive closing its section: Streamlit forgets the state of a widget not
# drawn in a run unless the script sets it, as here.
st.session_state.setdefault("exp_seeds", 3)
for kept in ("exp_strategies", "exp_backbones", "exp_seeds"):
    if kept in st.session_state:
        st.session_state[kept] = st.session_state[kept]
experiment = st.expander("Experiment: several strategies and backbones, over seeds", icon=":material/science:",
                         key="exp_open", on_change="rerun")
if experiment.open:
    with experiment:
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
        exp_seeds = e2.number_input("Seeds", step=1, key="exp_seeds", help="runs per strategy and backbone")
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
                st.error(f"Cannot plan: {form.error_line(exc)}")
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
            st.markdown(f"**Experiment** {ui.literal(experiment_views.experiment_label(record))}")
            st.progress(*experiment_views.progress_line(record))
            current = progress(record)["current_run"]
            if current and (metrics := jobs.snapshot(current).get("metrics")):
                st.container(key=f"exp_curves_{record['experiment_id']}").altair_chart(curves_figure(metrics))
            if record["status"] in ("queued", "running"):
                if st.button("Cancel experiment", key=f"cancel_{record['experiment_id']}"):
                    cancel_experiment(jobs, record["experiment_id"])
            else:
                st.page_link("pages/2_Compare.py", label="See its bands and verdict on Compare",
                             icon=":material/stacked_line_chart:")


experiments_panel()
# A row whose toggles take the width of their labels (narrow columns cut them to "Sho..." at 1000 px).
runs_head = st.container(horizontal=True, vertical_alignment="bottom", key="runs_head")
runs_head.subheader("Runs", width="stretch")
show_all = runs_head.toggle("Show all runs", key="show_all", width="content")
hide_failed = runs_head.toggle("Hide failed runs", key="hide_failed", width="content")
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
watched = st.session_state.setdefault("watched_runs", set())  # runs this session saw queued or running


# The page's own run calls the fragment once inline: a run that ended in the milliseconds since
# `records` were read must not rerun the page then (that dropped the "Queued run" message of a
# run that ends at once); the next poll, a second later, redraws the page.
st.session_state.train_page_run = True


@st.fragment(run_every=1.0 if live else None)  # poll only while something trains
def active_runs(watching: bool) -> None:
    # The poll rereads and redraws the active runs only; the ended runs' cards are drawn once per page run.
    polled = not st.session_state.pop("train_page_run", False)
    live_now, active = jobs.store.active(), jobs.active()
    if watching and polled and {r.run_id for r in live_now} != set(live):
        st.rerun()  # a run ended or another process started one: redraw the whole page once
    for record in ui.runs_to_show(live_now, active, show_all=True):
        run_cards.run_card(jobs, record, active, labels, trails, watched)


hidden = len(records) - len(live) - len(ended)
if not records:
    st.info("No runs yet: pick your settings above and press **Start training**.")
elif hidden and not show_all:
    st.caption(f"{hidden} older or failed runs not shown: turn on **Show all runs**.")
active_runs(bool(live))
for ended_record in ended:
    run_cards.run_card(jobs, ended_record, [], labels, trails, watched)
st.page_link("pages/2_Compare.py", label="Compare all runs", icon=":material/stacked_line_chart:")
