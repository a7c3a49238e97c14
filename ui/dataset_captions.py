"""Datasets page, captions tab: the caption table, bulk edits and auto-captioning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from trainer.data import captioning
from trainer.data import library as dm
from ui.access import checked_path
from ui.dataset_manager import thumbnail
from ui.text import code, plain


def report_saved(changed: int) -> None:
    """Success only when a file changed: "Saved 0" would read as if something happened."""
    if changed:
        st.success(f"Saved {changed} caption file{'s' if changed > 1 else ''}.")
    else:
        st.info("No caption file changed: there was nothing to save.")


def render_captions(folder: Path) -> None:
    captions = dm.read_captions(folder)
    bulk = st.columns(4)
    trigger = bulk[0].text_input("Trigger word", key="dsm:trigger")
    find = bulk[1].text_input("Find", key="dsm:find")
    replace = bulk[2].text_input("Replace with", key="dsm:replace")
    drop = bulk[3].text_input("Remove tags (comma separated)", key="dsm:drop")
    actions = st.columns(4)
    edit = None
    if actions[0].button("Insert trigger", key="dsm:do_trigger") and trigger.strip():
        edit = lambda c: dm.insert_trigger(c, trigger.strip())  # noqa: E731
    if actions[1].button("Replace", key="dsm:do_replace") and find:
        edit = lambda c: dm.replace_text(c, find, replace)  # noqa: E731
    if actions[2].button("Remove tags", key="dsm:do_drop") and drop.strip():
        edit = lambda c: dm.remove_tags(c, drop.split(","))  # noqa: E731
    if actions[3].button("Sort tags", key="dsm:do_sort"):
        edit = dm.sort_tags
    if edit is not None:
        report_saved(dm.bulk_edit(folder, edit))
        captions = dm.read_captions(folder)
    frame = pd.DataFrame(
        {
            "thumbnail": [thumbnail(folder / name) for name in captions],
            "image": list(captions),
            "caption": list(captions.values()),
        }
    )
    edited = st.data_editor(
        frame,
        hide_index=True,
        disabled=["thumbnail", "image"],
        column_config={"thumbnail": st.column_config.ImageColumn("", width="small")},
        key=f"dsm:captions:{folder.name}",
    )
    if st.button("Save caption edits", key="dsm:save"):
        changed = 0
        for name, text in zip(edited["image"], edited["caption"], strict=True):
            if (text or "").strip() != captions[name]:
                dm.set_caption(folder, name, text or "")
                changed += 1
        report_saved(changed)


def render_autocaption(folder: Path, home: Path) -> None:
    st.subheader("Auto-caption")
    found = [str(p) for p in captioning.captioner_folders(home)]
    if not found:
        st.info(
            "No captioner installed: put a BLIP / Florence-2 / WD14 tagger folder under "
            f"{code(home / 'models' / 'captioners')}, or give a folder below."
        )
    model = st.text_input("Captioner model folder", found[0] if found else "", key="dsm:capdir")
    cols = st.columns(3)
    prefix = cols[0].text_input("Start captions with", key="dsm:capprefix")
    overwrite = cols[1].toggle("Replace existing captions", key="dsm:capall")
    remote = cols[2].toggle("Allow model-folder code (Florence-2)", key="dsm:capremote")
    if st.button("Caption images", key="dsm:caption"):
        if model.strip() and checked_path(model) is None:  # served to a network: the roots
            return
        try:
            captioner = captioning.load_captioner(model, allow_remote_code=remote)
            with st.spinner("Captioning…"):
                written = captioning.auto_caption(
                    folder, captioner, overwrite=overwrite, prefix=prefix
                )
        except captioning.CaptionerUnavailable as err:
            st.error(plain(err))
            return
        if written:
            st.success(f"Captioned {len(written)} image{'s' if len(written) > 1 else ''}.")
        else:
            st.info(
                "No image was captioned: every image already has a caption "
                "(turn on 'Replace existing captions' to redo them)."
            )
