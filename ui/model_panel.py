"""The Hub model panel (Model step and Review): what a Hugging Face id is (found, gated, licence),
which of its files a run downloads, how much of it is cached, and the Download button with its
live progress, Cancel and Resume. Also the Model step's model card (the architecture's facts
with the advisor's VRAM prediction).

What the Hub says comes from ``ui.model_status`` (asked at most once a minute per id and login);
the cache is measured on every run; a download's progress is read from its folder
(``trainer.jobs.downloads``), so leaving the step or reloading the studio loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
from huggingface_hub import constants

from advisor.model_facts import DEMO, HUB, MISSING, ModelSource
from advisor.models import facts as model_facts_of
from advisor.models import is_demo
from trainer.arch.hub_status import free_gb
from trainer.arch.single_file import ARCH_NAMES
from trainer.jobs import downloads
from trainer.models.hub import (
    FOUND,
    NOT_FOUND,
    OFFLINE,
    CacheStatus,
    ModelPlan,
    RepoCheck,
    cache_status,
    cached_snapshot,
    format_bytes,
)
from trainer.settings import load_settings
from ui import model_status, state
from ui.context import StudioContext
from ui.hub_sign_in import current_account, render_hub_sign_in
from ui.summary import format_duration, gb_text, no_gpu
from ui.text import plain

ENDED_BADLY = ("failed", "cancelled", "interrupted")
LISTED_SKIPPED = 40  # files of a big repo that are not downloaded, listed by name
CARD_SIZES_GB = (4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 80, 96, 141, 192)


def repo_check(repo_id: str, arch: str) -> RepoCheck:
    """What the Hub says about ``repo_id`` for an ``arch`` run (cached for a minute)."""
    return model_status.inspect(repo_id, arch, constants.ENDPOINT, model_status.token_key())


def download_progress(repo_id: str) -> dict[str, Any] | None:
    return downloads.download_state(load_settings(), repo_id)


def is_running(progress: dict[str, Any] | None) -> bool:
    return progress is not None and progress.get("state") in downloads.RUNNING_STATES


# ------------------------------------------------------------------------------ words (pure)
def cache_text(status: CacheStatus) -> str:
    """'not cached', '3.2 GB of 4.3 GB cached' or 'cached' (whole files only: a file still
    arriving counts once it is complete)."""
    if status.complete:
        return f"cached (all {status.files_total} files)"
    if status.cached_bytes == 0:
        return "not cached"
    return f"{format_bytes(status.cached_bytes)} of {format_bytes(status.total_bytes)} cached"


def progress_text(progress: dict[str, Any]) -> str:
    """'1.2 MB of 4.3 MB · 2.0 MB/s · about 2 s left · files 3/9'."""
    if progress.get("state") == "starting":
        return "Starting the download..."
    done, total = progress.get("bytes_done") or 0, progress.get("bytes_total") or 0
    parts = [f"{format_bytes(done)} of {format_bytes(total)}" if total else format_bytes(done)]
    if progress.get("speed_bps"):
        parts.append(f"{progress['speed_bps'] / 1e6:.1f} MB/s")
    if progress.get("eta_s") is not None:
        parts.append(f"about {format_duration(progress['eta_s'])} left")
    if progress.get("files_total"):
        parts.append(f"files {progress.get('files_done') or 0}/{progress['files_total']}")
    return " · ".join(parts)


def progress_fraction(progress: dict[str, Any]) -> float:
    total = progress.get("bytes_total") or 0
    return min(1.0, (progress.get("bytes_done") or 0) / total) if total else 0.0


# ------------------------------------------------------------------------------------- panel
def render_model_panel(repo_id: str, arch: str, key: str) -> None:
    """Everything about a Hub id a user decides on, and its download."""
    check = repo_check(repo_id, arch)
    with st.container(border=True, key=f"{key}_model_panel"):
        st.markdown(f"**Hugging Face model** [`{repo_id}`]({check.page_url})")
        if check.state == NOT_FOUND:
            st.markdown(f":material/error: **Not found:** {check.message}.")
            render_hub_sign_in(f"{key}:hub")
            return
        if check.state != FOUND or check.plan is None:
            _render_unchecked(check, arch, key)
            return
        st.markdown(":material/check_circle: **Found** on the Hugging Face Hub.")
        _render_access(check, key)
        _render_files(check.plan)
        status = cache_status(check.plan)
        arriving = (
            " (downloading now: see the progress below)"
            if is_running(download_progress(repo_id))
            else ""
        )
        st.markdown(
            f":material/download_done: **In the local cache:** {cache_text(status)}{arriving}"
        )
        _render_cache_folder()
        render_download(repo_id, arch, key)


def _render_unchecked(check: RepoCheck, arch: str, key: str) -> None:
    """Offline or no answer: say so, and whether a cached copy can stand in."""
    if check.state == OFFLINE:
        st.markdown(f":material/cloud_off: **Offline:** {check.message}; the Hub is not asked.")
    else:
        st.markdown(f":material/cloud_off: **The Hub is unreachable:** {check.message}.")
        st.button(
            "Ask the Hub again",
            key=f"{key}:recheck",
            on_click=model_status.inspect.clear,
            icon=":material/refresh:",
        )
    snapshot = cached_snapshot(check.repo_id, arch)
    if snapshot is not None:
        st.markdown(f":material/check_circle: **A cached copy is used:** `{snapshot}`")
    else:
        st.markdown(
            ":material/error: **No cached copy on this machine:** it cannot be downloaded until "
            "the Hub answers (unset STUDIO_OFFLINE, or connect to the internet)."
        )
    _render_cache_folder()


def _render_access(check: RepoCheck, key: str) -> None:
    page = f"[the model page]({check.page_url})"
    if check.gated:
        allowed, user = _access(check), current_account()
        if allowed is False and user:
            no_access = (
                f"signed in as **{user}**, who **has no access yet**: accept the licence on "
                f"{page} with that account (some gates need the owners' approval), then come back."
            )
        else:
            no_access = (
                "this account **has no access yet**: sign in, then accept the licence there."
            )
        verdict = {True: f"**{user or 'this account'}** has access.", False: no_access}.get(
            allowed, "access could not be checked (the Hub did not answer)."
        )
        st.markdown(
            f":material/lock: **Gated:** its licence is accepted on {page} while signed in; "
            f"{verdict}"
        )
    else:
        st.markdown(":material/lock_open: **Not gated:** no licence to accept before a download.")
    if check.private:
        st.markdown(":material/visibility_off: **Private:** visible to this account only.")
    licence = (
        plain(check.license)
        if check.license
        else f"not stated on the model card: read it on {page}"
    )
    st.markdown(f":material/gavel: **Licence:** {licence}")
    if check.gated or check.private:
        render_hub_sign_in(f"{key}:hub")


def _access(check: RepoCheck) -> bool | None:
    token_key = model_status.token_key()
    return model_status.access(check.repo_id, constants.ENDPOINT, token_key).allowed


def _render_files(plan: ModelPlan) -> None:
    line = (
        f":material/description: **A run needs {len(plan.files)} files, "
        f"{format_bytes(plan.total_bytes)}**"
    )
    if plan.variant:
        line += f" (the {plan.variant} weights: the repository has no plain ones)"
    st.markdown(line)
    if plan.skipped:
        st.markdown(
            f":material/block: **{len(plan.skipped)} other files of the repository "
            f"({format_bytes(plan.skipped_bytes)}) are not downloaded:** other weight formats, "
            f"precision variants and parts a LoRA run does not load."
        )
    if plan.missing_components:
        st.markdown(
            f":material/error: **Missing for {plan.arch}:** {', '.join(plan.missing_components)}"
        )
    with st.expander(f"Files a run downloads ({len(plan.files)})"):
        st.markdown("\n".join(f"- `{f.path}` · {format_bytes(f.size)}" for f in plan.files))
        if plan.skipped:
            st.markdown("**Not downloaded**")
            shown = sorted(plan.skipped, key=lambda f: f.path)[:LISTED_SKIPPED]
            more = len(plan.skipped) - len(shown)
            st.markdown(
                "\n".join(f"- `{f.path}` · {format_bytes(f.size)}" for f in shown)
                + (f"\n- ... and {more} more" if more else "")
            )


def _render_cache_folder() -> None:
    free_space = free_gb(Path(constants.HF_HUB_CACHE))
    free = f" · {free_space:.0f} GB free" if free_space is not None else ""
    st.markdown(f":material/folder: **Cache folder:** `{constants.HF_HUB_CACHE}`{free}")


# ---------------------------------------------------------------------------------- download
def render_download(repo_id: str, arch: str, key: str) -> None:
    """The Download button, the live progress with Cancel while it runs, Resume after it
    stopped; a line saying it is cached when there is nothing left to fetch."""
    progress = download_progress(repo_id)
    if is_running(progress):
        _live_progress(repo_id, key)
        return
    check = repo_check(repo_id, arch)
    if check.state != FOUND or check.plan is None or check.plan.missing_components:
        return
    status = cache_status(check.plan)
    if status.complete:
        st.markdown(":material/check_circle: **Cached:** ready to train, nothing to download.")
        return
    label = f"Download {format_bytes(status.missing_bytes)}"
    if progress is not None and progress.get("state") == "cancelled":
        st.markdown(
            ":material/info: **Download cancelled.** Files already complete are kept; "
            "Resume fetches the rest."
        )
        label = "Resume download"
    elif progress is not None and progress.get("state") in ENDED_BADLY:
        st.markdown(
            f":material/error: **Download {progress['state']}:** "
            f"{plain(progress.get('message') or 'no reason was recorded')}"
        )
        label = "Resume download"
    blocked = check.gated and _access(check) is False
    st.button(
        label,
        key=f"{key}:download",
        type="primary",
        icon=":material/download:",
        on_click=_start,
        args=(repo_id, arch),
        disabled=blocked,
        help=(
            "Sign in and accept the licence on the model page first."
            if blocked
            else "Downloads in the background into the Hugging Face cache; you can carry on."
        ),
    )


def _start(repo_id: str, arch: str) -> None:
    downloads.start_download(load_settings(), repo_id, arch)


def _cancel(repo_id: str) -> None:
    downloads.cancel_download(load_settings(), repo_id)


@st.fragment(run_every=1)
def _live_progress(repo_id: str, key: str) -> None:
    """Polls the download's progress once a second; drawn only while it runs, so the polling
    stops with the download."""
    progress = download_progress(repo_id)
    if not is_running(progress):
        st.rerun()  # it ended: redraw the page (panel, findings, Launch) without this fragment
    st.progress(progress_fraction(progress), text=f"Downloading: {progress_text(progress)}")
    st.button(
        "Cancel download",
        key=f"{key}:cancel",
        on_click=_cancel,
        args=(repo_id,),
        icon=":material/cancel:",
    )


# ---------------------------------------------------------------------------------- model card
def vram_class(vram_gb: float) -> str:
    """'fits a 12 GB card' for the smallest common card with room for ``vram_gb``."""
    if vram_gb < 1:
        return "fits any GPU, or runs on a CPU"
    # the whole card, as the advisor's own fit verdict counts it (reserve memory in Preflight)
    card = next((size for size in CARD_SIZES_GB if vram_gb <= size), None)
    return (
        f"fits a {card} GB card"
        if card
        else "more than any single card: use offloading or quantization"
    )


def _params(count: int) -> str:
    return f"{count / 1e9:.2f} B" if count >= 1e8 else f"{count / 1e6:.1f} M"


def model_card_rows(arch: str, context: StudioContext) -> list[tuple[str, str]]:
    """(what, value) rows of the model card: the architecture's facts, the advisor's VRAM
    prediction for this draft, and what the base model's source says about licence and size."""
    source = context.model
    ref = source.ref if source is not None else ""
    facts = model_facts_of(arch, demo=is_demo(ref))
    encoders = len(facts.text_encoder_params)
    params = (
        f"{_params(facts.denoiser_params)} denoiser + {_params(facts.text_encoder_total)} "
        f"in {encoders} text encoder{'s' if encoders > 1 else ''}"
    )
    dtype = (state.get_value("train") or {}).get("dtype", "auto")
    memory = (f"LoRA training VRAM ({dtype} precision)", "unavailable until the settings validate")
    prediction = context.prediction
    if prediction is not None and no_gpu(prediction):  # no VRAM here: the RAM the run takes
        memory = (f"LoRA training memory ({dtype}, this CPU)", f"{gb_text(prediction.ram_gb)} RAM")
    elif prediction is not None:
        needed = prediction.vram_gb
        memory = (memory[0], f"needs about {gb_text(needed)}: {vram_class(needed)}")
    resolution = f"{facts.native_resolution} px"
    if is_demo(ref):  # Preflight quotes the real model's size: say why the two differ
        real = model_facts_of(arch).native_resolution
        resolution += f": the tiny demo's size (the real {ARCH_NAMES[arch]} trains at {real} px)"
    return [
        ("Native resolution", resolution),
        ("Parameters", params),
        memory,
        *_source_rows(source),
    ]


def _source_rows(source: ModelSource | None) -> list[tuple[str, str]]:
    if source is None or source.kind == MISSING or source.problem:
        return [("Licence", "—"), ("Gated", "—"), ("Download", "— (no loadable model yet)")]
    if source.kind == DEMO:
        return [
            ("Licence", "none needed (random demo weights)"),
            ("Gated", "no"),
            ("Download", "none: built on this machine"),
        ]
    if source.kind != HUB:
        local = f"none: local ({format_bytes(source.total_bytes)})"
        return [("Licence", "see where the model came from"), ("Gated", "no"), ("Download", local)]
    if not source.checked:
        unknown = "unknown (the Hub was not asked)"
        return [("Licence", unknown), ("Gated", unknown), ("Download", "none: the cached copy")]
    total = format_bytes(source.total_bytes)
    download = (
        f"{format_bytes(source.download_bytes)} left to download (of {total})"
        if source.needs_download
        else f"none: cached ({total})"
    )
    return [
        ("Licence", source.license or "not stated on the model card"),
        ("Gated", _gated_words(source)),
        ("Download", download),
    ]


def _gated_words(source: ModelSource) -> str:
    if not source.gated:
        return "no"
    if source.access is True or not source.needs_download:
        return "yes: this account has access"
    return "yes: accept its licence on the model page"


def model_card_markdown(label: str, rows: list[tuple[str, str]]) -> str:
    """The card as a titled list of 'what: value' lines (a two-column table had an empty header
    row); a value can quote the Hub's licence text, so it shows as text."""
    lines = "\n".join(f"- **{what}:** {plain(value)}" for what, value in rows)
    return f"**Model card · {label}**\n\n{lines}"


def model_card_title(arch: str, context: StudioContext) -> str:
    """The real model's name, or that this is its tiny demo: the demo's 64 px and few million
    parameters under "Stable Diffusion 1.5" read as facts about SD1.5."""
    source = context.model
    if source is not None and is_demo(source.ref):
        return f"{ARCH_NAMES[arch]} tiny demo (random weights)"
    return model_facts_of(arch).label


def render_model_card(arch: str, context: StudioContext) -> None:
    label = model_card_title(arch, context)
    with st.container(border=True, key="model_card"):
        st.markdown(model_card_markdown(label, model_card_rows(arch, context)))
