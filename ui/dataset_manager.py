"""Datasets page parts: create (zip / files / folder), analyse, de-duplicate, edit captions.

All work is done by ``trainer.data.library``; this module only draws widgets and reports results.
Images, captions, buckets and steps per epoch come from the wizard's analysis (``ui.datasets``)
at the draft's settings, so this page and the wizard's dataset step show the same numbers.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
from PIL import Image

from trainer.config.fields import ARCH_DEFAULTS
from trainer.data import library as dm
from trainer.demo.tiny import demo_is_built, resolve_demo_ref
from trainer.settings import load_settings
from ui import state
from ui.access import checked_path
from ui.datasets import analyse, draft_dataset, draft_numbers, render_report, settings_text
from ui.text import plain, plain_line


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
                source_folder = checked_path(folder)  # served to a network: the allowed roots
                if source_folder is None:
                    return
                result = dm.import_folder(root, name, source_folder)
            else:
                st.warning("Choose what to create the dataset from.")
                return
        except (dm.DatasetUploadError, OSError, ValueError) as err:
            st.error(f"Not created: {plain(err)}")
            return
        st.success(
            f"Created {plain(result.folder.name)}: {len(result.images)} images, "
            f"{len(result.captions)} captions."
        )
        if result.skipped:
            skipped = "; ".join(f"{n} ({why})" for n, why in result.skipped)
            st.warning(f"Skipped: {plain(skipped)}")  # file names from the upload
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


def trained_resolutions(ds: dict) -> list[int]:
    """The resolution(s) the draft trains this dataset at, else the base model's native size."""
    value = ds.get("resolution")
    values = value if isinstance(value, list) else [value]
    found = sorted({v for v in values if isinstance(v, int) and 64 <= v <= 4096})
    if found:
        return found
    arch = state.get_value("model.arch", "sd15")
    return [ARCH_DEFAULTS.get(arch, ARCH_DEFAULTS["sd15"])["native_resolution"]]


def check_source(ds: dict) -> str:
    """Where the size check's default comes from, in words: "the draft's 512 px"."""
    px = min(trained_resolutions(ds))
    value = ds.get("resolution")
    if any(isinstance(v, int) for v in (value if isinstance(value, list) else [value])):
        return f"the draft's {px} px"
    return f"the base model's native {px} px (the draft names no resolution)"


def size_check_text(min_side: int, ds: dict) -> str:
    """Which short side the images are checked against, and where that number comes from."""
    default = min(trained_resolutions(ds))
    if min_side == default:
        return f"Sizes checked against {check_source(ds)}: its training resolution."
    return f"Sizes checked against {min_side} px, as set here; {check_source(ds)} is the default."


def render_analysis(folder: Path) -> None:
    """The wizard's analysis of this folder at the draft's settings (the same numbers, drawn by
    the same function), then what only this page shows: charts, flags and the captions' words."""
    ds = draft_dataset(folder)
    with st.spinner("Reading the images..."):
        report = analyse(folder, ds, draft_numbers())
    if "settings" in report:
        st.caption(
            f"At the draft's settings ({settings_text(report['settings'])}), as the wizard's "
            "dataset step counts them; change them in the Wizard."
        )
    render_report(report)
    min_side = st.number_input(
        "Check image sizes against (px)",
        64,
        4096,
        min(trained_resolutions(ds)),
        key="dsm:min",
        help="Images whose short side is below this are flagged 'too small': training upscales "
        f"them. It starts at {check_source(ds)} (Wizard: Resolution & augmentation); images "
        "made for a model that trains at another size are checked against that size.",
    )
    st.caption(size_check_text(min_side, ds))
    caption_ext = "." + str(ds.get("caption_ext") or "txt").lstrip(".")  # the draft says "txt"
    details = _details(str(folder), _files_stamp(folder), caption_ext, min_side)
    if not details["rows"]:
        return
    frame = pd.DataFrame(details["rows"]).drop(columns=["flags"])
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
    render_flags(details["flagged"], demo=is_demo_dataset(folder), min_side=min_side)
    render_caption_words(details)


# What a flag means for training: shown under the flagged images.
FLAG_MEANING = {
    "too small": "short side under {min_side} px: upscaled to the training size, so blurrier",
    "too large": "slow to load; resize it",
    "grayscale": "black and white: a few in a colour dataset can wash out the LoRA's colours",
    "alpha": "has transparency: transparent parts are trained as the colour behind them",
}


def render_flags(flagged: dict[str, list[str]], *, demo: bool = False, min_side: int = 512) -> None:
    """The flagged images, and what each flag means ("too small": under ``min_side``). The
    demo's black-and-white shapes are grayscale by design: said once, not flagged."""
    if demo:
        grey = [name for name, flags in flagged.items() if "grayscale" in flags]
        flagged = {n: [f for f in fs if f != "grayscale"] for n, fs in flagged.items()}
        flagged = {n: fs for n, fs in flagged.items() if fs}
        if grey:
            names = plain(", ".join(grey))
            st.caption(
                f":material/info: Grayscale: {names}. Expected here: the demo draws "
                "some of its shapes in black and white."
            )
    if not flagged:
        return
    st.warning(
        "Flagged: " + plain("; ".join(f"{n}: {', '.join(f)}" for n, f in flagged.items())),
        icon=":material/flag:",
    )
    shown = sorted({flag for flags in flagged.values() for flag in flags})
    meanings = [f"**{flag}**: {FLAG_MEANING[flag].format(min_side=min_side)}" for flag in shown]
    st.caption("  \n".join(meanings))


def render_caption_words(details: dict) -> None:
    """How the captions are written: a table of tags, or of words when they are sentences."""
    if details["caption_style"] == "none":
        st.caption("No captions: every image trains with the default caption.")
        return
    st.caption(
        f"Captions: {details['captioned']} of {details['images']} images, "
        f"{details['mean_caption_words']:.1f} words on average."
    )
    if details["caption_style"] == "sentences":
        st.caption(
            "The captions are sentences, not comma-separated tags: the words they use most, "
            "and in how many captions."
        )
        words = list(details["word_frequency"].items())[:30]
        table = pd.DataFrame(words, columns=["word", "captions"])
    else:
        tags = list(details["tag_frequency"].items())[:30]
        table = pd.DataFrame(tags, columns=["tag", "captions"])
    st.dataframe(table, hide_index=True, key="dsm:tags")


@st.cache_data(show_spinner=False, max_entries=32)
def _details(folder: str, stamp: tuple, caption_ext: str, min_side: int) -> dict:
    return dm.analyse(Path(folder), caption_ext=caption_ext, min_side=min_side)


def _files_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every file: what the image details depend on."""
    found = []
    for path in sorted(Path(folder).iterdir()):
        try:
            info = path.stat()
        except OSError:
            continue
        if path.is_file():
            found.append((path.name, info.st_size, info.st_mtime_ns))
    return tuple(found)


def is_demo_dataset(folder: Path) -> bool:
    """Whether ``folder`` is the studio's own demo dataset (built from ``demo:dataset``)."""
    home = load_settings().home
    if not demo_is_built(home, "dataset"):
        return False
    demo = Path(resolve_demo_ref("demo:dataset", home))  # built: only resolves the path
    return folder.resolve() == demo.resolve()


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


def last_removal(folder: Path) -> list[str]:
    """The files "Undo last removal" would put back (``trainer.data.library.undo_removal`` reads
    the same manifest); empty when nothing was removed."""
    try:
        manifest = json.loads((folder / dm.MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    removals = manifest.get("removals") if isinstance(manifest, dict) else None
    return list(removals[-1].get("files") or []) if removals else []


def render_duplicates(folder: Path) -> None:
    cols = st.columns([3, 1])
    threshold = cols[0].slider("Max hash distance (of 64 bits)", 0, 20, 6, key="dsm:thresh")
    last = last_removal(folder)
    more = f" and {len(last) - 3} more" if len(last) > 3 else ""
    undo_help = (
        f"Puts back what was removed last: {plain(', '.join(last[:3]))}{more}."
        if last
        else "Nothing removed yet: images removed here, or as broken, can be put back with this."
    )
    if cols[1].button("Undo last removal", key="dsm:undo", disabled=not last, help=undo_help):
        restored = dm.undo_removal(folder)
        st.success(f"Restored {plain(', '.join(restored))}" if restored else "Nothing to undo.")
    pairs = dm.near_duplicates(folder, threshold)
    if not pairs:
        st.caption("No near-duplicates at this threshold.")
    for i, pair in enumerate(pairs[:20]):
        row = st.columns([2, 2, 1])
        for col, side in ((row[0], "a"), (row[1], "b")):
            col.image(str(folder / pair[side]), caption=plain(pair[side]), width=160)
            if col.button(f"Remove {plain_line(pair[side])}", key=f"dsm:rm:{i}:{side}"):
                dm.remove_images(folder, [pair[side]])
                st.rerun()
        row[2].caption(f"distance {pair['distance']}")
