"""Where the studio keeps its things and how it is served: one settings object.

Environment variables override the defaults: STUDIO_HOME, MLFLOW_TRACKING_URI, STUDIO_HOST,
STUDIO_PORT, STUDIO_EXPERIMENT, STUDIO_OFFLINE, STUDIO_ALLOWED_FOLDERS, STUDIO_NOTIFY_URL. Whether
the Hugging Face Hub may be used is decided here too (``hub_offline``), for the studio and every
trainer it starts; whether an address reaches other machines, by ``is_loopback``; which
notification URL is in use (the environment's, else the one saved from the studio's Home page),
by ``StudioSettings.notify_url_in_use``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

NOTIFY_FILE = "notify.json"  # in the studio home: the notification URL saved from the studio


class StudioSettings(BaseSettings):
    # Only the STUDIO_* names (and MLFLOW_TRACKING_URI) are read: bare HOME/HOST/PORT belong to
    # the shell and other programs.
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    home: Path = Field(
        Path("studio_home"),
        validation_alias="STUDIO_HOME",
        description="Folder holding the MLflow store, jobs, datasets, demo models and presets.",
    )
    tracking_uri_override: str | None = Field(
        None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="An MLflow tracking URI (e.g. a team server); default: SQLite in the home.",
    )
    host: str = Field(
        "127.0.0.1",
        validation_alias="STUDIO_HOST",
        description="Address the studio binds to; anything but loopback exposes it to the network.",
    )
    port: int = Field(8501, ge=1, le=65535, validation_alias="STUDIO_PORT")
    experiment: str = Field(
        "lora-studio",
        validation_alias="STUDIO_EXPERIMENT",
        description="MLflow experiment that runs go to unless a config names another.",
    )
    offline: bool = Field(
        False,
        validation_alias="STUDIO_OFFLINE",
        description=(
            "Never contact the Hugging Face Hub: the studio and its trainers run with "
            "HF_HUB_OFFLINE=1 and load models only from disk or the local Hugging Face cache."
        ),
    )

    allowed_folders: str = Field(
        "",
        validation_alias="STUDIO_ALLOWED_FOLDERS",
        description=(
            "Folders besides the studio home (separated by os.pathsep, ':' on Linux) that the "
            "studio's pages may read from (dataset folders, folder imports, LoRA paths) while the "
            "studio is served beyond this machine; on 127.0.0.1 any folder may be read."
        ),
    )

    notify_url: SecretStr = Field(
        SecretStr(""),
        validation_alias="STUDIO_NOTIFY_URL",
        description=(
            "Where to send a message when a run ends (finished, failed or stopped): an apprise URL "
            "such as ntfys://my-topic, discord://id/token, mailtos://user:pass@host or "
            "json://host/path. A secret (it can hold tokens): never logged nor sent to MLflow. "
            "Set here, it wins over the one saved from the studio's Home page."
        ),
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Relative homes break MLflow URIs and child processes started elsewhere.
        return value.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.tracking_uri_override or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def uses_local_store(self) -> bool:
        return self.tracking_uri_override is None

    @property
    def binds_publicly(self) -> bool:
        return self.host not in {"127.0.0.1", "localhost", "::1"}

    @property
    def read_roots(self) -> list[Path]:
        """The folders a page may read what a user names from, when the studio is served beyond
        this machine: the home, then each folder of ``allowed_folders``."""
        extra = [
            Path(folder.strip()).expanduser().resolve()
            for folder in self.allowed_folders.split(os.pathsep)
            if folder.strip()
        ]
        return [self.home, *extra]

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def presets_dir(self) -> Path:
        return self.home / "presets"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def notify_file(self) -> Path:
        """The notification URL saved from the studio's Home page (mode 0600)."""
        return self.home / NOTIFY_FILE

    def notify_url_in_use(self) -> str:
        """The notification URL runs report to: STUDIO_NOTIFY_URL, else the one saved in
        ``notify_file``; "" for none. The studio hands it to each trainer it starts in the
        trainer's environment (``trainer.jobs.launch.trainer_env``), never in its config."""
        if url := self.notify_url.get_secret_value().strip():
            return url
        try:
            saved = json.loads(self.notify_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        url = saved.get("url") if isinstance(saved, dict) else None
        return url.strip() if isinstance(url, str) else ""

    def ensure_dirs(self) -> None:
        for folder in (self.jobs_dir, self.datasets_dir, self.models_dir, self.presets_dir):
            folder.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: object) -> StudioSettings:
    """Read settings from the environment now (not at import), so tests can change it.

    Overrides use field names (home=..., host=...), which win over the environment.
    """
    fields = StudioSettings.model_fields
    return StudioSettings(**{fields[name].validation_alias: v for name, v in overrides.items()})


def is_loopback(address: str | None) -> bool:
    """Whether a server bound to ``address`` is reachable from this machine only (127.x.x.x, ::1,
    localhost). An unset address binds every interface, and a unix socket is there to be put
    behind a proxy: neither is loopback."""
    text = (address or "").strip().removeprefix("[").removesuffix("]")
    if text.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:  # "", a host name, "unix://...": not an IP address
        return False


# MLflow's HTTP client retries a failed request 7 times with a growing backoff: measured 250 s
# before an error when the tracking server is down. The studio's pages read the server on every
# render, so the studio process gives up after a few seconds instead (one retry, 20 s timeout);
# trainers keep MLflow's patient defaults, so a run rides out a server restart.
STUDIO_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_SET_BY_STUDIO = "STUDIO_SET_MLFLOW_HTTP"


def use_studio_http_defaults() -> None:
    """Fail fast on an unreachable tracking server in this (the studio's) process; values the
    user set are kept."""
    ours = set(filter(None, os.environ.get(_SET_BY_STUDIO, "").split(",")))
    for key, value in STUDIO_HTTP_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            ours.add(key)
    if ours:
        os.environ[_SET_BY_STUDIO] = ",".join(sorted(ours))


def without_studio_http_defaults(env: dict[str, str]) -> dict[str, str]:
    """``env`` without what ``use_studio_http_defaults`` set (for a trainer's environment)."""
    for key in env.pop(_SET_BY_STUDIO, "").split(","):
        if key in STUDIO_HTTP_DEFAULTS:
            env.pop(key, None)
    return env


# The values huggingface_hub itself reads as "on" for HF_HUB_OFFLINE.
_TRUE_WORDS = {"1", "true", "yes", "on"}
HUB_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def hub_offline(settings: StudioSettings | None = None) -> bool:
    """Whether the Hugging Face Hub is off limits: STUDIO_OFFLINE asks for it, and a user's own
    HF_HUB_OFFLINE is honoured. Online is the default."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_WORDS:
        return True
    return (settings or load_settings()).offline


def hub_offline_env(settings: StudioSettings | None = None) -> dict[str, str]:
    """The variables that make huggingface_hub, diffusers and transformers stay offline, when
    ``hub_offline``; empty when the studio is online."""
    return dict.fromkeys(HUB_OFFLINE_VARS, "1") if hub_offline(settings) else {}


def use_hub_offline_mode() -> None:
    """Put this process in offline mode when asked to (call before huggingface_hub is imported:
    it reads HF_HUB_OFFLINE once, at import)."""
    os.environ.update(hub_offline_env())
