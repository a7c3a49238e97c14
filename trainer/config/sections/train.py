"""The train section: steps, batch and memory, optimizer and learning-rate schedule, noise
and timesteps, the loss and regularization; with the rules between its own fields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, FiniteFloat, model_validator

from trainer.config.fields import Auto, Precision, Section, opt, raise_all
from trainer.config.sections.outputs import MAX_SEED


class LRSchedulerParams(Section):
    warmup_steps: int = opt(
        0,
        "Steps at the start during which the learning rate rises from 0 to its value. Use "
        "either this or warmup_ratio.",
        step="optimizer",
        ge=0,
        le=1_000_000,
    )
    warmup_ratio: float = opt(
        0.0,
        "Warmup as a share of all steps (0.05 = 5%). Used when warmup_steps is 0.",
        step="optimizer",
        ge=0.0,
        lt=1.0,
    )
    num_cycles: int = opt(
        1,
        "cosine_with_restarts: how many times the rate falls and restarts.",
        step="optimizer",
        ge=1,
        le=100,
    )
    min_lr_ratio: float = opt(
        0.0,
        "Lowest learning rate as a share of the start value, for decaying schedules.",
        step="optimizer",
        ge=0.0,
        le=1.0,
    )
    power: float = opt(
        1.0,
        "polynomial: curve of the decay (1 = straight line, 2 = falls faster early).",
        step="optimizer",
        level="expert",
        gt=0.0,
        le=10.0,
    )


class TrainConfig(Section):
    steps: Annotated[int, Field(ge=1, le=1_000_000)] | Auto = opt(
        1000,
        "Total optimizer steps. 'auto' lets the advisor pick from your image count and the "
        "repeats per image typical for what you train. Not used when epochs is set.",
        step="training",
        level="basic",
        affects=("quality", "speed"),
    )
    epochs: int | None = opt(
        None,
        "Train this many passes over the dataset instead of a number of steps. Empty: steps "
        "decides. When set, epochs wins over steps: at the start of the run the trainer makes "
        "it steps = epochs x steps per epoch, counted from your images as they are batched "
        "(per bucket: images x repeats / batch size, rounded up; then / gradient accumulation "
        "and / processes), and logs both.",
        step="training",
        level="basic",
        affects=("quality", "speed"),
        ge=1,
        le=100_000,
    )
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = opt(
        1,
        "Images per step. Larger is smoother and faster per image, but uses more VRAM.",
        step="memory",
        level="basic",
        affects=("memory", "speed", "quality"),
    )
    gradient_accumulation_steps: int = opt(
        1,
        "Add up gradients over this many batches before each update: a bigger effective batch "
        "without more VRAM.",
        step="memory",
        level="basic",
        affects=("memory", "speed"),
        ge=1,
        le=1024,
    )
    auto_scale_batch_size: bool = opt(
        False,
        "Grow the batch from min_batch_size to max_batch_size over the warmup steps.",
        step="memory",
        affects=("memory", "speed"),
    )
    min_batch_size: int = opt(1, "Smallest batch when auto-scaling.", step="memory", ge=1, le=256)
    max_batch_size: int = opt(8, "Largest batch when auto-scaling.", step="memory", ge=1, le=256)
    batch_size_warmup_steps: int = opt(
        100,
        "Steps over which the batch grows from min to max when auto-scaling.",
        step="memory",
        ge=0,
        le=1_000_000,
    )
    gradient_checkpointing: bool = opt(
        True,
        "Recompute activations in the backward pass instead of storing them: far less VRAM "
        "for about 20-30% more time.",
        step="memory",
        level="basic",
        affects=("memory", "speed"),
    )
    cache_text_embeddings: bool = opt(
        False,
        "Encode every caption once and reuse it, so the text encoder can leave the GPU. Not "
        "with tag shuffling, token dropout or text-encoder training.",
        step="memory",
        affects=("speed", "memory"),
    )
    unload_text_encoder: bool = opt(
        False,
        "Free the text encoder(s) once the embeddings are cached. Needs "
        "cache_text_embeddings; sample prompts are encoded before it is freed.",
        step="memory",
        affects=("memory",),
    )
    optimizer: Literal["adamw", "adamw8bit", "adafactor", "prodigy", "lion"] = opt(
        "adamw8bit",
        "Update rule. adamw8bit: AdamW with 8-bit state, the usual LoRA choice. adamw: full "
        "precision. adafactor: least memory. prodigy: finds its own learning rate (set lr 1.0). "
        "lion: fast, wants a 3-10x smaller learning rate.",
        step="optimizer",
        level="basic",
        affects=("quality", "memory"),
    )
    lr: Annotated[float, Field(gt=0.0, le=10.0)] | Auto = opt(
        1e-4,
        "Learning rate: the size of each update. Too high burns the image, too low learns "
        "nothing. 1e-4 is a safe start for most LoRAs.",
        step="optimizer",
        level="basic",
        affects=("quality",),
    )
    unet_lr: float | None = opt(
        None,
        "Learning rate of the U-Net / transformer LoRA. Empty: use lr.",
        step="optimizer",
        affects=("quality",),
        gt=0.0,
        le=10.0,
    )
    text_encoder_lr: float | None = opt(
        None,
        "Learning rate of the text-encoder LoRA (usually half of the U-Net's or less). "
        "Empty: half of lr.",
        step="optimizer",
        affects=("quality",),
        gt=0.0,
        le=10.0,
    )
    weight_decay: float = opt(
        1e-2,
        "Pulls weights slightly towards zero each step, a mild guard against overfitting.",
        step="optimizer",
        affects=("quality",),
        ge=0.0,
        le=1.0,
    )
    optimizer_params: dict[str, FiniteFloat | bool | list[FiniteFloat]] = opt(
        {},
        "Extra optimizer settings passed as they are, e.g. {betas: [0.9, 0.99], eps: 1e-8} or "
        "Prodigy's {d_coef: 1.0}. Unknown names are reported when the run starts.",
        step="optimizer",
        level="expert",
    )
    lr_scheduler: Literal[
        "constant",
        "constant_with_warmup",
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "rex",
    ] = opt(
        "constant",
        "How the learning rate changes over the run: constant; with a warmup; falling in a "
        "line, a cosine curve (with restarts), a polynomial, or REX (stays high longer, then "
        "falls).",
        step="optimizer",
        level="basic",
        affects=("quality",),
    )
    lr_scheduler_params: LRSchedulerParams = opt(
        LRSchedulerParams(),
        "Warmup, cycles, floor and curve of the learning-rate schedule.",
        step="optimizer",
    )
    max_grad_norm: float = opt(
        1.0,
        "Clip gradients to this size to avoid sudden jumps; 0 turns clipping off.",
        step="optimizer",
        affects=("quality",),
        ge=0.0,
        le=100.0,
    )
    train_unet: bool = opt(
        True,
        "Train the U-Net / transformer LoRA (almost always on).",
        step="training",
        level="advanced",
        affects=("quality",),
    )
    train_text_encoder: bool = opt(
        False,
        "Also train a LoRA on the text encoder(s). Helps SD1.5 learn a trigger word; usually "
        "off for SDXL, not available for Flux.",
        step="training",
        archs=("sd15", "sdxl"),
        affects=("quality", "memory"),
    )
    seed: int = opt(
        42,
        "Random seed: the same seed and settings give the same run.",
        step="training",
        ge=0,
        le=MAX_SEED,
    )
    dtype: Precision = opt(
        "auto",
        "Math precision while training: bf16 on recent NVIDIA GPUs, fp16 on older ones, fp32 "
        "on CPU (fp16 on CPU fails). 'auto' picks by device.",
        step="training",
        affects=("memory", "speed", "quality"),
    )
    noise_scheduler: Literal["auto", "ddpm", "euler", "flowmatch"] = opt(
        "auto",
        "How noise is added during training: ddpm or euler for SD models, flow matching for "
        "Flux. 'auto' picks the model's own.",
        step="training",
        affects=("quality",),
    )
    timestep_type: Literal["auto", "uniform", "sigmoid", "shift"] = opt(
        "auto",
        "How noise levels are drawn: uniform; sigmoid (logit-normal, more middle levels); "
        "shift (more high-noise levels, for flow models).",
        step="training",
        affects=("quality",),
    )
    timestep_shift: float = opt(
        3.0,
        "For timestep_type 'shift': how strongly draws lean towards high noise.",
        step="training",
        level="expert",
        gt=0.0,
        le=20.0,
    )
    content_or_style: Literal["balanced", "content", "style"] = opt(
        "balanced",
        "Timestep bias: 'content' favours high noise (composition, subject), 'style' favours "
        "low noise (texture, fine detail).",
        step="training",
        level="basic",
        affects=("quality",),
    )
    min_denoising_steps: int = opt(
        0,
        "Lowest noise level (0-999) trained on.",
        step="training",
        level="expert",
        ge=0,
        le=999,
    )
    max_denoising_steps: int = opt(
        999,
        "Highest noise level (0-999) trained on.",
        step="training",
        level="expert",
        ge=0,
        le=999,
    )
    loss_type: Literal["mse", "l1", "huber"] = opt(
        "mse",
        "How errors are measured: mse (standard), l1 (robust to outliers), huber (mse for "
        "small errors, l1 for large ones).",
        step="training",
        level="basic",
        affects=("quality",),
    )
    huber_delta: float = opt(
        0.1,
        "Where Huber loss switches from squared to absolute error.",
        step="training",
        level="expert",
        gt=0.0,
        le=10.0,
    )
    loss_target: Literal["noise", "source", "unaugmented", "differential_noise"] = opt(
        "noise",
        "What the prediction is compared with: noise (standard); source (the clean image the "
        "prediction implies, weighted by noise level; v-prediction and Flux only, for other "
        "models it equals noise); unaugmented (the image before colour augmentations, so they "
        "only vary the input); differential_noise (half of what colour augmentations changed "
        "is added to the noise, so the model learns to remove it).",
        step="training",
        affects=("quality",),
    )
    min_snr_gamma: float | None = opt(
        None,
        "Min-SNR weighting: lowers the weight of easy low-noise steps for faster, steadier "
        "learning. 5 is common; empty turns it off.",
        step="training",
        affects=("quality",),
        gt=0.0,
        le=20.0,
    )
    learnable_snr_gos: bool = opt(
        False,
        "Learn a per-noise-level loss weight alongside the LoRA instead of a fixed one.",
        step="training",
        level="expert",
        affects=("quality",),
    )
    noise_offset: float = opt(
        0.0,
        "Add a little constant noise per channel so the model learns very dark and very bright "
        "images. 0.03-0.1 typical.",
        step="training",
        affects=("quality",),
        ge=0.0,
        le=1.0,
    )
    optimal_noise_pairing: bool = opt(
        False,
        "For each image pick, from several noise draws, the one closest to the image, which "
        "makes training targets less random.",
        step="training",
        level="expert",
        affects=("quality", "speed"),
    )
    optimal_noise_pairing_samples: int = opt(
        16,
        "How many noise draws optimal noise pairing chooses from.",
        step="training",
        level="expert",
        ge=2,
        le=256,
    )
    force_consistent_noise: bool = opt(
        False,
        "Give each image the same noise every epoch (seeded by image), for steadier losses.",
        step="training",
        level="expert",
        affects=("quality",),
    )
    do_cfg: bool = opt(
        False,
        "Train with classifier-free guidance: the prediction is guided against an empty "
        "prompt as at generation time.",
        step="training",
        level="expert",
        affects=("quality", "speed"),
    )
    cfg_scale: float = opt(
        3.0,
        "Guidance scale used when do_cfg is on.",
        step="training",
        level="expert",
        ge=1.0,
        le=20.0,
    )
    use_ema: bool = opt(
        False,
        "Keep an exponential moving average of the LoRA weights and save that: smoother, "
        "less overfit results.",
        step="regularization",
        affects=("quality", "memory"),
    )
    ema_decay: float = opt(
        0.99,
        "How slowly the average follows the weights (0.99-0.9999).",
        step="regularization",
        ge=0.5,
        lt=1.0,
    )
    diff_output_preservation: bool = opt(
        False,
        "Differential output preservation: make the LoRA leave prompts with the class word "
        "(e.g. 'person' instead of your trigger) unchanged, so it only learns your subject.",
        step="regularization",
        affects=("quality", "speed"),
    )
    diff_output_preservation_multiplier: float = opt(
        1.0,
        "Strength of differential output preservation.",
        step="regularization",
        ge=0.0,
        le=10.0,
    )
    diff_output_preservation_class: str = opt(
        "",
        "The class word that replaces the trigger word (e.g. 'woman', 'dog', 'painting').",
        step="regularization",
    )
    blank_prompt_preservation: bool = opt(
        False,
        "Make the LoRA leave generations from an empty prompt unchanged, protecting the base "
        "model's general knowledge.",
        step="regularization",
        affects=("quality", "speed"),
    )
    blank_prompt_preservation_multiplier: float = opt(
        1.0,
        "Strength of blank prompt preservation.",
        step="regularization",
        ge=0.0,
        le=10.0,
    )
    inverted_mask_prior: bool = opt(
        False,
        "In masked-out areas, train towards what the base model would predict, so the LoRA "
        "leaves backgrounds alone. Needs masks.",
        step="regularization",
        level="expert",
        affects=("quality",),
    )
    inverted_mask_prior_multiplier: float = opt(
        0.5,
        "Strength of the inverted mask prior.",
        step="regularization",
        level="expert",
        ge=0.0,
        le=10.0,
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        raise_all(list(_train_problems(self)))
        return self


def _train_problems(train: TrainConfig) -> Iterator[tuple[str, str]]:
    if train.min_denoising_steps >= train.max_denoising_steps:
        yield (
            "min_denoising_steps",
            f"must be below max_denoising_steps ({train.max_denoising_steps})",
        )
    if train.min_batch_size > train.max_batch_size:
        yield "min_batch_size", f"is above max_batch_size ({train.max_batch_size})"
    if train.unload_text_encoder and not train.cache_text_embeddings:
        yield (
            "unload_text_encoder",
            "needs cache_text_embeddings: the encoder cannot be freed while captions still "
            "need it — turn cache_text_embeddings on",
        )
    if train.train_text_encoder and train.cache_text_embeddings:
        yield (
            "cache_text_embeddings",
            "cannot be on while train_text_encoder is: a trained encoder changes its "
            "embeddings — turn one of them off",
        )
    if not (train.train_unet or train.train_text_encoder):
        yield "train_unet", "nothing would be trained — turn train_unet on"
    if train.diff_output_preservation and not train.diff_output_preservation_class.strip():
        yield (
            "diff_output_preservation_class",
            "is empty but differential output preservation needs a class word (e.g. 'person')",
        )
    warmup = train.lr_scheduler_params.warmup_steps
    # With epochs set, the steps are only known from the images (advisor.dataset.run_steps).
    steps = train.steps if train.epochs is None else "auto"
    if isinstance(steps, int) and warmup and warmup >= steps:
        yield (
            "lr_scheduler_params.warmup_steps",
            f"{warmup} warmup steps leave no training in a {steps}-step run — use "
            "about 5% of the steps",
        )
