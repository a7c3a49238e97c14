"""Files that are never seen half-written: the one home for atomic writes and small JSON files.

Every write goes to a temporary file in the target's own folder and is moved into place with
``os.replace``, which is atomic on one filesystem: a reader (the monitor, a resuming trainer, a
second studio) sees the old file or the whole new one, never a torn one, and a crash or a full disk
leaves the old file intact. ``fsync`` makes the new content durable before the rename; it costs a
few milliseconds, so files rewritten every training step (progress) skip it.

``writable_target`` is the one check of where the studio may write what a user names (a folder
under the allowed roots and out of the folders kept out of reach, the right extension, no silent
replacement); ``readable_path`` the one
check of where it may read what a user names (a dataset folder, a folder to import, a LoRA path).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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


# ---------------------------------------------------------------------------------- write places

# Names a folder target must not end in: a folder called "x.safetensors" is a file name typed by
# mistake (or a format switched after the name was typed), not a place for a pipeline.
FILE_SUFFIXES = frozenset(
    {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".json", ".yaml", ".yml", ".txt"}
)


class WriteRefused(ValueError):
    """A place the studio will not write to; the message says why and what to do instead."""


class WouldReplace(WriteRefused):
    """The target exists: writing there needs an explicit confirm (a checkbox, ``--force``)."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} exists: saving would replace this {kind}")
        self.path = path
        self.kind = kind


@dataclass(frozen=True)
class KeepOut:
    """A folder inside the roots that no write lands in, whatever ``replace`` says: what others
    made lives there (a run's folder, MLflow's artifact store).

    ``what`` names it in the refusal ("a run's folder, which holds …: save under …"). ``open_in``
    names a folder inside each of its child folders that stays writable (``outputs`` opens
    ``<jobs>/<run>/outputs/``, the utilities' own place in a run's folder)."""

    folder: Path
    what: str
    open_in: str = ""

    def holds(self, target: Path) -> bool:
        """Whether the resolved ``target`` is in this folder and not in an open one."""
        folder = self.folder.expanduser().resolve()
        if not target.is_relative_to(folder):
            return False
        parts = target.relative_to(folder).parts
        return not (self.open_in and len(parts) >= 3 and parts[1] == self.open_in)


def writable_target(
    path: str | Path,
    *,
    suffix: str,
    roots: Sequence[str | Path] | None,
    replace: bool = False,
    keep_out: Sequence[KeepOut] = (),
) -> Path:
    """The one check of "may the studio write here": the resolved target, or ``WriteRefused``.

    ``suffix`` is the extension the target must have (".safetensors"), or "" for a folder (a
    diffusers LoRA, a merged pipeline). ``roots`` are the folders writes must stay inside (the
    studio home, plus output folders the user configured), resolved with symlinks, so neither
    ``..`` nor a link leads out; a relative path is taken under the first root. ``None`` allows
    any place (the command line writes where its user says). ``keep_out`` are folders inside the
    roots that are refused even with ``replace`` (compared resolved too). A target that exists
    raises ``WouldReplace`` unless ``replace``: a non-empty folder counts, an empty one does not.
    """
    text = str(path).strip()
    if not text:
        raise WriteRefused("no path given: type where to save")
    allowed = [Path(root).expanduser().resolve() for root in roots] if roots is not None else None
    try:
        target = Path(text).expanduser()
        if allowed and not target.is_absolute():
            target = allowed[0] / target
        target = target.resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a NUL byte, a symlink loop, no ~user
        raise WriteRefused(f"{text!r} is not a usable path ({err})") from err
    if allowed is not None and not any(
        target != root and target.is_relative_to(root) for root in allowed
    ):
        where = " or ".join(str(root) for root in allowed) or "nowhere"
        raise WriteRefused(
            f"{target} is outside the folders the studio saves to: save under {where}"
        )
    for kept in keep_out:
        if kept.holds(target):
            raise WriteRefused(f"{target} is inside {kept.what}")
    kind = "folder" if not suffix else "file"
    if suffix and target.suffix.lower() != suffix.lower():
        raise WriteRefused(f"{target.name} does not end in {suffix}: name the file *{suffix}")
    if not suffix and target.suffix.lower() in FILE_SUFFIXES:
        raise WriteRefused(
            f"{target.name} is a file name, but this saves a folder: drop the extension"
        )
    if suffix and target.is_dir():
        raise WriteRefused(f"{target} is a folder: give a file name ending in {suffix}")
    if not suffix and target.exists() and not target.is_dir():
        raise WriteRefused(f"{target} is a file: give a folder name")
    if exists_with_content(target) and not replace:
        raise WouldReplace(target, kind)
    return target


def exists_with_content(path: Path) -> bool:
    """A file, or a folder with anything in it (one that cannot be listed counts as full)."""
    if not path.is_dir():
        return path.exists()
    try:
        return any(path.iterdir())
    except OSError:
        return True


# ----------------------------------------------------------------------------------- read places


class ReadRefused(ValueError):
    """A place the studio will not read from for its user; the message names where it may."""


def readable_path(path: str | Path, *, roots: Sequence[str | Path] | None) -> Path:
    """The one check of "may the studio read what a user names here": the path, or
    ``ReadRefused``.

    ``roots`` are the folders reads must stay inside (the studio home, plus folders the user
    allowed), compared resolved, so neither ``..`` nor a link leads out; a root itself may be
    read. The refusal comes before anything is looked up about the path and quotes it as typed,
    so it never tells whether something exists outside the roots. ``None`` allows any place (the
    studio served on this machine only, the command line): the path is returned as typed, with
    ``~`` expanded. A relative path is taken from the current folder, as the reader takes it.
    """
    text = str(path).strip()
    if not text:
        raise ReadRefused("no path given: type a folder or a file")
    try:
        typed = Path(text).expanduser()
        if roots is None:
            return typed
        target = typed.resolve()
    except (OSError, RuntimeError, ValueError) as err:  # a NUL byte, a symlink loop, no ~user
        raise ReadRefused(f"{text!r} is not a usable path ({err})") from err
    allowed = [Path(root).expanduser().resolve() for root in roots]
    if not any(target.is_relative_to(root) for root in allowed):
        where = " or ".join(str(root) for root in allowed) or "nowhere"
        raise ReadRefused(
            f"{text} is outside the folders this studio may read while it is served to the "
            f"network: use a folder under {where} (STUDIO_ALLOWED_FOLDERS adds folders)"
        )
    return target
