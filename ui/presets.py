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
from trainer.config.io import HEADER, ConfigError, loads_config
from trainer.files import atomic_write_text
from trainer.settings import StudioSettings
from ui.preflight import recommend_again_if_kept
from ui.state import draft, draft_to_yaml, replace_draft
from ui.text import code, plain

REPO = Path(__file__).resolve().parent.parent
BUILT_IN = REPO / "presets"
SOURCES_DOC = REPO / "docs" / "sources.md"  # where every cited figure and prior is written down
CITATION = re.compile(r"docs/sources\.md#([A-Za-z0-9_-]+)")


# The lines every saved config starts with (trainer.config.io.dump_yaml): instructions for the
# file, not a description of the preset ("Check it with: python -m trainer validate THIS_FILE"
# read as the preset's purpose once a saved draft or run config followed the preset's own line).
_GENERATED = frozenset(HEADER.splitlines())


def leading_comment(text: str) -> list[str]:
    """The ``#`` lines a preset starts with, without the lines every saved config starts with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.rstrip() not in _GENERATED:
            lines.append(line)
    return lines


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
        return "\n".join(line.lstrip("#").strip() for line in leading_comment(self.text))

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source})"


@dataclass(frozen=True)
class SourceSection:
    """One heading of docs/sources.md and the text under it (up to the next heading)."""

    anchor: str
    title: str
    body: str

    @property
    def for_readers(self) -> str:
        """The body without its "Used by: <code files>" paragraphs (notes for developers)."""
        paragraphs = re.split(r"\n\s*\n", self.body)
        return "\n\n".join(p for p in paragraphs if not p.startswith("Used by:"))


def heading_anchor(title: str) -> str:
    """The anchor GitHub gives a heading (what ``docs/sources.md#<anchor>`` citations use)."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def source_sections(text: str | None = None) -> dict[str, SourceSection]:
    """docs/sources.md by anchor; a repeated heading gets GitHub's -1, -2... suffix."""
    text = SOURCES_DOC.read_text(encoding="utf-8") if text is None else text
    sections: dict[str, SourceSection] = {}
    seen: dict[str, int] = {}
    title, anchor, body, in_code = "", "", [], False
    for line in [*text.splitlines(), "# end"]:
        in_code = not in_code if line.startswith("```") else in_code
        match = None if in_code else re.match(r"#{1,6} +(.+?) *#* *$", line)
        if not match:
            body.append(line)
            continue
        if anchor:
            sections[anchor] = SourceSection(anchor, title, "\n".join(body).strip())
        title, body = match.group(1), []
        base = heading_anchor(title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchor = base if count == 0 else f"{base}-{count}"
    return sections


@dataclass(frozen=True)
class CommentParts:
    """A preset's leading comment, split for the page: what it is for, its reasons, its notes."""

    intro: str  # what the preset is for
    sources: str  # the "Sources: ..." sentence
    reasons: list[str]  # the "- value: why" bullets, continuation lines joined
    notes: str  # lines after the reasons ("Change datasets[0].folder_path ... before training.")


def comment_parts(text: str) -> CommentParts:
    """Split the leading ``#`` lines: a bullet's continuation lines are indented ("#   ...")."""
    intro: list[str] = []
    sources: list[str] = []
    reasons: list[str] = []
    notes: list[str] = []
    for raw in leading_comment(text):
        line = raw[1:].removeprefix(" ")
        if line.startswith("- "):
            reasons.append(line[2:].strip())
        elif line.startswith(" ") and reasons and not notes:
            reasons[-1] += " " + line.strip()
        elif reasons:
            notes.append(line.strip())
        elif sources or line.startswith("Sources:"):
            sources.append(line.strip())
        else:
            intro.append(line.strip())
    return CommentParts(" ".join(intro), " ".join(sources), reasons, " ".join(notes))


def link_citations(text: str, sections: dict[str, SourceSection]) -> tuple[str, list[str]]:
    """``text`` as markdown that shows it as written (``ui.text.plain``: a user preset's comment
    is anyone's text), except each ``docs/sources.md#<anchor>``, which becomes a link to that
    section shown on the page; returns the markdown and the cited anchors in order
    (tests/test_docs_sources.py keeps every anchor real)."""
    cited: list[str] = []
    parts: list[str] = []
    start = 0
    for match in CITATION.finditer(text):
        section = sections.get(match.group(1))
        if section is None:
            continue
        if section.anchor not in cited:
            cited.append(section.anchor)
        parts += [plain(text[start : match.start()]), f"[{section.title}](#{section.anchor})"]
        start = match.end()
    return "".join([*parts, plain(text[start:])]), cited


def render_comment(preset: Preset) -> None:
    """What the preset is for, then its reasons and the docs/sources.md sections they cite."""
    parts = comment_parts(preset.text)
    if parts.intro:
        st.markdown(plain(parts.intro))
    if parts.notes:
        st.caption(plain(parts.notes))
    if not parts.reasons and not parts.sources:
        return
    sections = source_sections()
    linked, cited = link_citations(parts.sources, sections)
    for reason in parts.reasons:
        text, found = link_citations(reason, sections)
        linked += f"\n- {text}"
        cited += [anchor for anchor in found if anchor not in cited]
    count = f"{len(parts.reasons)} reasons, {len(cited)} sources"
    with st.expander(f"Why these values ({count})"):
        st.markdown(linked)
        if not cited:
            return
        st.caption(
            f"The cited sections of `docs/sources.md` (in the studio's folder: {SOURCES_DOC})"
        )
        for anchor in cited:
            st.subheader(sections[anchor].title, anchor=anchor)
            st.markdown(sections[anchor].for_readers)


def list_presets(settings: StudioSettings) -> list[Preset]:
    """User presets first (newest choices), then the built-in demos (they run on any machine,
    offline: the first choice a newcomer sees works), then the other built-ins."""
    user = sorted(settings.presets_dir.glob("*.yaml")) if settings.presets_dir.is_dir() else []
    built_in = sorted(BUILT_IN.glob("*.yaml"), key=_newcomer_order)
    return [Preset(p.stem, "user", p) for p in user] + [
        Preset(p.stem, "built-in", p) for p in built_in
    ]


def _newcomer_order(path: Path) -> tuple[bool, bool, str]:
    """The demos first, the wizard's own model (SD1.5's demo) first of them."""
    return (not path.stem.startswith("demo_"), path.stem != "demo_sd15", path.stem)


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
    recommend_again_if_kept()  # those for the old draft (the demo's 64 px, 30 steps) mislead


def render_browser(settings: StudioSettings) -> None:
    presets = list_presets(settings)
    by_label = {p.label: p for p in presets}
    choice = st.selectbox("Preset", list(by_label), key="pre:choice")
    if choice is None:
        return
    preset = by_label[choice]
    st.caption(f"Source: {preset.source} · {code(preset.path)}")
    render_comment(preset)
    with st.expander("YAML"):
        st.code(preset.text, language="yaml")
    left, right = st.columns(2)
    if left.button("Load into the wizard", key="pre:load", type="primary"):
        try:
            load_into_draft(preset)
        except ConfigError as err:
            left.error(f"This preset does not load:\n\n{plain(err)}")
        else:
            left.success(
                f"The wizard's draft now holds preset {code(preset.name)}. Your previous draft "
                "comes back with **Undo last change** in the wizard."
            )
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
        _flash("error", f"The draft has problems; fix them in the wizard first:\n\n{plain(err)}")
    else:
        _flash("success", f"Saved {code(path.name)}.")


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
        _flash("error", f"Not a valid config:\n\n{plain(err)}")
    else:
        _flash("success", f"Imported as {code(path.name)}.")


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
        _flash("error", f"Could not import: {plain(err)}")
        return
    replace_draft(imported.config.model_dump(mode="json"))
    lines = [
        f"- {code(u.key)} = {code(repr(u.value))}: {plain(u.reason)}" for u in imported.unmapped
    ]
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
