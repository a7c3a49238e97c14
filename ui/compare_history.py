"""What the advisor learns from the store's runs for the current draft: recommendations from
similar runs ("based on N similar runs…"), and predictions calibrated by what they measured, with
the runs that did it ("Speed corrected ×1.8 from 2 past runs like this one (…)")."""

from __future__ import annotations

import streamlit as st

from advisor.calibration import calibrate
from advisor.history import recommend_from_history
from trainer.settings import StudioSettings
from ui.advice import predict
from ui.boundary import advisor_boundary
from ui.compare_store import local_history, past_runs, version
from ui.context import hardware
from ui.state import validated
from ui.text import plain


def render_history_hint(settings: StudioSettings) -> None:
    """The wizard's advisor column: "based on N similar runs…" for the current draft. Only for a
    local store that exists (reading it needs no MLflow import); silent otherwise."""
    cfg = validated().config
    runs = local_history(settings.tracking_uri) if cfg is not None else None
    if not runs:
        return
    insights = recommend_from_history(cfg, runs)
    if insights:
        with st.container(border=True):
            st.markdown(f"**Based on your past runs** ({insights[0].runs} similar)")
            for insight in insights:
                st.caption(plain(insight.message))  # it names runs and values


def calibration_text(tracking_uri: str) -> str | None:
    """The draft's predicted s/step from priors alone and corrected by the store's runs, with
    the runs that corrected it."""
    cfg = validated().config
    if cfg is None:
        return None
    hw = hardware()
    history = past_runs(tracking_uri, version())
    prior = predict(cfg, hw)
    calibrated = predict(cfg, hw, history)
    if prior is None or calibrated is None or not prior.step_s or not calibrated.step_s:
        return None
    evidence = "".join(f"  \n{plain(line)}." for line in calibrate(cfg, hw.raw, history).lines())
    if not calibrated.history_runs:
        return (
            f"Predicted speed for the current draft: {prior.step_s:.3g} s/step from priors "
            "alone (no finished run of this base model, size and device has measured one yet)."
            + evidence
        )
    return (
        f"Predicted speed for the current draft: **{calibrated.step_s:.3g} s/step**, based on "
        f"{calibrated.history_runs} similar run(s) on this device (priors alone: "
        f"{prior.step_s:.3g} s/step)." + evidence
    )


def render_history(tracking_uri: str) -> None:
    """What the advisor learns from these runs for the current draft."""
    checked = validated()
    if checked.config is None:
        return
    with advisor_boundary("learning from your past runs"):
        insights = recommend_from_history(checked.config, past_runs(tracking_uri, version()))
        for insight in insights:
            st.markdown(f"- {plain(insight.message)}")
        if not insights:
            st.caption("No finished runs like the current draft yet.")
        text = calibration_text(tracking_uri)
        if text:
            st.markdown(text)
