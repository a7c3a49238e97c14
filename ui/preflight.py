"""Preflight: the detected hardware (with overrides) and the intent questions; confirming fills
the draft with the advisor's smart defaults, each remembered as a recommendation with its reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st
from huggingface_hub import constants as hf_constants
from streamlit.delta_generator import DeltaGenerator

from advisor.decide_training import preview_every, previews_reason
from advisor.draft import UserIntent
from trainer.arch.hub_status import OFFLINE, REACHABLE, HubStatus, hub_status
from trainer.engine.failures import human_bytes
from trainer.settings import hub_offline, load_settings
from ui import advice, state
from ui.advice import Hardware, Recommendation
from ui.boundary import advisor_boundary
from ui.context import cached_detection
from ui.hub_sign_in import current_account, render_hub_sign_in
from ui.steps_epochs import EPOCHS, STEPS, store_all
from ui.text import plain

OK, MISSING = ":material/check_circle: Detected", ":material/help: Not detected"
WHAT_HELP = {
    "person": "a real person's likeness",
    "character": "a drawn or fictional character",
    "style": "an art style or look",
    "object": "a thing: a product, a toy, a car",
    "concept": "a pose, an action, a composition",
    "other": "something else",
}
PRIORITY_HELP = {
    "quality": "Quality: longer training, more regularisation",
    "speed": "Speed: fast iterations",
    "memory": "Memory: fit limited hardware",
}
# The advisor's own defaults (UserIntent): what it assumes for a question left unanswered, so
# the page and the recommendations never disagree about the assumption.
DEFAULT_ANSWERS = {
    "what": UserIntent().training_type,
    "priority": UserIntent().priority,
    "experience": UserIntent().experience,
}
ASSUMED = ("what", "priority")  # asked with nothing pre-selected: unanswered means assumed
QUESTION_WORDS = {"what": "what you are training", "priority": "what matters most"}
ARCHS = {
    "sd15": "SD1.5: light, 512 px, 6+ GB",
    "sdxl": "SDXL: 1024 px, 12+ GB",
    "flux": "Flux: best quality, 16-24+ GB",
}


def detected_hardware() -> Hardware:
    return cached_detection(str(load_settings().home), "{}")


def show_waiting(area: DeltaGenerator, label: str) -> DeltaGenerator:
    """A running status (a spinner and ``label``) in ``area`` while something slow runs, so the
    page never looks finished before it is; the returned placeholder's ``.empty()`` removes it."""
    placeholder = area.empty()
    placeholder.status(label, state="running")
    return placeholder


def size_text(gb: float) -> str:
    """A size in GB as the hardware lines show it: whole GB, or MB/KB below 1 GB ("0 GB free"
    on a nearly full disk reads as a detection failure)."""
    return f"{gb:.0f} GB" if gb >= 1 else human_bytes(gb * 2**30)


def render_hardware_check(hw: Hardware) -> None:
    """What detection found, one line per part, each with a mark and a word."""

    def mark(found: bool) -> str:
        return OK if found else MISSING

    vram = f", {size_text(hw.vram_gb)} usable" if hw.vram_gb else ""
    rows = [
        ("GPU", mark(hw.detected.get("gpu", False)), f"{hw.gpu_name}{vram}"),
        (
            "Memory",
            mark(hw.detected.get("ram", False)),
            f"{size_text(hw.ram_gb)} RAM, {size_text(hw.ram_available_gb)} free"
            + (" (shared with the GPU)" if hw.unified else ""),
        ),
        (
            "Disk",
            mark(hw.detected.get("disk", False)),
            f"{size_text(hw.disk_free_gb)} free, {hw.disk_type}",
        ),
        ("CPU", mark(hw.detected.get("cpu", False)), f"{hw.cpu_name}, {hw.cores} cores"),
    ]
    for part, status, text in rows:
        st.markdown(f"{status} · **{part}**: {text}")
    for note in hw.notes:
        st.caption(f":material/info: {note}")


@st.cache_data(ttl=60, show_spinner=False)
def cached_hub_status(endpoint: str, offline: bool) -> HubStatus:
    """The Hub check, asked at most once a minute: reruns must not probe the network again.
    ``offline`` is part of the cache key, so switching offline mode on or off asks again."""
    return hub_status(endpoint=endpoint)


def render_hub_status() -> None:
    """Whether models can be downloaded, and where the downloads go."""
    hub = cached_hub_status(hf_constants.ENDPOINT, hub_offline())
    mark = {
        REACHABLE: ":material/cloud_done: Reachable",
        OFFLINE: ":material/cloud_off: Offline",
    }.get(hub.state, ":material/cloud_off: Unreachable")
    st.markdown(f"{mark} · **Hugging Face Hub**: {hub.endpoint}, {hub.detail}")
    if hub.state not in (REACHABLE, OFFLINE):
        st.caption(
            "Models not yet in the cache cannot be downloaded from here; the demo models and "
            "models already cached still work. Without internet, start the studio with "
            "STUDIO_OFFLINE=1 to skip this check."
        )
    free = f", {hub.cache_free_gb:.0f} GB free" if hub.cache_free_gb is not None else ""
    st.markdown(f":material/folder: · **Model cache**: `{hub.cache_dir}`{free}")
    if hub.state == REACHABLE:  # signing in asks the Hub: only offered when it answers
        user = current_account()
        label = (
            f"Hugging Face account: {user}"
            if user
            else "Sign in to Hugging Face (for gated and private models)"
        )
        with st.expander(label, icon=":material/account_circle:", key="pf:hub_account"):
            render_hub_sign_in("pf:hub")


def render_overrides(hw: Hardware) -> dict[str, Any]:
    """Inputs to correct detection or hold memory back; empty means 'use what was detected'."""
    saved = state.meta().get("profile_overrides") or {}
    out: dict[str, Any] = {}
    with st.expander("Correct the detected values or reserve memory", expanded=bool(saved)):
        cols = st.columns(3)
        specs = [
            ("vram_gb", "GPU memory for training (GB)", hw.vram_gb, cols[0]),
            ("reserve_vram_gb", "Reserve GPU memory for other apps (GB)", 0.0, cols[0]),
            ("ram_gb", "System RAM (GB)", hw.ram_gb, cols[1]),
            ("disk_free_gb", "Free disk space (GB)", hw.disk_free_gb, cols[1]),
        ]
        for name, label, detected, col in specs:
            out[name] = col.number_input(
                label,
                min_value=0.0,
                max_value=4096.0,
                value=saved.get(name),
                step=1.0,
                placeholder=f"detected: {detected:.0f}" if detected else "not detected",
                key=f"pf:{name}",
                help="Leave empty to use the detected value.",
                persist_state="session",
            )
        disk_types = ["", "hdd", "ssd", "nvme"]
        out["disk_type"] = cols[2].selectbox(
            "Disk type",
            disk_types,
            index=disk_types.index(saved.get("disk_type") or ""),
            format_func=lambda t: t or f"detected: {hw.disk_type}",
            key="pf:disk_type",
            persist_state="session",
        )
        out["cores"] = cols[2].number_input(
            "CPU cores",
            min_value=1,
            max_value=512,
            value=saved.get("cores"),
            placeholder=f"detected: {hw.cores}",
            key="pf:cores",
            persist_state="session",
        )
    return {k: v for k, v in out.items() if v not in (None, "")}


def assumed_answers(meta: dict[str, Any]) -> list[str]:
    """The questions (``ASSUMED``'s keys) the person has not answered: their values in the
    intent are the advisor's assumption. Saved with the answers once confirmed; before that,
    nothing was answered (the intent holds the session's defaults)."""
    intent = meta.get("intent") or {}
    if "assumed" in intent:
        return [key for key in ASSUMED if key in intent["assumed"]]
    return [] if meta.get("preflight_done") else list(ASSUMED)


def _question(key: str, label: str, options: list[str], format_func: Any) -> str | None:
    """A question with nothing pre-selected until the person answers it: the page then says
    which answer it assumes, rather than showing a choice they never made."""
    meta = state.meta()
    saved = None if key in assumed_answers(meta) else meta["intent"].get(key)
    picked = st.radio(
        label,
        options,
        index=options.index(saved) if saved in options else None,
        format_func=format_func,
        key=f"pf:{key}",
        horizontal=True,
        persist_state="session",
    )
    if picked is None:
        st.caption(
            f":material/info: Assuming **{plain(format_func(DEFAULT_ANSWERS[key]))}** until you "
            "pick one."
        )
    return picked


def render_intent() -> dict[str, Any]:
    """The preflight questions (what, priority, experience, model family) and the demo switch.
    An unanswered question's answer is its assumed value, listed under ``"assumed"``."""
    draft = state.draft()
    answers: dict[str, Any] = {}
    answers["what"] = _question(
        "what",
        "What are you training?",
        list(WHAT_HELP),
        lambda w: f"{w.capitalize()}: {WHAT_HELP[w]}",
    )
    answers["priority"] = _question(
        "priority", "What matters most?", list(advice.PRIORITIES), PRIORITY_HELP.get
    )
    answers["assumed"] = [key for key in ASSUMED if answers[key] is None]
    answers |= {key: DEFAULT_ANSWERS[key] for key in answers["assumed"]}
    answers["experience"] = st.radio(
        "Your experience with LoRA training",
        advice.EXPERIENCE,
        index=advice.EXPERIENCE.index(state.meta()["intent"].get("experience", "beginner")),
        format_func=lambda e: e.capitalize(),
        key="pf:experience",
        horizontal=True,
        help="Sets how much the advisor explains.",
        persist_state="session",
    )
    answers["arch"] = st.radio(
        "Base model family",
        list(ARCHS),
        index=list(ARCHS).index(draft["model"]["arch"]),
        format_func=ARCHS.get,
        key="pf:arch",
        horizontal=True,
        persist_state="session",
    )
    answers["demo"] = st.toggle(
        "Start with the tiny demo model and demo dataset (trains on a CPU in a few minutes)",
        value=str(draft["model"]["name_or_path"]).startswith("demo:"),
        key="pf:demo",
        persist_state="session",
    )
    return answers


def assumption_text(meta: dict[str, Any]) -> str:
    """Markdown naming the assumed answers ('' when every question was answered)."""
    assumed = assumed_answers(meta)
    if not assumed:
        return ""
    named = " and ".join(
        f"{QUESTION_WORDS[key]} (assumed: {plain(meta['intent'][key])})" for key in assumed
    )
    return f"You did not pick {named}. Pick them above and confirm again to tailor the values."


def honest(recs: list[Recommendation], meta: dict[str, Any]) -> list[Recommendation]:
    """The recommendations, with the training type's reason saying it was assumed when the
    person never picked it (the advisor's reason reads 'what you said you are training')."""
    if "what" not in assumed_answers(meta):
        return recs
    why = plain("assumed: you did not pick what you are training (Preflight asks)")
    return [replace(rec, reason=why) if rec.path == "intent" else rec for rec in recs]


def confirm(answers: dict[str, Any], overrides: dict[str, Any]) -> list[Recommendation]:
    """Store the answers, then fill the draft with the smart defaults for them. ``answers`` may
    come from the page (with ``"assumed"``) or from the saved intent (the Home page's demo)."""
    meta = state.meta()
    assumed = answers["assumed"] if "assumed" in answers else assumed_answers(meta)
    intent = {key: answers.get(key) or default for key, default in DEFAULT_ANSWERS.items()}
    meta["intent"] = intent | {"assumed": [key for key in ASSUMED if key in assumed]}
    meta["profile_overrides"] = overrides
    arch = answers["arch"]
    patch: dict[str, Any] = {"model.arch": arch, "intent": intent["what"]}
    current = str(state.get_value("model.name_or_path") or "")
    if answers["demo"]:
        patch |= {"model.name_or_path": f"demo:{arch}", "datasets.0.folder_path": "demo:dataset"}
    elif current.startswith("demo:"):
        patch["model.name_or_path"] = ""
    state.set_values(patch)
    hw = advice.apply_overrides(detected_hardware(), overrides)
    recs = honest(advice.smart_defaults(state.draft(), hw, intent), meta)
    state.set_values({rec.path: rec.value for rec in recs})
    meta["preflight_done"] = True
    keep_recommendations(recs)
    state.autosave()
    return recs


def keep_recommendations(recs: list[Recommendation]) -> None:
    """Remember ``recs`` as the draft's recommendations, with the architecture and model they
    were made for (``recommendations_made_for``)."""
    meta = state.meta()
    meta["recommendations"] = {
        rec.path: {"value": rec.value, "reason": rec.reason, "source": rec.source} for rec in recs
    }
    meta["recommended_for"] = state.get_value("model.arch")
    meta["recommended_for_model"] = str(state.get_value("model.name_or_path") or "")


def recommendations_made_for() -> tuple[str, str] | None:
    """(what, for) when the recommendations were made for another architecture or base model
    than the draft has now (e.g. the demo's after loading a preset for a real model); None while
    they fit."""
    meta = state.meta()
    if not meta.get("recommendations"):
        return None
    arch, model = state.get_value("model.arch"), str(state.get_value("model.name_or_path") or "")
    if meta.get("recommended_for") and meta["recommended_for"] != arch:
        return "architecture", meta["recommended_for"]
    made_for_model = meta.get("recommended_for_model")
    if made_for_model is not None and made_for_model != model:
        return "model", made_for_model or "no base model"
    return None


def recommend_again_if_kept() -> None:
    """After the draft was replaced or its data changed (a preset loaded, a dataset picked):
    the advisor takes what the draft says it trains, and the recommendations, if there are
    any, are made again for it."""
    adopt_draft_intent()
    if state.meta().get("recommendations"):
        refresh_recommendations()


def adopt_draft_intent() -> None:
    """A loaded config says what it trains: the advisor's answer follows it (a person preset
    loaded after a style preflight was advised as a style LoRA, locon and all)."""
    meta = state.meta()
    intent, what = dict(meta.get("intent") or {}), state.get_value("intent")
    if not what or what == intent.get("what"):
        return
    intent["what"] = what
    if "assumed" in intent:  # answered now, by the config
        intent["assumed"] = [key for key in intent["assumed"] if key != "what"]
    state.set_meta("intent", intent)


def current_recommendations() -> list[Recommendation]:
    """The advisor's values for the draft as it is now (nothing is applied)."""
    meta = state.meta()
    hw = advice.apply_overrides(detected_hardware(), meta.get("profile_overrides") or {})
    return honest(advice.smart_defaults(state.draft(), hw, meta["intent"]), meta)


# What the advisor recommends with the run's length in mind: made again when the length changes.
LENGTH_PATHS = ("train.steps", "train.epochs", "sample.sample_every", "save.save_every")


def run_length() -> tuple[Any, Any]:
    """The draft's steps and epochs: what ``follow_run_length`` compares."""
    return state.get_value(STEPS), state.get_value(EPOCHS)


def apply_recommended(patch: dict[str, Any]) -> None:
    """Apply recommended values as one change: steps and epochs stay one run length, and the
    recommendations quoting the length follow it."""
    before = run_length()
    store_all(patch)
    follow_run_length(before)


def follow_run_length(before: tuple[Any, Any]) -> None:
    """The run's length changed from ``before``: the recommendations that depend on it (steps
    or epochs, previews and saves that quote the steps) are made again for the draft, so none
    quotes the old length; the others stay as they were recommended."""
    recs = state.meta().get("recommendations")
    if not recs or run_length() == before:
        return
    with advisor_boundary("recommending for the new run length") as recommending:
        found = current_recommendations()
    if recommending.failed:
        return
    fresh = {
        r.path: {"value": r.value, "reason": r.reason, "source": r.source}
        for r in found
        if r.path in LENGTH_PATHS
    }
    steps = state.get_value(STEPS)
    if isinstance(steps, int) and steps != fresh.get(STEPS, {}).get("value"):
        fresh |= cadence_for(steps)  # the advisor's cadence for the steps chosen, not its own
    kept = {path: rec for path, rec in recs.items() if path not in LENGTH_PATHS}
    state.set_meta("recommendations", kept | fresh)


def cadence_for(steps: int) -> dict[str, dict[str, Any]]:
    """Previews and checkpoints recommended for a run of ``steps`` (the person's own length:
    '3 previews over the 30 steps' read wrong beside their 120)."""
    demo = str(state.get_value("model.name_or_path") or "").startswith("demo:")
    every = preview_every(steps, demo)
    why = previews_reason(state.get_value("sample") or {}, steps, every)
    return {
        "sample.sample_every": {"value": every, "reason": plain(why), "source": "studio"},
        "save.save_every": {
            "value": every,
            "reason": "a checkpoint per preview",
            "source": "studio",
        },
    }


def refresh_recommendations() -> None:
    """Recommend again for the draft's current architecture; the values are not applied."""
    with advisor_boundary("recommending values for this architecture") as recommending:
        recs = current_recommendations()
    if recommending.failed:
        return
    keep_recommendations(recs)
    state.autosave()
