"""The sections for what a run produces besides the LoRA's weights: preview samples while it
trains, checkpoints and the saved file's format (and the Hub upload), and what MLflow records."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from trainer.config.fields import Auto, Section, field_error, opt

# Seeds end up in torch.Generator.manual_seed (which takes up to 2**64 - 1) and, in other tools
# that replay a preview, often in numpy's 32-bit seeding: 32 bits is the bound every one accepts,
# with room for walk_seed's seed + prompt index.
MAX_SEED = 2**32 - 1


class SamplePrompt(Section):
    prompt: str = opt(..., "Text of the preview image; '[trigger]' is replaced.", step="sampling")
    neg: str | None = opt(None, "Negative prompt for this preview only.", step="sampling")
    seed: int | None = opt(None, "Seed for this preview only.", step="sampling", ge=0, le=MAX_SEED)
    width: int | None = opt(None, "Width for this preview only.", step="sampling", ge=64, le=4096)
    height: int | None = opt(None, "Height for this preview only.", step="sampling", ge=64, le=4096)
    guidance_scale: float | None = opt(
        None, "Guidance for this preview only.", step="sampling", ge=0.0, le=30.0
    )
    sample_steps: int | None = opt(
        None, "Denoising steps for this preview only.", step="sampling", ge=1, le=200
    )
    network_multiplier: float | None = opt(
        None, "LoRA strength for this preview only.", step="sampling", ge=-2.0, le=4.0
    )


class SampleConfig(Section):
    sample_every: int = opt(
        250,
        "Generate preview images every this many steps (0 = never). Previews show progress but "
        "cost time.",
        step="sampling",
        level="basic",
        affects=("speed",),
        ge=0,
        le=1_000_000,
    )
    sample_start_step: int = opt(
        0,
        "No previews before this step (nor the baseline at step 0, unless force_first_sample).",
        step="sampling",
        ge=0,
        le=1_000_000,
    )
    prompts: list[SamplePrompt] = opt(
        [],
        "Preview prompts. Plain text, or with per-prompt overrides (seed, size, guidance, "
        "steps, LoRA strength). Use '[trigger]' for the trigger word.",
        step="sampling",
        level="basic",
        max_length=64,
    )
    neg: str = opt(
        "",
        "Negative prompt: what previews should avoid (ignored by Flux, which has no negative "
        "prompt at guidance-distilled settings).",
        step="sampling",
    )
    sampler: Literal["auto", "ddpm", "euler", "euler_a", "dpmpp_2m", "flowmatch"] = opt(
        "auto",
        "Sampler for previews: euler (fast, steady), euler_a (more varied), dpmpp_2m (sharp in "
        "few steps), ddpm (slow reference), flowmatch (Flux). Match what you generate with "
        "later so previews look like real results.",
        step="sampling",
        affects=("quality", "speed"),
    )
    sample_steps: int = opt(
        20,
        "Denoising steps per preview.",
        step="sampling",
        level="basic",
        affects=("speed",),
        ge=1,
        le=200,
    )
    guidance_scale: Annotated[float, Field(ge=0.0, le=30.0)] | Auto = opt(
        "auto",
        "How strictly previews follow the prompt (CFG). SD ~7, SDXL ~6, Flux ~3.5.",
        step="sampling",
    )
    width: int = opt(
        512, "Preview width in pixels.", step="sampling", level="basic", ge=64, le=4096
    )
    height: int = opt(
        512, "Preview height in pixels.", step="sampling", level="basic", ge=64, le=4096
    )
    seed: int = opt(
        42,
        "Seed of the previews, so they are comparable across steps.",
        step="sampling",
        ge=0,
        le=MAX_SEED,
    )
    walk_seed: bool = opt(
        False,
        "Use seed, seed+1, seed+2... for successive prompts instead of one seed for all.",
        step="sampling",
    )
    network_multiplier: float = opt(
        1.0,
        "LoRA strength in previews (1 = full).",
        step="sampling",
        ge=-2.0,
        le=4.0,
    )
    skip_first_sample: bool = opt(
        False,
        "Do not generate the baseline previews before training starts.",
        step="sampling",
        affects=("speed",),
    )
    force_first_sample: bool = opt(
        False,
        "Generate baseline previews even when resuming from a checkpoint.",
        step="sampling",
    )

    @field_validator("prompts", mode="before")
    @classmethod
    def _plain_text_prompts(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"prompt": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _first_sample(self) -> SampleConfig:
        if self.skip_first_sample and self.force_first_sample:
            raise field_error(
                "force_first_sample", "contradicts skip_first_sample — turn one of them off"
            )
        return self


# ----------------------------------------------------------------------------------------- save
class SaveConfig(Section):
    save_every: int = opt(
        250,
        "Save a checkpoint (LoRA + optimizer state for resuming) every this many steps.",
        step="save",
        level="basic",
        affects=("disk", "speed"),
        ge=1,
        le=1_000_000,
    )
    max_step_saves_to_keep: int = opt(
        4,
        "Keep only the newest this many checkpoints; older ones are deleted.",
        step="save",
        level="basic",
        affects=("disk",),
        ge=1,
        le=1000,
    )
    dtype: Literal["fp16", "bf16", "fp32"] = opt(
        "fp16",
        "Precision of the saved LoRA file. fp16 is what other apps expect and half of fp32's size.",
        step="save",
        affects=("disk",),
    )
    save_format: Literal["both", "webui", "diffusers"] = opt(
        "both",
        "File layout: webui (one .safetensors that A1111, Forge and ComfyUI load; LyCORIS "
        "layout for LoHa/LoKr), diffusers (the diffusers/peft layout for Python code), or both.",
        step="save",
        level="basic",
    )
    push_to_hub: bool = opt(
        False,
        "Upload the final LoRA to the Hugging Face Hub. The token is read from the HF_TOKEN "
        "environment variable, never from this file.",
        step="save",
    )
    hf_repo_id: str | None = opt(
        None,
        "Hub repository to upload to, as 'user/name'.",
        step="save",
        pattern=r"^[\w.-]+/[\w.-]+$",
    )
    hf_private: bool = opt(True, "Create the Hub repository as private.", step="save")

    @model_validator(mode="after")
    def _hub(self) -> SaveConfig:
        if self.push_to_hub and not self.hf_repo_id:
            raise field_error("hf_repo_id", "is needed when push_to_hub is on ('user/name')")
        return self


class LoggingConfig(Section):
    use_mlflow: bool = opt(
        True,
        "Record the run in MLflow (metrics, samples, files), which the studio's monitor and "
        "compare pages read. Takes the place of W&B.",
        step="save",
    )
    project_name: str = opt(
        "lora-studio",
        "MLflow experiment that groups your runs.",
        step="save",
        min_length=1,
        max_length=200,
    )
    run_name: str | None = opt(
        None, "Name of the run in MLflow; empty: the config's name.", step="save"
    )
    log_every: int = opt(
        1,
        "Record metrics every this many steps. 1 gives the loss chart a point per step (a "
        "30-step run: 30 points) at no measurable cost: the MLflow tracker buffers the points "
        "and writes them in one batch about every 2 s. Raise it only to thin very long runs' "
        "charts (the live progress file updates every step either way).",
        step="save",
        ge=1,
        le=10_000,
    )
    verbose: bool = opt(False, "Write debug detail to the run's log.", step="save")
    log_system_metrics: bool = opt(
        True, "Record CPU, RAM, disk and GPU use in MLflow while training.", step="save"
    )
