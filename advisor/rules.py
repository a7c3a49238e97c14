"""Validation: every rule over a config (+ profile + dataset), and applying their fixes.

    findings = validate(cfg, profile, info)          # errors first, then warnings, suggestions
    fixed = apply_fixes(cfg, findings)               # FixResult(config, applied, skipped)

Rules live in ``checks_hardware``, ``checks_training``, ``checks_data`` and ``checks_unused``;
importing this module registers them all in ``RULES``. Combinations the schema itself refuses
(unload_text_encoder without cached embeddings, a trained text encoder with cached embeddings,
shuffled tags with cached embeddings, preservation without a class word, warmup_steps ≥ steps,
persistent workers without workers...) never reach the rules: ``trainer.config`` rejects them
with a dotted path and the fix in the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor import checks_data, checks_hardware, checks_training, checks_unused  # noqa: F401
from advisor.dataset import DatasetInfo
from advisor.findings import RULES, SEVERITIES, Context, Finding, Rule
from advisor.patch import try_patch
from advisor.profile import SystemProfile
from trainer.config import TrainingConfig

__all__ = ["RULES", "FixResult", "Rule", "apply_fixes", "errors", "validate"]


def validate(
    cfg: TrainingConfig,
    profile: SystemProfile | None = None,
    info: DatasetInfo | None = None,
    existing_names: Iterable[str] = (),
    history: list[Any] | None = None,
) -> list[Finding]:
    """Every finding of every rule, errors first."""
    ctx = Context(cfg, profile, info, frozenset(existing_names), list(history or []))
    found = [f for r in RULES.values() for f in r.check(ctx)]
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


@dataclass(frozen=True)
class FixResult:
    config: TrainingConfig
    applied: list[Finding] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)  # conflicting, invalid or harmful


def apply_fixes(
    cfg: TrainingConfig,
    findings: Sequence[Finding],
    profile: SystemProfile | None = None,
    info: DatasetInfo | None = None,
    existing_names: Iterable[str] = (),
) -> FixResult:
    """Apply the fixes of ``findings``, errors first.

    A fix is skipped (and reported) when it would make the config invalid, when it changes a
    path an earlier fix set to another value, or when the config it gives has an error that
    the original findings did not have: fixes together never produce a new error.
    """
    names = frozenset(existing_names)
    known = {f.rule for f in errors(findings)}
    applied: list[Finding] = []
    skipped: list[Finding] = []
    touched: dict[str, Any] = {}
    for item in sorted(findings, key=lambda f: SEVERITIES.index(f.severity)):
        if not item.fix:
            continue
        patched = None
        if not any(p in touched and touched[p] != v for p, v in item.fix.items()):
            patched = try_patch(cfg, item.fix)
        if patched is None or _new_errors(patched, profile, info, names, known):
            skipped.append(item)
            continue
        cfg = patched
        touched.update(item.fix)
        applied.append(item)
    return FixResult(cfg, applied, skipped)


def _new_errors(
    cfg: TrainingConfig,
    profile: SystemProfile | None,
    info: DatasetInfo | None,
    names: frozenset[str],
    known: set[str],
) -> set[str]:
    return {f.rule for f in errors(validate(cfg, profile, info, names))} - known
