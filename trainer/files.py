"""Files that are never seen half-written: the one home for atomic writes and small JSON files.

Every write goes to a temporary file in the target's own folder and is moved into place with
``os.replace``, which is atomic on one filesystem: a reader (the monitor, a resuming trainer, a
second studio) sees the old file or the whole new one, never a torn one, and a crash or a full disk
leaves the old file intact. ``fsync`` makes the new content durable before the rename; it costs a
few milliseconds, so files rewritten every training step (progress) skip it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it goes.

    For writers that need a file name rather than a handle (``safetensors.save_file``,
    ``torch.save``, ``Image.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically (see the module docstring)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        if fsync:
            os.fsync(out.fileno())
    return path


def atomic_write_text(path: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: str | Path, data: Mapping[str, Any], *, fsync: bool = False) -> Path:
    """Replace ``path`` with ``data`` as JSON (values JSON cannot hold are written as text)."""
    return atomic_write_text(path, json.dumps(data, default=str), fsync=fsync)


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
