"""What every page needs about the draft, computed once per change: hardware, findings, predictions.

``studio_context()`` is cheap to call many times in one run: it caches on the draft's revision,
the preflight answers, the machine as last detected and the store's runs that calibrate the
predictions (a run that finished since changes them without an edit of the draft), so the summary
header, the advisor column and the review share one computation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from advisor.model_facts import ModelSource
from advisor.runs import as_runs
from trainer.arch.sources import supplied_elsewhere
from trainer.config.paths import generic_path
from trainer.settings import load_settings
from ui import advice, state
from ui.advice import Finding, Hardware, Prediction
from ui.boundary import advisor_boundary
from ui.compare_store import local_history
from ui.model_status import model_facts
from ui.steps_epochs import offered, store_all

_CACHE = "_studio_context"


@dataclass
class StudioContext:
    hw: Hardware
    validated: state.Validated
    findings: list[Finding]
    prediction: Prediction | None
    recommendations: dict[str, dict[str, Any]]
    experience: str
    notes: list[str] = field(default_factory=list)
    model: ModelSource | None = None  # the base model's source (folder, file, Hub, cache)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def findings_for(self, paths: set[str]) -> list[Finding]:
        return [f for f in self.findings if any(generic_path(p) in paths for p in f.paths)]


@st.cache_data(ttl=30, show_spinner=False)
def cached_detection(home: str, overrides_json: str) -> Hardware:
    return advice.detect_hardware(Path(home), json.loads(overrides_json))


def hardware() -> Hardware:
    overrides = json.dumps(state.meta().get("profile_overrides") or {}, sort_keys=True)
    return cached_detection(str(load_settings().home), overrides)


def studio_context() -> StudioContext:
    meta = state.meta()
    history = prediction_history()
    key = (
        st.session_state.get(state.REV, 0),
        json.dumps(meta.get("profile_overrides"), sort_keys=True, default=str),
        json.dumps(meta.get("intent"), sort_keys=True),
        len(meta.get("recommendations") or {}),
        model := current_model_facts(),
        hw := hardware(),  # detected again every 30 s: free memory, the CPU's load
        history_stamp(history),
    )
    cached = st.session_state.get(_CACHE)
    if cached and cached[0] == key:
        return cached[1]
    checked = state.validated()
    recs = offered(meta.get("recommendations") or {}, state.draft())  # none epochs override
    notes: list[str] = []
    found: list[Finding] = []
    with advisor_boundary("checking the draft") as checking:
        found = advice.findings(state.draft(), checked.problems, checked.config, hw, model, history)
    basis = checked.config or checked.last_valid
    if checked.config is None and basis is not None:
        notes.append("Predictions are for your last valid settings, until the errors are fixed.")
    prediction = None
    with advisor_boundary("predicting memory and time") as predicting:
        if basis is not None:
            prediction = advice.predict(basis, hw, history)
    experience = (meta.get("intent") or {}).get("experience", "beginner")
    context = StudioContext(hw, checked, found, prediction, recs, experience, notes, model)
    if not (checking.failed or predicting.failed):  # else the message shows on every run
        st.session_state[_CACHE] = (key, context)
    return context


def current_model_facts() -> ModelSource | None:
    """The draft's base model as found on disk and the Hub (None if it cannot be looked at)."""
    ref = str(state.get_value("model.name_or_path") or "")
    arch = str(state.get_value("model.arch") or "sd15")
    vae, te = state.get_value("model.vae_path"), state.get_value("model.te_name_or_path")
    with advisor_boundary("looking at the base model"):
        components = state.get_value("model.components_from")
        expect = state.chosen_model_source()
        return model_facts(ref, arch, supplied_elsewhere(vae, te, arch), components, expect)
    return None


def prediction_history() -> list[Any] | None:
    """The local store's past runs (parsed once per store version), which calibrate the
    predictions; None without a local store or when it cannot be read."""
    try:
        return local_history(load_settings().tracking_uri)
    except Exception:  # a broken store must not take predictions down
        return None


def history_stamp(history: list[Any] | None) -> tuple[Any, ...] | None:
    """What of the store's runs the predictions read: each run's id, status and measured speed
    and peak memory (a running run's speed is measured as it goes). Equal stamps, equal
    calibration."""
    if history is None:
        return None
    return tuple(
        (run.run_id, run.status, run.seconds_per_step, run.peak_gb) for run in as_runs(history)
    )


def apply_fix(patch: dict[str, Any]) -> None:
    store_all(patch)  # a fix of the batch size with epochs set brings the steps along
