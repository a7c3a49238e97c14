"""The config diff of picked runs: only the fields that differ, grouped by wizard step, with the
advisor's explanation of what each difference tends to do."""

from __future__ import annotations

from typing import Any

import streamlit as st

from advisor.history import diff_runs
from trainer.config.fields import WIZARD_STEPS
from trainer.tracking.records import RunRecord
from trainer.tracking.run_names import run_labels
from ui.text import plain, plain_line


def diff_rows(
    base: RunRecord,
    other: RunRecord,
    level: str = "beginner",
    labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Fields that differ, in wizard order, with the advisor's explanation of each; one value
    column per run, headed by its label (``labels``: the page's ``run_labels``; by default those
    of the two runs, so two runs of the same name still get two columns)."""
    labels = labels or run_labels([base, other])
    diff = diff_runs(base, other, level)
    return [
        {
            "step": WIZARD_STEPS[step][0],
            "setting": c.path,
            labels[base.run_id]: _show(c.before),
            labels[other.run_id]: _show(c.after),
            "what it does": c.explanation,
        }
        for step, changes in diff.by_step.items()
        for c in changes
    ]


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


def render_diff(runs: list[RunRecord]) -> None:
    base, labels = runs[0], run_labels(runs)
    for other in runs[1:]:
        st.markdown(
            f"**{plain_line(labels[base.run_id])}** → **{plain_line(labels[other.run_id])}**"
        )
        try:
            rows = diff_rows(base, other, labels=labels)
        except ValueError as err:
            st.warning(f"Cannot compare the configs: {plain(err)}")
            continue
        if not rows:
            st.caption("Same config.")
            continue
        for step in dict.fromkeys(row["step"] for row in rows):
            with st.expander(f"{step} ({sum(r['step'] == step for r in rows)})", expanded=True):
                st.table([_shown_row(r) for r in rows if r["step"] == step])


def _shown_row(row: dict[str, Any]) -> dict[str, str]:
    """A diff row for ``st.table``, which reads its cells and headers as markdown: run labels
    and values (run names, prompts, folders) shown as text; the advisor's explanation as
    written."""
    return {
        (key if key == "what it does" else plain_line(key)): (
            value if key == "what it does" else plain_line(value)
        )
        for key, value in row.items()
        if key != "step"
    }
