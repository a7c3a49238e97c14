"""What the files beside a LoRA describe: the base model it was trained on, and how each preview
image was made (prompt, seed, size, steps, guidance, sampler, LoRA strength), resolved exactly as
``trainer.engine.previews`` resolves them.

Apart from ``trainer.lora.usage``, which turns these records into the model card, the diffusers
script and the ComfyUI workflow and writes them: reading the run is one job, writing files another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.config.introspection import resolved
from trainer.config.schema import TrainingConfig
from trainer.demo.tiny import DEMO_PREFIX, resolve_demo_ref
from trainer.models.hub import is_hub_id
from trainer.settings import load_settings


# ------------------------------------------------------------------------------- the base model
@dataclass(frozen=True)
class BaseModel:
    """The base model as code loads it: ``source`` is a Hub id or a local folder or file."""

    source: str
    reference: str  # model.name_or_path as the config says it
    revision: str | None = None  # the Hub commit the run trained on
    on_hub: bool = False

    @property
    def single_file(self) -> bool:
        return not self.on_hub and Path(self.source).suffix in (".safetensors", ".ckpt")

    @property
    def display(self) -> str:
        """How a card names it: the Hub id, the demo reference, else the file or folder name
        (a card never shows a local path)."""
        if self.on_hub or self.reference.startswith(DEMO_PREFIX):
            return self.reference
        return Path(self.reference).name or self.reference

    @property
    def comfy_file(self) -> str:
        """The checkpoint's file name in ComfyUI's models folder (a guess to adjust for a
        Hub model or a diffusers folder: ComfyUI loads single files)."""
        name = Path(self.source if self.single_file else self.display.split(":")[-1]).name
        return name if self.single_file else f"{name}.safetensors"


def base_model_of(cfg: TrainingConfig, model_path: str | None = None, home: Path | None = None):
    """The run's base model; ``model_path``: the loaded ``Arch.model_path`` (``id@commit`` for
    a Hub model, ``file + components`` for a single file), else resolved from the config."""
    ref = cfg.model.name_or_path
    if is_hub_id(ref):
        revision = model_path.rsplit("@", 1)[1] if model_path and "@" in model_path else None
        return BaseModel(ref, ref, revision=revision, on_hub=True)
    if model_path:
        return BaseModel(model_path.split(" + ")[0], ref)
    return BaseModel(resolve_demo_ref(ref, home or load_settings().home), ref)


# ---------------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """One preview image's settings, as ``Arch.sample`` used them."""

    prompt: str
    negative: str
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str  # a key of trainer.lora.usage.SCHEDULERS
    lora_scale: float


def trigger_word(cfg: TrainingConfig) -> str:
    """The first dataset's trigger word, which ``[trigger]`` in a preview prompt becomes."""
    return next((ds.trigger_word for ds in cfg.datasets if ds.trigger_word), "") or ""


def preview_recipes(cfg: TrainingConfig) -> list[Recipe]:
    """Each preview's settings, resolved as ``trainer.engine.previews`` does (``[trigger]``,
    walk_seed, per-prompt overrides); without preview prompts, the trigger word alone."""
    from trainer.arch.pipelines import image_settings  # why: imports torch; writers only

    s = cfg.sample
    trigger = trigger_word(cfg)
    items = [p.model_dump(exclude_none=True) for p in s.prompts] or [
        {"prompt": trigger or cfg.name}
    ]
    defaults = {
        "neg": s.neg,
        "seed": s.seed,
        "width": s.width,
        "height": s.height,
        "steps": s.sample_steps,
        "guidance_scale": float(resolved(cfg, "guidance_scale")),
        "network_multiplier": s.network_multiplier,
    }
    sampler = str(resolved(cfg, "sampler"))
    recipes = []
    for index, item in enumerate(items):
        item["prompt"] = item["prompt"].replace("[trigger]", trigger)
        if s.walk_seed:
            item.setdefault("seed", s.seed + index)
        got = image_settings(item, defaults)
        recipes.append(
            Recipe(
                prompt=got["prompt"],
                negative=got["neg"] or "",
                seed=int(got["seed"]),
                width=int(got["width"]),
                height=int(got["height"]),
                steps=int(got["steps"]),
                guidance_scale=float(got["guidance_scale"]),
                sampler=sampler,
                lora_scale=float(got["network_multiplier"]),
            )
        )
    return recipes
