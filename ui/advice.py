"""The one door from the UI to the advisor: hardware, smart defaults, findings, predictions, words.

The pages never import ``advisor`` directly. This adapter calls it, converts its answers into the
small records below, and degrades gracefully: when a piece of the advisor is missing or raises,
the UI still works with plain fallbacks (schema problems as findings, presets as defaults, field
descriptions as explanations) and says "predictions unavailable" instead of guessing.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import platform
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from advisor.patch import set_in
from trainer.config.io import ConfigError, Problem, config_from_dict
from trainer.config.schema import (
    ARCH_DEFAULTS,
    DECISION_AUTOS,
    WIZARD_STEPS,
    TrainingConfig,
    field_info,
    iter_fields,
)

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "presets"
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
    unified: bool = False
    detected: dict[str, bool] = field(default_factory=dict)  # item -> found by detection
    notes: list[str] = field(default_factory=list)
    raw: Any = None  # the advisor's own profile object, passed back to it


@dataclass
class Recommendation:
    path: str
    value: Any
    reason: str
    source: str = ""


@dataclass
class Finding:
    severity: str  # error | warning | suggestion
    message: str
    paths: list[str]
    fix: dict[str, Any] | None = None  # dotted path -> new value
    fix_label: str = ""
    rule: str = ""
    raw: Any = None  # the advisor's own finding, for apply_all_fixes

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

    @property
    def fits(self) -> bool | None:
        if self.fit_word is not None:
            return self.fit_word != "no"
        if self.vram_available_gb is None:
            return None
        return self.vram_range[1] <= self.vram_available_gb


def _advisor(module: str) -> Any:
    """An advisor module, or None while it is missing or broken (the UI then falls back)."""
    try:
        return importlib.import_module(f"advisor.{module}")
    except Exception:
        return None


# ------------------------------------------------------------------------------------ hardware
def detect_hardware(home: Path, overrides: dict[str, Any] | None = None) -> Hardware:
    """The machine as the advisor sees it, with the user's overrides applied on top."""
    profile_mod = _advisor("profile")
    hw = None
    if profile_mod is not None:
        try:
            hw = _from_profile(profile_mod.detect_profile(home))
        except Exception as err:
            hw = _fallback_hardware(home)
            hw.notes.append(f"hardware detection failed ({err}); showing basic facts")
    return apply_overrides(hw or _fallback_hardware(home), overrides or {})


def _from_profile(profile: Any) -> Hardware:
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
    overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
    if hw.raw is not None:
        try:
            return _from_profile_with(hw, overrides)
        except Exception as err:
            hw = copy.copy(hw)
            hw.notes = [*hw.notes, f"overrides not applied ({err})"]
            return hw
    hw = copy.copy(hw)
    for key in ("vram_gb", "ram_gb", "disk_free_gb", "disk_type", "cores"):
        if key in overrides:
            setattr(hw, key, overrides[key])
    reserve = float(overrides.get("reserve_vram_gb") or 0)
    if reserve and hw.vram_gb is not None:
        hw.vram_gb = max(0.0, hw.vram_gb - reserve)
    return hw


def _from_profile_with(hw: Hardware, overrides: dict[str, Any]) -> Hardware:
    profile_mod = _advisor("profile")
    profile = hw.raw
    if "vram_gb" in overrides:
        vram = float(overrides["vram_gb"])
        if profile.gpu is None:  # planning for a GPU this machine does not have
            gpu = profile_mod.GPU("nvidia", "GPU (entered in preflight)", vram, vram, bf16=True)
            profile = replace(profile, gpus=(gpu,))
        else:
            profile = profile_mod.with_overrides(
                profile, {"vram_total_gb": vram, "vram_free_gb": vram}
            )
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
    result = _from_profile(profile_mod.with_overrides(profile, top))
    result.detected = hw.detected
    return result


def _fallback_hardware(home: Path) -> Hardware:
    cores = os.cpu_count() or 1
    cpu_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        vm = psutil.virtual_memory()
        ram, avail = vm.total / 2**30, vm.available / 2**30
    except ImportError:  # pragma: no cover - psutil comes with mlflow
        ram = avail = 0.0
    probe = Path(home)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    disk = shutil.disk_usage(probe).free / 2**30
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    return Hardware(
        gpu_kind="apple" if apple else "cpu",
        gpu_name="Apple Silicon (unified memory)" if apple else "No GPU found: CPU only",
        vram_gb=round(ram * 0.7, 1) if apple else None,
        ram_gb=round(ram, 1),
        ram_available_gb=round(avail, 1),
        disk_free_gb=round(disk, 1),
        disk_type="unknown",
        cpu_name=cpu_name,
        cores=cores,
        unified=apple,
        detected={"gpu": False, "ram": ram > 0, "disk": True, "cpu": True},
    )


# ------------------------------------------------------------------------------ smart defaults
def smart_defaults(
    draft: dict[str, Any], hw: Hardware, intent: dict[str, str]
) -> list[Recommendation]:
    """Recommended values for the draft's architecture, intent and hardware, each with a reason."""
    defaults = _advisor("defaults")
    if defaults is not None and hw.raw is not None:
        try:
            return _advisor_defaults(defaults, draft, hw, intent)
        except Exception:
            pass
    return _fallback_defaults(draft, hw, intent)


def _advisor_defaults(
    defaults: Any, draft: dict[str, Any], hw: Hardware, intent: dict[str, str]
) -> list[Recommendation]:
    try:
        base = config_from_dict(draft)
    except ConfigError:
        base = None
    wish = defaults.UserIntent(
        training_type=intent.get("what", "other"),
        priority=intent.get("priority", "quality"),
        experience=intent.get("experience", "beginner"),
    )
    arch = draft["model"]["arch"]
    result = defaults.recommend(wish, arch, hw.raw, dataset_info(draft, base), base)
    recs = [Recommendation(r.path, r.value, r.reason, r.source) for r in result.recommendations]
    if base is None and not any(r.path == "model.name_or_path" for r in recs):
        model = result.config.model.name_or_path
        recs.append(Recommendation("model.name_or_path", model, f"the usual {arch} base model"))
    return recs


def dataset_info(draft: dict[str, Any], cfg: TrainingConfig | None) -> Any:
    """What the advisor knows about the images, counted cheaply from the folders (image files,
    caption files, sizes from the image headers; no torch import, cached per folder state)."""
    dataset_mod = _advisor("dataset")
    if dataset_mod is None or cfg is None:
        return None
    folders = []
    for ds in cfg.datasets:
        folder = _folder_of(ds.folder_path)
        if folder is None:
            return None
        stamp = folder.stat().st_mtime_ns
        folders.append(_count_folder(dataset_mod, str(folder), stamp, ds.caption_ext))
    return dataset_mod.DatasetInfo(tuple(folders))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _folder_of(ref: str) -> Path | None:
    if ref.startswith("demo:"):
        from trainer.demo.tiny import ensure_demo
        from trainer.settings import load_settings

        return ensure_demo(load_settings().home, "dataset") if ref == "demo:dataset" else None
    path = Path(ref).expanduser()
    return path if path.is_dir() else None


@functools.lru_cache(maxsize=32)
def _count_folder(dataset_mod: Any, name: str, stamp: int, caption_ext: str) -> Any:
    from PIL import Image

    folder = Path(name)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    sizes = []
    for path in images[:2000]:
        try:
            with Image.open(path) as image:
                sizes.append(image.size)
        except Exception:
            continue
    ext = "." + caption_ext.lstrip(".")
    captions = [_read_caption(p.with_suffix(ext)) for p in images[:2000]]
    captioned = sum(c is not None for c in captions)
    trigger = dataset_mod.caption_trigger(c for c in captions if c is not None)
    return dataset_mod.FolderInfo(
        len(sizes), tuple(sizes), captioned, folder=str(folder), caption_trigger=trigger
    )


def _read_caption(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _preset_for(arch: str, what: str, demo: bool) -> str | None:
    name = f"demo_{arch}" if demo else f"{what}_{arch}"
    return name if (PRESETS / f"{name}.yaml").exists() else None


def _fallback_defaults(
    draft: dict[str, Any], hw: Hardware, intent: dict[str, str]
) -> list[Recommendation]:
    arch = draft["model"]["arch"]
    demo = str(draft["model"]["name_or_path"]).startswith("demo:")
    preset = _preset_for(arch, intent.get("what", "other"), demo)
    recs: dict[str, Recommendation] = {}
    if preset:
        data = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text(encoding="utf-8"))
        base = TrainingConfig().model_dump(mode="json")
        keep = {"name", "preset", "intent", "model.name_or_path", "model.arch"}
        for path, value in _leaves(config_from_dict(data).model_dump(mode="json")):
            if path in keep or (path.startswith("datasets.") and path.endswith("folder_path")):
                continue
            if _get(base, path) != value or path in DECISION_AUTOS:
                recs[path] = Recommendation(path, value, f"built-in preset '{preset}'", "preset")
    native = ARCH_DEFAULTS[arch]["native_resolution"]
    if not demo and "datasets.0.resolution" not in recs:
        recs["datasets.0.resolution"] = Recommendation(
            "datasets.0.resolution", [native], f"the native size of {arch}", "model"
        )
    fallback = {"train.steps": 1000, "train.lr": 1e-4, "train.batch_size": 1}
    fallback |= {"network.linear": 16, "network.linear_alpha": 16.0}
    for path, value in fallback.items():
        recs.setdefault(path, Recommendation(path, value, "a safe general starting point"))
    if hw.vram_gb is not None and not demo:
        per = {512: 3, 768: 4, 1024: 6}.get(native, 8)
        batch = max(1, min(4, int(hw.vram_gb // per)))
        recs["train.batch_size"] = Recommendation(
            "train.batch_size", batch, f"{hw.vram_gb:.0f} GB usable VRAM at {native} px", "seed"
        )
    workers = min(int(hw.ram_gb // 8), hw.cores, 8)
    recs["runtime.num_workers"] = Recommendation(
        "runtime.num_workers", workers, f"{hw.ram_gb:.0f} GB RAM and {hw.cores} CPU cores", "seed"
    )
    recs["runtime.persistent_workers"] = Recommendation(
        "runtime.persistent_workers", workers > 0, "keep workers between epochs when there are any"
    )
    return list(recs.values())


def _leaves(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict) and data and prefix.count(".") < 4:
        found: list[tuple[str, Any]] = []
        for key, value in data.items():
            found += _leaves(value, f"{prefix}{key}.")
        return found
    if isinstance(data, list) and data and isinstance(data[0], dict) and prefix == "datasets.":
        return [x for i, item in enumerate(data) for x in _leaves(item, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), data)]


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        try:
            data = data[int(part)] if part.isdigit() else data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# ------------------------------------------------------------------------------------ findings
def findings(
    draft: dict[str, Any],
    problems: list[Problem],
    cfg: TrainingConfig | None,
    hw: Hardware,
    recommendations: dict[str, dict[str, Any]],
) -> list[Finding]:
    """Everything worth telling about the draft: schema errors, unresolved autos, advice."""
    found = [_problem_finding(draft, p) for p in problems]
    rules = _advisor("rules")
    if cfg is not None and rules is not None:
        try:
            raw = rules.validate(cfg, hw.raw, dataset_info(draft, cfg))
        except Exception:
            raw = None
        if raw is not None:
            return found + [_from_advisor(f) for f in raw]
    for path in DECISION_AUTOS:
        if _get(draft, path) == "auto":
            rec = recommendations.get(path)
            value = rec["value"] if rec else _auto_fallback(path, draft)
            found.append(
                Finding(
                    "error",
                    f"{label_of(path)} is still 'auto': a run needs a number",
                    [path],
                    {path: value},
                    f"Use {value!r}" + (f" ({rec['reason']})" if rec else ""),
                    "unresolved-auto",
                )
            )
    return found


def _from_advisor(raw: Any) -> Finding:
    fix = dict(raw.fix) if raw.fix else None
    label = ", ".join(f"{label_of(p)} = {short_value(v)}" for p, v in (fix or {}).items())
    return Finding(raw.severity, raw.message, list(raw.paths), fix, label, raw.rule, raw)


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
    rules = _advisor("rules")
    raw = [f.raw for f in found if f.raw is not None and f.fix]
    if cfg is not None and rules is not None and raw:
        try:
            return rules.apply_fixes(cfg, raw).config.model_dump(mode="json")
        except Exception:
            return None
    return None


def _auto_fallback(path: str, draft: dict[str, Any]) -> Any:
    return {
        "train.steps": 1000,
        "train.lr": 1e-4,
        "train.batch_size": 1,
        "network.linear": 16,
        "network.linear_alpha": float(_get(draft, "network.linear") or 16)
        if _get(draft, "network.linear") != "auto"
        else 16.0,
    }[path]


def _problem_finding(draft: dict[str, Any], problem: Problem) -> Finding:
    text = problem.message + (f" — {problem.fix}" if problem.fix else "")
    finding = Finding("error", f"{label_of(problem.path)}: {text}", [problem.path], rule="schema")
    # A mechanical fix: put the field back to its default, when that alone clears the problem.
    try:
        default = _default_of(problem.path)
    except KeyError:
        return finding
    if _get(draft, problem.path) == default:
        return finding
    patched = copy.deepcopy(draft)
    set_in(patched, problem.path, default)
    try:
        config_from_dict(patched)
    except ConfigError as err:
        if any(p.path == problem.path for p in err.problems):
            return finding
    finding.fix = {problem.path: default}
    finding.fix_label = f"Reset to the default ({default!r})"
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
    """VRAM, RAM, time and disk for the config on this machine; None when the advisor cannot.
    ``history`` (past runs of the store) corrects the speed and memory priors with what runs of
    the same architecture, size and device measured."""
    predict_mod = _advisor("predict")
    if predict_mod is None or cfg is None or hw.raw is None:
        return None
    info = dataset_info(cfg.model_dump(mode="json"), cfg)
    p = predict_mod.predict(cfg, hw.raw, info, history)
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
    )


# -------------------------------------------------------------------------------- explanations
@functools.lru_cache(maxsize=2048)
def _advisor_text(kind: str, key: str, experience: str) -> str | None:
    explain = _advisor("explain")
    fn = getattr(explain, f"explain_{kind}", None) if explain is not None else None
    if fn is None:
        return None
    try:
        found = fn(key, experience)
    except Exception:
        return None
    if hasattr(found, "what"):
        parts = [found.what]
        if getattr(found, "interactions", ""):
            parts.append(f"**Works with:** {found.interactions}")
        if getattr(found, "watch_for", ""):
            parts.append(f"**Watch for:** {found.watch_for}")
        return "\n\n".join(parts)
    return str(found) if found else None


def explain_step(step: str, experience: str) -> str:
    found = _advisor_text("step", step, experience)
    if found:
        return found
    _title, text = WIZARD_STEPS[step]
    if experience == "advanced":
        return text
    fields = [(p, i) for p, i in iter_fields() if (i.json_schema_extra or {}).get("step") == step]
    basic = [(p, i) for p, i in fields if (i.json_schema_extra or {}).get("level") == "basic"]
    lines = [text, ""]
    shown = basic if experience == "intermediate" else basic or fields
    for path, info in shown[:8]:
        desc = info.description or ""
        if experience == "intermediate":
            desc = desc.split(". ")[0].rstrip(".") + "."
        lines.append(f"- **{label_of(path)}**: {desc}")
    return "\n".join(lines)


def explain_field(path: str, experience: str) -> str:
    found = _advisor_text("field", path, experience)
    if found:
        return found
    info = field_info(path)
    desc = info.description or ""
    return desc if experience == "beginner" else desc.split(". ")[0]


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
    "model.is_v_pred": "V-prediction model",
    "datasets.folder_path": "Dataset folder",
    "name": "LoRA name",
}


def label_of(path: str) -> str:
    """A readable label for a dotted path (list indices ignored)."""
    generic = ".".join(p for p in path.split(".") if not p.isdigit())
    if generic in _LABELS:
        return _LABELS[generic]
    name = generic.rsplit(".", 1)[-1]
    words = [_WORDS.get(w, w) for w in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]
