"""``RunCache``: a store served by ``mlflow server`` is read in full once, then only the
runs that may have changed are read again. A real SQLite store forced through the
``MlflowClient`` path (what every non-SQLite store takes), with ``search_runs`` / ``get_run``
counted; runs are made by the tracking module (``create_run`` + ``MlflowTracker``)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from trainer.config.schema import TrainingConfig
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.layout import TAG_RATING
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.ratings import sample_ratings, set_note, set_rating, set_sample_rating
from trainer.tracking.records import RunRecord, list_all_runs
from trainer.tracking.run_cache import RunCache


def _make_run(settings: StudioSettings, i: int, status: str | None = "FINISHED") -> str:
    cfg = TrainingConfig.model_validate(
        {
            "name": f"r{i:02d}",
            "intent": ("style", "character", "object")[i % 3],
            "model": {"arch": "sd15", "name_or_path": "demo:sd15"},
            "train": {"lr": 1e-4 * (1 + i), "steps": 5},
            "logging": {"log_system_metrics": False},
        }
    )
    run_id = create_run(settings, cfg, {"team": "ab"[i % 2]})
    tracker = MlflowTracker(settings.tracking_uri, background=False)
    tracker.start(cfg, run_id=run_id)
    for step in range(3):
        tracker.log_metrics({"loss": 1 / (1 + step) + i, "lr": cfg.train.lr}, step)
    if status is not None:
        tracker.end(status)
    return run_id


class Counter:
    """Counts ``MlflowClient.search_runs`` calls (with their filters), the runs they return and
    ``get_run`` calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.filters: list[str] = []
        self.runs = 0
        self.get_run = 0
        search, get = MlflowClient.search_runs, MlflowClient.get_run

        def counted_search(client, *args, **kwargs):
            found = search(client, *args, **kwargs)
            self.filters.append(kwargs.get("filter_string", ""))
            self.runs += len(found)
            return found

        def counted_get(client, *args, **kwargs):
            self.get_run += 1
            return get(client, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, "search_runs", counted_search)
        monkeypatch.setattr(MlflowClient, "get_run", counted_get)

    def reset(self) -> None:
        self.filters, self.runs, self.get_run = [], 0, 0


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings(home=home, tracking_uri_override=None)
    made = [_make_run(settings, i) for i in range(4)]
    return {"settings": settings, "uri": settings.tracking_uri, "made": made}


def _ids(records: list[RunRecord]) -> list[str]:
    return [r.run_id for r in records]


def test_second_refresh_reads_no_run_and_a_new_run_appears(store: dict, monkeypatch) -> None:
    uri = store["uri"]
    cache = RunCache(uri, bulk_sql=False)
    count = Counter(monkeypatch)
    first = cache.runs()
    assert cache.last.mode == "full" and count.runs == 4 and count.filters == [""]
    assert _ids(first) == store["made"][::-1]  # newest first
    assert first == list_all_runs(uri)  # the same records as the bulk SQL read

    count.reset()
    again = cache.runs()
    assert cache.last.mode == "incremental"
    assert count.runs == 0 and cache.last.fetched == 0  # nothing new, nothing running
    assert len(count.filters) == 2 and count.get_run == 0
    assert count.filters[0].startswith("attributes.start_time > ")
    assert count.filters[1] == "attributes.status = 'RUNNING'"
    assert all(a is b for a, b in zip(again, first, strict=True))  # the same objects, kept

    new = _make_run(store["settings"], 9)
    count.reset()
    after = cache.runs()
    assert _ids(after) == [new, *store["made"][::-1]]
    assert count.runs == 1 and cache.last.fetched == 1
    assert after[0].name == "r09" and after[0].status == "FINISHED"
    assert after[0].metrics["loss"] == pytest.approx(1 / 3 + 9)


def test_a_rating_or_note_rereads_only_that_run(store: dict, monkeypatch) -> None:
    uri, (a, b, *_) = store["uri"], store["made"]
    cache = RunCache(uri, bulk_sql=False)
    before = {r.run_id: r for r in cache.runs()}
    count = Counter(monkeypatch)
    set_rating(uri, a, 4)  # what the compare page's "Save rating and note" calls
    set_note(uri, a, "sharper eyes")
    set_sample_rating(uri, b, 2, "sample_0", 3)
    count.reset()
    runs = {r.run_id: r for r in cache.runs()}
    assert count.runs == 2 and cache.last.fetched == 2  # just a and b
    assert any("attributes.run_id IN" in f and a in f and b in f for f in count.filters)
    assert runs[a].rating == 4 and runs[a].note == "sharper eyes"
    assert sample_ratings(runs[b].tags) == {(2, "sample_0"): 3}
    assert all(runs[r] is before[r] for r in runs if r not in (a, b))  # others untouched
    count.reset()
    cache.runs()
    assert count.runs == 0  # read once, not on every refresh

    MlflowClient(uri).set_tag(a, TAG_RATING, "1")  # not through the tracking module
    assert cache.update(a).rating == 1 and count.get_run == 1 and count.runs == 0
    assert {r.run_id: r for r in cache.runs()}[a].rating == 1


def test_a_running_run_is_followed_until_it_ends(store: dict, monkeypatch) -> None:
    uri, settings = store["uri"], store["settings"]
    running = _make_run(settings, 7, status=None)
    cache = RunCache(uri, bulk_sql=False)
    assert {r.run_id: r.status for r in cache.runs()}[running] == "RUNNING"
    count = Counter(monkeypatch)
    assert {r.run_id: r.status for r in cache.runs()}[running] == "RUNNING"
    assert count.runs == 1  # the running run, from the RUNNING query

    client = MlflowClient(uri)
    client.log_metric(running, "loss", 0.125, step=3)
    client.set_terminated(running, "KILLED")  # stopped from the monitor page
    count.reset()
    rec = {r.run_id: r for r in cache.runs()}[running]
    assert rec.status == "KILLED" and rec.metrics["loss"] == 0.125 and rec.end_time is not None
    assert count.runs == 1 and any("attributes.run_id IN" in f for f in count.filters)
    count.reset()
    cache.runs()
    assert count.runs == 0  # finished: no longer read

    old = store["made"][0]
    client.update_run(old, status="RUNNING")  # a stopped run resumed
    assert {r.run_id: r.status for r in cache.runs()}[old] == "RUNNING"


def test_deleted_runs_go_at_the_next_full_read(store: dict, monkeypatch) -> None:
    uri, made = store["uri"], store["made"]
    client = MlflowClient(uri)
    open_run = _make_run(store["settings"], 8, status=None)
    cache = RunCache(uri, bulk_sql=False, full_every_s=3600)
    assert len(cache.runs()) == 5
    client.delete_run(made[0])  # finished: only a full read notices
    client.delete_run(open_run)  # was running: its re-read finds it gone
    assert set(_ids(cache.runs())) == set(made)
    cache.invalidate()  # the page's "Refresh"
    count = Counter(monkeypatch)
    assert set(_ids(cache.runs())) == set(made[1:])
    assert cache.last.mode == "full" and count.runs == 3

    cache.full_every_s, cache.background = 0, False  # the periodic full read, in the foreground
    client.delete_run(made[1])
    assert set(_ids(cache.runs())) == set(made[2:]) and cache.last.mode == "full"


def test_the_periodic_full_read_runs_in_the_background(store: dict, monkeypatch) -> None:
    uri, made = store["uri"], store["made"]
    cache = RunCache(uri, bulk_sql=False, full_every_s=3600)
    assert len(cache.runs()) == 4
    MlflowClient(uri).delete_run(made[0])
    cache.full_every_s = 0  # due now
    count = Counter(monkeypatch)
    slow = threading.Event()
    search = MlflowClient.search_runs

    def held_full_read(client, *args, **kwargs):  # the full read returns when released
        found = search(client, *args, **kwargs)
        if not kwargs.get("filter_string"):
            assert slow.wait(30)
        return found

    monkeypatch.setattr(MlflowClient, "search_runs", held_full_read)
    served = cache.runs()  # not blocked by the full read: the records known so far
    assert cache.last.mode == "incremental" and len(served) == 4
    set_rating(uri, made[1], 2)  # rated after the full read's query
    cache.full_every_s = 3600
    assert {r.run_id: r for r in cache.runs()}[made[1]].rating == 2
    slow.set()
    cache.wait(30)
    assert cache.last_full.mode == "full (background)" and cache.last_full.fetched == 3
    runs = {r.run_id: r for r in cache.runs()}
    assert set(runs) == set(made[1:])  # the deleted run is gone
    assert runs[made[1]].rating == 2  # not lost to the older full read: read again
    assert count.runs >= 3


def test_runs_of_a_deleted_experiment_go_at_once(store: dict) -> None:
    uri = store["uri"]
    cache = RunCache(uri, bulk_sql=False, full_every_s=3600)
    experiment = cache.runs()[0].experiment_id
    MlflowClient(uri).delete_experiment(experiment)
    assert cache.runs() == [] and cache.last.mode == "incremental"


def test_a_local_sqlite_store_is_read_in_bulk_each_time(store: dict, monkeypatch) -> None:
    uri = store["uri"]
    cache = RunCache(uri)
    count = Counter(monkeypatch)
    runs = cache.runs()
    assert cache.last.mode == "sql" and count.runs == 0 and len(runs) == 4
    set_rating(uri, store["made"][2], 5)
    rated = {r.run_id: r for r in cache.runs()}[store["made"][2]]
    assert rated.rating == 5

    def same(rec: RunRecord) -> RunRecord:
        return dataclasses.replace(rec, duration_s=None)

    through_client = RunCache(uri, bulk_sql=False).runs()
    assert [same(r) for r in through_client] == [same(r) for r in cache.runs()]


def test_compare_page_refreshes_incrementally_through_the_client(store: dict, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setattr(RunCache, "_use_sql", lambda self: False)  # as for a server
    uri, made = store["uri"], store["made"]
    at = AppTest.from_file(str(root / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    from ui.compare_store import run_cache

    cache = run_cache(uri)
    assert cache.last.mode == "full" and len(at.dataframe[0].value) == 4

    at.multiselect(key="cmp:picked").set_value([made[1]]).run()
    key = made[1][:12]
    at.selectbox(key=f"cmp:rate:{key}").set_value(3).run()
    at.button(key=f"cmp:save:{key}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert cache.last.mode == "incremental" and cache.last.fetched == 1  # only the rated run
    table = at.dataframe[0].value
    assert table[table["run id"] == made[1]].iloc[0]["rating"] == "3 ★"

    MlflowClient(uri).delete_run(made[0])
    new = _make_run(store["settings"], 5)
    at.button(key="cmp:refresh").click().run()
    assert cache.last.mode == "full"
    assert set(at.dataframe[0].value["run id"]) == {new, *made[1:]}


def test_a_paged_full_read_finds_every_run_even_with_equal_start_times(
    store: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, made = store["uri"], store["made"]
    client = MlflowClient(uri)
    experiment = client.get_run(made[0]).info.experiment_id
    same = [client.create_run(experiment, start_time=1_000_000).info.run_id for _ in range(3)]
    cache = RunCache(uri, bulk_sql=False)
    runs, _, _, stats = cache._fetch_all(page=2)
    assert sorted(r.info.run_id for r in runs) == sorted([*made, *same])
    assert stats.queries >= 4  # 7 runs, 2 a page; the three equal start times read at once
    monkeypatch.setattr("trainer.tracking.run_cache.BACKGROUND_PAGE", 2)
    cache.full_every_s = 0
    cache.runs()  # first read: in the foreground; then due
    cache.runs()
    cache.wait(30)
    assert cache.last_full.mode == "full (background)" and cache.last_full.queries > 1
    assert {r.run_id for r in cache.runs()} == {*made, *same}


def test_a_restarted_studio_starts_from_the_snapshot(store: dict, tmp_path: Path) -> None:
    import time

    uri, made = store["uri"], store["made"]
    snapshot = tmp_path / "cache" / "runs" / "store.json"
    first = RunCache(uri, bulk_sql=False, snapshot=snapshot).runs()
    deadline = time.monotonic() + 20
    while not snapshot.is_file() and time.monotonic() < deadline:  # written in a thread
        time.sleep(0.05)
    assert snapshot.stat().st_mode & 0o077 == 0  # the user's only
    MlflowClient(uri).delete_run(made[0])
    new = _make_run(store["settings"], 6)

    restarted = RunCache(uri, bulk_sql=False, snapshot=snapshot)
    runs = restarted.runs()
    assert restarted.last.mode == "snapshot+incremental"
    assert runs[1:] == first and runs[0].run_id == new  # the snapshot, plus the new run
    assert restarted.last.queries == 2 and restarted.last.fetched == 4 + 1  # 4 from the file
    restarted.wait(30)  # the full read, in the background
    assert restarted.last_full.mode == "full (background)"
    assert set(_ids(restarted.runs())) == {new, *made[1:]}  # the deleted run is gone
