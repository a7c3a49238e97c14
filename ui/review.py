"""Review: editable summary, validation with fixes, yours vs recommended, YAML in and out, and
launch (what locks it, by name, and the name the run will be saved as)."""

from __future__ import annotations

import copy
from typing import Any

import streamlit as st

from advisor.model_facts import HUB
from trainer.config.fields import WIZARD_STEPS
from trainer.config.introspection import unresolved_autos
from trainer.config.io import ConfigError, loads_config
from trainer.config.paths import concrete_paths
from trainer.settings import load_settings
from ui import advice, state
from ui.advisor_column import render_findings, show_value
from ui.boundary import advisor_boundary
from ui.compare_store import bump
from ui.context import StudioContext, apply_fix
from ui.field_gates import off_switch
from ui.hub_sign_in import render_hub_sign_in
from ui.jobs import LaunchRefused, launch_draft, open_monitor
from ui.launch_name import LaunchName, launch_name
from ui.model_panel import download_progress, is_running, render_download
from ui.preflight import apply_recommended, current_recommendations
from ui.queue_panel import render_add_to_queue
from ui.sweep_form import render_queue_variants
from ui.text import code, plain, plain_line, unplain
from ui.widgets import applies, render_field, spec, step_fields

IMPORT_KEY = "rv:import"
IMPORT_RESULT = "rv:import_result"
LAUNCH_RESULT = "rv:launch_result"


def render_editable_summary() -> None:
    """The basic settings of every step, editable in place (the wizard has the rest). A name the
    store already has shows the one the run will get ("LoRA name: my_lora → my_lora_2")."""
    arch = state.get_value("model.arch", "sd15")
    n = len(state.get_value("datasets") or [None])
    saved_as = draft_launch_name()
    for step, (title, _) in WIZARD_STEPS.items():
        basic = [f for f in step_fields(step) if spec(f).level == "basic" and applies(f, arch)]
        if not basic:
            continue
        values = []
        shown = [f for f in basic if not off_switch(f)]  # no "float8" while quantization is off
        for generic in shown[:3]:
            value = show_value(state.get_value(concrete_paths(generic, n)[0]))
            if generic == "name" and saved_as and saved_as.renamed and value == saved_as.wanted:
                value = f"{value} → {saved_as.given}"
            values.append(f"{advice.label_of(generic)}: {plain_line(value)}")  # typed values
        # keyed: the label shows the values, and a changed label must not collapse it on edit
        with st.expander(f"{title} — " + " · ".join(values), key=f"rv:summary:{step}"):
            for generic in basic:
                for path in concrete_paths(generic, n):
                    render_field(path)


def render_validation(context: StudioContext) -> None:
    """The findings on the advisor's one severity scale: notes "for your information" say a
    setting is fine, so they are listed but never counted as problems."""
    if not advice.problems_of(context.findings):
        st.markdown(":material/check_circle: **No problems found.** The config is ready to train.")
        if context.findings:
            render_findings(context.findings, key_prefix="rv")
        return
    must = " (errors must be fixed)" if context.errors else ""
    st.markdown(advice.severity_summary(context.findings) + must)
    fixable = [f for f in context.findings if f.fix]
    if len(fixable) > 1:
        fixed = None
        with advisor_boundary("combining the fixes"):
            fixed = advice.apply_all_fixes(context.validated.config, fixable)
        if fixed is None:
            patch: dict[str, Any] = {}
            for finding in fixable:
                patch.update(finding.fix or {})
            action, args = apply_fix, (patch,)
        else:
            action, args = state.replace_draft, (fixed,)
        st.button(
            f"Apply all {len(fixable)} fixes",
            key="rv:fix_all",
            on_click=action,
            args=args,
            icon=":material/auto_fix_high:",
            help="Applies every fix; when two fixes disagree, the first one wins.",
        )
    render_findings(context.findings, key_prefix="rv")
    render_model_fix(context)


def render_model_fix(context: StudioContext) -> None:
    """The base model's download (and the Hub sign-in for a gated one) beside the findings that
    block Launch for it, so they are fixed here instead of on the Model step."""
    model = context.model
    if model is None or model.kind != HUB:
        return
    rules = {f.rule for f in context.findings}
    arch = str(state.get_value("model.arch", "sd15"))
    if "model_gated" in rules:
        render_hub_sign_in("rv:hub")
    if "model_not_downloaded" in rules or is_running(download_progress(model.ref)):
        with st.container(border=True, key="rv_model_download"):
            st.markdown(f"**Base model** {code(model.ref)}")
            render_download(model.ref, arch, key="rv:model")


# Widths in pixels, so that the values are read whole at 1400 px (the table is about 940 px wide
# there): sized to the content of the first rows, "Yours" cut "to_q, to_k, to_v, to_out.0" off.
# Rows stay one line (wrapping needs rows over 64 px: five rows in view); the dotted path, for
# experts, comes last.
COMPARISON_COLUMNS = ("Setting", "Yours", "Recommended", "Status", "Reason", "Path")
COMPARISON_CONFIG = {
    "Setting": st.column_config.TextColumn(width=170),
    "Yours": st.column_config.TextColumn(width=180),
    "Recommended": st.column_config.TextColumn(width=180),
    "Status": st.column_config.TextColumn(width=85),
    "Reason": st.column_config.TextColumn(width=520),  # a long one: scroll, or click the cell
    "Path": st.column_config.TextColumn(width=260),
}


def comparison_rows(
    context: StudioContext, recs: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    rows = []
    for path, rec in (context.recommendations if recs is None else recs).items():
        if off_switch(path):  # e.g. the cycles of a scheduler not chosen: no effect, no row
            continue
        mine = state.get_value(path)
        same = state.same_value(mine, rec["value"])
        rows.append(
            {
                "Setting": advice.label_of(path),
                "Path": path,
                "Yours": show_value(mine),
                "Recommended": show_value(rec["value"]),
                "Status": "✓ matches" if same else "≠ differs",
                "Reason": unplain(rec["reason"]),  # escaped for markdown; a table shows text as is
            }
        )
    rows.sort(key=lambda r: r["Status"] == "✓ matches")
    return rows


def render_comparison(context: StudioContext) -> None:
    recs = context.recommendations
    if not recs:
        with advisor_boundary("recommending values for your draft") as recommending:
            found = current_recommendations()
        if recommending.failed:
            return
        recs = {r.path: {"value": r.value, "reason": r.reason, "source": r.source} for r in found}
        st.caption(
            ":material/info: Computed for your draft now (preflight not confirmed): "
            "nothing was applied."
        )
    rows = comparison_rows(context, recs)
    if not rows:
        st.caption("The advisor has no recommendations for this draft.")
        return
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        key="rv:comparison",
        column_order=COMPARISON_COLUMNS,
        column_config=COMPARISON_CONFIG,
    )
    differing = [r for r in rows if r["Status"] != "✓ matches"]
    if differing:
        patch = {r["Path"]: recs[r["Path"]]["value"] for r in differing}
        st.button(
            "Use the recommended value"
            if len(differing) == 1
            else f"Use all {len(differing)} recommended values",
            key="rv:apply_recs",
            on_click=apply_recommended,
            args=(patch,),
        )


# ------------------------------------------------------------------------------- YAML in / out
def _import() -> None:
    upload = st.session_state.get(IMPORT_KEY)
    if upload is None:
        return
    try:
        cfg = loads_config(upload.getvalue())
    except ConfigError as err:
        st.session_state[IMPORT_RESULT] = ("error", upload.name, [str(p) for p in err.problems])
        return
    state.replace_draft(cfg.model_dump(mode="json"))
    st.session_state[IMPORT_RESULT] = ("ok", upload.name, [])


def render_yaml(context: StudioContext) -> None:
    text = state.draft_to_yaml(state.draft())
    name = state.get_value("name") or "lora"
    left, right = st.columns(2)
    with left:
        st.download_button(
            "Download config (YAML)",
            data=text,
            file_name=f"{name}.yaml",
            mime="application/x-yaml",
            key="rv:download",
            icon=":material/download:",
        )
    with right:
        st.file_uploader(
            "Import a config (YAML)",
            type=["yaml", "yml"],
            key=IMPORT_KEY,
            on_change=_import,
            help="Replaces the draft when the file is valid; a broken file changes nothing.",
        )
    result = st.session_state.get(IMPORT_RESULT)
    if result and result[0] == "error":
        lines = "\n".join(f"- {plain_line(line)}" for line in result[2])  # they quote values
        st.error(
            f"**Import refused:** {code(result[1])} has problems; your draft is unchanged."
            f"\n\n{lines}",
            icon=":material/error:",
        )
    elif result:
        st.success(
            f"**Imported** {code(result[1])}. Undo restores the previous draft.",
            icon=":material/check_circle:",
        )
        st.button("Undo the import", key="rv:undo_import", on_click=_undo_import)
    if context.validated.config is None:
        st.caption(":material/info: The draft has errors, so this YAML has no comments yet.")
    with st.expander("YAML preview (with a comment above every setting)"):
        st.code(text, language="yaml")


def _undo_import() -> None:
    state.undo()
    st.session_state.pop(IMPORT_RESULT, None)


# -------------------------------------------------------------------------------------- launch
STILL_AUTO = " is still 'auto'"  # the end of a blocker that names a setting left to the advisor
AUTO_RULE = "auto_unresolved"  # the advisor's error for them: named per setting instead


def launch_blockers(context: StudioContext) -> list[str]:
    """Why Launch is locked, a line each: the errors, then each setting still 'auto' ("Learning
    rate is still 'auto'"); empty when it is not."""
    reasons = [f.message for f in context.errors if f.rule != AUTO_RULE]
    cfg = context.validated.config
    if cfg is not None:
        reasons += [f"{advice.label_of(path)}{STILL_AUTO}" for path in unresolved_autos(cfg)]
    elif not reasons:
        reasons.append("the config does not validate")
    return reasons


def lock_message(blockers: list[str], place: str) -> str:
    """The headline of a locked Launch, saying exactly what blocks it: the errors to fix, the
    settings still 'auto' by name, or both."""
    autos = [b.removesuffix(STILL_AUTO) for b in blockers if b.endswith(STILL_AUTO)]
    errors = len(blockers) - len(autos)
    where = "in Validation below" if place == "top" else "above"
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)} to fix")
    if autos:
        verb = "is" if len(autos) == 1 else "are"
        parts.append(f"{_and(autos)} {verb} still 'auto'")
    them = "it" if len(blockers) == 1 else "them"
    if autos and not errors:
        action = f"Let the advisor choose (Fix {where}) or set {them} in the wizard."
    else:
        action = f"Fix {them} {where}."
    return f":material/block: **Launch is locked:** {' and '.join(parts)}. {action}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def draft_launch_name() -> LaunchName | None:
    """The name a launch of the draft would give its run (None while the draft has errors)."""
    cfg = state.validated().config
    return None if cfg is None else launch_name(cfg, load_settings().tracking_uri)


LAUNCH_LABELS = {"top": "Launch training", "bottom": "Launch this config"}
SHOWN_BLOCKERS = 3  # the top of the page names this many; Validation lists them all


def render_launch(context: StudioContext, place: str = "bottom") -> None:
    """The Launch button with the reason it is locked, and the result of the last launch.

    Drawn twice on the review page: near the top (under the summary) and at the bottom; each has
    its own label, so a browser test can tell them apart. The result shows under the button that
    launched, and only while it is still true: it goes once the draft changes or Launch is locked.
    """
    blockers = launch_blockers(context)
    if blockers:
        st.markdown(lock_message(blockers, place))
        errors = [b for b in blockers if not b.endswith(STILL_AUTO)]  # the autos are named above
        if place == "top" and errors:
            more = len(errors) - SHOWN_BLOCKERS
            lines = [f"- {reason}" for reason in errors[:SHOWN_BLOCKERS]]
            st.markdown("\n".join(lines + ([f"- … and {more} more"] if more > 0 else [])))
    saved_as = draft_launch_name()
    if saved_as is not None:
        st.markdown(f":material/save: {saved_as.text()}")
    clicked = st.button(
        LAUNCH_LABELS[place],
        type="primary",
        key="rv:launch" if place == "top" else "rv:launch_bottom",
        disabled=bool(blockers),
        icon=":material/rocket_launch:",
        help="Starts the trainer with this config and opens the monitor.",
    )
    render_add_to_queue(context, place, blocked=bool(blockers))  # beside Launch: ui/queue_panel
    if clicked and context.validated.config is not None:
        _launch(context, place)
    result = current_launch_result(blocked=bool(blockers))
    if result and result[3] == place:
        kind, text = result[0], result[1]
        {"ok": st.success, "info": st.info}.get(kind, st.error)(text)
    if place == "bottom":  # a sweep of the draft, once per page
        render_queue_variants(context.validated.config, key="rv:sweep")


def current_launch_result(*, blocked: bool) -> tuple[str, str, dict[str, Any], str] | None:
    """The last launch's (kind, text, draft, place), or None once it is stale: the draft has
    changed since (the banner would name a run of another config) or Launch is locked now."""
    result = st.session_state.get(LAUNCH_RESULT)
    if result is None:
        return None
    if blocked or result[2] != state.draft():
        st.session_state.pop(LAUNCH_RESULT, None)
        return None
    return result


def _launch(context: StudioContext, place: str) -> None:
    cfg = context.validated.config
    try:
        with st.spinner("Creating the MLflow run and starting the trainer..."):
            job = launch_draft(cfg)
    except LaunchRefused as err:
        _remember_launch("error", f"**Not launched:** {plain(err)}", place)
        return
    _remember_launch("ok", f"**Launched** {code(job.name)} (run {code(job.run_id)}).", place)
    bump()  # the store has a run more: the next name shown counts it (and Compare lists it)
    open_monitor(job.run_id)


def _remember_launch(kind: str, text: str, place: str) -> None:
    # the draft it was for: the banner goes as soon as the draft is another one
    st.session_state[LAUNCH_RESULT] = (kind, text, copy.deepcopy(state.draft()), place)
