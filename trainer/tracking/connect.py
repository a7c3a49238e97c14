"""Which MLflow store a tracking URI names, and a client for it (URIs MLflow would misuse refused)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient


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
            f"{uri}: MLflow 3.13+ refuses the file store — use sqlite:////abs/path/mlflow.db "
            "or an http(s):// tracking server"
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


def mlflow_client(client_or_uri: MlflowClient | str) -> MlflowClient:
    """A client of the store ``client_or_uri`` names (checked first), or the client given."""
    if isinstance(client_or_uri, str):
        from mlflow import MlflowClient  # mlflow: 1-2 s to import, only when the store is read

        return MlflowClient(tracking_uri=check_tracking_uri(client_or_uri))
    return client_or_uri
