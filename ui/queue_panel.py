"""The training queue in the studio: "Add to queue" beside Launch on Review, and the queue panel on
Monitor (order, up/down, start now, cancel). The queue itself and its runner live in
``trainer.jobs.queue`` and ``trainer.jobs.queue_runner``; this module only draws and asks.

The router calls ``resume_queue`` on every page run (a file read, at most every few seconds): a
restarted studio starts a runner again when the queue still has work.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING

import streamlit as st

from trainer.jobs.queue import QueueEntry, QueueError, cancel, enqueue, entries, move, start_now
from trainer.jobs.queue_runner import ensure_runner, runner_alive
from trainer.redaction import describe_error
from trainer.settings import StudioSettings, load_settings
from ui import state
from ui.access import config_refusal
from ui.jobs import MONITOR_PAGE, launch_prediction
from ui.text import code, plain, plain_line

if TYPE_CHECKING:  # pragma: no cover
    from ui.context import StudioContext

QUEUE_RESULT = "queue:result"  # (kind, text, draft, place) of the last Add to queue
PROBLEM = "queue:problem"  # what the last panel action could not do
SEEN = "queue:seen"  # the queue's (id, state) pairs at the panel's last refresh
REFRESH = "2s"
RESUME_EVERY_S = 10.0
SHOWN_ENDED = 10
_last_resume: dict[str, float] = {}

STATE_LABELS = {
    "queued": (":material/schedule:", "queued"),
    "running": (":material/play_circle:", "training"),
    "done": (":material/check_circle:", "finished"),
    "failed": (":material/error:", "failed"),
    "cancelled": (":material/cancel:", "cancelled"),
}


def resume_queue(settings: StudioSettings | None = None, *, force: bool = False) -> bool:
    """Start the queue runner when the queue has work and none is alive (at most every few
    seconds per home); True when one was started."""
    settings = settings or load_settings()
    key = str(settings.home)
    now = time.monotonic()
    if not force and now - _last_resume.get(key, -1e9) < RESUME_EVERY_S:
        return False
    _last_resume[key] = now
    try:
        return ensure_runner(settings)
    except Exception as err:  # a read-only home, a store that fails: the page goes on, saying so
        st.warning(f"The training queue could not be resumed: {plain(describe_error(err))}")
        return False


# ------------------------------------------------------------------------------------- Review
def render_add_to_queue(context: StudioContext, place: str, *, blocked: bool) -> None:
    """The "Add to queue" button beside Launch (locked by what locks Launch, but not by a busy
    device: that is what the queue is for), and what the last click did."""
    clicked = st.button(
        "Add to queue",
        key="rv:queue" if place == "top" else "rv:queue_bottom",
        disabled=blocked,
        icon=":material/queue:",
        help="Trains this config after the runs before it, one at a time, when the device is "
        "free; it goes on with the browser closed. The Monitor page shows the queue.",
    )
    if clicked and context.validated.config is not None:
        _add(context, place)
    result = st.session_state.get(QUEUE_RESULT)
    if result and (blocked or result[2] != state.draft()):
        st.session_state.pop(QUEUE_RESULT, None)  # about another draft now
    elif result and result[3] == place:
        {"ok": st.success}.get(result[0], st.error)(result[1])


def _add(context: StudioContext, place: str) -> None:
    cfg = context.validated.config
    settings = load_settings()
    # Served to a network, what Launch refuses is not queued either (the runner, a process of
    # its own, cannot tell how the studio is served): the same words, nothing added
    refused = config_refusal(cfg.model_dump(mode="json"), settings)
    if refused:
        _remember("error", f"**Not queued:** {plain(refused)}", place)
        return
    name = cfg.logging.run_name or cfg.name
    step_s, total_s = launch_prediction(cfg, settings)
    try:
        entry = enqueue(settings, cfg, name, predicted_s_per_step=step_s, predicted_total_s=total_s)
        resume_queue(settings, force=True)
    except (QueueError, OSError) as err:
        _remember("error", f"**Not queued:** {plain(err)}", place)
        return
    waiting = [e for e in entries(settings) if e.active]
    position = next((i for i, e in enumerate(waiting, 1) if e.id == entry.id), len(waiting))
    _remember(
        "ok",
        f"**Queued** {code(entry.name)}: {_ordinal(position)} in the queue. It trains when the "
        "device is free, one run at a time; the Monitor page shows the queue.",
        place,
    )


def _remember(kind: str, text: str, place: str) -> None:
    st.session_state[QUEUE_RESULT] = (kind, text, copy.deepcopy(state.draft()), place)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ------------------------------------------------------------------------------------ Monitor
def render_queue(settings: StudioSettings) -> None:
    """The queue panel: nothing while the queue has never had an entry; live while it works."""
    items = entries(settings)
    if not items:
        return
    live = any(entry.active for entry in items)
    st.fragment(_panel, run_every=REFRESH if live else None)(settings)


def _panel(settings: StudioSettings) -> None:
    items = entries(settings)
    seen = [(entry.id, entry.state) for entry in items]
    changed = st.session_state.get(SEEN) not in (None, seen)
    st.session_state[SEEN] = seen
    if changed:  # a run started or ended: the whole page (run picker, charts) follows
        st.rerun()
    with st.container(border=True, key="queue_panel"):
        st.subheader("Queue", anchor=False)
        active = [entry for entry in items if entry.active]
        alive = runner_alive(settings)
        if active:
            runner = "the runner is working" if alive else "the runner starts in a moment"
            st.caption(
                f"{len(active)} waiting or training; {runner}. Runs train one at a time, in this "
                "order, when the device is free, also with the browser closed."
            )
        else:
            st.caption("Nothing waiting. Add runs to the queue from the Review page.")
        problem = st.session_state.pop(PROBLEM, None)
        if problem:
            st.warning(problem)
        queued = [entry for entry in active if entry.state == "queued"]
        for entry in active:
            _active_row(settings, entry, queued)
        ended = [entry for entry in items if not entry.active][-SHOWN_ENDED:]
        if ended:
            st.markdown("**Ended**")
            for entry in ended:
                st.markdown(_line(entry))


def _line(entry: QueueEntry) -> str:
    icon, word = STATE_LABELS.get(entry.state, ("•", entry.state))
    text = f"{icon} **{plain_line(entry.name)}** — {word}"
    if entry.group:
        text += f" · group {plain_line(entry.group)}"
    if entry.run_name and entry.run_name != entry.name:
        text += f" · run {code(entry.run_name)}"
    if entry.message and entry.state != "done":
        text += f" · {plain_line(entry.message)}"
    return text


def _active_row(settings: StudioSettings, entry: QueueEntry, queued: list[QueueEntry]) -> None:
    with st.container(key=f"queue_entry_{entry.id}"):
        text, *buttons = st.columns([4, 1.2, 1.4, 1.7, 1.5], vertical_alignment="center")
        line = _line(entry)
        if entry.state == "queued":
            line = f"{queued.index(entry) + 1}. {line}"
        elif entry.cancel_requested:
            line += " · cancelling…"
        text.markdown(line)
        up, down, first, stop = buttons
        if entry.state == "queued":
            index = queued.index(entry)
            up.button(
                "Up",
                key=f"queue_up_{entry.id}",
                icon=":material/arrow_upward:",
                disabled=index == 0,
                on_click=_act,
                args=(move, settings, entry.id, -1),
                help="Train it one place earlier",
            )
            down.button(
                "Down",
                key=f"queue_down_{entry.id}",
                icon=":material/arrow_downward:",
                disabled=index == len(queued) - 1,
                on_click=_act,
                args=(move, settings, entry.id, 1),
                help="Train it one place later",
            )
            first.button(
                "Start now",
                key=f"queue_first_{entry.id}",
                icon=":material/skip_next:",
                disabled=index == 0,
                on_click=_act,
                args=(start_now, settings, entry.id),
                help="Next in line: it starts as soon as the device is free",
            )
        elif entry.run_id:
            first.page_link(
                MONITOR_PAGE,
                label="Watch",
                icon=":material/monitoring:",
                query_params={"run": entry.run_id},
            )
        if not entry.cancel_requested:
            stop.button(
                "Cancel",
                key=f"queue_cancel_{entry.id}",
                icon=":material/cancel:",
                on_click=_act,
                args=(cancel, settings, entry.id),
                help="Take it off the queue; a training run is stopped (it saves a checkpoint)",
            )


def _act(action, settings: StudioSettings, *args: object) -> None:
    """A button's change to the queue; what cannot be done is said on the panel."""
    try:
        action(settings, *args)
        resume_queue(settings, force=True)
    except (QueueError, OSError) as err:
        st.session_state[PROBLEM] = f"Could not change the queue: {plain(err)}"
