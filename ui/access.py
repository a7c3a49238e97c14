"""What the studio's pages may read from what a user types, judged by the address it is served on.

Served on this machine only (``server.address`` 127.0.0.1, ::1 or localhost) every folder may be
read, as ever. Served beyond it (every interface, a LAN address, or no address set), a
dataset folder, a folder to import, a LoRA path or a captioner folder must lie under the allowed
roots (``StudioSettings.read_roots``: the studio home and STUDIO_ALLOWED_FOLDERS), checked by
``trainer.files.readable_path``; otherwise anyone who can open the page could list and copy the
server's files. The address is the one Streamlit actually serves, not STUDIO_HOST (which only
``make run`` passes on).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from trainer.files import ReadRefused, readable_path
from trainer.settings import StudioSettings, is_loopback, load_settings
from ui.text import plain

__all__ = ["ReadRefused", "bind_address", "checked_path", "read_roots", "served_beyond_loopback"]


def bind_address() -> str:
    """The address this Streamlit server listens on ("" when unset: every interface)."""
    return str(st.get_option("server.address") or "")


def served_beyond_loopback() -> bool:
    return not is_loopback(bind_address())


def read_roots(settings: StudioSettings | None = None) -> list[Path] | None:
    """The folders reads must stay inside now; None while the studio is served on loopback."""
    if not served_beyond_loopback():
        return None
    return (settings or load_settings()).read_roots


def checked_path(text: str | Path, settings: StudioSettings | None = None) -> Path | None:
    """``text`` as a path the page may read, or None after an error saying where it may read."""
    try:
        return readable_path(text, roots=read_roots(settings))
    except ReadRefused as err:
        st.error(plain(err), icon=":material/block:")
        return None
