"""The config diff of picked runs: only the fields that differ, grouped by wizard step, with the
advisor's explanation of what each difference tends to do."""

from __future__ import annotations

from typing import Any

import streamlit as st

from advisor.history import diff_runs
from trainer.config.fields import WIZARD_STEPS
from trainer.tracking.records import RunRecord


def diff_rows(base: RunRecord, other: RunRecord, level: str = "beginner") -> list[dict[str, Any]]:
    """Fields that differ, in wizard order, with the advisor's explanation of each."""
    diff = diff_runs(base, other, level)
    return [
        {
            "step": WIZARD_STEPS[step][0],
            "setting": c.path,
            base.name or "A": _show(c.before),
            other.name or "B": _show(c.after),
            "what it does": c.explanation,
        }
        for step, changes in diff.by_step.items()
        for c in changes
    ]


def _show(value: Any) -> str:
    return "—" if value is None else str(value)


def render_diff(runs: list[RunRecord]) -> None:
    base = runs[0]
    for other in runs[1:]:
        st.markdown(f"**{base.name}** → **{other.name}**")
        try:
            rows = diff_rows(base, other)
        except ValueError as err:
            st.warning(f"Cannot compare the configs: {err}")
            continue
        if not rows:
            st.caption("Same config.")
            continue
        for step in dict.fromkeys(row["step"] for row in rows):
            with st.expander(f"{step} ({sum(r['step'] == step for r in rows)})", expanded=True):
                st.table(
                    [{k: v for k, v in r.items() if k != "step"} for r in rows if r["step"] == step]
                )
