"""The field contract: how every config setting is declared and what it must carry.

``opt()`` declares a field with its description and wizard metadata (step, level, what it
affects, which architectures it applies to) plus pydantic bounds; ``Section`` is the base of every
config section (unknown keys refused, assignments validated). Also here: the wizard's steps, the
kinds of "auto" (``DECISION_AUTOS``, ``ARCH_DEFAULTS``) and ``FieldProblems``, the error through
which validators name the fields a cross-field rule is about.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Auto = Literal["auto"]
Arch = Literal["sd15", "sdxl", "flux"]
Intent = Literal["person", "character", "style", "object", "concept", "other"]
Level = Literal["basic", "advanced", "expert"]
Affect = Literal["quality", "speed", "memory", "disk"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

# The wizard's steps, in order (docs/architecture.md). Each field names one of these keys.
WIZARD_STEPS: dict[str, tuple[str, str]] = {
    "model": ("Model", "Which base model the LoRA is trained on, and where it comes from."),
    "quantization": ("Quantization", "Store the base model's weights in fewer bits to fit VRAM."),
    "network": ("Target network", "The adapter you train: its type, rank and strength."),
    "dataset": ("Dataset", "Your images, their captions and the trigger word."),
    "resolution": ("Resolution & augmentation", "Training size, buckets, flips and caching."),
    "memory": ("Memory & batch", "Batch size, accumulation, caching strategy and data loading."),
    "optimizer": ("Optimizer & learning rate", "How fast and with which rule weights change."),
    "regularization": ("Regularization", "Keep the base model's knowledge; avoid overfitting."),
    "training": ("Training core", "Steps, timesteps, loss and the noise schedule."),
    "sampling": ("Sampling", "Preview images generated while training."),
    "save": ("Save & logging", "Checkpoints, file format, sharing and what MLflow records."),
    "advanced": ("Model-specific", "Offloading, compilation, attention, devices and precision."),
}

# Answers to "technical" autos, per architecture. The advisor may choose better ones.
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": {
        "noise_scheduler": "ddpm",
        "timestep_type": "uniform",
        "sampler": "euler",
        "guidance_scale": 7.0,
        "native_resolution": 512,
        "size_multiple": 8,
    },
    "sdxl": {
        "noise_scheduler": "ddpm",
        "timestep_type": "uniform",
        "sampler": "euler",
        "guidance_scale": 6.0,
        "native_resolution": 1024,
        "size_multiple": 8,
    },
    "flux": {
        "noise_scheduler": "flowmatch",
        "timestep_type": "shift",
        "sampler": "flowmatch",
        "guidance_scale": 3.5,
        "native_resolution": 1024,
        "size_multiple": 16,
    },
}

# Fields whose "auto" only a person or the advisor can answer; a run refuses to start with them.
DECISION_AUTOS = (
    "network.linear",
    "network.linear_alpha",
    "train.steps",
    "train.lr",
    "train.batch_size",
)


def opt(
    default: Any = ...,
    help: str = "",
    *,
    step: str,
    level: Level = "advanced",
    affects: tuple[Affect, ...] = (),
    archs: tuple[str, ...] | None = None,
    **constraints: Any,
) -> Any:
    """A config field with the wizard metadata every field must carry."""
    assert step in WIZARD_STEPS, step
    extra: dict[str, Any] = {"step": step, "level": level, "affects": list(affects)}
    if archs:
        extra["archs"] = list(archs)
    if isinstance(default, list | dict):
        factory = type(default)
        value = default
        return Field(
            default_factory=lambda: factory(value),
            description=help,
            json_schema_extra=extra,
            **constraints,
        )
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=False
    )


class FieldProblems(ValueError):
    """Cross-field errors that know which fields they belong to (paths relative to the model)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"[{path}] {message}" for path, message in problems))
        self.problems = problems


def field_error(path: str, message: str) -> FieldProblems:
    return FieldProblems([(path, message)])


def raise_all(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise FieldProblems(problems)
