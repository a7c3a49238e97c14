"""Shared fixtures: one studio home and one set of tiny demo models per test session."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studio home whose demo models and dataset are built once for the whole session."""
    from trainer.demo.tiny import build_all

    home = tmp_path_factory.mktemp("studio_home")
    build_all(home)
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
