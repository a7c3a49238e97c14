"""Learning from past runs (plain ``RunRecord`` data or dicts): recommendations, how good the
predictions were, and what changed between two runs.

    insights = recommend_from_history(cfg, records)      # "12 similar runs: the best rated..."
    checks = predicted_vs_actual(records, profile)       # s/step and peak memory, per run
    diff = diff_runs(run_a, run_b)                        # changes grouped by wizard step
"""

from __future__ import annotations

import socket
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from advisor.explain import explain_field, field_step
from advisor.patch import config_diff
from advisor.predict import predict
from advisor.profile import SystemProfile
from advisor.runs import PastRun, as_run, as_runs, comparable, model_kind
from trainer.config.fields import WIZARD_STEPS
from trainer.config.paths import get_path
from trainer.config.schema import TrainingConfig

KEY_SETTINGS = (
    "network.linear",
    "network.linear_alpha",
    "train.lr",
    "train.steps",
    "train.batch_size",
    "train.optimizer",
    "train.lr_scheduler",
    "network.type",
)
STEPS = "train.steps"  # a run set by train.epochs trained its total_steps param instead
COMPARED_METRICS = ("loss_smoothed", "s_per_step", "peak_memory_mb", "images_per_s")


@dataclass(frozen=True)
class Insight:
    message: str
    runs: int
    patch: dict[str, Any] = field(default_factory=dict)  # what to change to follow it


def similar_runs(cfg: TrainingConfig, records: list[Any] | None) -> list[PastRun]:
    """Finished runs of the same base model, family and size (the demo model's runs say nothing
    about a real one), and the same training type unless 'other'."""
    found = []
    model = model_kind(cfg)
    for run in as_runs(records):
        if run.status != "FINISHED" or run.config is None or run.model != model:
            continue
        if cfg.intent != "other" and run.config.intent != cfg.intent:
            continue
        found.append(run)
    return found


def recommend_from_history(cfg: TrainingConfig, records: list[Any] | None) -> list[Insight]:
    """What the best rated similar runs did, and which values rated better on average."""
    runs = similar_runs(cfg, records)
    rated = [r for r in runs if r.rating is not None]
    if not rated:
        return (
            [Insight(f"{len(runs)} similar run(s), none rated yet: rate runs to learn", len(runs))]
            if runs
            else []
        )
    best = max(rated, key=lambda r: (r.rating, r.run_id))
    return [_best_insight(cfg, runs, best), *_value_insights(cfg, rated)]


def _best_insight(cfg: TrainingConfig, runs: list[PastRun], best: PastRun) -> Insight:
    config = best.config
    assert config is not None
    rank, lr = config.network.linear, config.train.lr
    patch = {
        p: get_path(config, p)
        for p in KEY_SETTINGS
        if p != STEPS and get_path(config, p) != get_path(cfg, p)
    }
    patch |= _length_patch(cfg, best)
    epochs = config.train.epochs
    steps = _num(best.steps if best.steps is not None else config.train.steps)
    length = f"{steps} steps" + (f" ({epochs} epochs)" if epochs is not None else "")
    what = f"rank {rank} at {_num(lr)}, {length}, batch {config.train.batch_size}"
    name = f" ('{best.name}')" if best.name else ""
    return Insight(
        f"{len(runs)} similar runs: the best rated ({best.rating}★{name}) used {what}",
        len(runs),
        patch,
    )


def _length_patch(cfg: TrainingConfig, best: PastRun) -> dict[str, Any]:
    """How to train as long as ``best`` did: its epochs when epochs set its length, else the
    steps it trained (with ``train.epochs`` cleared, which would win over them)."""
    assert best.config is not None
    epochs = best.config.train.epochs
    if epochs is not None:
        return {} if cfg.train.epochs == epochs else {"train.epochs": epochs}
    steps = best.steps
    if steps is None or (cfg.train.epochs is None and cfg.train.steps == steps):
        return {}
    return {STEPS: steps} | ({"train.epochs": None} if cfg.train.epochs is not None else {})


def _setting(run: PastRun, path: str) -> Any:
    """A run's value of ``path``; for the steps, the steps it trained (``total_steps``)."""
    assert run.config is not None
    if path == STEPS and run.steps is not None:
        return run.steps
    return get_path(run.config, path)


def _value_insights(cfg: TrainingConfig, rated: list[PastRun]) -> list[Insight]:
    insights = []
    for path in KEY_SETTINGS:
        groups: dict[Any, list[int]] = defaultdict(list)
        for run in rated:
            if run.config is not None and run.rating is not None:
                groups[_hashable(_setting(run, path))].append(run.rating)
        solid = {v: r for v, r in groups.items() if len(r) >= 2}
        if len(solid) < 2:
            continue
        ranked = sorted(solid.items(), key=lambda kv: -statistics.mean(kv[1]))
        (top, top_r), (other, other_r) = ranked[0], ranked[1]
        label = path.rsplit(".", 1)[-1]
        message = (
            f"{label} {_num(top)} averaged {statistics.mean(top_r):.1f}★ over {len(top_r)} runs, "
            f"{label} {_num(other)} {statistics.mean(other_r):.1f}★ over {len(other_r)}"
        )
        patch = {} if get_path(cfg, path) == top else {path: top}
        if path == STEPS and cfg.train.epochs is not None:  # epochs would win over the steps
            patch = {path: top, "train.epochs": None}
        insights.append(Insight(message, sum(len(r) for r in solid.values()), patch))
    return insights


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------ predicted vs actual
@dataclass(frozen=True)
class PredictionCheck:
    run_id: str
    name: str
    metric: str  # s_per_step | peak_gb
    predicted: float
    low: float
    high: float
    actual: float

    @property
    def error(self) -> float:
        return self.predicted / self.actual - 1.0

    @property
    def within_range(self) -> bool:
        return self.low <= self.actual <= self.high


def predicted_vs_actual(
    records: list[Any] | None, profile: SystemProfile, host: str | None = None
) -> list[PredictionCheck]:
    """For each past run on ``profile``'s device (``advisor.runs.comparable``; ``host``: this
    machine's name, default this one): what the priors predict for its config vs what it
    measured (seconds per step; peak memory: VRAM, or RAM on a CPU, whose peak is the RSS)."""
    host = socket.gethostname() if host is None else host
    checks = []
    for run in as_runs(records):
        if run.config is None or not comparable(run, run.config, profile.label, host):
            continue
        pred = predict(run.config, profile)
        if run.seconds_per_step:
            step = pred.step_time
            checks.append(
                PredictionCheck(
                    run.run_id,
                    run.name,
                    "s_per_step",
                    step.value,
                    step.low,
                    step.high,
                    run.seconds_per_step,
                )
            )
        if run.peak_gb:
            peak = pred.ram if pred.calibration.memory == "ram" else pred.vram
            checks.append(
                PredictionCheck(
                    run.run_id, run.name, "peak_gb", peak.value, peak.low, peak.high, run.peak_gb
                )
            )
    return checks


# --------------------------------------------------------------------------- run A vs run B
@dataclass(frozen=True)
class Change:
    path: str
    before: Any
    after: Any
    explanation: str


@dataclass(frozen=True)
class RunDiff:
    by_step: dict[str, list[Change]]  # wizard step key → changes, in wizard order
    metrics: dict[str, tuple[float | None, float | None]]
    ratings: tuple[int | None, int | None] = (None, None)

    @property
    def changes(self) -> list[Change]:
        return [c for group in self.by_step.values() for c in group]

    def text(self) -> str:
        lines = []
        for step, group in self.by_step.items():
            lines.append(f"{WIZARD_STEPS[step][0]}:")
            lines += [f"  {c.path}: {c.before!r} → {c.after!r}  ({c.explanation})" for c in group]
        for key, (a, b) in self.metrics.items():
            lines.append(f"{key}: {_num(a)} → {_num(b)}")
        return "\n".join(lines) or "no differences"


def diff_runs(a: Any, b: Any, level: str = "beginner") -> RunDiff:
    """What changed from run (or config) ``a`` to ``b``, grouped by wizard step."""
    run_a, run_b = _as_run_or_none(a), _as_run_or_none(b)
    cfg_a, cfg_b = _config(a, run_a), _config(b, run_b)
    groups: dict[str, list[Change]] = {step: [] for step in WIZARD_STEPS}
    for path, after in sorted(config_diff(cfg_a, cfg_b).items()):
        before = _value(cfg_a, path)
        groups[field_step(path)].append(Change(path, before, after, _explain(path, level)))
    metrics = {}
    if run_a and run_b:
        for key in COMPARED_METRICS:
            pair = (run_a.metrics.get(key), run_b.metrics.get(key))
            if pair != (None, None):
                metrics[key] = pair
    ratings = (run_a.rating if run_a else None, run_b.rating if run_b else None)
    return RunDiff({k: v for k, v in groups.items() if v}, metrics, ratings)


def _as_run_or_none(item: Any) -> PastRun | None:
    return None if isinstance(item, TrainingConfig) else as_run(item)


def _config(item: Any, run: PastRun | None) -> TrainingConfig:
    if isinstance(item, TrainingConfig):
        return item
    if run is None or run.config is None:
        raise ValueError(f"run {getattr(run, 'run_id', '?')} has no readable config in its params")
    return run.config


def _value(cfg: TrainingConfig, path: str) -> Any:
    try:
        value = get_path(cfg, path)
    except (AttributeError, IndexError, KeyError):
        return None
    return value.model_dump() if hasattr(value, "model_dump") else value


def _explain(path: str, level: str) -> str:
    try:
        return explain_field(path, level).what
    except KeyError:
        return ""
