"""Team tracking: the studio against an ``mlflow server`` backed by PostgreSQL.

Starts Debian's PostgreSQL (throwaway data directory, 127.0.0.1, a free port) and a lean MLflow
server on it that serves artifacts, launches a demo training the way the studio does, with
``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``, and reads everything back: through
``trainer.tracking``, the monitor page and the compare page — from the home that trained it and
from a teammate's home that has no job folder. The same config is trained on a local SQLite store
too: both runs must log the same losses (the trainer runs unchanged).

PostgreSQL comes from ``make postgres`` (``make test`` runs it); without it this test FAILS.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from jobs_support import make_home, stop_process_group
from streamlit.testing.v1 import AppTest

from trainer.config.io import load_config, loads_config
from trainer.jobs.folder import log_tail
from trainer.jobs.launch import launch, trainer_env
from trainer.settings import StudioSettings, load_settings
from trainer.tracking.artifacts import (
    fetch_artifact,
    load_run_config,
    lora_artifacts,
    sample_images,
)
from trainer.tracking.ratings import set_note, set_rating
from trainer.tracking.records import get_run_record, list_all_runs, list_runs, metric_history

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "presets" / "demo_sd15.yaml"
STEPS = 10
OVERRIDES = [
    f"train.steps={STEPS}",
    "sample.sample_every=10",  # samples at steps 0 and 10, two prompts each
    "save.save_every=10",
    "logging.log_every=1",
]
pytestmark = pytest.mark.slow
TIMES: dict[str, float] = {}


# ------------------------------------------------------------------------------------ servers
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pg_bin() -> Path:
    found = sorted(
        (p for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "pg_ctl").exists()),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    if not found or not Path(found[-1], "initdb").exists():
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/pg_ctl and initdb): "
            "run `make postgres` (apt-get install postgresql), which `make test` does first.",
            pytrace=False,
        )
    return Path(found[-1])


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` system user."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"mlflow server not healthy within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def postgres() -> dict:
    """A PostgreSQL server on 127.0.0.1:<free port> with an empty ``mlflow`` database."""
    binaries = _pg_bin()
    try:
        import psycopg2
    except ImportError:
        pytest.fail("psycopg2 is missing: `make install` (requirements.txt has psycopg2-binary)")
    if os.geteuid() == 0:
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' user: `make postgres`")
    # Not under pytest's tmp_path: that is private to this user and postgres must reach it.
    base = Path(tempfile.mkdtemp(prefix="lora-studio-pg-"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data, port = base / "data", _free_port()
    started = time.perf_counter()
    subprocess.run(
        _as_postgres(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log")]
    subprocess.run(_as_postgres([*pg_ctl, "-w", "-o", options, "start"]), check=True)
    try:
        con = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("CREATE DATABASE mlflow")
        con.close()
        TIMES["postgres start (initdb + start + createdb)"] = time.perf_counter() - started
        yield {
            "port": port,
            "dir": base,
            "uri": f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow",
        }
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def sql(postgres: dict, query: str, *args: object) -> list[tuple]:
    """Read the MLflow tables straight from PostgreSQL (proof that the runs are really there)."""
    import psycopg2

    con = psycopg2.connect(
        host="127.0.0.1", port=postgres["port"], user="postgres", dbname="mlflow"
    )
    try:
        with con.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def server(postgres: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``mlflow server`` on PostgreSQL, serving artifacts from a local folder, on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    artifacts, log, port = folder / "artifacts", folder / "server.log", _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server"]
    cmd += ["--backend-store-uri", postgres["uri"], "--artifacts-destination", str(artifacts)]
    cmd += ["--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, timeout=120)
        TIMES["mlflow server start (tables + /health)"] = time.perf_counter() - started
        yield {"url": url, "artifacts": artifacts, "postgres": postgres}
    finally:
        stop_process_group(proc, grace=20)  # the server and its uvicorn worker


# ------------------------------------------------------------------------------------ training
def train(settings: StudioSettings, name: str, *extra: str) -> tuple[str, Path]:
    """Launch the demo the way the studio does (``python -m trainer run`` in a subprocess)."""
    cfg = load_config(DEMO, [*OVERRIDES, f"logging.run_name={name}", *extra])
    started = time.perf_counter()
    job = launch(settings, cfg)
    assert job.process.wait(timeout=300) == 0, log_tail(job.job_dir, 60)
    TIMES[f"training {name} (launch to exit)"] = time.perf_counter() - started
    return job.run_id, job.job_dir


@pytest.fixture(scope="module")
def team(server: dict, demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two studios (two homes) training on the same server: A at lr 1e-3, B at lr 2e-3."""
    home = make_home(tmp_path_factory.mktemp("team_a"), demo_home)
    settings = load_settings(home=home, tracking_uri_override=server["url"])
    run_id, job_dir = train(settings, "team_a")
    mate = make_home(tmp_path_factory.mktemp("team_b"), demo_home)
    mate_run, _ = train(
        load_settings(home=mate, tracking_uri_override=server["url"]), "team_b", "train.lr=2e-3"
    )
    return {
        **server,
        "home": home,
        "settings": settings,
        "run_id": run_id,
        "job_dir": job_dir,
        "mate": mate,
        "mate_run": mate_run,
    }


@pytest.fixture()
def as_studio(team: dict, monkeypatch: pytest.MonkeyPatch):
    """Point the studio (AppTest runs in this process) at a home and the team server."""

    def use(home: Path) -> None:
        monkeypatch.setenv("STUDIO_HOME", str(home))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", team["url"])
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)

    return use


# --------------------------------------------------------------------------------------- tests
def test_the_run_is_in_postgres_and_its_artifacts_on_the_server(team: dict) -> None:
    uri, rid = team["url"], team["run_id"]
    assert not (team["home"] / "mlflow.db").exists()  # nothing went to a local store
    [(name, status)] = sql(
        team["postgres"], "SELECT name, status FROM runs WHERE run_uuid = %s", rid
    )
    assert (name, status) == ("team_a", "FINISHED")
    losses = sql(
        team["postgres"],
        "SELECT step FROM metrics WHERE run_uuid = %s AND key = 'loss' ORDER BY step",
        rid,
    )
    assert [s for (s,) in losses] == list(range(1, STEPS + 1))
    served = sorted(p.name for p in team["artifacts"].rglob("*.safetensors"))
    assert "demo_sd15.safetensors" in served  # uploaded through the server's artifact proxy

    record = get_run_record(uri, rid)
    assert record.artifact_uri.startswith("mlflow-artifacts:/")
    assert record.status == "FINISHED" and record.arch == "sd15"
    assert record.params["train.steps"] == str(STEPS)
    assert record.metrics["s_per_step"] > 0


def test_tracking_reads_everything_back_through_the_server(team: dict, tmp_path: Path) -> None:
    uri, rid = team["url"], team["run_id"]
    both = [team["mate_run"], rid]  # newest first
    assert [r.run_id for r in list_runs(uri)] == both
    fast = list_all_runs(uri)  # no SQLite file: through MlflowClient
    assert [r.run_id for r in fast] == both and fast[1].name == "team_a"

    history = metric_history(uri, rid, ["loss", "lr", "loss_smoothed"])
    assert [s for s, _, _ in history["loss"]] == list(range(1, STEPS + 1))
    assert {v for _, v, _ in history["lr"]} == {1e-3}

    samples = sample_images(uri, rid, cache_dir=tmp_path)
    assert {(s.step, s.key) for s in samples} == {
        (step, f"sample_{i}") for step in (0, 10) for i in (0, 1)
    }
    assert all(s.prompt and "sks" in s.prompt for s in samples)
    from PIL import Image

    for sample in samples:
        assert str(sample.path_or_uri).startswith(str(tmp_path))  # downloaded, not a server path
        with Image.open(sample.path_or_uri) as image:
            assert image.size == (64, 64)
        assert sample.compressed_path and Path(sample.compressed_path).is_file()

    loras = lora_artifacts(uri, rid)
    assert "lora/demo_sd15.safetensors" in loras
    assert "checkpoints/step_00000010/demo_sd15.safetensors" in loras
    got = fetch_artifact(uri, rid, "lora/demo_sd15.safetensors", tmp_path)
    assert got.is_relative_to(tmp_path)  # downloaded through the server into the cache
    local = team["job_dir"] / "lora" / "demo_sd15.safetensors"
    assert got.read_bytes() == local.read_bytes()

    cfg = loads_config(load_run_config(uri, rid))
    assert cfg.train.steps == STEPS and cfg.logging.run_name == "team_a"

    set_rating(uri, rid, 4)
    set_note(uri, rid, "sharp enough")
    again = get_run_record(uri, rid)
    assert (again.rating, again.note) == (4, "sharp enough")
    tags = dict(sql(team["postgres"], "SELECT key, value FROM tags WHERE run_uuid = %s", rid))
    assert tags["studio.rating"] == "4" and tags["mlflow.note.content"] == "sharp enough"


def _monitor(run_id: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=90)
    at.session_state["monitor_run_id"] = run_id
    at.switch_page("pages/monitor.py")
    return at.run()


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [h.value for h in at.subheader] + [str(m.value) for m in at.metric]
    return "\n".join(parts)


def test_monitor_page_shows_the_run_from_the_server(team: dict, as_studio) -> None:
    as_studio(team["home"])  # the studio that launched it
    at = _monitor(team["run_id"])
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="run").value == team["run_id"]
    text = _texts(at)
    assert "team_a" in text and ":material/check_circle: finished" in text
    assert f"Step {STEPS} / {STEPS}" in at.get("progress")[0].proto.text
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(charts) == 2  # loss and learning rate, from the server's metric history
    assert len(at.get("image")) == 4  # 2 prompts at steps 0 and 10, downloaded from the server
    downloads = team["home"] / "cache" / "downloads" / "artifacts" / team["run_id"]
    assert len(list(downloads.rglob("*.png"))) == 4  # into the studio's home, not a shared /tmp
    assert "demo_sd15.safetensors" in text and at.get("download_button")  # the local files
    assert not any(b.key.startswith("dlm_") for b in at.get("download_button"))
    link = at.get("link_button")[0].proto.url
    assert link.startswith(team["url"] + "/#/experiments/")  # the team server is the MLflow UI
    assert "mlflow ui --backend-store-uri" not in text

    as_studio(team["mate"])  # a teammate's studio: same server, no job folder for this run
    at = _monitor(team["run_id"])
    assert not at.exception, [e.value for e in at.exception]
    text = _texts(at)
    assert "team_a" in text and len(at.get("image")) == 4
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(charts) == 2
    assert "In MLflow: `lora/demo_sd15.safetensors`" in text
    labels = [b.proto.label for b in at.get("download_button")]  # fetched from the server
    assert [x for x in labels if "safetensors" in x] == [
        "Download demo_sd15.safetensors · single file for ComfyUI / A1111 / Forge",
        "Download demo_sd15_diffusers.safetensors · diffusers layout: load_lora_weights",
    ], labels
    assert {"Model card", "diffusers script", "ComfyUI workflow"} <= set(labels)
    assert get_run_record(team["url"], team["run_id"]).status == "FINISHED"  # not reaped


def test_compare_page_lists_diffs_and_rates_through_the_server(team: dict, as_studio) -> None:
    as_studio(team["mate"])
    rid, mate_run = team["run_id"], team["mate_run"]
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=90).run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    df = at.dataframe[0].value
    assert list(df["run id"]) == [mate_run, rid]
    assert list(df["steps"]) == [STEPS, STEPS] and set(df["status"]) == {"FINISHED"}

    at.multiselect(key="cmp:picked").set_value([rid, mate_run]).run()
    assert not at.exception, [e.value for e in at.exception]
    rows = [row for t in at.table for row in t.value.to_dict("records")]
    assert {r["setting"] for r in rows} >= {"train.lr"}  # the one setting the two studios changed
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert len(charts) == 2  # loss and lr of both runs, from the server
    assert len(at.get("image")) >= 2  # samples side by side, downloaded from the server
    adapters = [c.value for c in at.caption if "lora/" in c.value]
    assert len(adapters) == 2 and all("lora/demo_sd15.safetensors" in a for a in adapters)

    key = rid[:12]
    at.selectbox(key=f"cmp:rate:{key}").set_value(2)
    at.text_area(key=f"cmp:note:{key}").set_value("rated by a teammate").run()
    at.button(key=f"cmp:save:{key}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    tags = dict(sql(team["postgres"], "SELECT key, value FROM tags WHERE run_uuid = %s", rid))
    assert tags["studio.rating"] == "2" and tags["mlflow.note.content"] == "rated by a teammate"

    # The server is the UI: its links show at once, with no button and nothing started locally.
    assert "cmp:mlflow" not in [b.key for b in at.button]
    assert at.session_state["cmp:mlflow_url"] == team["url"]
    assert not (team["mate"] / "mlflow_ui.json").exists()
    links = [b.proto.url for b in at.get("link_button")]
    assert any(u.startswith(team["url"] + "/#/compare-runs?runs=") for u in links)


def test_same_losses_as_on_a_local_sqlite_store(
    team: dict, demo_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    settings = load_settings(home=make_home(tmp_path, demo_home), tracking_uri_override=None)
    rid, _ = train(settings, "team_a_sqlite")
    local = metric_history(settings.tracking_uri, rid, ["loss"])["loss"]
    remote = metric_history(team["url"], team["run_id"], ["loss"])["loss"]
    assert [s for s, _, _ in local] == [s for s, _, _ in remote]
    assert [v for _, v, _ in local] == pytest.approx([v for _, v, _ in remote], rel=1e-5)
    with capsys.disabled():
        print("\nteam tracking timings: " + "; ".join(f"{k} {v:.1f} s" for k, v in TIMES.items()))


def test_a_down_server_fails_fast_in_the_studio_not_in_the_trainer(tmp_path: Path) -> None:
    """MLflow's defaults retry for ~250 s (measured) before a page would show an error."""
    from mlflow.exceptions import MlflowException

    from trainer.settings import STUDIO_HTTP_DEFAULTS, use_studio_http_defaults
    from trainer.tracking.reachability import StoreUnreachable

    use_studio_http_defaults()  # what the router (streamlit_app.py) does in the studio's process
    down = f"http://127.0.0.1:{_free_port()}"
    started = time.perf_counter()
    # The studio probes the server first (refused: at once); MLflow's own retries are cut short too.
    with pytest.raises((StoreUnreachable, MlflowException), match=r"does not answer|Max retries"):
        list_runs(down)
    assert time.perf_counter() - started < 15
    env = trainer_env(load_settings(home=tmp_path, tracking_uri_override=down), "run1")
    assert not set(STUDIO_HTTP_DEFAULTS) & set(env)  # the trainer keeps MLflow's retries
    assert env["MLFLOW_TRACKING_URI"] == down


def test_http_settings_the_user_chose_reach_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.settings import (
        STUDIO_HTTP_DEFAULTS,
        use_studio_http_defaults,
        without_studio_http_defaults,
    )

    for key in [*STUDIO_HTTP_DEFAULTS, "STUDIO_SET_MLFLOW_HTTP"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")
    use_studio_http_defaults()
    try:
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        env = without_studio_http_defaults(dict(os.environ))
        assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in env
    finally:
        for key in [*STUDIO_HTTP_DEFAULTS, "STUDIO_SET_MLFLOW_HTTP"]:
            os.environ.pop(key, None)
        use_studio_http_defaults()  # as the router left it for the other tests
