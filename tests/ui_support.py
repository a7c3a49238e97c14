"""Helpers for the studio's AppTest tests: a fresh app on a temp studio home, widgets by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def new_app() -> AppTest:
    return AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)


def open_page(page: str) -> AppTest:
    at = new_app()
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def all_nodes(at: AppTest) -> list[Any]:
    found: list[Any] = []

    def walk(node: Any) -> None:
        found.append(node)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return found


def keys(at: AppTest) -> set[str]:
    return {node.key for node in all_nodes(at) if getattr(node, "key", None)}


def widget(at: AppTest, key: str) -> Any:
    for node in all_nodes(at):
        if getattr(node, "key", None) == key and hasattr(node, "set_value"):
            return node
    raise KeyError(f"no widget with key {key!r}; have: {sorted(k for k in keys(at) if ':' in k)}")


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def draft(at: AppTest) -> dict[str, Any]:
    return at.session_state["draft"]


def run_ok(target: AppTest) -> AppTest:
    """Run the app and fail on any exception it raised."""
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def go_to_step(at: AppTest, step: str) -> AppTest:
    at.selectbox(key="wiz:step").set_value(step).run()
    assert not at.exception, [e.value for e in at.exception]
    return at
