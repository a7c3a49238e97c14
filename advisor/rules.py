"""Validation: every rule over a config (+ profile + dataset), and applying their fixes.

    findings = validate(cfg, profile, info)          # errors, warnings, suggestions, info
    fixed = apply_fixes(cfg, findings)               # FixResult(config, applied, skipped)

Rules live in ``checks_hardware``, ``checks_training``, ``checks_length``, ``checks_data`` and
``checks_unused``; importing this module registers them all in ``RULES``. Combinations the schema
itself refuses (unload_text_encoder without cached embeddings, a trained text encoder with cached
embeddings, shuffled tags with cached embeddings, preservation without a class word, warmup_steps
≥ steps, persistent workers without workers...) never reach the rules: ``trainer.config.schema``
rejects them with a dotted path and the fix in the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor import (  # noqa: F401 - importing registers the rules
    checks_data,
    checks_hardware,
    checks_length,
    checks_training,
    checks_unused,
    model_source,
)
from advisor.dataset import DatasetInfo
from advisor.findings import RULES, Context, Finding, Rule, severity_rank
from advisor.model_facts import ModelSource
from advisor.patch import try_patch
from advisor.profile import SystemProfile
from advisor.runs import as_runs
from trainer.config.schema import TrainingConfig

__all__ = ["RULES", "SUGGESTION_ONLY", "FixResult", "Rule", "apply_fixes", "errors", "validate"]

# Rules that only ever suggest or inform (never an error): skipped when looking for errors.
SUGGESTION_ONLY = frozenset(
    {r for r in RULES if r.startswith("unused.")}
    | {
        "text_cache_with_dropout",
        "cache_flip_variants",
        "text_cache_off",
        "flip_y",
        "trigger_common_word",
        "dataset_size_for_intent",
        "bucket_fragmentation",
        "shuffle_without_keep",
        "slow_disk_without_cache",
        "vram_underused",
        "nf4_optimizer",
        "quantized_samples",
        "quantize_small_model",
        "fp32_on_gpu",
        "prefetch_without_gpu",
        "checkpointing_not_needed",
        "sdxl_text_encoder",
        "restarts_one_cycle",
        "min_snr_missing",
        "noise_offset_flux",
        "effective_batch",
        "sample_every_beyond_steps",
        "samples_without_prompts",
        "prompts_without_trigger",
        "sample_size_mismatch",
        "output_name_exists",
        "preservation_for_subject",
    }
)


def validate(
    cfg: TrainingConfig,
    profile: SystemProfile | None = None,
    info: DatasetInfo | None = None,
    existing_names: Iterable[str] = (),
    history: list[Any] | None = None,
    errors_only: bool = False,
    model: ModelSource | None = None,
) -> list[Finding]:
    """Every finding of every rule, in the order of the severity scale (errors first;
    ``errors_only``: skip the rules that can only suggest or inform)."""
    ctx = Context(cfg, profile, info, frozenset(existing_names), as_runs(history), model)
    found = [
        f
        for r in RULES.values()
        if not (errors_only and r.id in SUGGESTION_ONLY)
        for f in r.check(ctx)
    ]
    return sorted(found, key=lambda f: severity_rank(f.severity))


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
    for item in sorted(findings, key=lambda f: severity_rank(f.severity)):
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
    found = validate(cfg, profile, info, names, errors_only=True)
    return {f.rule for f in errors(found)} - known
