"""Drafts from other trainers' configs: an ai-toolkit job YAML, a kohya_ss / sd-scripts TOML or the
kohya_ss GUI's JSON. Every source setting is either mapped onto the ``TrainingConfig`` or listed in
``Imported.unmapped`` with the reason, so nothing is dropped silently.

    imported = import_file("job.yaml")     # or import_text(text, "kohya-toml")
    imported.config                         # a validated TrainingConfig
    for item in imported.unmapped: print(item)
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.config.introspection import nested_model
from trainer.config.io import ConfigError, config_from_dict
from trainer.config.paths import pop_path, set_path
from trainer.config.safe_yaml import YamlShapeError, load_yaml
from trainer.config.schema import TrainingConfig
from trainer.redaction import REDACTED, is_secret_key

Kind = str  # "ai-toolkit" | "kohya-toml" | "kohya-json"


@dataclass(frozen=True)
class Unmapped:
    key: str  # where it was in the source, dotted
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}: {self.reason}"


@dataclass
class Imported:
    kind: Kind
    config: TrainingConfig
    mapped: dict[str, str] = field(default_factory=dict)  # source key -> config path
    unmapped: list[Unmapped] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"Imported a {self.kind} config: {len(self.mapped)} setting(s) mapped."]
        for source, target in self.mapped.items():
            lines.append(f"  {source} -> {target}")
        lines.append(f"{len(self.unmapped)} setting(s) not mapped:")
        lines += [f"  {item}" for item in self.unmapped]
        return "\n".join(lines)


class _Draft:
    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.data: dict[str, Any] = {"datasets": []}
        self.mapped: dict[str, str] = {}
        self.unmapped: list[Unmapped] = []

    def set(self, source: str, path: str, value: Any) -> None:
        set_path(self.data, path, value, create=True)
        self.mapped[source] = path

    def skip(self, source: str, value: Any, reason: str) -> None:
        shown = REDACTED if is_secret_key(source) and not _empty(value) else value
        self.unmapped.append(Unmapped(source, shown, reason))

    def finish(self) -> Imported:
        """Validate; values the studio refuses are dropped and reported, then validated again."""
        for _ in range(20):
            try:
                cfg = config_from_dict(self.data)
            except ConfigError as err:
                if not self._drop([(p.path, str(p)) for p in err.problems]):
                    raise
                continue
            return Imported(self.kind, cfg, self.mapped, self.unmapped)
        raise ValueError("the imported config does not validate")

    def _drop(self, problems: list[tuple[str, str]]) -> bool:
        dropped = False
        for path, text in problems:
            sources = [s for s, p in self.mapped.items() if p == path or path.startswith(p + ".")]
            for source in sources:
                value = pop_path(self.data, self.mapped.pop(source))
                self.skip(source, value, f"value not accepted by the studio ({text})")
                dropped = True
        return dropped


def _fields(section: str) -> set[str]:
    model = nested_model(TrainingConfig.model_fields[section])
    assert model is not None, section
    return set(model.model_fields)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


# ----------------------------------------------------------------------------------- ai-toolkit
_AITK_SKIP = {
    "training_folder": "the studio keeps each run's files in MLflow and its job folder",
    "performance_log_every": "the studio logs speed with every step's metrics",
    "type": "only 'sd_trainer' jobs exist in the studio",
    "sqlite_db_path": "ai-toolkit UI bookkeeping",
}


def import_ai_toolkit(data: dict[str, Any]) -> Imported:
    draft = _Draft("ai-toolkit")
    config = data.get("config") or {}
    if data.get("job") not in (None, "extension"):
        draft.skip("job", data["job"], "only training jobs ('extension') are imported")
    for key in data:
        if key not in ("job", "config", "meta"):
            draft.skip(key, data[key], "not part of an ai-toolkit job")
    if data.get("meta"):
        draft.skip("meta", data["meta"], "free-form metadata; the studio keeps tags in MLflow")
    if "name" in config:
        draft.set("config.name", "name", config["name"])
    processes = config.get("process") or [{}]
    for index, extra in enumerate(processes[1:], start=1):
        draft.skip(f"config.process.{index}", extra, "only the first process is imported")
    process = processes[0]
    arch = _aitk_arch(process.get("model") or {})
    draft.set("config.process.0.model.arch", "model.arch", arch)
    for key, value in process.items():
        where = f"config.process.0.{key}"
        if key in ("model", "network", "train", "sample", "save", "logging"):
            _aitk_section(draft, where, key, value or {})
        elif key == "datasets":
            for i, item in enumerate(value or []):
                _aitk_dataset(draft, f"{where}.{i}", i, item or {})
        elif key == "trigger_word":
            draft.data.setdefault("_trigger", value)
            draft.mapped[where] = "datasets.*.trigger_word"
        elif key == "device":
            draft.set(where, "runtime.device", "cuda" if str(value).startswith("cuda") else value)
        elif key in _AITK_SKIP:
            draft.skip(where, value, _AITK_SKIP[key])
        else:
            draft.skip(where, value, "no such setting in the studio")
    trigger = draft.data.pop("_trigger", None)
    for item in draft.data["datasets"]:
        if trigger and not item.get("trigger_word"):
            item["trigger_word"] = trigger
    if not draft.data["datasets"]:
        draft.data.pop("datasets")
    return draft.finish()


def _aitk_arch(model: dict[str, Any]) -> str:
    if model.get("is_flux") or model.get("arch") in ("flux", "flux_kontext"):
        return "flux"
    if model.get("is_xl") or model.get("arch") == "sdxl":
        return "sdxl"
    return "sd15"


_TORCH_DTYPES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32"}
_AITK_ARCH_KEYS = {"is_flux", "is_xl", "is_v2", "arch"}


def _aitk_section(draft: _Draft, where: str, section: str, values: dict[str, Any]) -> None:
    known = _fields("logging") if section == "logging" else _fields(section)
    for key, value in values.items():
        source = f"{where}.{key}"
        if section == "model" and key in _AITK_ARCH_KEYS:
            if key == "arch" and value not in ("sd15", "sdxl", "flux"):
                draft.skip(source, value, "architecture not supported by the studio")
            else:
                draft.mapped[source] = "model.arch"
        elif section == "model" and key == "is_v_pred":
            draft.set(source, "model.is_v_pred", value)
        elif section == "network" and key == "network_kwargs":
            draft.skip(source, value, "block/module filters are not exposed; use target_modules")
        elif section == "train" and key == "ema_config":
            for sub, item in (value or {}).items():
                if sub in ("use_ema", "ema_decay"):
                    draft.set(f"{source}.{sub}", f"train.{sub}", item)
                else:
                    draft.skip(f"{source}.{sub}", item, "no such EMA setting in the studio")
        elif section == "train" and key == "skip_first_sample":
            draft.set(source, "sample.skip_first_sample", value)
        elif section == "train" and key == "noise_scheduler" and value == "flowmatch":
            draft.set(source, "train.noise_scheduler", value)
        elif section == "train" and key == "lr" and isinstance(value, str):
            draft.set(source, "train.lr", float(value))
        elif key == "dtype" and section in ("train", "save") and value in _TORCH_DTYPES:
            draft.set(source, f"{section}.dtype", _TORCH_DTYPES[value])
        elif section == "sample" and key == "prompts":
            draft.set(source, "sample.prompts", [str(p) for p in value or []])
        elif section == "logging" and key == "use_wandb":
            draft.skip(source, value, "the studio logs every run to MLflow instead of W&B")
        elif key in known:
            draft.set(source, f"{section}.{key}", value)
        else:
            draft.skip(source, value, f"no '{key}' setting in the studio's {section} section")


def _aitk_dataset(draft: _Draft, where: str, index: int, values: dict[str, Any]) -> None:
    known = _fields("datasets")
    draft.data["datasets"].append({})
    for key, value in values.items():
        source = f"{where}.{key}"
        if key in known:
            draft.set(source, f"datasets.{index}.{key}", value)
        else:
            draft.skip(source, value, "no such dataset setting in the studio")


# ----------------------------------------------------------------------------------------- kohya
_OPTIMIZERS = {
    "adamw": "adamw",
    "adamw8bit": "adamw8bit",
    "pagedadamw8bit": "adamw8bit",
    "adafactor": "adafactor",
    "prodigy": "prodigy",
    "lion": "lion",
}
_SAMPLERS = {
    "ddpm": "ddpm",
    "euler": "euler",
    "euler_a": "euler_a",
    "k_euler": "euler",
    "k_euler_a": "euler_a",
    "dpmsolver++": "dpmpp_2m",
    "k_dpm_2": "dpmpp_2m",
}
_PRECISION = {"fp16": "fp16", "bf16": "bf16", "float": "fp32", "no": "fp32", "fp32": "fp32"}


def _resolution(value: Any) -> list[int]:
    first = str(value).replace("x", ",").split(",")[0].strip()
    return [int(first)]


def _network(value: Any) -> str:
    if value in ("networks.lora", "networks.lora_flux", "networks.lora_sd3"):
        return "lora"
    raise ValueError(f"network module {value!r} has no studio equivalent (LyCORIS: set the type)")


# source key -> (config path, converter)
_KOHYA: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pretrained_model_name_or_path": ("model.name_or_path", str),
    "v_parameterization": ("model.is_v_pred", bool),
    "vae": ("model.vae_path", str),
    "network_dim": ("network.linear", int),
    "network_alpha": ("network.linear_alpha", float),
    "conv_dim": ("network.conv", int),
    "conv_alpha": ("network.conv_alpha", float),
    "network_dropout": ("network.dropout", float),
    "network_module": ("network.type", _network),
    "train_data_dir": ("datasets.0.folder_path", str),
    "caption_extension": ("datasets.0.caption_ext", lambda v: str(v).lstrip(".")),
    "keep_tokens": ("datasets.0.keep_tokens", int),
    "shuffle_caption": ("datasets.0.shuffle_tokens", bool),
    "caption_dropout_rate": ("datasets.0.caption_dropout_rate", float),
    "flip_aug": ("datasets.0.flip_x", bool),
    "random_crop": ("datasets.0.random_crop", bool),
    "cache_latents": ("datasets.0.cache_latents", bool),
    "cache_latents_to_disk": ("datasets.0.cache_latents_to_disk", bool),
    "enable_bucket": ("datasets.0.enable_bucketing", bool),
    "bucket_no_upscale": ("datasets.0.bucket_no_upscale", bool),
    "resolution": ("datasets.0.resolution", _resolution),
    "max_resolution": ("datasets.0.resolution", _resolution),
    "max_train_steps": ("train.steps", int),
    "train_batch_size": ("train.batch_size", int),
    "gradient_accumulation_steps": ("train.gradient_accumulation_steps", int),
    "gradient_checkpointing": ("train.gradient_checkpointing", bool),
    "optimizer_type": ("train.optimizer", lambda v: _OPTIMIZERS[str(v).lower()]),
    "optimizer": ("train.optimizer", lambda v: _OPTIMIZERS[str(v).lower()]),
    "learning_rate": ("train.lr", float),
    "unet_lr": ("train.unet_lr", float),
    "text_encoder_lr": ("train.text_encoder_lr", float),
    "lr_scheduler": ("train.lr_scheduler", str),
    "max_grad_norm": ("train.max_grad_norm", float),
    "seed": ("train.seed", int),
    "mixed_precision": ("train.dtype", lambda v: _PRECISION[str(v)]),
    "save_precision": ("save.dtype", lambda v: _PRECISION[str(v)]),
    "network_train_unet_only": ("train.train_text_encoder", lambda v: not v),
    "min_snr_gamma": ("train.min_snr_gamma", float),
    "noise_offset": ("train.noise_offset", float),
    "huber_c": ("train.huber_delta", float),
    "loss_type": ("train.loss_type", lambda v: {"l2": "mse"}.get(v, v)),
    "save_every_n_steps": ("save.save_every", int),
    "save_last_n_steps_state": ("save.max_step_saves_to_keep", int),
    "output_name": ("name", str),
    "sample_every_n_steps": ("sample.sample_every", int),
    "sample_sampler": ("sample.sampler", lambda v: _SAMPLERS[str(v)]),
    "max_data_loader_n_workers": ("runtime.num_workers", int),
    "persistent_data_loader_workers": ("runtime.persistent_workers", bool),
}
_KOHYA_ARCH = {"sdxl": "sdxl", "flux1_checkbox": "flux", "v2": None, "sd3_checkbox": None}
_KOHYA_REASONS = {
    "output_dir": "the studio keeps each run's files in MLflow and its job folder",
    "logging_dir": "the studio logs every run to MLflow",
    "log_with": "the studio logs every run to MLflow",
    "save_every_n_epochs": "the studio saves every N steps (save.save_every)",
    "sample_prompts": "a prompt file path; add the prompts to sample.prompts",
    "save_model_as": "the studio always saves .safetensors (save.save_format picks the layout)",
    "xformers": "attention is chosen by model.attention_backend",
    "sdpa": "attention is chosen by model.attention_backend",
    "lr_warmup_steps": "warmup is set with train.lr_scheduler_params",
    "reg_data_dir": "add a regularisation dataset (is_reg) in the wizard's dataset step",
}


def import_kohya(data: dict[str, Any], kind: Kind) -> Imported:
    draft = _Draft(kind)
    flat = _flatten_kohya(data)
    arch = "sd15"
    for key, target in _KOHYA_ARCH.items():
        if flat.get(key) and target:
            arch = target
    if any(flat.get(k) for k in ("ae", "t5xxl", "clip_l")) and arch == "sd15":
        arch = "flux"
    draft.set("(architecture)", "model.arch", arch)
    used_resolution = False
    for key, value in flat.items():
        if key in _KOHYA_ARCH:
            if value and _KOHYA_ARCH[key] is None:
                draft.skip(key, value, "SD2 / SD3 models are not supported by the studio")
            else:
                draft.mapped[key] = "model.arch"
            continue
        if key in _KOHYA_EPOCHS:
            _kohya_epochs(draft, flat, key, value)
        elif key in _KOHYA and not _empty(value):
            path, convert = _KOHYA[key]
            if path == "datasets.0.resolution" and used_resolution:
                draft.skip(key, value, "resolution already set from another key")
                continue
            try:
                converted = convert(value)
            except (KeyError, ValueError, TypeError) as err:
                draft.skip(key, value, f"no studio equivalent for this value ({err})")
                continue
            if path.startswith("datasets.0.") and not draft.data["datasets"]:
                draft.data["datasets"].append({})
            draft.set(key, path, converted)
            used_resolution |= path.endswith("resolution")
        elif _empty(value):
            draft.skip(key, value, "empty in the source; nothing to carry over")
        else:
            draft.skip(key, value, _KOHYA_REASONS.get(key, "no studio equivalent"))
    if not draft.data["datasets"]:
        draft.data.pop("datasets")
    return draft.finish()


_KOHYA_EPOCHS = ("max_train_epochs", "epoch")  # sd-scripts' key, the kohya_ss GUI's


def _kohya_epochs(draft: _Draft, flat: dict[str, Any], key: str, value: Any) -> None:
    """kohya's epochs become train.epochs, which wins over train.steps as max_train_epochs
    wins over max_train_steps in sd-scripts. The GUI's ``epoch`` counts only when neither
    max_train_steps nor max_train_epochs is set (0 means not set there)."""
    if not _is_set(value):
        draft.skip(key, value, "not set in the source (0 or empty): the steps decide")
        return
    if key == "epoch" and any(
        _is_set(flat.get(k)) for k in ("max_train_steps", "max_train_epochs")
    ):
        draft.skip(key, value, "max_train_steps or max_train_epochs decides the run's length")
        return
    try:
        epochs = int(value)
    except (ValueError, TypeError) as err:
        draft.skip(key, value, f"no studio equivalent for this value ({err})")
        return
    draft.set(key, "train.epochs", epochs)


def _is_set(value: Any) -> bool:
    return not _empty(value) and str(value).strip() not in ("0", "0.0")


def _flatten_kohya(data: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts TOML may group keys in tables ([model_arguments], ...); flatten them."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key.endswith("_arguments"):
            flat.update(value)
        else:
            flat[key] = value
    return flat


# ------------------------------------------------------------------------------------ entry
def detect(text: str, name: str = "") -> tuple[Kind, dict[str, Any]]:
    """Which trainer wrote ``text`` and its parsed content."""
    suffix = Path(name).suffix.lower()
    if suffix == ".toml":
        return "kohya-toml", tomllib.loads(text)
    if suffix == ".json" or text.lstrip().startswith("{"):
        return "kohya-json", json.loads(text)
    try:
        data = load_yaml(text)
    except YamlShapeError as err:  # YAML, but refused: say where, not "not a known format"
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{err.problem}{where}") from None
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict) and "config" in data:
        return "ai-toolkit", data
    try:
        return "kohya-toml", tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise ValueError(
            "not an ai-toolkit job (no 'config:'), a kohya TOML or a kohya_ss GUI JSON"
        ) from None


def import_text(text: str, name: str = "") -> Imported:
    try:
        kind, data = detect(text, name)
    except RecursionError:  # json and tomllib parse nesting recursively
        raise ValueError("nested far too deep to be a training config") from None
    if kind == "ai-toolkit":
        return import_ai_toolkit(data)
    return import_kohya(data, kind)


def import_file(path: str | Path) -> Imported:
    file = Path(path)
    return import_text(file.read_text(encoding="utf-8"), file.name)
