"""Datasets page parts: create (zip / files / folder), analyse, de-duplicate, edit captions.

All work is done by ``trainer.data.library``; this module only draws widgets and reports results.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image

from trainer.data import library as dm


def render_create(root: Path) -> None:
    with st.expander("New dataset", expanded=not dm.list_datasets(root)):
        name = st.text_input("Name", key="dsm:name", placeholder="my_subject")
        source = st.radio(
            "From", ["Zip upload", "Image files", "Local folder"], key="dsm:source", horizontal=True
        )
        upload = files = folder = None
        if source == "Zip upload":
            upload = st.file_uploader("Zip of images and .txt captions", type=["zip"])
        elif source == "Image files":
            files = st.file_uploader("Images and captions", accept_multiple_files=True)
        else:
            folder = st.text_input("Folder on this machine", key="dsm:folder")
        st.caption("Sub-folders are flattened; files other than images and captions are skipped.")
        if not st.button("Create dataset", key="dsm:create", type="primary"):
            return
        try:
            if upload is not None:
                result = dm.import_zip(root, name, upload.getvalue())
            elif files:
                result = dm.import_files(root, name, [(f.name, f.getvalue()) for f in files])
            elif folder:
                result = dm.import_folder(root, name, Path(folder).expanduser())
            else:
                st.warning("Choose what to create the dataset from.")
                return
        except (dm.DatasetUploadError, OSError, ValueError) as err:
            st.error(f"Not created: {err}")
            return
        st.success(
            f"Created {result.folder.name}: {len(result.images)} images, "
            f"{len(result.captions)} captions."
        )
        if result.skipped:
            st.warning("Skipped: " + "; ".join(f"{n} ({why})" for n, why in result.skipped))
        st.session_state["dsm:current"] = result.folder.name


def pick_dataset(root: Path) -> Path | None:
    names = [d["name"] for d in dm.list_datasets(root)]
    if not names:
        st.info("No datasets yet: create one above.")
        return None
    current = st.session_state.get("dsm:current")
    index = names.index(current) if current in names else 0
    chosen = st.selectbox("Dataset", names, index=index, key="dsm:pick")
    st.session_state["dsm:current"] = chosen
    return root / chosen


def render_analysis(folder: Path) -> None:
    cols = st.columns(4)
    resolutions = cols[0].multiselect("Resolutions", [512, 768, 1024], default=[512], key="dsm:res")
    repeats = cols[1].number_input("Repeats", 1, 1000, 1, key="dsm:repeats")
    batch = cols[2].number_input("Batch size", 1, 64, 1, key="dsm:batch")
    min_side = cols[3].number_input("Flag short side below", 64, 4096, 512, key="dsm:min")
    report = dm.analyse(
        folder, resolutions or [512], repeats=repeats, batch_size=batch, min_side=min_side
    )
    m = st.columns(4)
    m[0].metric("Images", report["images"])
    m[1].metric("Captioned", f"{report['caption_coverage']:.0%}")
    m[2].metric("Words per caption", f"{report['mean_caption_words']:.1f}")
    m[3].metric("Steps per epoch", report["steps_per_epoch"])
    if not report["rows"]:
        return
    frame = pd.DataFrame(report["rows"]).drop(columns=["buckets", "flags"])
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(frame).mark_bar().encode(alt.X("aspect:Q", bin=alt.Bin(maxbins=20)), y="count()"),
        width="stretch",
    )
    right.altair_chart(
        alt.Chart(frame).mark_circle().encode(x="width:Q", y="height:Q", tooltip=["image"]),
        width="stretch",
    )
    for res, counts in report["bucket_counts"].items():
        st.caption(f"Buckets at {res}px: " + ", ".join(f"{b} × {n}" for b, n in counts.items()))
    if report["flagged"]:
        st.warning(
            "Flagged: " + "; ".join(f"{n}: {', '.join(f)}" for n, f in report["flagged"].items())
        )
    if report["tag_frequency"]:
        tags = pd.DataFrame(list(report["tag_frequency"].items())[:30], columns=["tag", "count"])
        st.dataframe(tags, hide_index=True, key="dsm:tags")


def thumbnail(path: Path, size: int = 96) -> str:
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def render_duplicates(folder: Path) -> None:
    cols = st.columns([3, 1])
    threshold = cols[0].slider("Max hash distance (of 64 bits)", 0, 20, 6, key="dsm:thresh")
    if cols[1].button("Undo last removal", key="dsm:undo"):
        restored = dm.undo_removal(folder)
        st.success(f"Restored {', '.join(restored)}" if restored else "Nothing to undo.")
    pairs = dm.near_duplicates(folder, threshold)
    if not pairs:
        st.caption("No near-duplicates at this threshold.")
    for i, pair in enumerate(pairs[:20]):
        row = st.columns([2, 2, 1])
        for col, side in ((row[0], "a"), (row[1], "b")):
            col.image(str(folder / pair[side]), caption=pair[side], width=160)
            if col.button(f"Remove {pair[side]}", key=f"dsm:rm:{i}:{side}"):
                dm.remove_images(folder, [pair[side]])
                st.rerun()
        row[2].caption(f"distance {pair['distance']}")
