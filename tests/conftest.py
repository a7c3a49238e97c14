"""Shared fixtures: one studio home and one set of tiny demo models per test session."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.startup_gc import freeze_new_imports

# No machine here can reach a model hub; make any accidental hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

ROOT = Path(__file__).resolve().parent.parent

# The tiny models are far too small to gain from intra-op threads, and on a shared 2-core
# machine the thread hand-offs cost more than the math (measured ~10x on single convolutions).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A page's error boundary shows a plain message; tests want the exception itself (AppTest's
# `at.exception`), so a page bug cannot hide behind the message. The boundary's own test unsets it.
os.environ.setdefault("STUDIO_PAGE_ERRORS", "raise")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a runtime requirement
    pass


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny demo models and dataset, built once per test run and then only read.

    Alone, the session builds them in its own temp folder. Under pytest-xdist every worker has a
    temp folder of its own inside the run's: the first worker to take the lock builds the models
    there (beside the workers' folders), the others wait and reuse them. Every ``demo_home``
    holds hard links to its files, so the build must not change while the run uses it: a test
    that rewrites one of its files in place fails the session's end (it must use a copy).
    """
    from filelock import FileLock  # only this fixture needs it

    from trainer.demo.tiny import build_all

    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "demo_build"
        with FileLock(f"{folder}.lock"):
            build_all(folder)  # a no-op for every worker after the first
    else:
        folder = tmp_path_factory.mktemp("demo_build")
        build_all(folder)
    before = _snapshot(folder)
    yield folder
    after = _snapshot(folder)
    changed = sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
    assert not changed, (
        f"a test changed the shared demo build (other workers read it): {changed[:20]}; "
        "give that test its own copy"
    )


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links there
        shutil.copy2(source, target)


@pytest.fixture(scope="session")
def demo_home(demo_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studio home of this session (this worker) holding the demo models and dataset of the
    shared ``demo_build``: real folders of hard links (no copy; a resolved path stays in the home)
    so whatever the tests write into the home stays theirs."""
    from trainer.demo.tiny import _demo_target, _valid_demo_names

    home = tmp_path_factory.mktemp("studio_home")
    for what in _valid_demo_names():
        shutil.copytree(
            _demo_target(demo_build, what), _demo_target(home, what), copy_function=_link_or_copy
        )
    return home


@pytest.fixture(scope="session")
def demo_dataset(demo_home: Path) -> Path:
    from trainer.demo.tiny import ensure_demo

    return ensure_demo(demo_home, "dataset")


@pytest.fixture()
def home_with_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty studio home (STUDIO_HOME) and a SQLite store beside it (MLFLOW_TRACKING_URI)."""
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


@pytest.fixture()
def studio_env(demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the studio at the session's demo home and a fresh MLflow store for this test."""
    monkeypatch.setenv("STUDIO_HOME", str(demo_home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return demo_home


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """run_job installs its SIGTERM/SIGINT handlers in the process that calls it: every test that
    trains in-process gets pytest's handlers back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def freeze_imported_modules() -> Iterator[None]:
    """After a test that imported modules, what is alive is frozen out of later garbage
    collections (``trainer.startup_gc.freeze_new_imports``, as the studio's server does): a
    worker's full collections otherwise walk torch's, MLflow's and Streamlit's modules again and
    again (measured: 19% of a worker's CPU in an e2e file, 7.5% in option tests)."""
    yield
    freeze_new_imports()


@pytest.fixture()
def served_publicly() -> Iterator[None]:
    """Streamlit serving on every interface, as `streamlit run --server.address 0.0.0.0`."""
    from streamlit import config  # only the tests that serve beyond loopback need it

    served = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    try:
        yield
    finally:
        config.set_option("server.address", served)


# --------------------------------------------------------------- pytest-xdist: the longest first
def _weight(item: pytest.Item) -> int:
    """0 for the longest tests (end-to-end), 1 for ``slow`` ones, 2 for the rest."""
    return 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker: test files in the order the workers should take them, those
    with end-to-end tests first, then those with slow ones, then the rest (each kept whole and
    in collection order). ``make test`` hands out whole files (``--dist loadfile``: a module's
    shared fixtures are built once) in collection order (``--no-loadscope-reorder``), so no
    worker starts a minutes-long file when the others are nearly done."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    file_weight: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        file_weight[path] = min(file_weight.get(path, 2), _weight(item))
    items.sort(key=lambda item: file_weight[item.nodeid.split("::", 1)[0]])  # stable


# ---------------------------------------------------------------- pytest-xdist: the run's summary
_worker_summaries: dict[str, list[str]] = {}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: the controller, as a worker finishes
def pytest_testnodedown(node, error) -> None:
    lines = getattr(node, "workeroutput", {}).get("e2e_summary")  # e2e_support.WORKER_SUMMARY_KEY
    if lines:
        _worker_summaries[node.gateway.id] = lines


def pytest_terminal_summary(terminalreporter) -> None:
    """The e2e figures and speed factors the workers measured (``e2e_support.summary_lines``)."""
    if not _worker_summaries:
        return
    terminalreporter.section("e2e figures")
    for worker, lines in sorted(_worker_summaries.items()):
        for line in lines:
            terminalreporter.write_line(f"[{worker}] {line}")
