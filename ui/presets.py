"""The presets page's parts: built-in presets (``presets/*.yaml`` in the repository) and user
presets (``<studio home>/presets``), each with its source comment, a preview, load into the wizard,
save the current draft, import and export YAML."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import streamlit as st

from trainer.config.importers import import_text
from trainer.config.io import ConfigError, loads_config
from trainer.files import atomic_write_text
from trainer.settings import StudioSettings
from ui.state import draft, draft_to_yaml, replace_draft

BUILT_IN = Path(__file__).resolve().parent.parent / "presets"


@dataclass(frozen=True)
class Preset:
    name: str
    source: str  # "built-in" | "user"
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def comment(self) -> str:
        """The leading ``#`` lines: what the preset is for and where its values come from."""
        lines = []
        for line in self.text.splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        return "\n".join(lines)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source})"


def list_presets(settings: StudioSettings) -> list[Preset]:
    """User presets first (newest choices), then the built-in ones, each sorted by name."""
    user = sorted(settings.presets_dir.glob("*.yaml")) if settings.presets_dir.is_dir() else []
    return [Preset(p.stem, "user", p) for p in user] + [
        Preset(p.stem, "built-in", p) for p in sorted(BUILT_IN.glob("*.yaml"))
    ]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "preset"


def save_preset(settings: StudioSettings, name: str, text: str, source: str) -> Path:
    """Validate ``text`` as a config and store it as a user preset with a source comment.

    Raises ``ConfigError`` (with every problem) when the YAML is not a valid config."""
    loads_config(text)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = f"# Preset '{name}': {source}, saved {when}.\n"
    settings.presets_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(settings.presets_dir / f"{safe_name(name)}.yaml", header + text)


def load_into_draft(preset: Preset) -> None:
    replace_draft(loads_config(preset.text).model_dump(mode="json"))


def render_browser(settings: StudioSettings) -> None:
    presets = list_presets(settings)
    by_label = {p.label: p for p in presets}
    choice = st.selectbox("Preset", list(by_label), key="pre:choice")
    if choice is None:
        return
    preset = by_label[choice]
    st.caption(f"Source: {preset.source} · {preset.path}")
    if preset.comment:
        st.markdown(preset.comment.replace("\n", "  \n"))
    with st.expander("YAML"):
        st.code(preset.text, language="yaml")
    left, right = st.columns(2)
    if left.button("Load into the wizard", key="pre:load", type="primary"):
        try:
            load_into_draft(preset)
        except ConfigError as err:
            left.error(f"This preset does not load:\n\n{err}")
        else:
            left.success(f"The wizard's draft now holds preset '{preset.name}'.")
            left.page_link("pages/wizard.py", label="Open the wizard", icon=":material/edit:")
    right.download_button(
        "Export YAML",
        preset.text,
        file_name=f"{preset.name}.yaml",
        mime="application/yaml",
        key="pre:export",
    )


FLASH = "pre:flash"


def _flash(kind: str, text: str) -> None:
    st.session_state[FLASH] = (kind, text)


def render_flash() -> None:
    """What the last save/import did (set in a callback, so the list above already shows it)."""
    found = st.session_state.pop(FLASH, None)
    if found:
        getattr(st, found[0])(found[1])


def _save_draft(settings: StudioSettings) -> None:
    name = st.session_state.get("pre:save_name") or "my_preset"
    try:
        path = save_preset(settings, name, draft_to_yaml(draft()), "the wizard's draft")
    except ConfigError as err:
        _flash("error", f"The draft has problems; fix them in the wizard first:\n\n{err}")
    else:
        _flash("success", f"Saved {path.name}.")


def render_save_draft(settings: StudioSettings) -> None:
    st.text_input("Name", value=str(draft().get("name") or "my_preset"), key="pre:save_name")
    st.button(
        "Save the current draft as a preset",
        key="pre:save",
        on_click=_save_draft,
        args=(settings,),
    )


def _import(settings: StudioSettings) -> None:
    upload = st.session_state.get("pre:upload")
    text = upload.getvalue().decode("utf-8") if upload is not None else ""
    text = text or st.session_state.get("pre:paste", "")
    if not text.strip():
        _flash("warning", "Choose a file or paste YAML first.")
        return
    name = st.session_state.get("pre:import_name") or "imported"
    try:
        path = save_preset(settings, name, text, "imported")
    except ConfigError as err:
        _flash("error", f"Not a valid config:\n\n{err}")
    else:
        _flash("success", f"Imported as {path.name}.")


def render_import(settings: StudioSettings) -> None:
    upload = st.file_uploader("A preset YAML file", type=["yaml", "yml"], key="pre:upload")
    st.text_area("…or paste YAML", key="pre:paste", height=150)
    default = Path(upload.name).stem if upload is not None else "imported"
    st.text_input("Save as", value=default, key="pre:import_name")
    st.button("Import", key="pre:import", on_click=_import, args=(settings,))


def _import_other() -> None:
    upload = st.session_state.get("pre:other_upload")
    text = upload.getvalue().decode("utf-8") if upload is not None else ""
    name = upload.name if upload is not None else ""
    text = text or st.session_state.get("pre:other_paste", "")
    if not text.strip():
        _flash("warning", "Choose a file or paste a config first.")
        return
    try:
        imported = import_text(text, name)
    except (ValueError, ConfigError) as err:
        _flash("error", f"Could not import: {err}")
        return
    replace_draft(imported.config.model_dump(mode="json"))
    lines = [f"- `{u.key}` = `{u.value!r}`: {u.reason}" for u in imported.unmapped]
    _flash(
        "success",
        f"Imported a {imported.kind} config into the wizard's draft: "
        f"{len(imported.mapped)} setting(s) mapped, {len(imported.unmapped)} not mapped"
        + (":\n\n" + "\n".join(lines) if lines else "."),
    )


def render_import_other() -> None:
    st.file_uploader(
        "An ai-toolkit job YAML, sd-scripts TOML or kohya_ss GUI JSON",
        type=["yaml", "yml", "toml", "json"],
        key="pre:other_upload",
    )
    st.text_area("…or paste it", key="pre:other_paste", height=150)
    st.button("Import as the wizard's draft", key="pre:other_import", on_click=_import_other)
