"""Past runs as plain data: ``trainer.tracking.records.RunRecord`` objects or dicts, never MLflow objects.

A run's config is rebuilt from its flattened params (``trainer.config.paths.flatten``), so the
advisor can re-predict it, compare it and learn from it.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from advisor.models import facts, is_demo
from trainer.config.introspection import field_info
from trainer.config.paths import flatten, generic_path, unflatten
from trainer.config.schema import TrainingConfig
from trainer.tracking.layout import TAG_DEVICE, TAG_HOST, TAG_RATING, trained_steps

METRIC_STEP = "s_per_step"
METRIC_PEAK_MB = "peak_memory_mb"
_DEVICE_KIND = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")


@dataclass(frozen=True)
class PastRun:
    run_id: str
    name: str = ""
    status: str = "FINISHED"
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    rating: int | None = None
    device: str | None = None
    duration_s: float | None = None
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def config(self) -> TrainingConfig | None:
        return config_from_params(self.params)

    @property
    def arch(self) -> str | None:
        return self.params.get("model.arch") or (self.config.model.arch if self.config else None)

    @property
    def resolution(self) -> int | None:
        return training_size(self.config) if self.config is not None else None

    @property
    def model(self) -> str | None:
        """Which base model it trained, as ``model_kind`` names it; None without a config."""
        return model_kind(self.config) if self.config is not None else None

    @property
    def steps(self) -> int | None:
        """The steps it trained to: the trainer's ``total_steps`` param (the only place a run
        set by ``train.epochs`` has them), else its ``train.steps``."""
        return trained_steps(self.params)

    @property
    def label(self) -> str:
        """How the studio names the run: its name, else its short id."""
        return self.name or self.run_id[:8]

    @property
    def seconds_per_step(self) -> float | None:
        return self.metrics.get(METRIC_STEP)

    @property
    def peak_gb(self) -> float | None:
        peak = self.metrics.get(METRIC_PEAK_MB)
        return peak / 1024 if peak else None


def as_run(record: Any) -> PastRun:
    """A ``PastRun`` from a RunRecord, a RunRecord.to_dict() or a hand-written dict."""
    if isinstance(record, PastRun):
        return record
    data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    tags = {str(k): str(v) for k, v in (data.get("tags") or {}).items()}
    params = {str(k): str(v) for k, v in (data.get("params") or {}).items()}
    if "config" in data and isinstance(data["config"], Mapping):
        params = {**flatten(data["config"]), **params}
    rating = data.get("rating")
    if rating is None and tags.get(TAG_RATING, "").isdigit():
        rating = int(tags[TAG_RATING])
    return PastRun(
        run_id=str(data.get("run_id", "")),
        name=str(data.get("name", "")),
        status=str(data.get("status", "FINISHED")),
        params=params,
        metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
        tags=tags,
        rating=int(rating) if rating is not None else None,
        device=data.get("device") or tags.get(TAG_DEVICE),
        duration_s=data.get("duration_s"),
    )


def as_runs(records: Iterable[Any] | None) -> list[PastRun]:
    return [as_run(r) for r in records or ()]


# ---------------------------------------------------------------------------------- params
def config_from_params(params: Mapping[str, str]) -> TrainingConfig | None:
    """Rebuild a run's config from its MLflow params; None when they do not form a valid one.

    Memoised on the params: the same past runs are read again on every report. Treat the
    returned config as read-only.
    """
    if not params:
        return None
    return _config_from_items(tuple(sorted(params.items())))


@lru_cache(maxsize=1024)
def _config_from_items(items: tuple[tuple[str, str], ...]) -> TrainingConfig | None:
    values: dict[str, Any] = {}
    for path, raw in items:
        try:
            values[path] = _param_value(path, raw)
        except KeyError:
            continue  # a param that is not a config field (e.g. logged extras)
    with contextlib.suppress(ValueError):
        return TrainingConfig.model_validate(unflatten(values))
    return None


def _param_value(path: str, raw: str) -> Any:
    if raw == "null":
        return None
    if _is_text(generic_path(path)):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@lru_cache(maxsize=1024)
def _is_text(path: str) -> bool:
    """Whether a field holds text (kept as is) rather than JSON; KeyError for unknown paths."""
    return field_info(path).annotation in (str, str | None)


# -------------------------------------------------------------------------------- matching
def training_size(cfg: TrainingConfig) -> int:
    """The largest training resolution: the one that sets the peak memory."""
    return max(r for ds in cfg.datasets for r in ds.resolution)


def model_kind(cfg: TrainingConfig) -> str:
    """The base model's family and size, e.g. 'Stable Diffusion 1.5' or 'demo Stable Diffusion
    1.5': runs of the same kind share speed and memory; a tiny demo model and the real one don't."""
    return facts(cfg.model.arch, is_demo(cfg.model.name_or_path)).label


def mismatches(
    run: PastRun, cfg: TrainingConfig, device: str, host: str | None = None
) -> tuple[str, ...]:
    """Why ``run``'s measured speed and memory do not transfer to ``cfg`` on ``device``, among
    'model' (another base model family or size: never the demo model for a real one or back),
    'resolution' and 'device'; ('config',) when its config is unreadable; () when they do.

    A run without a device name counts as this device when it ran on this host: the launcher
    tags only the torch device kind ('cpu', 'cuda'), which names no card.
    """
    if run.config is None:
        return ("config",)
    found = []
    if run.model != model_kind(cfg):
        found.append("model")
    if run.resolution != training_size(cfg):
        found.append("resolution")
    if run.device is not None and not _DEVICE_KIND.match(run.device):
        same_device = run.device == device
    else:
        same_device = host is not None and run.tags.get(TAG_HOST) == host
    if not same_device:
        found.append("device")
    return tuple(found)


def comparable(run: PastRun, cfg: TrainingConfig, device: str, host: str | None = None) -> bool:
    """Same base model (family and size), training size and device: the runs whose measured
    speed and memory may calibrate a prediction for ``cfg``, or be checked against one."""
    return not mismatches(run, cfg, device, host)


def median(values: Iterable[float]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None
