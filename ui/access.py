"""What the studio's pages may read from what a user types, judged by the address it is served on.

Served on this machine only (``server.address`` 127.0.0.1, ::1 or localhost) every folder may be
read, as ever. Served beyond it (every interface, a LAN address, or no address set), a
dataset folder, a folder to import, a LoRA path or a captioner folder must lie under the allowed
roots (``StudioSettings.read_roots``: the studio home and STUDIO_ALLOWED_FOLDERS), checked by
``trainer.files.readable_path``; otherwise anyone who can open the page could list and copy the
server's files. The address is the one Streamlit actually serves, not STUDIO_HOST (which only
``make run`` passes on).

The same holds for what the pages only look at (whether a base model's folder exists, what the
advisor counts in a dataset folder: ``refusal``; a base model reference: ``model_ref_refusal``,
``hub_id_only``) and for what a launch or a resume would have the trainer read
(``config_refusal``): outside the roots the answer is the refusal, whether the path exists or not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from trainer.arch.sources import SINGLE_FILE_SUFFIXES
from trainer.files import ReadRefused, readable_path
from trainer.settings import StudioSettings, is_loopback, load_settings
from ui.text import plain

__all__ = [
    "ReadRefused",
    "bind_address",
    "checked_path",
    "config_refusal",
    "hub_id_only",
    "model_ref_refusal",
    "read_roots",
    "refusal",
    "served_beyond_loopback",
]

# A Hugging Face id has this shape ("owner/name"); the trainer takes one for a path only when that
# relative path exists (trainer.arch.sources.classify_source)
_HUB_ID = re.compile(r"[\w-][\w.-]*/[\w.-]+")


def bind_address() -> str:
    """The address this Streamlit server listens on ("" when unset: every interface)."""
    return str(st.get_option("server.address") or "")


def served_beyond_loopback() -> bool:
    return not is_loopback(bind_address())


def read_roots(settings: StudioSettings | None = None) -> list[Path] | None:
    """The folders reads must stay inside now; None while the studio is served on loopback."""
    if not served_beyond_loopback():
        return None
    return (settings or load_settings()).read_roots


def checked_path(text: str | Path, settings: StudioSettings | None = None) -> Path | None:
    """``text`` as a path the page may read, or None after an error saying where it may read."""
    try:
        return readable_path(text, roots=read_roots(settings))
    except ReadRefused as err:
        st.error(plain(err), icon=":material/block:")
        return None


def refusal(text: str | Path, settings: StudioSettings | None = None) -> str | None:
    """Why the page may not read or look at ``text`` (``ReadRefused``'s words), None when it may."""
    try:
        readable_path(text, roots=read_roots(settings))
    except ReadRefused as err:
        return str(err)
    return None


def looks_like_hub_id(ref: str) -> bool:
    return bool(_HUB_ID.fullmatch(ref)) and not ref.lower().endswith(SINGLE_FILE_SUFFIXES)


def hub_id_only(
    ref: str, expect: str | None = None, settings: StudioSettings | None = None
) -> bool:
    """Served to a network, a base model written like a Hub id (``owner/name``, and the user did
    not pick a folder or a file) that is no path under the roots: it is asked of the Hub and never
    looked for on disk, so it tells nothing about the server's other folders."""
    if expect in ("folder", "file") or not looks_like_hub_id(ref.strip()):
        return False
    return refusal(ref.strip(), settings) is not None


def model_ref_refusal(
    ref: str, expect: str | None = None, settings: StudioSettings | None = None
) -> str | None:
    """Why a base model (or components) reference may not be looked at: a local path outside the
    roots while served to a network. None for a demo model, a Hub id and any path on loopback."""
    ref = ref.strip()
    if not ref or ref.startswith("demo:") or hub_id_only(ref, expect, settings):
        return None
    if looks_like_hub_id(ref) and expect not in ("folder", "file"):
        return None  # a Hub id shape under the roots: looked up as ever
    return refusal(ref, settings)


# The paths of a config the trainer reads: the model's (each may also be a Hub id or a demo ref)
# and each dataset's (folders and files on this machine, or the demo dataset)
_MODEL_PATHS = ("name_or_path", "vae_path", "te_name_or_path", "components_from")
_MODEL_PATHS += ("refiner_name_or_path", "lora_path")
_DATASET_PATHS = ("folder_path", "mask_path", "control_path")


def _config_paths(config: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(dotted field, value, whether it is a model reference) for each path ``config`` names."""
    model = config.get("model") or {}
    for key in _MODEL_PATHS:
        if isinstance(model.get(key), str) and model[key].strip():
            yield f"model.{key}", model[key], True
    for index, dataset in enumerate(config.get("datasets") or []):
        for key in _DATASET_PATHS:
            value = (dataset or {}).get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item.strip():
                    yield f"datasets.{index}.{key}", item, False


def config_refusal(config: Mapping[str, Any], settings: StudioSettings | None = None) -> str | None:
    """Why a trainer may not start on ``config`` (a config as a dict, e.g. ``model_dump``) from
    this studio: the first path it would read outside the roots while served to a network, with
    the field it is in; None when every path may be read (always on loopback)."""
    if read_roots(settings) is None:
        return None
    for field, value, is_model in _config_paths(config):
        if is_model:
            why = model_ref_refusal(value, settings=settings)
        else:
            why = None if value.startswith("demo:") else refusal(value, settings)
        if why:
            return f"{field}: {why}"
    return None
