"""'Build it here' on the Train page: pick or create a dataset, then add classes and photos (upload or
camera) class by class. Widgets only; the dataset itself is tlcore.data.builder's, the callbacks tlcore.views.build_form's."""

from __future__ import annotations

import streamlit as st

from tlcore.data import builder
from tlcore.views import build_form as bf
from tlcore.views import ui


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
