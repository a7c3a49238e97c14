"""The one contract: every training setting, typed, described and bounded.

This pydantic model tree drives the wizard (each field's step, level and what it affects), the
validation (errors name a dotted path such as ``train.lr_scheduler_params.warmup_steps``), the
presets and YAML export (comments come from the descriptions) and the MLflow params.

Field names follow ostris/ai-toolkit where that trainer has the option, so its users recognise them.
Fields that the advisor should decide may hold ``"auto"``: "decision" autos (steps, learning rate,
batch, rank) must be resolved before a run starts; "technical" autos (device, precision, noise
scheduler, sampler...) have a per-architecture answer in ``ARCH_DEFAULTS``.

Tiny CPU config (what the demo presets use)::

    model: {arch: sd15, name_or_path: "demo:sd15"}
    datasets: [{folder_path: "demo:dataset", resolution: [64]}]
    train: {steps: 30, batch_size: 2, lr: 1e-3}

Where the rest of the contract lives (all in ``trainer/config/``):

- ``fields.py``: how a field is declared (``opt()``: description, wizard step, level, what it
  affects, architectures, bounds), the ``Section`` base, the wizard steps, ``DECISION_AUTOS``,
  ``ARCH_DEFAULTS`` and ``FieldProblems``;
- ``sections/``: the sections below, with the rules between fields of one section;
- ``rules.py``: the rules between sections (architecture, memory, loss options);
- ``introspection.py``: questions about the schema (every field, its metadata, bounds and
  choices; ``resolved`` / ``unresolved_autos`` for the autos);
- ``paths.py``: dotted paths (``datasets.0.resolution``) read, written and flattened;
- ``io.py``: YAML in and out, ``--set`` overrides and readable error messages;
- ``importers.py``: drafts from ai-toolkit and kohya configs.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from trainer.config.fields import Intent, Section, opt, raise_all
from trainer.config.rules import cross_section_problems
from trainer.config.sections.datasets import DatasetConfig
from trainer.config.sections.model import ModelConfig, NetworkConfig
from trainer.config.sections.outputs import LoggingConfig, SampleConfig, SaveConfig
from trainer.config.sections.runtime import RuntimeConfig
from trainer.config.sections.train import TrainConfig
from trainer.config.sections.validation import ValidationConfig


class TrainingConfig(Section):
    name: str = opt(
        "my_lora",
        "Name of the LoRA: used for the output files and the run.",
        step="save",
        level="basic",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
    )
    intent: Intent = opt(
        "other",
        "What you are training; the advisor tailors its recommendations to it.",
        step="model",
        level="basic",
    )
    preset: str | None = opt(
        None, "The preset this config started from (for your records).", step="model"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    datasets: list[DatasetConfig] = Field(
        default_factory=lambda: [DatasetConfig()], min_length=1, max_length=32
    )
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    save: SaveConfig = Field(default_factory=SaveConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> TrainingConfig:
        raise_all(list(cross_section_problems(self)))
        return self
