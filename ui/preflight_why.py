"""What confirming Preflight did, and why the advisor recommended what it did: the few choices
that shape a run most, in plain words from the config's own field descriptions, then every
recommendation (about fifty) grouped by wizard step behind an expander, so a newcomer does not
face a wall of ``train.lr``-style keys.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import streamlit as st

from trainer.config.fields import WIZARD_STEPS
from trainer.config.introspection import field_info, field_meta
from trainer.config.paths import generic_path
from ui import state
from ui.advice import label_of
from ui.advisor_column import show_value
from ui.preflight import assumed_answers, assumption_text
from ui.text import plain

# The choices that shape a run most (what it trains on, where, how big, how fast, how long), in
# the order a newcomer reads them; every other recommendation waits in the full list.
KEY_PATHS = (
    "model.name_or_path",
    "runtime.device",
    "train.dtype",
    "datasets.resolution",
    "network.linear",
    "train.batch_size",
    "train.lr",
    "train.steps",
)
LABEL_MAX = 40  # a description's opening longer than this is a sentence, not a name
OTHER_GROUP = "Other"
_SENTENCE_END = re.compile(r"\.(\s|$)")


class Line(NamedTuple):
    path: str
    label: str
    value: str  # markdown
    reason: str  # markdown (the advisor's reasons are escaped when they are made)


def field_label(path: str) -> str:
    """A plain-language name for a config path, from its field description's opening words
    ("Learning rate: the size of each update…" → "Learning rate"; "Images per step. Larger…" →
    "Images per step"); the path's readable name where the description has none that short."""
    try:
        description = field_info(path).description or ""
    except KeyError:
        return label_of(path)
    opening = _SENTENCE_END.split(description, maxsplit=1)[0]
    opening = re.split(r"[:;]", opening, maxsplit=1)[0].strip()
    return opening if 0 < len(opening) <= LABEL_MAX else label_of(path)


def step_of(path: str) -> str:
    """The wizard step a path is edited on, by its title ("Optimizer & learning rate")."""
    try:
        step = field_meta(field_info(path)).get("step")
    except KeyError:
        return OTHER_GROUP
    return WIZARD_STEPS[step][0] if step in WIZARD_STEPS else OTHER_GROUP


def line_of(path: str, rec: dict[str, Any]) -> Line:
    value = plain(show_value(rec["value"]))  # a value can be a folder someone typed
    return Line(path, plain(field_label(path)), value, rec["reason"])


def key_lines(recs: dict[str, dict[str, Any]]) -> list[Line]:
    """The recommendations of ``KEY_PATHS`` that were made, in that order."""
    first: dict[str, str] = {}  # several datasets: the first one's stands for all
    for path in recs:
        key = generic_path(path, "")
        if key not in first or path == generic_path(path):
            first[key] = path
    return [line_of(first[key], recs[first[key]]) for key in KEY_PATHS if key in first]


def grouped_lines(recs: dict[str, dict[str, Any]]) -> dict[str, list[Line]]:
    """Every recommendation, grouped by wizard step in the wizard's order."""
    order = [title for title, _ in WIZARD_STEPS.values()] + [OTHER_GROUP]
    groups: dict[str, list[Line]] = {title: [] for title in order}
    for path, rec in recs.items():
        groups[step_of(path)].append(line_of(path, rec))
    return {title: lines for title, lines in groups.items() if lines}


def render_why(recs: dict[str, dict[str, Any]]) -> None:
    """The main choices with their reasons, then all of them behind an expander."""
    main = key_lines(recs)
    if main:
        st.markdown("**The main choices, and why**")
        st.markdown("\n".join(f"- **{ln.label}**: {ln.value} — {ln.reason}" for ln in main))
    with st.expander(f"All {len(recs)} recommended values, and why", key="pf:why_all"):
        for title, lines in grouped_lines(recs).items():
            st.markdown(f"**{plain(title)}**")
            st.markdown(
                "\n".join(
                    f"- {ln.label} (`{ln.path}`) = **{ln.value}** — {ln.reason}" for ln in lines
                )
            )


def render_done(applied: int) -> None:
    """What confirming did: for which answers (an assumed one says so), then why."""
    meta = state.meta()
    assumed = assumed_answers(meta)
    what, priority = (
        plain(meta["intent"][key]) + (" (assumed)" if key in assumed else "")
        for key in ("what", "priority")
    )
    st.success(
        f"**Done:** {applied} settings filled with recommendations for {what} on "
        f"{plain(state.get_value('model.arch'))}, with priority {priority}.",
        icon=":material/check_circle:",
    )
    if assumed:
        st.caption(f":material/info: {assumption_text(meta)}")
    render_why(meta["recommendations"])
