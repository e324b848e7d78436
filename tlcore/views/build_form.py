"""The Train page's "build it here" section minus the drawing: widget callbacks over session state.

Each `on_*` function is a Streamlit `on_click`/`on_change` callback taking the session state
(any dict) first; it edits the dataset through `tlcore.data.builder` and leaves what the user should
read in `state[MESSAGES]`, which the page shows once (`take_messages`). Uploaders and cameras
get a new key after each batch (`widget_key`), so a file that was added, then removed, is not
added again by the widget still holding it.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from tlcore.data import builder

PICK, NEW_NAME, NEW_CLASS = "built_id", "built_new", "built_class"
GENERATION, MESSAGES = "built_gen", "built_messages"
NEW = None  # the "+ new dataset" entry of the dataset picker


def widget_key(state: MutableMapping, kind: str, dataset_id: str, name: str) -> str:
    """Key of a class's uploader or camera; it changes after every batch added, which empties the widget."""
    return f"{kind}_{dataset_id}_{name}_{state.get(GENERATION, 0)}"


def _say(state: MutableMapping, kind: str, text: str) -> None:
    state.setdefault(MESSAGES, []).append((kind, text))


def _edit(state: MutableMapping, action, *args):
    try:
        return action(*args)
    except builder.BuildError as exc:
        _say(state, "error", str(exc))
        return None


def take_messages(state: MutableMapping) -> list[tuple[str, str]]:
    """("error" | "success", line) pairs left by the callbacks since the last call."""
    return state.pop(MESSAGES, None) or []


def on_create(state: MutableMapping) -> None:
    """Create the dataset named in the name box and select it."""
    made = _edit(state, builder.create_dataset, state.get(NEW_NAME))
    if made is not None:
        state[PICK], state[NEW_NAME] = made.id, ""
        _say(state, "success", f"created '{made.name}': now add a class and its images")


def on_add_class(state: MutableMapping, dataset_id: str) -> None:
    """Add the class named in the class box."""
    if _edit(state, builder.add_class, dataset_id, state.get(NEW_CLASS)) is not None:
        state[NEW_CLASS] = ""


def on_files(state: MutableMapping, dataset_id: str, name: str, key: str) -> None:
    """Add what an uploader (a list) or a camera (one photo) holds to a class, then empty it."""
    held = state.get(key)
    files = held if isinstance(held, list) else [held] if held is not None else []
    if not files:
        return
    report = _edit(state, builder.add_images, dataset_id, name, files)
    state[GENERATION] = state.get(GENERATION, 0) + 1
    if report is not None:
        _say(state, "success", f"{name}: {report.summary()}")
        for line in report.refused:
            _say(state, "error", f"refused {line}")


def on_remove_image(state: MutableMapping, dataset_id: str, name: str, file_name: str) -> None:
    _edit(state, builder.remove_image, dataset_id, name, file_name)


def on_remove_class(state: MutableMapping, dataset_id: str, name: str) -> None:
    _edit(state, builder.remove_class, dataset_id, name)


def on_delete(state: MutableMapping, dataset_id: str) -> None:
    """Delete the dataset and go back to "+ new dataset"."""
    _edit(state, builder.delete_dataset, dataset_id)
    state[PICK] = NEW


def picker_label(datasets: dict[str, builder.BuiltDataset], dataset_id: str | None) -> str:
    """The dataset's name for the picker; the new-dataset entry for None.

    No counts in it: Streamlit identifies a selectbox by its option labels too, so a label that
    changed with every added image would make a new widget, and lose the choice, on each upload.
    """
    if dataset_id is NEW or dataset_id not in datasets:
        return "+ new dataset"
    return datasets[dataset_id].name


def status_line(ds: builder.BuiltDataset) -> tuple[bool, str]:
    """(ready to train, one line): what is there, or what is still missing."""
    try:
        builder.trainable_spec(ds.id)
    except builder.BuildError as exc:
        return False, f"Not ready: {exc}"
    return True, f"Ready to train: {len(ds.counts)} classes, {sum(ds.counts.values())} images"
