"""The model card of a saved LoRA: a Hugging Face ``README.md`` (YAML metadata + markdown).

``model_card`` builds it with huggingface_hub's ``ModelCard``/``ModelCardData``: base model,
licence, tags, the trigger word (``instance_prompt``) and a widget of the preview images in the
metadata; the trigger word, key settings, sample images, and how to use the LoRA with diffusers
and ComfyUI in the body, and the validation loss when the run scored one (``ValidationSummary``,
read from the job folder's ``validation.json`` that ``trainer.engine.validation`` writes).
``base_model_licence`` reads the base model's licence from the Hub
(``trainer.models.hub.inspect_repo``); a local or demo model, or an offline studio, gets
``other`` with the reason. ``trainer.lora.usage`` writes the card next to each saved LoRA, and
``save.push_to_hub`` uploads it as the repository's card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from trainer.config.schema import TrainingConfig
from trainer.files import read_json
from trainer.models.hub import FOUND, inspect_repo, is_hub_id

ARCH_TAGS = {
    "sd15": ["stable-diffusion", "stable-diffusion-diffusers"],
    "sdxl": ["stable-diffusion-xl", "stable-diffusion-xl-diffusers"],
    "flux": ["flux", "flux-diffusers"],
}
ARCH_NAMES = {"sd15": "Stable Diffusion 1.5", "sdxl": "SDXL", "flux": "Flux.1"}
VALIDATION_FILE = "validation.json"  # in the job folder, beside progress.json


def remade_preview(step: int | None) -> str:
    """What the diffusers script makes again: the same words in the script and on the card."""
    return (
        f"the run's first preview of step {step}"
        if step
        else "the first preview of the run's last step"
    )


@dataclass(frozen=True)
class ValidationSummary:
    """What a run's validation found, for the card: how many images, where they came from
    (``held_out``: taken out of the training images; else a validation folder), the validation
    loss by step and the best saved LoRA (step, loss)."""

    images: int
    held_out: bool
    history: dict[int, float]
    best: tuple[int, float] | None

    def to_json(self) -> dict[str, Any]:
        best = list(self.best) if self.best else None
        history = {str(k): v for k, v in sorted(self.history.items())}
        return {"images": self.images, "held_out": self.held_out, "history": history, "best": best}

    @classmethod
    def read(cls, job_dir: Path | None) -> ValidationSummary | None:
        """The job folder's summary; None when the run scored none (or it cannot be read)."""
        data = read_json(Path(job_dir) / VALIDATION_FILE) if job_dir is not None else None
        try:
            best = data.get("best") if data else None
            return cls(
                images=int(data["images"]),
                held_out=bool(data["held_out"]),
                history={int(k): float(v) for k, v in data["history"].items()},
                best=(int(best[0]), float(best[1])) if best else None,
            )
        except (TypeError, KeyError, ValueError, AttributeError, IndexError):
            return None


@dataclass(frozen=True)
class Licence:
    """A licence as card metadata: an identifier the Hub knows, else ``other`` with a name and
    a link; ``note`` says where it came from."""

    license: str
    name: str | None = None
    link: str | None = None
    note: str = ""


def base_model_licence(cfg: TrainingConfig) -> Licence:
    """The base model's licence: what its Hub page says (one request); unknown for a local or
    demo model, or when the Hub cannot be asked (offline, unreachable)."""
    ref = cfg.model.name_or_path
    if not is_hub_id(ref):
        return Licence(
            "other",
            "unknown",
            note="the base model is a local file or folder: its licence is "
            "not known to the studio — check where it came from",
        )
    check = inspect_repo(ref, cfg.model.arch)
    page = check.page_url
    if check.state == FOUND and check.license:
        if check.license == "other":
            return Licence("other", "base-model-licence", page, f"the licence on {page}")
        return Licence(check.license, note=f"the licence of {ref} on the Hugging Face Hub")
    return Licence(
        "other",
        "unknown",
        page,
        f"the licence of {ref} could not be read ({check.state}): see {page}",
    )


def _code(text: str) -> str:
    """User text as an inline code span (never markup, links or images)."""
    return "`` " + text.replace("`", "'").replace("\n", " ") + " ``"


def _steps(cfg: TrainingConfig, step: int) -> str:
    if cfg.train.epochs is not None:
        return f"{step} ({cfg.train.epochs} epochs planned)"
    return str(step) if step == cfg.train.steps else f"{step} of {cfg.train.steps}"


def _settings_table(cfg: TrainingConfig, step: int) -> list[str]:
    net, train = cfg.network, cfg.train
    resolution = cfg.datasets[0].resolution if cfg.datasets else []
    rows = [
        ("network", f"{net.type}, rank {net.linear}, alpha {net.linear_alpha}"),
        ("steps", _steps(cfg, step)),
        ("learning rate", f"{train.lr:g} ({train.lr_scheduler})"),
        ("optimizer", str(train.optimizer)),
        ("resolution", ", ".join(str(r) for r in resolution)),
        ("batch size", f"{train.batch_size} x {train.gradient_accumulation_steps} accumulation"),
        ("text encoder trained", "yes" if train.train_text_encoder else "no"),
        ("saved precision", cfg.save.dtype),
    ]
    if train.use_ema:
        rows.append(("weights", f"EMA average (decay {train.ema_decay:g})"))
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _validation_section(summary: ValidationSummary | None, step: int) -> list[str]:
    """The card's "Validation" section: nothing when the run scored no validation images."""
    if summary is None or not summary.history:
        return []
    source = (
        "held out of the training images"
        if summary.held_out
        else "from a separate validation folder"
    )
    lines = [
        f"{summary.images} validation images, {source} and never trained on, were scored with "
        "the training loss at fixed noise and timesteps (validation loss: lower is better)."
    ]
    if summary.best is None:
        lines.append("No saved LoRA had a validation loss yet.")
    else:
        best_step, best_loss = summary.best
        best = f"The best checkpoint by validation loss is step {best_step} ({best_loss:.4f})"
        if best_step == step:
            lines.append(f"{best}: this LoRA.")
        elif step in summary.history:
            lines.append(f"{best}; this LoRA (step {step}) scored {summary.history[step]:.4f}.")
        else:
            lines.append(f"{best}.")
    return ["## Validation", "", " ".join(lines), ""]


def model_card(
    cfg: TrainingConfig,
    *,
    base_model: str | None,
    licence: Licence,
    recipes: Sequence[Any],
    samples: Sequence[str],
    step: int,
    snippet: str,
    files: tuple[str, str, str],
    comfy_files: tuple[str, str],
    validation: ValidationSummary | None = None,
) -> ModelCard:
    """The card of the LoRA ``files[0]`` saved at ``step``.

    ``base_model``: the Hub id or name for the metadata (None leaves it to the body: the Hub
    refuses a ``base_model`` that is not one of its models); ``recipes``: the previews'
    ``trainer.lora.recipes.Recipe`` (the first is what ``snippet`` makes); ``samples``: the
    preview images' paths relative to the card, in prompt order; ``files``: the LoRA, the
    diffusers script and the ComfyUI workflow, relative to the card; ``comfy_files``: the
    checkpoint and LoRA file names the workflow expects; ``validation``: the run's validation
    loss (a "Validation" section)."""
    arch = cfg.model.arch
    trigger = next((ds.trigger_word for ds in cfg.datasets if ds.trigger_word), None)
    widget = [
        {"text": recipe.prompt, "output": {"url": image}}
        | ({"parameters": {"negative_prompt": recipe.negative}} if recipe.negative else {})
        for recipe, image in zip(recipes, samples, strict=False)
    ]
    data = ModelCardData(
        base_model=base_model,
        license=licence.license,
        license_name=licence.name,
        license_link=licence.link,
        library_name="diffusers",
        pipeline_tag="text-to-image",
        tags=["lora", "diffusers", "text-to-image", "template:sd-lora", *ARCH_TAGS[arch]],
        instance_prompt=trigger,
        widget=widget or None,
    )
    first = recipes[0]
    lora, script, workflow = files
    base_name = base_model or cfg.model.name_or_path.rsplit("/", 1)[-1]
    local_base = not is_hub_id(cfg.model.name_or_path)
    body = [
        f"# {cfg.name}",
        "",
        f"A LoRA for {ARCH_NAMES[arch]} ({_code(base_name)}), trained with LoRA Studio: `{lora}`.",
        "",
        "## Trigger word",
        "",
        f"Use {_code(trigger)} in your prompts." if trigger else "This LoRA has no trigger word.",
        "",
        "## Training settings",
        "",
        *_settings_table(cfg, step),
        "",
        *_validation_section(validation, step),
        "## Sample images",
        "",
    ]
    if samples:
        body.append(
            f"The run's previews for this LoRA (sampler {first.sampler}, {first.steps} steps, "
            f"guidance {first.guidance_scale:g}, {first.width}x{first.height}):"
        )
        body.append("")
        for recipe, image in zip(recipes, samples, strict=False):
            body += [f"![preview]({image})", "", f"{_code(recipe.prompt)}, seed {recipe.seed}", ""]
    else:
        body += ["This run made no previews.", ""]
    body += [
        "## Use it with diffusers",
        "",
        f"`{script}` (next to this card) makes {remade_preview(step)} again with the "
        "previews' settings; on the same kind of device and precision as the run, pixel for "
        f"pixel. The script below is `{script}`"
        + (
            f" with the base model named {_code(base_name)}: the downloaded script has its "
            "path on the machine that trained it, a card shows no local paths."
            if local_base
            else "."
        ),
        "",
        "```python",
        snippet.rstrip(),
        "```",
        "",
        "## Use it in ComfyUI",
        "",
        f"Load `{workflow}` (ComfyUI's API prompt format) with the base model as "
        f"`{comfy_files[0]}` and this LoRA as `{comfy_files[1]}` in ComfyUI's `models` folders "
        f"(or pick your files in the loader nodes). The LoRA loads at strength "
        f"{first.lora_scale:g}, with the previews' seed, steps, guidance and sampler; ComfyUI "
        "samples its own way, so its pictures are alike, not identical.",
        "",
        "## Licence",
        "",
        f"This LoRA follows the licence of its base model: `{licence.license}`"
        + (f" ({licence.name})" if licence.name else "")
        + (f", {licence.note}." if licence.note else "."),
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
