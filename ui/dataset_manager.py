"""Datasets page parts: create (zip / files / folder), analyse, de-duplicate, edit captions.

All work is done by ``trainer.datasets``; this module only draws widgets and reports results.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import streamlit as st

from trainer import datasets as dm


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
    import altair as alt
    import pandas as pd

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
        use_container_width=True,
    )
    right.altair_chart(
        alt.Chart(frame).mark_circle().encode(x="width:Q", y="height:Q", tooltip=["image"]),
        use_container_width=True,
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


def _thumb(path: Path, size: int = 96) -> str:
    from PIL import Image

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


def render_captions(folder: Path) -> None:
    import pandas as pd

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
        st.success(f"Saved {dm.bulk_edit(folder, edit)} caption file(s).")
        captions = dm.read_captions(folder)
    frame = pd.DataFrame(
        {
            "thumbnail": [_thumb(folder / name) for name in captions],
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
        st.success(f"Saved {changed} caption file(s).")


def render_autocaption() -> None:
    st.info(
        "Auto-captioning needs a local captioner model folder (BLIP, Florence or a WD14-style "
        "tagger). None is installed in this studio yet, so captions are edited by hand here."
    )
