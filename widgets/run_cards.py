"""A run's card on the Train page: label and state, progress or outcome, curves, rename or delete,
and the model download. Widgets only; what they show comes from tlcore.views.ui and tlcore.views.charts."""

from __future__ import annotations

import streamlit as st

from tlcore.export import write as export
from tlcore.runs import RunRecord
from tlcore.training.jobs import JobManager
from tlcore.views import ui
from tlcore.views.charts import curves_figure

MODEL_HELP = ("model.onnx + model.safetensors + tlcore.json + README: runs with onnxruntime anywhere, "
              "or Predict > an exported model")


def download_model(jobs: JobManager, rid: str) -> str | None:
    """The run as a model bundle zip in one click: built on the first (ONNX checked), then kept in the run's folder.

    A bundle not built yet is built in the page's run under a spinner, and its download button is
    then pressed for the user. Built inside the download request instead (a callable `data`), QA's
    first click in Chromium built the zip and delivered nothing, with no message, while a click on a
    built zip always delivered; this way the slow part and its failure show on the page.
    Returns the export's error, for the card to show in full width, or None."""
    root, slot = jobs.store.root, st.empty()  # the spinner, then the download, take the button's place
    built = export.ready_zip(rid, root)
    pressed = False
    if built is None:
        if not slot.button("Download model", key=f"build_{rid}", icon=":material/download:", help=MODEL_HELP):
            return None
        with slot.container(), st.spinner("Building the model..."):
            try:
                built = export.bundle_zip(rid, root)
            except Exception as exc:  # shown, not swallowed: any failure of the export is the user's answer
                return f"Cannot export this run: {str(exc).strip() or type(exc).__name__}"
        pressed = True
    slot.download_button("Download model", built.read_bytes, export.download_name(rid), "application/zip",
                         key=f"model_{rid}", on_click="ignore", icon=":material/download:", help=MODEL_HELP)
    if pressed:  # the click that built it is the click that downloads it
        st.html(PRESS.replace("RID", rid), unsafe_allow_javascript=True, width="content")
    return None


# Presses the download button once it is on the page (it arrives with the same rerun as this script);
# the style keeps this element from taking a line of its own under the button.
PRESS = """<style>[data-testid="stElementContainer"]:has(.press-RID) { display: none; }</style>
<span class="press-RID"></span>
<script>
(() => {
  let tries = 0;
  const press = () => {
    const button = document.querySelector(".st-key-model_RID button");
    if (button) button.click(); else if (tries++ < 100) setTimeout(press, 50);
  };
  press();
})();
</script>"""


def manage(jobs: JobManager, record: RunRecord) -> None:
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


def stop_elsewhere(jobs: JobManager, rid: str) -> None:
    """Stop a run that another process trains (a terminal, torchrun, this app before a restart)."""
    asked, slot = f"stop_asked_{rid}", st.empty()  # the button gives way to the note once pressed
    if not st.session_state.get(asked) and slot.button(
            "Stop", key=f"stop_{rid}", help="it trains in another process (a terminal, torchrun, or this app "
            "before a restart): asks that process to stop it after its current batch"):
        try:
            jobs.store.request_cancel(rid)
            st.session_state[asked] = True
        except ValueError as exc:  # it ended meanwhile
            slot.info(f"Nothing to stop: {exc}")
    if st.session_state.get(asked):
        slot.caption("Asked its process to stop: it records the run cancelled after its current batch.")


def run_card(jobs: JobManager, record: RunRecord, active: list[str], labels: dict[str, str], trails: dict,
             watched: set[str]) -> None:
    """One run's card: label and state, progress or outcome, curves, and what can be done with it.

    `active`: the runs this process trains (they can be cancelled here); `labels`: `ui.run_labels`
    of every run; `trails`: per run, the batches this session saw (pace and live loss); `watched`:
    the runs this session showed queued or running (added to here), whose curves stay drawn once they end."""
    snap = jobs.snapshot(record.run_id) if record.run_id in active else record.snapshot()
    trail = ui.track(trails.setdefault(record.run_id, []), snap)
    with st.container(border=True):
        # Labels and details hold times of day ('13:31:48') and the user's names: shown as written.
        st.markdown(f"**{ui.literal(labels.get(record.run_id) or ui.run_title(record))}** {ui.state_badge(snap['status'])}")
        st.caption(ui.literal(ui.run_details(snap)))
        if snap["status"] in ("queued", "running"):
            frac, where = ui.progress_of(snap)
            st.progress(frac, " · ".join(filter(None, (where, ui.time_left(trail, snap)))))
            if record.run_id in active:
                # Every session shows that it stops (a batch can take seconds): the button gives way
                # to the note (QA: after Cancel in another tab, both showed "running" and Cancel for 7 s).
                slot = st.empty()
                stopping = jobs.stopping(record.run_id)
                if not stopping and slot.button("Cancel", key=f"cancel_{record.run_id}"):
                    jobs.cancel(record.run_id)
                    stopping = jobs.stopping(record.run_id)  # False for a queued run: it ended at once
                if stopping:
                    slot.caption("Stopping: the run ends after its current batch.")
            else:
                stop_elsewhere(jobs, record.run_id)
        elif snap["status"] == "failed":
            st.error(ui.literal(ui.run_message(snap)))
        elif snap.get("message"):
            st.warning(ui.literal(ui.run_message(snap)))
        st.caption(ui.literal(" · ".join(filter(None, (ui.epoch_line(snap), ui.result_line(snap))))))
        live = snap["status"] in ("queued", "running")
        if live:
            watched.add(record.run_id)
        # An ended run draws its epochs only: one cancelled in its first epoch has none (its batches'
        # losses alone drew empty axes with a lone "0.000000" tick).
        has_curves = bool(snap.get("metrics") or (live and ui.live_losses(trail)))
        # The curves sit above the row of controls that ends the card; the container carries their
        # key (st.altair_chart drops the key of a chart without selections).
        chart = st.container(key=f"curves_{record.run_id}")
        if live:
            show = has_curves
        else:  # one row: the curves toggle, rename or delete, and the model download
            # A row as wide as its controls: in columns they were cut to "Cu…", "Re…", "Down…" at 1000 px.
            row = st.container(horizontal=True, vertical_alignment="center", key=f"actions_{record.run_id}")
            # Each chart costs the browser time to draw, the page's first one most (Vega's 0.8 MB
            # bundle: 0.4 s in a new browser, issue 13): an ended run's curves wait for the toggle,
            # except those this session watched queue or train. Compare is where ended runs' curves
            # are read side by side.
            show = has_curves and row.toggle("Curves", value=record.run_id in watched, width="content",
                                             key=f"show_curves_{record.run_id}")
            if record.run_id not in active:
                with row:
                    manage(jobs, record)
            if snap["status"] == "finished":
                with row:
                    export_error = download_model(jobs, record.run_id)
                if export_error:
                    st.error(export_error)
        if show:
            chart.altair_chart(curves_figure(snap.get("metrics") or [], live=ui.live_losses(trail)
                                             if snap["status"] == "running" else None))
