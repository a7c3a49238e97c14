"""A wizard step's settings for the draft's architecture: basic ones first, advanced ones one
click away (an expander), expert ones behind the expert switch; a step without basic settings
shows its advanced ones openly (the last step, Model-specific, looked empty behind a closed
expander). Settings that do not apply to the architecture are named, not shown.
"""

from __future__ import annotations

import streamlit as st

from trainer.config.paths import concrete_paths
from ui import state
from ui.advice import label_of
from ui.text import code
from ui.widgets import ARCH_LABELS, LEVELS, applies, render_field, spec, step_fields


def levels_shown(step: str, arch: str) -> dict[str, list[str]]:
    """The step's fields that apply to ``arch``, by level (basic, advanced, expert)."""
    shown = [f for f in step_fields(step) if applies(f, arch)]
    return {level: [f for f in shown if spec(f).level == level] for level in LEVELS}


def render_step_fields(step: str, show_expert: bool) -> None:
    """The step's fields for the draft's architecture: basic, advanced (expander), expert."""
    arch = state.get_value("model.arch", "sd15")
    n_datasets = len(state.get_value("datasets") or [None])
    by_level = levels_shown(step, arch)
    hidden = [f for f in step_fields(step) if not applies(f, arch)]
    if not any(by_level.values()):
        st.info(
            f"**Not needed for {ARCH_LABELS[arch]}:** none of this step's settings apply to it.",
            icon=":material/info:",
        )
    advanced = by_level["advanced"]
    if by_level["basic"]:
        _render_group(by_level["basic"], n_datasets)
        if advanced:
            with st.expander(f"More settings ({len(advanced)} advanced)"):
                _render_group(advanced, n_datasets)
    else:  # the advanced settings are this step's first ones: nothing to click open
        _render_group(advanced, n_datasets)
    if by_level["expert"]:
        if show_expert:
            with st.expander(f"Expert settings ({len(by_level['expert'])})", expanded=True):
                _render_group(by_level["expert"], n_datasets)
        else:
            st.caption(
                f":material/lock: {len(by_level['expert'])} expert setting(s) hidden — turn on "
                "**Show expert settings** to see them."
            )
    if hidden:
        notes = ", ".join(
            f"{label_of(f)} ({' / '.join(ARCH_LABELS[a] for a in spec(f).archs)} only)"
            for f in hidden
        )
        st.caption(f":material/info: **Hidden for {ARCH_LABELS[arch]}:** {notes}.")


def _render_group(generics: list[str], n_datasets: int) -> None:
    shared = [g for g in generics if not g.startswith("datasets.0.")]
    per_dataset = [g for g in generics if g.startswith("datasets.0.")]
    for generic in shared:
        render_field(generic)
    for index in range(n_datasets if per_dataset else 0):
        if n_datasets > 1:
            folder = state.get_value(f"datasets.{index}.folder_path") or "no folder yet"
            st.markdown(f"**Dataset {index + 1}** · {code(folder)}")
        for generic in per_dataset:
            render_field(concrete_paths(generic, index + 1)[index])
