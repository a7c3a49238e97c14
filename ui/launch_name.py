"""The LoRA file and the run name a launch of the draft will give, said on Review before Launch.

A launch gives a name the store already has the next free number (``my_lora`` → ``my_lora_2``,
``trainer.tracking.run_names``); Review says so beforehand ("Will be saved as my_lora_2.safetensors
· Run name: my_lora_2 (my_lora exists)") instead of showing a name the run will not have. The file
is named after the LoRA name (``name``), the run after ``logging.run_name`` when set. The names
come from the runs the studio already reads for its predictions (a local store) or from one cached
query (a server)."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from trainer.config.schema import TrainingConfig
from trainer.tracking.connect import sqlite_path
from trainer.tracking.run_names import free_name, unique_run_name
from ui.compare_store import local_history, version
from ui.text import code

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"  # trainer.lora.io.WEIGHTS_NAME (torch)


@dataclass(frozen=True)
class LaunchName:
    wanted: str  # the name in the config (``logging.run_name`` when set, else ``name``)
    given: str  # the name a launch now would give the run
    file: str = ""  # the LoRA file the run saves (``my_lora.safetensors``), "" when not known

    @property
    def renamed(self) -> bool:
        return self.given != self.wanted

    def text(self) -> str:
        """Markdown; the names as code spans that hold any name (a run name is free text: a
        backtick in it must not end the span)."""
        run = f"Run name: {code(self.given)}"
        if self.renamed:
            run += f" ({code(self.wanted)} exists)"
        if not self.file:
            return run
        return f"Will be saved as {code(self.file)} · {run}"


def lora_file_name(stem: str, save_format: str) -> str:
    """The file a run's LoRA is saved in (``trainer.lora.io.save_lora``): ``<stem>.safetensors``,
    or the diffusers layout's ``<stem>/pytorch_lora_weights.safetensors`` when that is the only
    format saved."""
    if save_format == "diffusers":
        return f"{stem}/{DIFFUSERS_WEIGHTS}"
    return f"{stem}.safetensors"


def wanted_name(cfg: TrainingConfig) -> str:
    """The name that names the run: what ``with_free_run_name`` numbers at launch."""
    return cfg.logging.run_name or cfg.name


def launch_name(cfg: TrainingConfig, tracking_uri: str) -> LaunchName:
    """The run name and LoRA file a launch of ``cfg`` would give now. When the store cannot be
    read, the names as configured (the launch itself does the same)."""
    wanted = wanted_name(cfg)
    if sqlite_path(tracking_uri) is None:
        given = _server_free_name(tracking_uri, wanted, version())
    else:
        try:
            runs = local_history(tracking_uri) or []  # None: no store file yet, so no run at all
        except Exception:  # a broken store must not take Review down; Launch will say more
            runs = []
        given = free_name(wanted, {run.name for run in runs})
    stem = cfg.name if cfg.logging.run_name else given  # a free number renames ``name`` too
    return LaunchName(wanted, given, lora_file_name(stem, cfg.save.save_format))


@st.cache_data(ttl=30, show_spinner=False)
def _server_free_name(tracking_uri: str, name: str, store_version: int) -> str:
    # one query per name and half minute: Review renders on every edit
    return unique_run_name(tracking_uri, name)
