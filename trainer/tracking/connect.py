"""Which MLflow store a tracking URI names, and a client for it: URIs MLflow would misuse
refused, a network store that does not answer reported in seconds (``StoreUnreachable``, see
``trainer.tracking.reachability``), and a local SQLite file that was deleted or replaced since
MLflow opened it read afresh (``drop_replaced_store``).

A SQL store that answers but refuses the studio (a wrong password) raises ``StoreRefused``, a
``StoreUnreachable`` with its own advice. MLflow retries creating a SQL store's engine
``mlflow.store.db.utils.MAX_RETRY_COUNT`` (10) times with a growing pause, ~104 s before that
error; ``use_studio_store_retries`` (the studio's start-up, never a trainer, which should ride
out a database restart) lowers it so the page says why within seconds."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.redaction import redact_text
from trainer.tracking.reachability import StoreUnreachable, check_store_answers

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

__all__ = [
    "StoreRefused",
    "StoreUnreachable",
    "check_tracking_uri",
    "client_uri",
    "default_artifact_root",
    "disable_mlflow_telemetry",
    "drop_replaced_store",
    "mlflow_client",
    "sqlite_path",
    "store_identity",
    "use_studio_store_retries",
]

log = logging.getLogger(__name__)

SQL_CONNECT_TIMEOUT_S = 10  # libpq and MySQL drivers otherwise wait for a silent server forever
_TIMEOUT_SCHEMES = frozenset(  # drivers that take ``connect_timeout`` (seconds) from the URI
    {
        "postgresql",
        "postgresql+psycopg2",
        "postgresql+psycopg",
        "mysql",
        "mysql+pymysql",
        "mysql+mysqldb",
    }
)
STUDIO_SQL_RETRIES = 2  # the studio's engine retries: pauses of 0.1 s and 0.3 s, not ~100 s
_MLFLOW_DB_UTILS = "mlflow.store.db.utils"
_sql_retries: int | None = None  # set by use_studio_store_retries (the studio's process only)
# (device, inode) of each SQLite store's file when this process last made a client of it
_OPENED: dict[str, tuple[int, int] | None] = {}
_OPENED_LOCK = threading.Lock()


class StoreRefused(StoreUnreachable):
    """A SQL tracking store answered but refused the connection (a wrong user or password, no
    such database). ``str(err)`` says so with the URI redacted and what to check."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(uri, reason)
        self.args = (
            f"The tracking store at {self.uri} refused the connection ({reason}): check the "
            "user, password and database name in MLFLOW_TRACKING_URI, or unset it to use the "
            "local store.",
        )


def use_studio_store_retries(retries: int = STUDIO_SQL_RETRIES) -> None:
    """In this process MLflow retries creating a SQL store's engine ``retries`` times (MLflow:
    10, ~104 s before a wrong password is reported). For the studio's process, at its start:
    applied when MLflow's store module is imported (``mlflow_client``), not imported here (1-2 s)."""
    global _sql_retries
    _sql_retries = retries
    if _MLFLOW_DB_UTILS in sys.modules:
        _apply_sql_retries()


def _apply_sql_retries() -> None:
    if _sql_retries is None:
        return
    import mlflow.store.db.utils as db_utils  # mlflow: imported by a SQL store anyway

    db_utils.MAX_RETRY_COUNT = _sql_retries


def disable_mlflow_telemetry() -> None:
    """Opt the training process out of MLflow's usage telemetry (a client and a sender thread
    it would start), unless the user chose (MLFLOW_DISABLE_TELEMETRY or DO_NOT_TRACK set)."""
    if "DO_NOT_TRACK" not in os.environ:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def check_tracking_uri(uri: str) -> str:
    """The URI if MLflow 3.17 can use it safely here; a ValueError that says why not otherwise."""
    if uri.startswith("sqlite:"):
        path = sqlite_path(uri)
        if path is not None and not path.is_absolute():
            raise ValueError(
                f"{uri}: relative SQLite path — it would depend on the working directory; "
                "use sqlite:////absolute/path/mlflow.db"
            )
        return uri
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"{redact_text(uri)}: MLflow 3.13+ refuses the file store — use "
            "sqlite:////abs/path/mlflow.db or an http(s):// tracking server"
        )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for in-memory or other stores)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(raw) if raw and raw != ":memory:" else None


def default_artifact_root(uri: str) -> Path | None:
    """``<folder of the SQLite file>/mlartifacts`` for a local store; None for a server."""
    db = sqlite_path(uri)
    return db.parent / "mlartifacts" if db is not None and db.is_absolute() else None


def store_identity(uri: str) -> tuple[int, int] | None:
    """(device, inode) of a SQLite store's file: it changes when the file is replaced (a restored
    backup moved into place, another store copied over by ``mv``); None when there is no file or
    the store is not a SQLite file."""
    db = sqlite_path(uri)
    if db is None:
        return None
    try:
        found = os.stat(db)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def drop_replaced_store(uri: str) -> bool:
    """When the SQLite file of ``uri`` was deleted or replaced since this process last made a
    client of it, close the store and engine MLflow keeps for it (their connections hold the old
    file open: a deleted store would go on showing its runs and refuse every write), so that the
    next client reads the file now at that path. True when something was dropped."""
    if sqlite_path(uri) is None:
        return False
    now = store_identity(uri)
    with _OPENED_LOCK:
        known = uri in _OPENED
        before = _OPENED.get(uri)
        _OPENED[uri] = now
    if not known or before is None or before == now:
        return False  # first client, unchanged, or created since (nothing held an older file)
    what = "deleted" if now is None else "replaced"
    log.warning("The tracking store %s was %s since it was opened: reading it afresh", uri, what)
    _drop_mlflow_store(uri)
    return True


def _drop_mlflow_store(uri: str) -> None:
    # MLflow keeps one store per URI (an lru_cache of its store registry) and one SQLAlchemy
    # engine per database URI (SqlAlchemyStore._engine_map); both are rebuilt on the next use.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # mlflow: 1-2 s to import
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry  # same

    with SqlAlchemyStore._engine_map_lock:
        engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        with contextlib.suppress(Exception):  # closing connections to a file that is gone
            engine.dispose()
    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()


def client_uri(uri: str) -> str:
    """The URI a client is made with: a PostgreSQL or MySQL URI gets a connect timeout unless it
    names one (a server that stops answering mid-session then fails in seconds too)."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme not in _TIMEOUT_SCHEMES or "connect_timeout=" in uri:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}connect_timeout={SQL_CONNECT_TIMEOUT_S}"


def mlflow_client(client_or_uri: MlflowClient | str) -> MlflowClient:
    """A client of the store ``client_or_uri`` names, or the client given.

    The URI is checked first (``check_tracking_uri``); a network store must answer within a few
    seconds (else ``StoreUnreachable``, whose message names the store without its credentials);
    a SQLite file replaced since the last client is read afresh (``drop_replaced_store``); a
    network SQL store that answers but refuses the connection raises ``StoreRefused``."""
    if isinstance(client_or_uri, str):
        from mlflow import MlflowClient  # mlflow: 1-2 s to import, only when the store is read

        uri = check_tracking_uri(client_or_uri)
        check_store_answers(uri)
        drop_replaced_store(uri)
        if not uri.lower().startswith(("http:", "https:", "databricks")):
            _apply_sql_retries()  # the studio: a refusal is reported in seconds
        try:
            return MlflowClient(tracking_uri=client_uri(uri))  # a SQL store connects here
        except Exception as err:
            if _refused_sql_connection(uri, err):
                raise StoreRefused(uri, _driver_reason(err)) from None
            raise
    return client_or_uri


def _refused_sql_connection(uri: str, err: BaseException) -> bool:
    """A network SQL store's driver could not connect (SQLAlchemy's ``OperationalError``); a
    local SQLite file's errors are its own (a read-only folder, a corrupt file)."""
    scheme = uri.split("://", 1)[0].lower()
    return scheme in _TIMEOUT_SCHEMES and type(err).__name__ == "OperationalError"


def _driver_reason(err: BaseException) -> str:
    """The driver's first words without SQLAlchemy's wrapping ("password authentication failed
    for user "mlflow""), redacted."""
    inner = err.__cause__ or getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    text = lines[0] if lines else type(inner).__name__
    _, fatal, after = text.partition("FATAL:")
    return redact_text((after if fatal else text).strip())[:300]
