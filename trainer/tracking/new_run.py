"""What a run starts with: its experiment, the studio's standard tags, and its config as params,
``hparam/`` metrics and YAML (see ``trainer.tracking.layout``)."""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.config.io import dump_yaml
from trainer.config.paths import flatten
from trainer.redaction import is_secret_key, redact, redact_text
from trainer.tracking.connect import default_artifact_root, mlflow_client
from trainer.tracking.layout import (
    APP,
    HPARAM_PREFIX,
    MAX_KEY_LEN,
    MAX_PARAM_LEN,
    MAX_TAG_LEN,
    TAG_APP,
    TAG_ARCH,
    TAG_CONFIG_NAME,
    TAG_INTENT,
    TAG_MODEL,
    TAG_PRESET,
)

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig
    from trainer.settings import StudioSettings

log = logging.getLogger(__name__)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | Path | None = None) -> str:
    """The id of experiment ``name``, created (or restored) if needed.

    On a local SQLite store the experiment gets an absolute ``file://<artifact_root>/<name>``
    artifact location (default root: ``mlartifacts`` next to the database), never ``./mlruns``.
    On a tracking server the server decides, unless ``artifact_root`` is given.
    """
    from mlflow.exceptions import MlflowException  # mlflow: 1-2 s to import

    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    root = Path(artifact_root) if artifact_root is not None else default_artifact_root(tracking_uri)
    location = None
    if root is not None:
        folder = root.expanduser().resolve() / _slug(name)
        folder.mkdir(parents=True, exist_ok=True)
        location = folder.as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it in the meantime.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


def run_tags(cfg: TrainingConfig) -> dict[str, str]:
    """The studio's standard tags for a run of this config."""
    tags = {
        TAG_APP: APP,
        TAG_ARCH: cfg.model.arch,
        TAG_INTENT: cfg.intent,
        TAG_CONFIG_NAME: cfg.name,
        TAG_MODEL: cfg.model.name_or_path,
    }
    if cfg.preset:
        tags[TAG_PRESET] = cfg.preset
    return tags


def source_tags() -> dict[str, str]:
    """What the MLflow UI shows as user and source (fluent start_run would add these)."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": APP}
    with contextlib.suppress(Exception):
        tags["mlflow.user"] = getpass.getuser()
    return tags


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow takes them: secrets dropped, values as text cut to the limit, keys too long
    dropped (with a warning)."""
    clean = {}
    for key, value in redact(tags).items():
        if len(key) > MAX_KEY_LEN:
            log.warning("tag key longer than %d characters dropped: %.60s...", MAX_KEY_LEN, key)
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        clean[key] = redact_text(text)[:MAX_TAG_LEN]
    return clean


def create_run(
    settings: StudioSettings, cfg: TrainingConfig, tags: Mapping[str, Any] | None = None
) -> str:
    """Create the run (status RUNNING) before launching the trainer, which then attaches to it."""
    uri = settings.tracking_uri
    root = settings.artifacts_dir if settings.uses_local_store else None
    experiment_id = ensure_experiment(uri, cfg.logging.project_name, root)
    all_tags = {**source_tags(), **run_tags(cfg), **dict(tags or {})}
    run = mlflow_client(uri).create_run(
        experiment_id,
        run_name=cfg.logging.run_name or cfg.name,
        tags=clean_tags(all_tags),
    )
    return run.info.run_id


# ------------------------------------------------------------------------------- write: config
def config_params(cfg: TrainingConfig) -> dict[str, str]:
    """Flattened config as MLflow params: secrets dropped, values ≤ 6000, keys ≤ 250 chars."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydantic union serializer noise
        flat = flatten(cfg)
    params = {}
    for key, value in redact(flat).items():
        if len(key) > MAX_KEY_LEN:
            log.warning("param key longer than %d characters dropped: %.60s...", MAX_KEY_LEN, key)
            continue
        params[key] = str(value)[:MAX_PARAM_LEN]
    return params


def numeric_hparams(cfg: TrainingConfig) -> dict[str, float]:
    """Every numeric setting (not booleans, not "auto") as ``hparam/<dotted>`` → float."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = cfg.model_dump(mode="json")
    found: dict[str, float] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
            for index, item in enumerate(value):
                walk(item, f"{prefix}.{index}")
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and not is_secret_key(prefix)
            and len(HPARAM_PREFIX + prefix) <= MAX_KEY_LEN
        ):
            found[HPARAM_PREFIX + prefix] = float(value)

    walk(data, "")
    return found


def config_yaml(cfg: TrainingConfig) -> str:
    """The exact YAML of the config (comments included), tokens redacted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return redact_text(dump_yaml(cfg))
