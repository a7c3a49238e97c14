"""The training queue: runs waiting for the device, kept in the studio home.

``<home>/queue/queue.json`` holds the entries in queue order. Every change is a read-modify-write
under a file lock (``queue.lock``), so the studio's sessions, a second studio process and the
queue runner (``trainer.jobs.queue_runner``) never clobber each other's changes, and every write
is atomic (``trainer.files``): a crash mid-write leaves the previous queue whole.

An entry is ``queued`` until the runner takes it (``running``, then ``run_id`` names its MLflow
run), and ends ``done`` (the run finished), ``failed`` (it failed, or the launch was refused) or
``cancelled`` (cancelled before it started, or stopped while it ran). Only queued entries move:
``move`` and ``start_now`` reorder them; the runner takes ``next_queued``.

No streamlit and no mlflow here: the studio's pages read the queue on every refresh.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from trainer.config.introspection import unresolved_autos
from trainer.config.io import config_from_dict, dump_yaml
from trainer.files import read_json, write_json
from trainer.jobs.control import stop
from trainer.jobs.folder import LaunchRefused
from trainer.jobs.launch import resolve_device

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig
    from trainer.settings import StudioSettings

log = logging.getLogger(__name__)

QUEUE_DIR = "queue"
QUEUE_FILE = "queue.json"
LOCK_FILE = "queue.lock"
FORMAT_VERSION = 1
KEEP_ENDED = 200  # ended entries kept in the file (the newest); queued and running are all kept

# Tags the queue puts on the MLflow runs it launches (besides the entry's own tags).
TAG_GROUP = "studio.group"  # the entry's group: a sweep's variants share one
TAG_QUEUE_ENTRY = "studio.queue_entry"  # the entry's id: finds the run of an interrupted launch
TAG_LAUNCHED_FROM = "studio.launched_from"  # "queue" (the review page's Launch says "studio")

State = Literal["queued", "running", "done", "failed", "cancelled"]
STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = frozenset({"queued", "running"})
ENDED_STATES = frozenset({"done", "failed", "cancelled"})
# What MLflow may take as a tag key (its own rule), at most 250 characters.
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,250}$")
MAX_TAG_VALUE = 5000


class QueueError(LaunchRefused):
    """A queue change that cannot happen (an unknown entry, one that has ended, a config that
    cannot launch); the message says why. A ``LaunchRefused``: the pages catch both alike."""


@dataclass
class QueueEntry:
    """One queued training run: its config, where it stands, and its MLflow run once launched."""

    id: str
    name: str  # the MLflow run name asked for (a taken name gets a number at launch)
    config: dict[str, Any]  # the config as JSON data (``training_config()`` validates it)
    group: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    state: State = "queued"
    run_id: str | None = None
    added_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    device: str = "cpu"  # the device it trains on: one training per device at a time
    run_name: str | None = None  # the name the run got at launch
    message: str = ""  # why it failed or was cancelled, in words
    outcome: str | None = None  # the MLflow run's end status (FINISHED, FAILED, KILLED)
    cancel_requested: bool = False  # cancel asked while it ran: the runner stopped it
    predicted_s_per_step: float | None = None  # the advisor's figures, handed to launch()
    predicted_total_s: float | None = None

    def training_config(self) -> TrainingConfig:
        """The entry's config, validated (``ConfigError`` when it no longer validates)."""
        return config_from_dict(dict(self.config))

    @property
    def config_yaml(self) -> str:
        """The entry's config as the commented YAML the studio saves."""
        return dump_yaml(self.training_config())

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueueEntry | None:
        """The entry in ``data``; None when it is not one (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        try:
            entry = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None
        if not isinstance(entry.id, str) or not isinstance(entry.config, dict):
            return None
        if entry.state not in STATES:
            return None
        entry.tags = {str(k): str(v) for k, v in dict(entry.tags or {}).items()}
        return entry


# ------------------------------------------------------------------------------- the file
def queue_dir(settings: StudioSettings) -> Path:
    """``<home>/queue``: the queue file, its lock, and the runner's files."""
    return settings.home / QUEUE_DIR


def queue_file(settings: StudioSettings) -> Path:
    return queue_dir(settings) / QUEUE_FILE


@contextlib.contextmanager
def _locked(settings: StudioSettings) -> Iterator[None]:
    """The queue's file lock, held across a read-modify-write (all processes on this machine)."""
    folder = queue_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(settings: StudioSettings) -> list[QueueEntry]:
    path = queue_file(settings)
    if not path.exists():
        return []
    data = read_json(path)
    if data is None:
        # Atomic writes never leave a torn file; this one was edited by hand or by another
        # program. Kept aside, not lost; the queue starts again empty.
        broken = path.with_name(f"queue.broken-{int(time.time())}.json")
        with contextlib.suppress(OSError):
            path.replace(broken)
        log.warning("the queue file could not be read; kept as %s", broken)
        return []
    found = [
        QueueEntry.from_json(item) for item in data.get("entries") or [] if isinstance(item, dict)
    ]
    return [entry for entry in found if entry is not None]


def _write(settings: StudioSettings, items: list[QueueEntry]) -> None:
    ended = [entry for entry in items if not entry.active]
    drop = {e.id for e in sorted(ended, key=lambda e: e.ended_at or 0)[:-KEEP_ENDED]}
    kept = [entry.to_json() for entry in items if entry.id not in drop]
    write_json(queue_file(settings), {"version": FORMAT_VERSION, "entries": kept}, fsync=True)


T = TypeVar("T")


def _change(settings: StudioSettings, change: Callable[[list[QueueEntry]], T]) -> T:
    """Run ``change`` on the entries under the lock and write them back (it edits in place)."""
    with _locked(settings):
        items = _read(settings)
        result = change(items)
        _write(settings, items)
        return result


def _find(items: list[QueueEntry], entry_id: str) -> QueueEntry:
    for entry in items:
        if entry.id == entry_id:
            return entry
    raise QueueError("That queue entry is gone (removed, or the queue was reset).")


# --------------------------------------------------------------------------------- reading
def entries(settings: StudioSettings) -> list[QueueEntry]:
    """All entries in queue order (ended ones where they stood when they ran)."""
    with _locked(settings):
        return _read(settings)


def get_entry(settings: StudioSettings, entry_id: str) -> QueueEntry | None:
    return next((entry for entry in entries(settings) if entry.id == entry_id), None)


def next_queued(settings: StudioSettings) -> QueueEntry | None:
    """The entry the runner takes next: the first queued one."""
    return next((entry for entry in entries(settings) if entry.state == "queued"), None)


def has_work(settings: StudioSettings) -> bool:
    """Whether any entry is queued or running (the runner has something to do or watch)."""
    if not queue_file(settings).exists():
        return False
    return any(entry.active for entry in entries(settings))


# --------------------------------------------------------------------------------- changing
def _checked_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in dict(tags or {}).items():
        if not isinstance(key, str) or not _TAG_KEY.match(key) or key.startswith("mlflow."):
            raise QueueError(
                f"{key!r} cannot be an MLflow tag: use letters, digits, '_', '-', '.', '/' and "
                "spaces (and not the 'mlflow.' prefix)"
            )
        clean[key] = str(value)[:MAX_TAG_VALUE]
    return clean


def enqueue(
    settings: StudioSettings,
    config: TrainingConfig,
    name: str,
    group: str | None = None,
    tags: dict[str, str] | None = None,
    *,
    predicted_s_per_step: float | None = None,
    predicted_total_s: float | None = None,
) -> QueueEntry:
    """Add a run of ``config`` at the end of the queue, to be named ``name`` in MLflow.

    ``group`` goes onto the run as the ``studio.group`` tag, ``tags`` as they are. Refused
    (``QueueError``) when the config could never launch: settings still 'auto', a bad tag key.
    Start the runner afterwards (``trainer.jobs.queue_runner.ensure_runner``).
    """
    autos = unresolved_autos(config)
    if autos:
        raise QueueError(
            "These settings are still 'auto' and need a value before queueing: "
            + ", ".join(autos)
            + ". Let the advisor decide them on the review page, or set them in the wizard."
        )
    clean_tags = _checked_tags(tags)
    name = (name or "").strip() or config.logging.run_name or config.name
    if name != (config.logging.run_name or config.name):
        config = config.model_copy(
            update={"logging": config.logging.model_copy(update={"run_name": name})}
        )
    entry = QueueEntry(
        id=uuid.uuid4().hex[:12],
        name=name,
        config=config.model_dump(mode="json"),
        group=(group or "").strip() or None,
        tags=clean_tags,
        added_at=time.time(),
        device=resolve_device(config.runtime.device),
        predicted_s_per_step=predicted_s_per_step,
        predicted_total_s=predicted_total_s,
    )

    def add(items: list[QueueEntry]) -> QueueEntry:
        items.append(entry)
        return entry

    return _change(settings, add)


def _queued_positions(items: list[QueueEntry]) -> list[int]:
    return [index for index, entry in enumerate(items) if entry.state == "queued"]


def _place(items: list[QueueEntry], entry: QueueEntry, queued_index: int) -> None:
    """Put queued ``entry`` at position ``queued_index`` among the queued entries."""
    items.remove(entry)
    positions = _queued_positions(items)
    at = positions[queued_index] if queued_index < len(positions) else len(items)
    items.insert(at, entry)


def move(settings: StudioSettings, entry_id: str, delta: int) -> QueueEntry:
    """Move a queued entry ``delta`` places among the queued ones (-1: one earlier)."""

    def shift(items: list[QueueEntry]) -> QueueEntry:
        entry = _find(items, entry_id)
        if entry.state != "queued":
            raise QueueError(f"'{entry.name}' is {entry.state}: only queued runs can move.")
        queued = [items[i] for i in _queued_positions(items)]
        index = min(max(queued.index(entry) + int(delta), 0), len(queued) - 1)
        _place(items, entry, index)
        return entry

    return _change(settings, shift)


def start_now(settings: StudioSettings, entry_id: str) -> QueueEntry:
    """Put a queued entry first in line: the runner takes it as soon as the device is free."""
    return _change(settings, lambda items: _first(items, entry_id))


def _first(items: list[QueueEntry], entry_id: str) -> QueueEntry:
    entry = _find(items, entry_id)
    if entry.state != "queued":
        raise QueueError(f"'{entry.name}' is {entry.state}: only a queued run can start next.")
    _place(items, entry, 0)
    return entry


def cancel(settings: StudioSettings, entry_id: str) -> QueueEntry:
    """Cancel an entry: a queued one never runs; a running one is stopped (its trainer saves a
    checkpoint and ends the run KILLED) and the runner marks it cancelled."""

    def mark(items: list[QueueEntry]) -> QueueEntry:
        entry = _find(items, entry_id)
        if entry.state == "queued":
            entry.state, entry.ended_at = "cancelled", time.time()
            entry.message = "Cancelled before it started."
        elif entry.state == "running":
            entry.cancel_requested = True
        else:
            raise QueueError(f"'{entry.name}' has already ended ({entry.state}).")
        return entry

    entry = _change(settings, mark)
    if entry.state == "running" and entry.run_id:
        stop(settings, entry.run_id)  # the runner sees the run end and records it
    return entry


def update_entry(settings: StudioSettings, entry_id: str, **changes: Any) -> QueueEntry:
    """Set fields of one entry under the lock (the runner records starts and ends with it)."""
    known = {f.name for f in fields(QueueEntry)} - {"id"}
    unknown = set(changes) - known
    if unknown:
        raise TypeError(f"not fields of a queue entry: {sorted(unknown)}")

    def apply(items: list[QueueEntry]) -> QueueEntry:
        entry = _find(items, entry_id)
        for key, value in changes.items():
            setattr(entry, key, value)
        return entry

    return _change(settings, apply)


def claim_next(settings: StudioSettings) -> QueueEntry | None:
    """The first queued entry, marked running (started now, no run yet) in the same locked
    change, so a cancel or a second runner cannot take it meanwhile; None when none is queued."""

    def claim(items: list[QueueEntry]) -> QueueEntry | None:
        entry = next((e for e in items if e.state == "queued"), None)
        if entry is not None:
            entry.state, entry.started_at, entry.run_id = "running", time.time(), None
        return entry

    return _change(settings, claim)


def run_tags(entry: QueueEntry) -> dict[str, str]:
    """The tags ``launch`` puts on the entry's MLflow run: its own, then the queue's."""
    tags = {**entry.tags, TAG_QUEUE_ENTRY: entry.id, TAG_LAUNCHED_FROM: "queue"}
    if entry.group:
        tags[TAG_GROUP] = entry.group
    return tags
