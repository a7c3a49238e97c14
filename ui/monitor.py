"""The monitor: one run's phase, progress, charts, samples, log, errors and controls.

``render_live(settings, run_id)`` is the live part. The page wraps it in
``st.fragment(run_every="2s")`` while the run is active; tests call it directly (AppTest cannot
tick fragments). Every read is cheap: the progress file every tick, MLflow metric history and
samples only when the step or the sample count changed (cached). The run as seen here:
``ui.monitor_view``; the progress bar, phase line and ETA: ``ui.monitor_progress``.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

import streamlit as st

from trainer.durations import format_duration
from trainer.jobs.active import active_jobs
from trainer.jobs.folder import LOG_FILE, job_alive, job_folder, log_tail
from trainer.jobs.launch import resumable
from trainer.lora.usage import download_name, lora_purpose
from trainer.redaction import redact_text
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import fetch_artifact, lora_artifacts, sample_images
from trainer.tracking.job_file import read_job
from trainer.tracking.layout import METRIC_VAL_LOSS
from trainer.tracking.progress import read_progress
from trainer.tracking.records import list_runs, metric_history
from ui.jobs import MONITOR_RUN_KEY, LaunchRefused, reconcile_on_load, resume_job, stop_job
from ui.mlflow_links import render_mlflow_links
from ui.monitor_progress import PHASE_LABELS, render_progress
from ui.monitor_usage import render_usage_downloads
from ui.monitor_validation import make_final_now, mark_best, render_validation
from ui.monitor_view import ENDED_STATUS, STATUS_LABELS, RunView, load_view
from ui.store_errors import store_boundary
from ui.text import code, plain, plain_line

PICK_KEY = "run"  # also the URL query parameter: /monitor?run=<run id>
_PICKED_LABEL = "_monitor:picked_label"  # the picked run's label as the browser last got it
FORCE_AFTER_S = 20.0
DEMO_NOTE = (
    "This run trains the tiny demo model, whose weights are random: its previews are noise by "
    "design (it shows the whole flow, not image quality). With a real base model, such as "
    "Stable Diffusion 1.5, the previews are pictures."
)


# ------------------------------------------------------------------------------------ cached data
@st.cache_data(show_spinner=False, max_entries=64)
def _history(uri: str, run_id: str, marker: Any) -> dict[str, list[tuple[int, float, int]]]:
    return metric_history(uri, run_id, ["loss", "loss_smoothed", "lr", METRIC_VAL_LOSS])


@st.cache_data(show_spinner=False, max_entries=64)
def _samples(uri: str, run_id: str, marker: Any) -> list[Any]:
    return sample_images(uri, run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def _loras(uri: str, run_id: str, marker: Any) -> list[str]:
    return lora_artifacts(uri, run_id)


def _marker(view: RunView, *keys: str) -> tuple:
    # Cached reads refresh when any of these change; ended runs are frozen.
    if not view.alive and view.status != "RUNNING":
        return (view.status, view.progress.get("updated"))
    launch = view.job.started if view.job else None  # a resumed run counts on from its last
    return (launch, *(view.progress.get(k) for k in keys))


# ----------------------------------------------------------------------------------- run picker
def _run_label(settings: StudioSettings, record: Any) -> str:
    when = record.start_time.astimezone().strftime("%Y-%m-%d %H:%M") if record.start_time else ""
    status = record.status
    if status == "RUNNING":  # the trainer says the run ended while it closes the MLflow run
        phase = (read_progress(job_folder(settings, record.run_id)) or {}).get("phase")
        status = ENDED_STATUS.get(phase, status)
    _, word = STATUS_LABELS.get(status, ("", status.lower()))
    return f"{record.name} · {word} · {when} · {record.run_id[:8]}"


def render_run_picker(settings: StudioSettings) -> str | None:
    """A select box of the studio's runs, newest first; the launched/active one by default."""
    if settings.uses_local_store and not (settings.home / "mlflow.db").exists():
        return None
    with store_boundary():
        records = list_runs(settings.tracking_uri, max_results=200)
    if not records:
        return None
    labels = {r.run_id: _run_label(settings, r) for r in records}
    requested = st.session_state.pop(MONITOR_RUN_KEY, None)
    picked = st.session_state.get(PICK_KEY)
    if requested not in labels and picked not in labels and picked:
        # The browser sends a select box's value as its label; a run's label changes with its
        # status, so a label from before the change is matched by the run id it ends with.
        requested = next((r for r in labels if str(picked).endswith(f"· {r[:8]}")), None)
    if requested in labels:
        st.session_state[PICK_KEY] = requested
    elif picked not in labels:
        st.session_state.pop(PICK_KEY, None)
    picked = st.session_state.get(PICK_KEY)
    if picked in labels and st.session_state.get(_PICKED_LABEL) != labels[picked]:
        st.session_state[PICK_KEY] = picked  # set again, so the browser shows the new label
    active = [j.run_id for j in active_jobs(settings) if j.run_id in labels]
    default = active[0] if active else records[0].run_id
    choice = st.selectbox(
        "Run",
        list(labels),
        index=list(labels).index(default),
        format_func=labels.__getitem__,
        key=PICK_KEY,
        help="Every training run, newest first. Active runs update live.",
        bind="query-params",
        persist_state="session",
    )
    st.session_state[_PICKED_LABEL] = labels.get(choice)
    return choice


# ------------------------------------------------------------------------------------ the parts
def render_header(settings: StudioSettings, view: RunView) -> None:
    icon, label = PHASE_LABELS.get(view.phase, ("•", view.phase))
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.subheader(plain_line(view.name))  # a teammate names runs: text, never markdown
    status_icon, status = view.status_label
    left.markdown(f"**Status:** {status_icon} {status} &nbsp;·&nbsp; **Phase:** {icon} {label}")
    with right:
        render_mlflow_links(settings, [view], {view.run_id: plain_line(view.name)}, key="mon")


def render_errors(view: RunView) -> None:
    """What went wrong with the run: its failure and what to do, its stop note, and the warnings
    of a run that did its work all the same (a FINISHED run whose Hub upload failed)."""
    for title, warning in view.warnings:
        st.warning(f"**{title}:** {plain(redact_text(warning))}", icon=":material/warning:")
    text = view.note if view.status == "FAILED" else ""
    text = text or (view.progress.get("last_error") if view.phase == "failed" else "") or ""
    if view.exit and view.exit.get("code") not in (0, 3) and not text:
        text = f"The trainer {view.exit.get('meaning')} (exit code {view.exit.get('code')})."
    if not text:
        if view.status == "KILLED" and view.note and not view.alive:  # not once resumed
            st.info(plain(redact_text(view.note)), icon=":material/stop_circle:")
        return
    problem, _, suggestion = redact_text(text).partition("Suggestion:")
    st.error(f"**What went wrong:** {plain(problem.strip())}", icon=":material/error:")
    if suggestion.strip():
        st.info(f"**What to do:** {plain(suggestion.strip())}", icon=":material/lightbulb:")


def render_controls(settings: StudioSettings, view: RunView) -> None:
    cols = st.columns([1, 1, 3])
    if view.alive and view.ended:
        st.caption("The run has ended; the trainer is closing it in MLflow.")
        return
    if view.alive:
        if cols[0].button(
            "Stop",
            icon=":material/stop_circle:",
            key=f"stop_{view.run_id}",
            help="Checkpoint and stop.",
        ):
            stop_job(view.run_id, settings=settings)
            st.toast("Stop requested: the trainer saves a checkpoint and ends the run.")
            view.stop_requested = time.time()
        if view.stop_requested:
            waited = time.time() - view.stop_requested
            cols[2].caption(
                f"Stop requested {format_duration(waited)} ago; the trainer stops after "
                "the current step (model loading and caching finish first)."
            )
            if waited > FORCE_AFTER_S and cols[1].button(
                "Force stop", key=f"kill_{view.run_id}", help="SIGKILL: no final checkpoint."
            ):
                stop_job(view.run_id, force=True, settings=settings)
                st.rerun()
        return
    why = resumable(settings, view.run_id, view.status)
    if view.status in ("KILLED", "FAILED") or why is None:
        clicked = cols[0].button(
            "Resume",
            icon=":material/play_arrow:",
            key=f"resume_{view.run_id}",
            disabled=why is not None,
            help=plain(why) if why else "Continue this run from its latest checkpoint.",
        )
        if why:
            cols[2].caption(plain(why))
        if clicked:
            try:
                resume_job(view.run_id, view.status, settings)
            except LaunchRefused as err:
                st.error(plain(redact_text(str(err))))
            else:
                st.rerun()


def render_charts(settings: StudioSettings, view: RunView) -> None:
    import altair as alt  # ~0.3 s: ui.monitor loads on every page (the sidebar's phases)
    import pandas as pd  # ~0.75 s: likewise, and only charts need it

    history = _history(settings.tracking_uri, view.run_id, _marker(view, "step"))
    rows = [
        {"step": step, "value": value, "series": series}
        for key, series in (
            ("loss", "raw"),
            ("loss_smoothed", "smoothed"),
            (METRIC_VAL_LOSS, "validation"),
        )
        for step, value, _ in history.get(key, [])
    ]
    if not rows:
        st.caption("The loss chart appears after the first training steps.")
        return
    loss = pd.DataFrame(rows)
    step_axis = alt.Axis(format="d", tickMinStep=1)  # whole steps, also for a one-point chart
    left, right = st.columns(2)
    chart = (
        alt.Chart(loss, title="Loss")
        .mark_line(point=len(loss) < 60)
        .encode(
            x=alt.X("step:Q", title="step", axis=step_axis),
            y=alt.Y("value:Q", title="loss", scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", title=None),
            strokeDash=alt.StrokeDash("series:N", title=None),
            tooltip=["step", "series", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    left.altair_chart(mark_best(chart, settings, view), width="stretch")  # ui.monitor_validation
    lr = pd.DataFrame([{"step": s, "lr": v} for s, v, _ in history.get("lr", [])])
    if not lr.empty:
        lr_chart = (
            alt.Chart(lr, title="Learning rate")
            .mark_line()
            .encode(
                x=alt.X("step:Q", title="step", axis=step_axis),
                y=alt.Y("lr:Q", title="learning rate", axis=alt.Axis(format=".1e")),
                tooltip=["step", alt.Tooltip("lr:Q", format=".2e")],
            )
        )
        right.altair_chart(lr_chart, width="stretch")


def render_samples(settings: StudioSettings, view: RunView) -> None:
    samples = _samples(settings.tracking_uri, view.run_id, _marker(view, "samples", "phase_done"))
    if view.is_demo:
        st.info(DEMO_NOTE, icon=":material/info:")
    if not samples:
        st.caption("Sample images appear here at each sampling step.")
        return
    steps = sorted({s.step for s in samples}, reverse=True)
    st.markdown(f"**Samples at step {steps[0]}** (latest)")
    _sample_row([s for s in samples if s.step == steps[0]], small=False)
    if len(steps) > 1:
        earlier = len(steps) - 1
        rounds = f"{earlier} earlier preview round{'s' if earlier > 1 else ''}"
        with st.expander(f"Earlier samples ({rounds})"):
            for step in steps[1:]:
                st.caption(f"Step {step}")
                _sample_row([s for s in samples if s.step == step], small=True)


def _sample_row(images: list[Any], small: bool) -> None:
    cols = st.columns(max(len(images), 4 if small else 3))
    for col, image in zip(cols, images, strict=False):
        path = (image.compressed_path if small else None) or image.path_or_uri
        caption = image.prompt or image.key
        col.image(
            path, caption=plain(caption), width="stretch", alt=f"Step {image.step}: {caption}"
        )


def render_log(view: RunView) -> None:
    tail = log_tail(view.job_dir, lines=40)
    failed = view.phase == "failed"
    with st.expander("Trainer log (last 40 lines)", expanded=failed):
        if tail:
            st.code(redact_text(tail), language=None)  # a traceback may quote the store's URI
        else:
            st.caption("No log yet." if view.job else "This run was not launched by the studio.")
        st.caption(f"Full log: {code(view.job_dir / LOG_FILE)}")


def render_files(settings: StudioSettings, view: RunView) -> None:
    from trainer.engine.checkpoint import list_checkpoints  # imports torch: ~3 s

    lora_dir = view.job_dir / "lora"
    files = sorted(p for p in lora_dir.rglob("*.safetensors")) if lora_dir.is_dir() else []
    if view.phase == "finished" or files:
        st.markdown("**Your LoRA**")
        for path in files:
            left, right = st.columns([3, 2], vertical_alignment="center")
            size = path.stat().st_size / 2**20
            weight_name = path.relative_to(lora_dir).as_posix()
            name = download_name(weight_name)  # both layouts of a run: two names
            left.markdown(f"{code(path)} ({size:.1f} MB), downloads as {code(name)}")
            right.download_button(
                f"Download · {lora_purpose(weight_name)}",
                data=lambda path=path: path.read_bytes(),
                file_name=name,
                mime="application/octet-stream",
                key=f"dl_{view.run_id}_{path.relative_to(lora_dir)}",
            )
        stored = [a for a in _loras(settings.tracking_uri, view.run_id, _marker(view, "phase"))]
        finals = [a for a in stored if a.startswith("lora/")]
        render_usage_downloads(settings, view.run_id, lora_dir, finals)  # card, script, ComfyUI
        loras = [a for a in finals if a.endswith(".safetensors")]  # not the card, script, ...
        if loras:
            st.caption("In MLflow: " + ", ".join(code(a) for a in loras))
            if not files:  # trained elsewhere (a teammate's run on a shared tracking server)
                _stored_downloads(settings, view.run_id, loras)
        elif not files:
            st.caption("No LoRA file was found for this run.")
    checkpoints = list_checkpoints(view.job_dir / "checkpoints")
    if checkpoints and view.phase != "finished":
        names = plain(", ".join(p.name for p in checkpoints))
        st.caption(f"Checkpoints: {names} — Resume continues from the newest.")
        if view.ended and not files:
            _offer_checkpoint_lora(settings, view, checkpoints[-1])


def _offer_checkpoint_lora(settings: StudioSettings, view: RunView, newest: Path) -> None:
    """A stopped run has no final LoRA: its newest checkpoint can be one now (Resume still
    trains on, and its end writes the final again)."""
    from trainer.engine.checkpoint import PREFIX  # loaded already: the caller listed them

    step = int(newest.name.removeprefix(PREFIX))
    left, right = st.columns([3, 2], vertical_alignment="center")
    left.caption(
        f"This run stopped before its final LoRA was saved. The checkpoint of step {step} holds "
        "a usable LoRA: make it this run's LoRA to download and use it now."
    )
    if right.button(
        f"Use step {step} as the LoRA",
        icon=":material/verified:",
        key=f"ckpt_final_{view.run_id}_{step}",
        help="Saves the checkpoint's LoRA as the run's final LoRA, with its model card and "
        "scripts. Resume still continues from the checkpoint and writes the final at its end.",
    ) and make_final_now(settings, view.run_id, step):
        st.rerun()


def _stored_downloads(settings: StudioSettings, run_id: str, finals: list[str]) -> None:
    """Download buttons for the run's final LoRA files, fetched from MLflow on click."""
    uri, cache = settings.tracking_uri, settings.cache_dir
    for artifact in finals:
        weight_name = artifact.split("/", 1)[-1]  # its path in the run's lora folder
        if weight_name.endswith(".safetensors") and weight_name.count("/") <= 1:
            name = download_name(weight_name)
            st.download_button(
                f"Download {plain_line(name)} · {lora_purpose(weight_name)}",
                data=lambda a=artifact: fetch_artifact(uri, run_id, a, cache).read_bytes(),
                file_name=name,
                mime="application/octet-stream",
                key=f"dlm_{run_id}_{artifact}",
            )


def render_live(settings: StudioSettings, run_id: str, was_active: bool = False) -> RunView:
    """The live part of the monitor (the page runs it as a 2 s fragment while a run is active)."""
    with store_boundary():
        view = load_view(settings, run_id)
    dead = view.status == "RUNNING" and not view.alive and view.job is not None
    dead = dead and (view.exit is not None or time.time() - view.job.started > 10)
    if dead and reconcile_on_load(settings, force=True):
        view = load_view(settings, run_id)
    sections = (
        partial(render_header, settings, view),
        partial(render_progress, view),
        partial(render_errors, view),
        partial(render_controls, settings, view),
        partial(render_charts, settings, view),
        partial(render_validation, settings, view),  # best checkpoint, make final, overfitting
        partial(render_samples, settings, view),
        partial(render_files, settings, view),
        partial(render_log, view),
    )
    for section in sections:
        # One container each, so a section that grows or shrinks (Stop goes, files come) never
        # shifts the next one's place: while a rerun replaces them the browser showed the old
        # elements under the new, e.g. a LoRA file listed twice.
        with st.container():
            section()
    if was_active and not view.alive:
        st.rerun()  # the run ended: render once more without the timer
    _relabel_picker(view)
    return view


def _relabel_picker(view: RunView) -> None:
    """Rerun the page once per status when the run picker (outside this fragment) names
    another status than the run has now (e.g. 'stopped' after Resume, 'running' after it
    finished): the browser shows a select box's label as it was last sent."""
    shown = st.session_state.get(_PICKED_LABEL) or ""
    word = view.status_label[1]
    guard = f"_monitor:relabelled:{view.run_id}:{view.job.started if view.job else ''}:{word}"
    if f" · {word} · " not in shown and not st.session_state.get(guard):
        st.session_state[guard] = True
        st.rerun()


def is_active(settings: StudioSettings, run_id: str) -> bool:
    return job_alive(read_job(job_folder(settings, run_id)))
