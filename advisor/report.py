"""One full advisor report for a config: findings, predictions, recommended changes, history.

The review page and ``python -m advisor report`` show the same thing: ``build_report`` returns
plain data with ``to_dict()`` (JSON) and ``text()`` (terminal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advisor.dataset import DatasetInfo, repeats_per_image, run_steps, steps_per_epoch
from advisor.defaults import Recommendation, UserIntent, recommend
from advisor.findings import Finding, count_severities
from advisor.history import Insight, recommend_from_history
from advisor.patch import Patch
from advisor.predict import Prediction, duration, predict
from advisor.profile import SystemProfile
from advisor.rules import apply_fixes, validate
from advisor.runs import as_runs
from trainer.config.paths import get_path
from trainer.config.schema import TrainingConfig

# The settings the comparison view lines up against the smart defaults (the Review step).
COMPARED = (
    "network.type",
    "network.linear",
    "network.linear_alpha",
    "train.lr",
    "train.steps",
    "train.batch_size",
    "train.optimizer",
    "train.lr_scheduler",
    "train.gradient_checkpointing",
    "train.cache_text_embeddings",
    "train.train_text_encoder",
    "model.quantize",
    "datasets.0.resolution",
    "datasets.0.flip_x",
    "datasets.0.cache_latents",
    "runtime.num_workers",
    "runtime.gpu_prefetch_batches",
)


@dataclass(frozen=True)
class Report:
    config: TrainingConfig
    profile: SystemProfile
    findings: list[Finding]
    prediction: Prediction
    fixes: Patch  # all automatic fixes that go together
    comparison: list[tuple[str, Any, Recommendation]]  # (path, yours, recommended)
    insights: list[Insight] = field(default_factory=list)
    steps_per_epoch: int | None = None
    repeats_per_image: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.name,
            "arch": self.config.model.arch,
            "device": self.profile.label,
            "findings": [f.to_dict() for f in self.findings],
            "prediction": self.prediction.to_dict(),
            "fixes": self.fixes,
            "comparison": [
                {
                    "path": p,
                    "yours": yours,
                    "recommended": r.value,
                    "reason": r.reason,
                    "source": r.source,
                }
                for p, yours, r in self.comparison
            ],
            "history": [
                {"message": i.message, "runs": i.runs, "patch": i.patch} for i in self.insights
            ],
            "steps_per_epoch": self.steps_per_epoch,
            "repeats_per_image": self.repeats_per_image,
        }

    def text(self) -> str:
        return "\n".join(_text_lines(self))


def build_report(
    cfg: TrainingConfig,
    profile: SystemProfile,
    info: DatasetInfo | None = None,
    history: list[Any] | None = None,
    existing_names: tuple[str, ...] = (),
    priority: str = "quality",
) -> Report:
    history = as_runs(history)  # parsed once, shared by rules, predictions and insights
    findings = validate(cfg, profile, info, existing_names, history)
    fixed = apply_fixes(cfg, findings, profile, info, existing_names)
    patch: Patch = {}
    for item in fixed.applied:
        patch.update(item.fix or {})
    smart = recommend(UserIntent(cfg.intent, priority), cfg.model.arch, profile, info, base=cfg)
    comparison = [
        (path, get_path(cfg, path), rec)
        for path in COMPARED
        if (rec := smart.get(path)) is not None and get_path(cfg, path) != rec.value
    ]
    info = info if info is not None and info.folders else None
    steps = run_steps(cfg, info)  # train.epochs made steps on the counted images
    return Report(
        config=cfg,
        profile=profile,
        findings=findings,
        prediction=predict(cfg, profile, info, history),
        fixes=patch,
        comparison=comparison,
        insights=recommend_from_history(cfg, history),
        steps_per_epoch=steps_per_epoch(cfg, info) if info else None,
        repeats_per_image=repeats_per_image(cfg, info, steps) if info and steps else None,
    )


# ---------------------------------------------------------------------------------- text
def _text_lines(report: Report) -> list[str]:
    cfg, pred = report.config, report.prediction
    lines = [f"Advisor report: {cfg.name} ({cfg.model.arch}) on {report.profile.label}", ""]
    lines += _findings_lines(report.findings)
    lines += ["", "Predictions:"]
    lines.append(
        f"  peak VRAM   {pred.vram.text()} of {pred.vram_available_gb:.1f} GB [{pred.vram_fit}]"
        f"{' (from past runs)' if pred.vram.source == 'history' else ''}"
    )
    lines.append(
        f"  system RAM  {pred.ram.text()} of {pred.ram_available_gb:.0f} GB [{pred.ram_fit}]"
    )
    lines.append(f"  step time   {pred.step_time.text()}")
    lines.append(f"  total time  {pred.total_time.text()}: " + _parts(pred.total_time.parts))
    lines.append(
        f"  disk        {pred.disk.text()} of {pred.disk_free_gb:.0f} GB free [{pred.disk_fit}]"
    )
    if report.steps_per_epoch:
        lines.append(
            f"  {report.steps_per_epoch} steps per epoch, each image seen "
            f"~{report.repeats_per_image or 0:.0f} times"
        )
    lines += ["", "Assumptions:"] + [f"  - {a}" for a in pred.assumptions]
    if report.fixes:
        lines += ["", "Automatic fixes (apply all):"]
        lines += [f"  {path} = {value!r}" for path, value in report.fixes.items()]
    if report.comparison:
        lines += ["", "Compared with the smart defaults for this intent and machine:"]
        for path, yours, rec in report.comparison:
            lines.append(f"  {path}: yours {yours!r}, recommended {rec.value!r} — {rec.reason}")
    if report.insights:
        lines += ["", "From your past runs:"] + [f"  - {i.message}" for i in report.insights]
    return lines


# The advisor's severity scale (advisor.findings.SEVERITIES) as the command line prints it.
SEVERITY_MARKS = {"error": "ERROR", "warning": "WARN ", "suggestion": "TIP  ", "info": "INFO "}


def _findings_lines(findings: list[Finding]) -> list[str]:
    if not findings:
        return ["No problems found."]
    counts = count_severities(findings)
    lines = [", ".join(f"{n} {s}(s)" for s, n in counts.items() if n) + ":"]
    for f in findings:
        mark = SEVERITY_MARKS[f.severity]
        fix = f"  [fix: {', '.join(f'{k}={v!r}' for k, v in f.fix.items())}]" if f.fix else ""
        lines.append(f"  {mark} {', '.join(f.paths)}: {f.message}{fix}")
    return lines


def _parts(parts: dict[str, float]) -> str:
    return ", ".join(f"{k} {duration(v)}" for k, v in parts.items() if v >= 0.5)
