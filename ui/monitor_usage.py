"""The Monitor's "Use it" downloads: the model card, the diffusers script and the ComfyUI workflow
saved beside the final LoRA (``trainer.lora.usage``), from the job folder, else from MLflow (a
teammate's run on a shared tracking server)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from trainer.lora.usage import CARD_NAME, SNIPPET_NAME, WORKFLOW_NAME
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import fetch_artifact

LABELS = {
    CARD_NAME: ("Model card", "text/markdown"),
    SNIPPET_NAME: ("diffusers script", "text/x-python"),
    WORKFLOW_NAME: ("ComfyUI workflow", "application/json"),
}


def render_usage_downloads(
    settings: StudioSettings, run_id: str, lora_dir: Path, stored: list[str]
) -> None:
    """Download buttons for the usage files of the LoRA in ``lora_dir`` (``stored``: the run's
    ``lora/...`` artifact paths, read when the job folder is not on this machine)."""
    local = {name: lora_dir / name for name in LABELS if (lora_dir / name).is_file()}
    remote = {name: f"lora/{name}" for name in LABELS if f"lora/{name}" in stored}
    found = [name for name in LABELS if name in local or name in remote]
    if not found:
        return
    st.caption(
        "Use it: a model card, a script that makes the last preview again, a ComfyUI "
        "workflow with the previews' settings."
    )
    uri, cache = settings.tracking_uri, settings.cache_dir
    for column, name in zip(st.columns(len(found)), found, strict=True):
        label, mime = LABELS[name]
        if name in local:
            data = local[name].read_bytes
        else:
            data = lambda a=remote[name]: fetch_artifact(uri, run_id, a, cache).read_bytes()  # noqa: E731
        column.download_button(
            label,
            data=data,
            file_name=name,
            mime=mime,
            icon=":material/download:",
            key=f"dlu_{run_id}_{name}",
        )
