"""The draft config in session state: initialised in one place, autosaved, restored, validated.

The draft is a plain dict (``TrainingConfig.model_dump(mode="json")`` shape), so it can hold an
intermediate state that does not validate yet: the wizard is forgiving, it shows the problem next
to the field instead of refusing the keystroke. ``validated()`` turns it into a ``TrainingConfig``
(or the list of problems) once per change.

Everything lives under a few session keys; ``init_state()`` is called by the router on every run
and does work only on a session's first run: it restores ``<studio home>/drafts/current.yaml``
(and its ``current.meta.json``: preflight answers, recommendations, wizard step), so a browser
refresh, which is a new session, loses nothing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from advisor.draft import DATASET_SOURCE
from trainer.config.io import ConfigError, Problem, config_from_dict, dump_yaml, parse_yaml
from trainer.config.paths import get_path, set_path
from trainer.config.schema import TrainingConfig
from trainer.demo.dataset import TRIGGER_WORD as DEMO_TRIGGER_WORD
from trainer.files import atomic_write_text
from trainer.settings import load_settings

DRAFT = "draft"  # dict: the config being edited
META = "draft_meta"  # dict: preflight answers, profile overrides, recommendations, step
REV = "draft_rev"  # int: bumped on every change (cache key for validation)
HISTORY = "draft_history"  # list of earlier drafts, for undo
NOTICE = "draft_notice"  # str | None: what happened on restore (shown once)
_VALIDATED = "_draft_validated"
_DIR = "_draft_dir"
UNDO_DEPTH = 30

DEFAULT_META: dict[str, Any] = {
    "preflight_done": False,
    "intent": {"what": "other", "priority": "quality", "experience": "beginner"},
    "profile_overrides": {},
    "recommendations": {},  # path -> {"value", "reason", "source"}
    "step": "model",
    "show_expert": False,
    "last_concrete": {},  # path -> last non-"auto" value, for the Auto checkboxes
}


def default_draft() -> dict[str, Any]:
    return TrainingConfig().model_dump(mode="json")


# ----------------------------------------------------------------------------- dotted paths
def dget(data: Any, path: str, default: Any = None) -> Any:
    """The draft's value at ``path`` (trainer.config.paths), ``default`` where there is none."""
    return get_path(data, path, default)


def dset(data: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at ``path`` in the draft, creating missing parts (trainer.config.paths)."""
    set_path(data, path, value, create=True)


def normalised(value: Any) -> Any:
    """A value as the config means it: None-valued keys of dicts dropped, recursively."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def same_value(a: Any, b: Any) -> bool:
    """Whether two config values mean the same (16 == 16.0; a prompt with or without empty
    per-prompt overrides)."""
    return normalised(a) == normalised(b)


# ------------------------------------------------------------------------------------ files
def drafts_dir() -> Path:
    if _DIR not in st.session_state:
        st.session_state[_DIR] = str(load_settings().home / "drafts")
    return Path(st.session_state[_DIR])


def draft_file() -> Path:
    return drafts_dir() / "current.yaml"


def meta_file() -> Path:
    return drafts_dir() / "current.meta.json"


def draft_to_yaml(data: dict[str, Any]) -> str:
    """YAML of the draft: commented when it validates, a plain dump (still loadable) otherwise."""
    try:
        return dump_yaml(config_from_dict(data))
    except ConfigError:
        header = "# LoRA Studio draft (it has problems the wizard will show you)\n"
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def autosave() -> None:
    """Write the draft and its meta atomically; a failure to save never breaks the page."""
    try:
        atomic_write_text(draft_file(), draft_to_yaml(st.session_state[DRAFT]))
        atomic_write_text(meta_file(), json.dumps(st.session_state[META], indent=1, default=str))
    except OSError as err:
        st.session_state[NOTICE] = f"Could not autosave the draft ({err}); download it from Review."


def _restore() -> tuple[dict[str, Any], dict[str, Any], str | None]:
    meta = copy.deepcopy(DEFAULT_META)
    path = draft_file()
    if not path.exists():
        return default_draft(), meta, None
    try:
        data = parse_yaml(path.read_bytes(), str(path))
    except (OSError, ConfigError) as err:
        broken = path.with_suffix(".broken.yaml")
        path.replace(broken)
        return (
            default_draft(),
            meta,
            f"The autosaved draft could not be read ({err}); kept as {broken}.",
        )
    merged = default_draft()
    _merge(merged, data)
    try:
        saved_meta = json.loads(meta_file().read_text(encoding="utf-8"))
        meta.update({k: v for k, v in saved_meta.items() if k in DEFAULT_META})
    except (OSError, ValueError):
        pass
    return merged, meta, "Restored your draft from the last session."


def _merge(base: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif key == "datasets" and isinstance(value, list):
            template = base["datasets"][0]
            base[key] = []
            for item in value:
                entry = copy.deepcopy(template)
                if isinstance(item, dict):
                    _merge(entry, item)
                base[key].append(entry)
        else:
            base[key] = value


# ------------------------------------------------------------------------------------ state
def init_state() -> None:
    """Create the session's draft once (restored from the autosave when there is one)."""
    ss = st.session_state
    if DRAFT in ss:
        return
    data, meta, notice = _restore()
    ss[DRAFT], ss[META], ss[REV], ss[HISTORY], ss[NOTICE] = data, meta, 0, [], notice


def draft() -> dict[str, Any]:
    init_state()
    return st.session_state[DRAFT]


def meta() -> dict[str, Any]:
    init_state()
    return st.session_state[META]


def get_value(path: str, default: Any = None) -> Any:
    return dget(draft(), path, default)


def _changed() -> None:
    st.session_state[REV] = st.session_state.get(REV, 0) + 1
    autosave()


def _remember() -> None:
    history = st.session_state.setdefault(HISTORY, [])
    history.append(copy.deepcopy(st.session_state[DRAFT]))
    del history[:-UNDO_DEPTH]


def set_value(path: str, value: Any) -> None:
    if dget(draft(), path, object()) == value:
        return
    _remember()
    if value != "auto":
        meta()["last_concrete"][path] = value
    dset(st.session_state[DRAFT], path, value)
    _forget_folder_facts([path])
    _changed()


def _forget_folder_facts(paths: list[str]) -> None:
    """A dataset's folder changed: recommendations read from the old folder ("every caption
    already contains 'sks'") no longer hold, so they go (preflight adds new ones)."""
    recs = meta().get("recommendations") or {}
    for path in paths:
        if path.startswith("datasets.") and path.endswith(".folder_path"):
            prefix = path.removesuffix("folder_path")
            for key in [k for k, r in recs.items() if k.startswith(prefix)]:
                if (recs[key] or {}).get("source") == DATASET_SOURCE:
                    del recs[key]


def set_values(patch: dict[str, Any]) -> None:
    """Apply several changes as one (one undo step)."""
    data = draft()
    if all(dget(data, path, object()) == value for path, value in patch.items()):
        return
    _remember()
    for path, value in patch.items():
        dset(data, path, value)
    _forget_folder_facts(list(patch))
    _changed()


def replace_draft(data: dict[str, Any]) -> None:
    _remember()
    merged = default_draft()
    _merge(merged, data)
    st.session_state[DRAFT] = merged
    _changed()


def undo() -> bool:
    history = st.session_state.get(HISTORY) or []
    if not history:
        return False
    st.session_state[DRAFT] = history.pop()
    _changed()
    return True


def set_meta(key: str, value: Any) -> None:
    meta()[key] = value
    autosave()


def add_dataset() -> None:
    data = draft()
    entry = copy.deepcopy(data["datasets"][-1])
    entry.update(folder_path="", is_reg=False)
    _remember()
    data["datasets"].append(entry)
    _changed()


DEMO_DATASET = "demo:dataset"


def use_dataset_folder(index: int, folder_path: str, trigger_word: str | None = None) -> None:
    """Point dataset ``index`` at ``folder_path``, as one undo step. A ``trigger_word`` replaces
    the draft's; without one, leaving the demo dataset drops the demo's trigger word (it names
    the demo's shapes, not the user's subject), and any other trigger word stays."""
    at = f"datasets.{index}"
    leaves_demo = get_value(f"{at}.folder_path") == DEMO_DATASET and folder_path != DEMO_DATASET
    patch: dict[str, Any] = {f"{at}.folder_path": folder_path}
    if trigger_word:
        patch[f"{at}.trigger_word"] = trigger_word
    elif leaves_demo and get_value(f"{at}.trigger_word") == DEMO_TRIGGER_WORD:
        patch[f"{at}.trigger_word"] = None
    set_values(patch)


def remove_dataset(index: int) -> None:
    data = draft()
    if len(data["datasets"]) > 1:
        _remember()
        data["datasets"].pop(index)
        _changed()


# ------------------------------------------------------------------------------- validation
@dataclass
class Validated:
    config: TrainingConfig | None  # None while the draft has problems
    problems: list[Problem] = field(default_factory=list)
    last_valid: TrainingConfig | None = None  # the newest config that validated, for predictions

    def problems_at(self, path: str) -> list[Problem]:
        return [p for p in self.problems if p.path == path or p.path.startswith(path + ".")]


def validated() -> Validated:
    ss = st.session_state
    rev = ss.get(REV, 0)
    cached = ss.get(_VALIDATED)
    if cached and cached[0] == rev and cached[1] is st.session_state[DRAFT]:
        return cached[2]
    last_valid = cached[2].config or cached[2].last_valid if cached else None
    try:
        result = Validated(config_from_dict(draft()), [], None)
        result.last_valid = result.config
    except ConfigError as err:
        result = Validated(None, err.problems, last_valid)
    ss[_VALIDATED] = (rev, st.session_state[DRAFT], result)
    return result


_MODEL_SOURCE = "model_source_choice"


def choose_model_source(source: str) -> None:
    """Remember where the user said the base model comes from (demo, hub, folder, file)."""
    st.session_state[_MODEL_SOURCE] = source


def chosen_model_source() -> str | None:
    """The source picked on the Model step: it decides for a relative path that looks like a
    Hub id (``models/sd15``)."""
    return st.session_state.get(_MODEL_SOURCE)
