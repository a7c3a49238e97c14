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

from trainer.config.fields import ARCH_DEFAULTS
from trainer.data import library as dm
from ui import state

STANDARD_RESOLUTIONS = (512, 768, 1024)


def render_create(root: Path) -> None:
    with st.expander("New dataset", expanded=not dm.list_datasets(root)):
        name = st.text_input("Name", key="dsm:name", placeholder="my_subject")
        source = st.radio(
            "From", ["Zip upload", "Image files", "Local folder"], key="dsm:source", horizontal=True
        )
        upload = files = folder = None
        if source == "Zip upload":
            upload = st.file_uploader(
                "Zip of images and .txt captions", type=["zip"], key="dsm:zip"
            )
        elif source == "Image files":
            files = st.file_uploader(
                "Images and captions", accept_multiple_files=True, key="dsm:files"
            )
        else:
            folder = st.text_input("Folder on this machine", key="dsm:folder")
        st.caption("Sub-folders are flattened; files other than images and captions are skipped.")
        if not st.button("Create dataset", key="dsm:create", type="primary"):
            return
        try:
            if upload is not None:
                result = dm.import_zip(root, name, upload.getvalue(), label=upload.name)
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
        st.session_state["dsm:current"] = st.session_state["dsm:pick"] = result.folder.name


def pick_dataset(root: Path) -> Path | None:
    names = [d["name"] for d in dm.list_datasets(root)]
    if not names:
        st.info("No datasets yet: create one above.")
        return None
    if st.session_state.get("dsm:pick") not in names:  # "dsm:current" outlives page switches
        current = st.session_state.get("dsm:current")
        st.session_state["dsm:pick"] = current if current in names else names[0]
    chosen = st.selectbox("Dataset", names, key="dsm:pick")
    st.session_state["dsm:current"] = chosen
    return root / chosen


def draft_resolutions() -> list[int]:
    """The draft's training resolution(s) (first dataset), else the base model's native size."""
    value = state.get_value("datasets.0.resolution")
    values = value if isinstance(value, list) else [value]
    found = sorted({v for v in values if isinstance(v, int) and 64 <= v <= 4096})
    if found:
        return found
    arch = state.get_value("model.arch", "sd15")
    return [ARCH_DEFAULTS.get(arch, ARCH_DEFAULTS["sd15"])["native_resolution"]]


def render_analysis(folder: Path) -> None:
    trained_at = draft_resolutions()
    where = "the draft's training resolution (Wizard: Resolution & augmentation)"
    cols = st.columns(4)
    resolutions = cols[0].multiselect(
        "Resolutions",
        sorted({*STANDARD_RESOLUTIONS, *trained_at}),
        default=trained_at,
        key="dsm:res",
        help=f"Buckets and steps at these sizes; the default is {where}.",
    )
    repeats = cols[1].number_input("Repeats", 1, 1000, 1, key="dsm:repeats")
    batch = cols[2].number_input("Batch size", 1, 64, 1, key="dsm:batch")
    min_side = cols[3].number_input(
        "Flag short side below",
        64,
        4096,
        min(trained_at),
        key="dsm:min",
        help=f"Images smaller than this are flagged 'too small'; the default is {where}.",
    )
    report = dm.analyse(
        folder, resolutions or trained_at, repeats=repeats, batch_size=batch, min_side=min_side
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
    aspects = (
        alt.Chart(frame, title="Aspect ratios")
        .mark_bar()
        .encode(
            alt.X("aspect:Q", bin=alt.Bin(maxbins=20), title="Width ÷ height"),
            alt.Y("count():Q", title="Images"),
        )
    )
    sizes = (
        alt.Chart(frame, title="Image sizes")
        .mark_circle()
        .encode(
            alt.X("width:Q", title="Width (px)"),
            alt.Y("height:Q", title="Height (px)"),
            tooltip=[alt.Tooltip("image", title="Image"), "width", "height"],
        )
    )
    left.altair_chart(aspects, width="stretch")
    right.altair_chart(sizes, width="stretch")
    for res, counts in report["bucket_counts"].items():
        st.caption(f"Buckets at {res}px: " + ", ".join(f"{b} × {n}" for b, n in counts.items()))
    if report["flagged"]:
        st.warning(
            "Flagged: " + "; ".join(f"{n}: {', '.join(f)}" for n, f in report["flagged"].items())
        )
    if report["tag_frequency"]:
        tags = pd.DataFrame(list(report["tag_frequency"].items())[:30], columns=["tag", "count"])
        st.dataframe(tags, hide_index=True, key="dsm:tags")


def thumbnail(path: Path, size: int = 96) -> str | None:
    """A small JPEG data URL of the image; None for an image that cannot be decoded (listed by
    ``render_broken`` for removal)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=80)
    except Exception:  # PIL raises many types on undecodable data
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _images_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every image: what the broken-image check depends on."""
    found = []
    for path in dm.images_in(folder):
        try:
            info = path.stat()
        except OSError:
            continue
        found.append((path.name, info.st_size, info.st_mtime_ns))
    return tuple(found)


@st.cache_data(show_spinner=False, max_entries=32)
def _broken(folder: str, stamp: tuple) -> dict[str, str]:
    return dm.broken_images(Path(folder))  # decodes every image: once per folder state


def render_broken(folder: Path) -> None:
    """Images of the dataset that cannot be decoded, each with its reason and a Remove button
    (to ``.removed/``, undone by "Undo last removal"): the rest of the page works without them."""
    broken = _broken(str(folder), _images_stamp(folder))
    if not broken:
        return
    with st.container(border=True, key="dsm:broken"):
        st.warning(
            f"{len(broken)} image{'s' if len(broken) > 1 else ''} in this dataset cannot be used: "
            "they are left out of the analysis and of training. Remove them or replace the files.",
            icon=":material/broken_image:",
        )
        for name, why in broken.items():
            row = st.columns([4, 1], vertical_alignment="center")
            row[0].text(f"{name}: {why}")  # st.text: a file name is never read as markdown
            if row[1].button("Remove", key=f"dsm:rmbroken:{name}"):
                dm.remove_images(folder, [name])
                st.rerun()


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
