"""The training queue's file: enqueue, reorder, cancel, start now; several writers at once; a
crash mid-write (``trainer.jobs.queue``). No trainer runs here (``test_queue_runner.py`` does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.config.io import load_config
from trainer.jobs import queue
from trainer.jobs.queue import (
    QueueError,
    cancel,
    claim_next,
    enqueue,
    entries,
    has_work,
    move,
    next_queued,
    queue_file,
    run_tags,
    start_now,
    update_entry,
)
from trainer.settings import StudioSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"


@pytest.fixture()
def settings(tmp_path: Path) -> StudioSettings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture(scope="module")
def demo_cfg():
    return load_config(DEMO, ["train.steps=3"])


def names(settings: StudioSettings, state: str | None = None) -> list[str]:
    return [e.name for e in entries(settings) if state is None or e.state == state]


def test_enqueue_keeps_the_config_group_and_tags(settings: StudioSettings, demo_cfg) -> None:
    assert entries(settings) == [] and next_queued(settings) is None and not has_work(settings)
    entry = enqueue(settings, demo_cfg, "first", group="lr-sweep", tags={"studio.axis": "lr"})
    assert entry.state == "queued" and entry.run_id is None and entry.device == "cpu"
    assert abs(entry.added_at - time.time()) < 60
    assert entry.started_at is None and entry.ended_at is None
    [stored] = entries(settings)
    assert stored == entry and has_work(settings)
    # The config round-trips, named as asked for MLflow, every other setting unchanged.
    cfg = stored.training_config()
    assert cfg.logging.run_name == "first"
    assert cfg.model_copy(update={"logging": demo_cfg.logging}) == demo_cfg
    assert "run_name: first" in stored.config_yaml
    assert run_tags(stored) == {
        "studio.axis": "lr",
        "studio.group": "lr-sweep",
        "studio.queue_entry": entry.id,
        "studio.launched_from": "queue",
    }
    # The file is plain JSON in the home's queue folder.
    data = json.loads(queue_file(settings).read_text())
    assert queue_file(settings) == settings.home / "queue" / "queue.json"
    assert [item["id"] for item in data["entries"]] == [entry.id]


def test_an_empty_name_is_the_configs_and_no_group_tag(settings, demo_cfg) -> None:
    entry = enqueue(settings, demo_cfg, "  ")
    assert entry.name == "demo_sd15" and entry.group is None
    assert entry.training_config().logging.run_name is None
    assert "studio.group" not in run_tags(entry)


def test_what_could_never_launch_is_refused_at_once(settings, demo_cfg) -> None:
    with pytest.raises(QueueError, match=r"still 'auto'.*train\.steps"):
        enqueue(settings, load_config(DEMO, ["train.steps=auto"]), "x")
    for bad in ("a=b", "mlflow.runName", "", "x" * 251):
        with pytest.raises(QueueError, match="cannot be an MLflow tag"):
            enqueue(settings, demo_cfg, "x", tags={bad: "1"})
    assert entries(settings) == []


def test_move_reorders_only_queued_entries(settings, demo_cfg) -> None:
    a, b, c, d = (enqueue(settings, demo_cfg, n) for n in "abcd")
    move(settings, c.id, -1)
    assert names(settings) == ["a", "c", "b", "d"]
    move(settings, a.id, +2)
    assert names(settings) == ["c", "b", "a", "d"]
    move(settings, d.id, -10)  # clamped at the front
    move(settings, b.id, +10)  # and at the back
    assert names(settings) == ["d", "c", "a", "b"]
    # A running entry stays put; the queued ones move around it.
    assert claim_next(settings).name == "d"
    move(settings, b.id, -3)
    assert names(settings) == ["d", "b", "c", "a"] and names(settings, "queued") == ["b", "c", "a"]
    with pytest.raises(QueueError, match="only queued runs can move"):
        move(settings, d.id, 1)
    with pytest.raises(QueueError, match="gone"):
        move(settings, "nope", 1)


def test_start_now_puts_an_entry_first_in_line(settings, demo_cfg) -> None:
    _, b, c = (enqueue(settings, demo_cfg, n) for n in "abc")
    start_now(settings, c.id)
    assert next_queued(settings).id == c.id and names(settings) == ["c", "a", "b"]
    claim_next(settings)  # c runs
    start_now(settings, b.id)
    assert names(settings, "queued") == ["b", "a"] and next_queued(settings).id == b.id
    with pytest.raises(QueueError, match="only a queued run"):
        start_now(settings, c.id)


def test_cancel_a_queued_entry_and_one_that_ended(settings, demo_cfg) -> None:
    a, b = enqueue(settings, demo_cfg, "a"), enqueue(settings, demo_cfg, "b")
    cancelled = cancel(settings, a.id)
    assert cancelled.state == "cancelled" and cancelled.ended_at is not None
    assert next_queued(settings).id == b.id
    assert [e.state for e in entries(settings)] == ["cancelled", "queued"]
    with pytest.raises(QueueError, match="already ended"):
        cancel(settings, a.id)
    cancel(settings, b.id)
    assert next_queued(settings) is None and not has_work(settings)


def test_cancel_a_running_entry_asks_the_runner_to_stop_it(settings, demo_cfg) -> None:
    entry = enqueue(settings, demo_cfg, "a")
    claim_next(settings)
    marked = cancel(settings, entry.id)
    # No trainer to signal (no run yet): the runner stops it once launched, then records it.
    assert marked.state == "running" and marked.cancel_requested
    assert has_work(settings)


def test_claim_next_takes_each_entry_once(settings, demo_cfg) -> None:
    a, b = enqueue(settings, demo_cfg, "a"), enqueue(settings, demo_cfg, "b")
    first = claim_next(settings)
    assert first.id == a.id and first.state == "running" and first.started_at is not None
    assert claim_next(settings).id == b.id and claim_next(settings) is None
    update_entry(settings, a.id, state="done", run_id="r1", ended_at=time.time())
    assert [(e.state, e.run_id) for e in entries(settings)] == [("done", "r1"), ("running", None)]
    with pytest.raises(TypeError, match="not fields"):
        update_entry(settings, a.id, colour="red")


def test_old_ended_entries_are_pruned_active_ones_never(settings, demo_cfg, monkeypatch) -> None:
    monkeypatch.setattr(queue, "KEEP_ENDED", 2)
    made = [enqueue(settings, demo_cfg, f"e{i}") for i in range(5)]
    for i, entry in enumerate(made[:4]):
        update_entry(settings, entry.id, state="done", ended_at=1000.0 + i)
    assert names(settings) == ["e2", "e3", "e4"]


# A writer process, as the studio's sessions and the runner are: enqueues COUNT entries.
WRITER = """
import sys
from pathlib import Path
from trainer.config.io import load_config
from trainer.jobs.queue import enqueue
from trainer.settings import load_settings

home, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = load_settings(home=Path(home))
cfg = load_config(sys.argv[4], ["train.steps=3"])
for index in range(count):
    enqueue(settings, cfg, f"{prefix}{index}")
"""


def test_concurrent_writers_lose_no_entry(settings, demo_cfg) -> None:
    enqueue(settings, demo_cfg, "before")
    writers, each = 4, 8
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(settings.home), f"w{w}_", str(each), str(DEMO)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    # Meanwhile this process reorders: its changes must not be lost either.
    for _ in range(10):
        first = next_queued(settings)
        move(settings, first.id, +1)
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    found = names(settings)
    expected = {"before"} | {f"w{w}_{i}" for w in range(writers) for i in range(each)}
    assert len(found) == len(expected) and set(found) == expected
    for w in range(writers):  # each writer's entries in the order it added them
        mine = [n for n in found if n.startswith(f"w{w}_")]
        assert mine == [f"w{w}_{i}" for i in range(each)]


def test_a_crash_mid_write_leaves_the_previous_queue(settings, demo_cfg, monkeypatch) -> None:
    a = enqueue(settings, demo_cfg, "a")
    before = queue_file(settings).read_bytes()

    def crash(*args, **kwargs):  # the process dies between writing the new file and renaming
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        enqueue(settings, demo_cfg, "b")
    with pytest.raises(KeyboardInterrupt):
        cancel(settings, a.id)
    monkeypatch.undo()
    assert queue_file(settings).read_bytes() == before
    assert [(e.name, e.state) for e in entries(settings)] == [("a", "queued")]
    assert not [p for p in queue_file(settings).parent.iterdir() if p.name.endswith(".tmp")]
    # and the lock was released: the next change goes through
    enqueue(settings, demo_cfg, "c")
    assert names(settings) == ["a", "c"]


def test_a_torn_or_foreign_file_is_kept_aside_not_trusted(settings, demo_cfg) -> None:
    enqueue(settings, demo_cfg, "a")
    queue_file(settings).write_text('{"entries": [{"id": "x", "na')  # not written by the queue
    assert entries(settings) == []
    kept = list(queue_file(settings).parent.glob("queue.broken-*.json"))
    assert len(kept) == 1 and kept[0].read_text().startswith('{"entries"')
    enqueue(settings, demo_cfg, "b")
    assert names(settings) == ["b"]
