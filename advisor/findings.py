"""The vocabulary of validation: findings, the context rules read, and the rule registry.

A rule is a function ``Context -> Iterable[Finding]`` registered with ``@rule(id, paths,
summary)``. A finding names its severity (the one scale below, ``SEVERITIES``), the dotted config
paths involved, a message, and a fix: a config patch ``{dotted.path: value}`` (``None`` = the
schema default) or ``None`` when only a person can decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from advisor.dataset import DatasetInfo
from advisor.model_facts import ModelSource
from advisor.models import is_demo
from advisor.predict import Prediction, predict
from advisor.profile import SystemProfile
from advisor.workload import Workload, workload
from trainer.config.schema import TrainingConfig

# The one severity scale of the advisor, most serious first. Every place that sorts, counts or
# shows findings uses it (the UI's icons and words: ``ui.advice.SEVERITY_STYLE``).
Severity = Literal["error", "warning", "suggestion", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "suggestion", "info")
SEVERITY_MEANING: dict[Severity, str] = {
    "error": "the run would fail or be wrong: Launch stays locked until it is fixed",
    "warning": "the run starts, but likely gives a worse result or wastes time or memory",
    "suggestion": "an optional change that would probably help",
    "info": "fine as it is, for your information: nothing to change, never counted as a problem",
}
PROBLEMS: tuple[Severity, ...] = ("error", "warning", "suggestion")  # all but "info"
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    """0 for an error … 3 for info; an unknown severity sorts last."""
    return _RANK.get(severity, len(SEVERITIES))


def is_problem(severity: str) -> bool:
    """Everything but "info" asks for attention (an info note says the setting is fine)."""
    return severity in PROBLEMS


def count_severities(findings: Iterable[Any]) -> dict[Severity, int]:
    """How many findings of each severity (anything with a ``severity``), in scale order."""
    counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for item in findings:
        if item.severity in counts:
            counts[item.severity] += 1
    return counts


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    paths: tuple[str, ...]
    message: str
    fix: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "paths": list(self.paths),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class Context:
    """What rules look at. ``profile`` and ``info`` are optional: rules that need them skip."""

    cfg: TrainingConfig
    profile: SystemProfile | None = None
    info: DatasetInfo | None = None
    existing_names: frozenset[str] = frozenset()
    history: list[Any] = field(default_factory=list)
    model: ModelSource | None = None  # the base model's source, when the studio looked

    @cached_property
    def prediction(self) -> Prediction | None:
        if self.profile is None:
            return None
        return predict(self.cfg, self.profile, self.counted, self.history)

    @cached_property
    def work(self) -> Workload | None:
        return workload(self.cfg, self.profile, self.counted) if self.profile else None

    @property
    def counted(self) -> DatasetInfo | None:
        """The dataset info when every folder exists (what predictions may rest on)."""
        return self.info.found if self.info is not None else None

    @property
    def demo(self) -> bool:
        """The tiny built-in model: quality advice (LR, repeats, preservation) does not apply."""
        return is_demo(self.cfg.model.name_or_path)

    @property
    def dataset(self) -> DatasetInfo:
        """The dataset info, empty when unknown (check ``has_data`` first)."""
        return self.info if self.info is not None else DatasetInfo()

    @property
    def has_data(self) -> bool:
        """Folders were counted (and all of them exist)."""
        return (
            self.info is not None
            and bool(self.info.folders)
            and not any(f.missing for f in self.info.folders)
        )


RuleFn = Callable[[Context], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    id: str
    paths: tuple[str, ...]  # the fields the rule reads (for explanations of interactions)
    summary: str
    check: RuleFn


RULES: dict[str, Rule] = {}


def rule(rule_id: str, paths: tuple[str, ...], summary: str) -> Callable[[RuleFn], RuleFn]:
    def register(check: RuleFn) -> RuleFn:
        if rule_id in RULES:
            raise ValueError(f"duplicate rule id {rule_id}")
        RULES[rule_id] = Rule(rule_id, paths, summary, check)
        return check

    return register


def finding(
    rule_id: str,
    severity: Severity,
    paths: Iterable[str],
    message: str,
    fix: dict[str, Any] | None = None,
) -> Finding:
    return Finding(rule_id, severity, tuple(paths), message, fix or None)


def user_datasets(cfg: TrainingConfig) -> list[int]:
    """Indices of the datasets holding the subject (regularisation sets left out)."""
    return [i for i, ds in enumerate(cfg.datasets) if not ds.is_reg]
