"""What the UI asks the advisor, as the small records the pages show: the machine, smart
defaults, findings with their fixes (and how each severity looks: ``SEVERITY_STYLE``),
predictions, explanations, and labels for dotted paths. What the advisor hears of the images
is counted in ``ui.dataset_facts``.

The advisor speaks plain text that quotes what users typed (paths, trigger words, values): the
texts of these records (a finding's message and fix label, a recommendation's reason) are made
markdown here with ``ui.text.plain``, so a quoted ``![x](http://host/b.png)`` stays text.

The advisor is called plainly. When it raises, the error reaches the page, where
``ui.boundary.advisor_boundary`` shows a short message in place of that part (and logs the
traceback): no guessed fallback answer stands in for the advisor's.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from advisor.defaults import UserIntent, recommend
from advisor.explain import Explanation
from advisor.explain import explain_field as advisor_explain_field
from advisor.explain import explain_step as advisor_explain_step
from advisor.findings import SEVERITIES, count_severities, is_problem, severity_rank
from advisor.findings import Finding as AdvisorFinding
from advisor.model_facts import ModelSource
from advisor.predict import predict as predict_run
from advisor.predict import time_split
from advisor.profile import GPU, SystemProfile, detect_profile, with_overrides
from advisor.rules import apply_fixes, validate
from trainer.config.introspection import field_info
from trainer.config.io import ConfigError, Problem, config_from_dict
from trainer.config.paths import generic_path, get_path, set_path
from trainer.config.schema import TrainingConfig
from ui.dataset_facts import dataset_info
from ui.text import plain, plain_line

EXPERIENCE = ("beginner", "intermediate", "advanced")
PRIORITIES = ("quality", "speed", "memory")
WHAT = ("person", "character", "style", "object", "concept", "other")


# ------------------------------------------------------------------------------------ records
@dataclass
class Hardware:
    gpu_kind: str  # nvidia | amd | apple | cpu
    gpu_name: str
    vram_gb: float | None  # usable by training, after overrides (unified: share of RAM)
    ram_gb: float
    ram_available_gb: float
    disk_free_gb: float
    disk_type: str  # hdd | ssd | nvme | unknown
    cpu_name: str
    cores: int
    raw: SystemProfile  # the advisor's profile, passed back to it
    unified: bool = False
    detected: dict[str, bool] = field(default_factory=dict)  # item -> found by detection
    notes: list[str] = field(default_factory=list)


@dataclass
class Recommendation:
    path: str
    value: Any
    reason: str  # markdown: the advisor's words, escaped
    source: str = ""


class SeverityStyle(NamedTuple):
    icon: str  # a Material icon (renders without an emoji font)
    word: str
    colour: str  # a Streamlit markdown colour: ":red[...]"


# How every page shows the advisor's severity scale (advisor.findings.SEVERITIES): one icon, word
# and colour each. "info" means "fine, for your information": never a warning icon.
SEVERITY_STYLE: dict[str, SeverityStyle] = {
    "error": SeverityStyle(":material/error:", "Error", "red"),
    "warning": SeverityStyle(":material/warning:", "Warning", "orange"),
    "suggestion": SeverityStyle(":material/lightbulb:", "Suggestion", "blue"),
    "info": SeverityStyle(":material/info:", "For your information", "gray"),
}
PLURALS = {
    "error": "error(s)",
    "warning": "warning(s)",
    "suggestion": "suggestion(s)",
    "info": "note(s) for your information",
}


def severity_style(severity: str) -> SeverityStyle:
    """The icon, word and colour of a severity (an unknown one is shown as information)."""
    return SEVERITY_STYLE.get(severity, SEVERITY_STYLE["info"])


def severity_badge(severity: str) -> str:
    """Markdown for the start of a finding: the coloured icon and word, e.g. ':red[… **Error**]'."""
    style = severity_style(severity)
    return f":{style.colour}[{style.icon} **{style.word}**]"


def by_severity(found: Iterable[Finding]) -> list[Finding]:
    """Findings in the order of the scale: errors first, information last."""
    return sorted(found, key=lambda f: severity_rank(f.severity))


def problems_of(found: Iterable[Finding]) -> list[Finding]:
    """The findings that ask for attention (everything but information)."""
    return [f for f in found if is_problem(f.severity)]


def severity_summary(found: Iterable[Finding], *, only: Iterable[str] = SEVERITIES) -> str:
    """'1 error(s) · 2 warning(s)' with each severity's icon; severities with none left out."""
    counts, wanted = count_severities(found), set(only)
    parts = [
        f"{SEVERITY_STYLE[s].icon} **{counts[s]} {PLURALS[s]}**"
        for s in SEVERITIES
        if s in wanted and counts[s]
    ]
    return " · ".join(parts)


@dataclass
class Finding:
    severity: str  # a step of advisor.findings.SEVERITIES: error | warning | suggestion | info
    message: str  # markdown: the advisor's words, escaped
    paths: list[str]
    fix: dict[str, Any] | None = None  # dotted path -> new value
    fix_label: str = ""  # markdown for a button label: one line, escaped
    rule: str = ""
    raw: AdvisorFinding | None = None  # the advisor's own finding, for apply_all_fixes

    @property
    def key(self) -> str:
        return f"{self.rule}|{'|'.join(self.paths)}|{self.message}"[:200]


@dataclass
class Prediction:
    vram_gb: float
    vram_range: tuple[float, float]
    vram_available_gb: float | None  # None: no GPU, the run uses system RAM
    ram_gb: float | None
    step_s: float | None
    total_s: float | None
    disk_gb: float | None
    assumptions: list[str] = field(default_factory=list)
    fit_word: str | None = None  # yes | tight | no (the advisor's verdict)
    step_range: tuple[float, float] | None = None
    total_range: tuple[float, float] | None = None
    history_runs: int = 0
    evidence: list[str] = field(default_factory=list)  # which past runs corrected it, and how
    total_parts: dict[str, float] = field(default_factory=dict)  # the advisor's phases: seconds
    preview_images: int = 0  # how many preview images the "sampling" part makes
    time_caveat: str = ""  # why the times may be too short (a busy CPU), "" when none is known

    def time_split(self) -> str:
        """The parts of the total time, largest first ('starting and loading 6.00 s, training
        2.34 s, previews 0.61 s for 8 images')."""
        return time_split(self.total_parts, self.preview_images)

    @property
    def fits(self) -> bool | None:
        if self.fit_word is not None:
            return self.fit_word != "no"
        if self.vram_available_gb is None:
            return None
        return self.vram_range[1] <= self.vram_available_gb


# ------------------------------------------------------------------------------------ hardware
def detect_hardware(home: Path, overrides: dict[str, Any] | None = None) -> Hardware:
    """The machine as the advisor sees it, with the user's overrides applied on top."""
    return apply_overrides(_from_profile(detect_profile(home)), overrides or {})


def _from_profile(profile: SystemProfile) -> Hardware:
    gpu = profile.gpu
    return Hardware(
        gpu_kind=profile.kind,
        gpu_name=gpu.name if gpu else "No GPU found: CPU only",
        vram_gb=round(profile.usable_vram_gb, 1) if gpu else None,
        ram_gb=round(profile.ram_total_gb, 1),
        ram_available_gb=round(profile.ram_available_gb, 1),
        disk_free_gb=round(profile.disk_free_gb, 1),
        disk_type=profile.disk_type,
        cpu_name=profile.cpu_name or "unknown CPU",
        cores=profile.cpu_cores,
        unified=profile.unified,
        detected={
            "gpu": gpu is not None,
            "ram": profile.ram_total_gb > 0,
            "disk": profile.disk_type != "unknown",
            "cpu": bool(profile.cpu_name),
        },
        notes=list(profile.notes),
        raw=profile,
    )


def apply_overrides(hw: Hardware, overrides: dict[str, Any]) -> Hardware:
    """``hw`` with what the user entered in preflight (VRAM, reserve, RAM, disk, cores)."""
    overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
    profile = hw.raw
    if "vram_gb" in overrides:
        vram = float(overrides["vram_gb"])
        if profile.gpu is None:  # planning for a GPU this machine does not have
            gpu = GPU("nvidia", "GPU (entered in preflight)", vram, vram, bf16=True)
            profile = replace(profile, gpus=(gpu,))
        else:
            profile = with_overrides(profile, {"vram_total_gb": vram, "vram_free_gb": vram})
    top = {
        "reserved_vram_gb": overrides.get("reserve_vram_gb"),
        "ram_total_gb": overrides.get("ram_gb"),
        "disk_free_gb": overrides.get("disk_free_gb"),
        "disk_type": overrides.get("disk_type"),
        "cpu_cores": overrides.get("cores"),
    }
    top = {k: v for k, v in top.items() if v is not None}
    if "ram_total_gb" in top:
        top["ram_available_gb"] = min(profile.ram_available_gb, top["ram_total_gb"])
    result = _from_profile(with_overrides(profile, top))
    result.detected = hw.detected
    return result


# ------------------------------------------------------------------------------ smart defaults
def smart_defaults(
    draft: dict[str, Any], hw: Hardware, intent: dict[str, str]
) -> list[Recommendation]:
    """Recommended values for the draft's architecture, intent and hardware, each with a reason."""
    try:
        base = config_from_dict(draft)
    except ConfigError:
        base = None
    wish = UserIntent(
        training_type=intent.get("what", "other"),
        priority=intent.get("priority", "quality"),
        experience=intent.get("experience", "beginner"),
    )
    arch = draft["model"]["arch"]
    result = recommend(wish, arch, hw.raw, dataset_info(draft, base), base)
    recs = [
        Recommendation(r.path, r.value, plain(r.reason), r.source) for r in result.recommendations
    ]
    if base is None and not any(r.path == "model.name_or_path" for r in recs):
        model = result.config.model.name_or_path
        why = plain(f"the usual {arch} base model")
        recs.append(Recommendation("model.name_or_path", model, why))
    return recs


# ------------------------------------------------------------------------------------ findings
def findings(
    draft: dict[str, Any],
    problems: list[Problem],
    cfg: TrainingConfig | None,
    hw: Hardware,
    model: ModelSource | None = None,
    history: list[Any] | None = None,
) -> list[Finding]:
    """Everything worth telling about the draft: its schema errors and, once it validates, the
    advisor's findings (among them the settings still 'auto' and, given ``model``, whether the
    base model can be loaded). ``history``: the past runs ``predict`` is given, so a figure a
    finding quotes (the total time, the memory) is the one the predictions show."""
    found = [_problem_finding(draft, p) for p in problems]
    if cfg is not None:
        info = dataset_info(draft, cfg)
        raw = validate(cfg, hw.raw, info, history=history, model=model)
        found += [_from_advisor(f) for f in raw]
    return found


def _from_advisor(raw: AdvisorFinding) -> Finding:
    fix = dict(raw.fix) if raw.fix else None
    label = ", ".join(f"{label_of(p)} = {short_value(v)}" for p, v in (fix or {}).items())
    message, label = plain(raw.message), plain_line(label)
    return Finding(raw.severity, message, list(raw.paths), fix, label, raw.rule, raw)


def short_value(value: Any) -> str:
    if isinstance(value, float) and value and abs(value) < 1e-2:
        return f"{value:.1e}"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        if any(isinstance(v, dict) for v in value) or len(value) > 3:
            return f"{len(value)} entries"
        return ", ".join(map(str, value)) or "none"
    return "empty" if value in (None, "") else str(value)


def apply_all_fixes(cfg: TrainingConfig | None, found: list[Finding]) -> dict[str, Any] | None:
    """The draft after every fix that can apply (conflicting ones skipped), or None."""
    raw = [f.raw for f in found if f.raw is not None and f.fix]
    if cfg is None or not raw:
        return None
    return apply_fixes(cfg, raw).config.model_dump(mode="json")


def _problem_finding(draft: dict[str, Any], problem: Problem) -> Finding:
    text = problem.message + (f" — {problem.fix}" if problem.fix else "")  # may quote a value
    message = plain(f"{label_of(problem.path)}: {text}")
    finding = Finding("error", message, [problem.path], rule="schema")
    # A mechanical fix: put the field back to its default, when that alone clears the problem.
    try:
        default = _default_of(problem.path)
    except KeyError:
        return finding
    if get_path(draft, problem.path, None) == default:
        return finding
    patched = copy.deepcopy(draft)
    set_path(patched, problem.path, default)
    try:
        config_from_dict(patched)
    except ConfigError as err:
        if any(p.path == problem.path for p in err.problems):
            return finding
    finding.fix = {problem.path: default}
    finding.fix_label = plain_line(f"Reset to the default ({default!r})")
    return finding


def _default_of(path: str) -> Any:
    info = field_info(path)
    if info.default_factory is not None:
        raise KeyError(path)
    value = info.default
    if value is ... or (value is None and not _optional(info)):
        raise KeyError(path)
    return value


def _optional(info: Any) -> bool:
    return type(None) in getattr(info.annotation, "__args__", ())


# --------------------------------------------------------------------------------- predictions
def predict(
    cfg: TrainingConfig | None, hw: Hardware, history: list[Any] | None = None
) -> Prediction | None:
    """VRAM, RAM, time and disk for the config on this machine; None without a valid config.
    ``history`` (past runs of the store) corrects the speed and memory priors with what runs of
    comparable runs (same base model, size and device) measured."""
    if cfg is None:
        return None
    info = dataset_info(cfg.model_dump(mode="json"), cfg)
    p = predict_run(cfg, hw.raw, info.found if info is not None else None, history)
    return Prediction(
        vram_gb=p.vram.value,
        vram_range=(p.vram.low, p.vram.high),
        vram_available_gb=p.vram_available_gb if hw.raw.gpu is not None else None,
        ram_gb=p.ram.value,
        step_s=p.step_time.value,
        total_s=p.total_time.value,
        disk_gb=p.disk.value,
        assumptions=list(p.assumptions),
        fit_word=p.vram_fit,
        step_range=(p.step_time.low, p.step_time.high),
        total_range=(p.total_time.low, p.total_time.high),
        history_runs=p.history_runs,
        evidence=p.calibration.lines(),
        total_parts=dict(p.total_time.parts),
        preview_images=p.preview_images,
        time_caveat=p.time_caveat,
    )


# -------------------------------------------------------------------------------- explanations
@functools.lru_cache(maxsize=256)
def explain_step(step: str, experience: str) -> str:
    return _markdown(advisor_explain_step(step, experience))


@functools.lru_cache(maxsize=2048)
def explain_field(path: str, experience: str) -> str:
    return _markdown(advisor_explain_field(path, experience))


def _markdown(found: Explanation) -> str:
    parts = [found.what]
    if found.interactions:
        parts.append(f"**Works with:** {found.interactions}")
    if found.watch_for:
        parts.append(f"**Watch for:** {found.watch_for}")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------- labels
_WORDS = {
    "lr": "LR",
    "te": "text encoder",
    "vae": "VAE",
    "ema": "EMA",
    "hf": "HF",
    "snr": "SNR",
    "cfg": "CFG",
    "gpu": "GPU",
    "gpus": "GPUs",
    "dtype": "precision",
    "qtype": "quantization type",
    "id": "ID",
    "unet": "U-Net",
    "lokr": "LoKr",
    "mlflow": "MLflow",
    "ext": "extension",
    "num": "number of",
    "attn": "attention",
    "gos": "GOS",
    "v": "v",
    "pred": "prediction",
}
_LABELS = {
    "model.name_or_path": "Base model",
    "model.arch": "Architecture",
    "network.linear": "Rank (dim)",
    "network.linear_alpha": "Alpha",
    "network.conv": "Conv rank",
    "network.type": "Adapter type",
    "train.lr": "Learning rate",
    "train.steps": "Training steps",
    "model.quantize": "Quantize the model",
    "model.quantize_te": "Quantize the text encoder",
    "model.low_vram": "Low-VRAM mode",
    "model.lora_path": "Start from a LoRA file",
    "sample.neg": "Negative prompt",
    "sample.prompts.neg": "Negative prompt",
    "save.dtype": "Save precision",
    "train.dtype": "Training precision",
    "model.layer_offloading_transformer_percent": "Layers offloaded to RAM: U-Net/transformer (share)",
    "model.layer_offloading_text_encoder_percent": "Layers offloaded to RAM: text encoder (share)",
    "model.is_v_pred": "V-prediction model",
    "datasets.folder_path": "Dataset folder",
    "name": "LoRA name",
    "validation.holdout": "Validation images held out",
    "validation.folder_path": "Validation folder (instead of held-out images)",
    "validation.every": "Validation every (steps; 0 = at each save)",
    "validation.draws": "Validation draws per image",
    "validation.seed": "Validation seed",
}


def label_of(path: str) -> str:
    """A readable label for a dotted path (list indices ignored)."""
    generic = generic_path(path, "")
    if generic in _LABELS:
        return _LABELS[generic]
    name = generic.rsplit(".", 1)[-1]
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]
