"""The name the draft's run will get when launched, said on Review before Launch.

A launch gives a name the store already has the next free number (``my_lora`` → ``my_lora_2``,
``trainer.tracking.run_names``); Review says so beforehand ("Will be saved as my_lora_2 (my_lora
exists)") instead of showing a name the run will not have. The names come from the runs the
studio already reads for its predictions (a local store) or from one cached query (a server)."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from trainer.config.schema import TrainingConfig
from trainer.tracking.connect import sqlite_path
from trainer.tracking.run_names import free_name, unique_run_name
from ui.compare_store import local_history, version
from ui.text import code


@dataclass(frozen=True)
class LaunchName:
    wanted: str  # the name in the config (``logging.run_name`` when set, else ``name``)
    given: str  # the name a launch now would give the run

    @property
    def renamed(self) -> bool:
        return self.given != self.wanted

    def text(self) -> str:
        """Markdown; the names as code spans that hold any name (a run name is free text: a
        backtick in it must not end the span)."""
        if self.renamed:
            return f"Will be saved as {code(self.given)} ({code(self.wanted)} exists)"
        return f"Will be saved as {code(self.given)}"


def wanted_name(cfg: TrainingConfig) -> str:
    """The name that names the run: what ``with_free_run_name`` numbers at launch."""
    return cfg.logging.run_name or cfg.name


def launch_name(cfg: TrainingConfig, tracking_uri: str) -> LaunchName:
    """The run name a launch of ``cfg`` would get now. When the store cannot be read, the name
    as configured (the launch itself does the same)."""
    wanted = wanted_name(cfg)
    if sqlite_path(tracking_uri) is None:
        return LaunchName(wanted, _server_free_name(tracking_uri, wanted, version()))
    try:
        runs = local_history(tracking_uri) or []  # None: no store file yet, so no run at all
    except Exception:  # a broken store must not take Review down; Launch will say more
        return LaunchName(wanted, wanted)
    return LaunchName(wanted, free_name(wanted, {run.name for run in runs}))


@st.cache_data(ttl=30, show_spinner=False)
def _server_free_name(tracking_uri: str, name: str, store_version: int) -> str:
    # one query per name and half minute: Review renders on every edit
    return unique_run_name(tracking_uri, name)
