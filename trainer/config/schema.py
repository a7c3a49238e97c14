"""The one contract: every training setting, typed, described and bounded.

This pydantic model tree drives the wizard (each field's step, level and what it affects), the
validation (errors name a dotted path such as ``train.lr_scheduler_params.warmup_steps``), the
presets and YAML export (comments come from the descriptions) and the MLflow params.

Field names follow ostris/ai-toolkit where the seeds name an option, so its users recognise them.
Fields that the advisor should decide may hold ``"auto"``: "decision" autos (steps, learning rate,
batch, rank) must be resolved before a run starts; "technical" autos (device, precision, noise
scheduler, sampler...) have a per-architecture answer in ``ARCH_DEFAULTS``.

Tiny CPU config (what the demo presets use)::

    model: {arch: sd15, name_or_path: "demo:sd15"}
    datasets: [{folder_path: "demo:dataset", resolution: [64]}]
    train: {steps: 30, batch_size: 2, lr: 1e-3}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo

Auto = Literal["auto"]
Arch = Literal["sd15", "sdxl", "flux"]
Intent = Literal["person", "character", "style", "object", "concept", "other"]
Level = Literal["basic", "advanced", "expert"]
Affect = Literal["quality", "speed", "memory", "disk"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

# The wizard's steps, in order (seed 001). Each field names one of these keys.
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


# --------------------------------------------------------------------------------------- model
class ModelConfig(Section):
    arch: Arch = opt(
        "sd15",
        "Model family: sd15 (Stable Diffusion 1.5, light, 512 px), sdxl (SDXL, 1024 px, "
        "two text encoders) or flux (Flux.1, a large transformer; needs much more memory).",
        step="model",
        level="basic",
        affects=("quality", "memory", "speed"),
    )
    name_or_path: str = opt(
        "demo:sd15",
        "Where the base model comes from: a Hugging Face id (e.g. "
        "'stable-diffusion-v1-5/stable-diffusion-v1-5'), a local diffusers folder, a single "
        "'.safetensors' checkpoint file, or 'demo:sd15' / 'demo:sdxl' / 'demo:flux' for the tiny "
        "built-in models that train on a CPU in about a minute.",
        step="model",
        level="basic",
        min_length=1,
    )
    is_v_pred: bool = opt(
        False,
        "The base model predicts velocity ('v-prediction'), like SD 2.x 768 or NoobAI-XL "
        "v-pred. Wrong here means washed-out or burnt samples.",
        step="model",
        archs=("sd15", "sdxl"),
        affects=("quality",),
    )
    vae_path: str | None = opt(
        None,
        "A different VAE (the image encoder/decoder) to use instead of the model's own, "
        "e.g. an fp16-safe SDXL VAE. Hugging Face id, folder or file.",
        step="model",
        level="expert",
        affects=("quality",),
    )
    te_name_or_path: str | None = opt(
        None,
        "A different text encoder to load instead of the model's own (folder or id).",
        step="model",
        level="expert",
        affects=("quality",),
    )
    refiner_name_or_path: str | None = opt(
        None,
        "SDXL only: a refiner model that finishes the preview samples, as many SDXL users "
        "generate. It is not trained.",
        step="model",
        level="expert",
        archs=("sdxl",),
    )
    lora_path: str | None = opt(
        None,
        "Start from an existing LoRA file or folder instead of from zero (continue or refine "
        "an earlier LoRA). Its rank and type must match the network settings.",
        step="model",
        affects=("quality",),
    )
    quantize: bool = opt(
        False,
        "Store the main network's (U-Net or transformer) frozen weights in fewer bits. "
        "Saves a lot of VRAM on big models (Flux) at a small quality cost.",
        step="quantization",
        level="basic",
        affects=("memory", "quality", "speed"),
    )
    qtype: Literal["float8", "int8", "nf4", "fp4"] = opt(
        "float8",
        "Bits per weight when quantizing: float8 / int8 halve memory, nf4 / fp4 quarter it "
        "(more quality loss). float8 works on every device; int8 / nf4 / fp4 use bitsandbytes "
        "(NVIDIA GPUs and CPUs).",
        step="quantization",
        level="basic",
        affects=("memory", "quality"),
    )
    quantize_te: bool = opt(
        False,
        "Also quantize the text encoder(s). Worth it for Flux's large T5 encoder.",
        step="quantization",
        affects=("memory",),
    )
    qtype_te: Literal["float8", "int8", "nf4", "fp4"] = opt(
        "float8",
        "Bits per weight for the text encoder(s) when quantize_te is on.",
        step="quantization",
        level="expert",
        affects=("memory", "quality"),
    )
    accuracy_recovery_adapter: str | None = opt(
        None,
        "An 'accuracy recovery adapter' (ARA): a LoRA made to undo the damage of heavy "
        "quantization, loaded frozen under the LoRA you train.",
        step="quantization",
        level="expert",
        affects=("quality",),
    )
    low_vram: bool = opt(
        False,
        "Keep parts that are not needed right now (VAE, text encoders) off the GPU and load "
        "weights piece by piece. Slower, but fits smaller cards.",
        step="advanced",
        affects=("memory", "speed"),
    )
    layer_offloading: bool = opt(
        False,
        "Keep a share of the model's layers in system RAM and move each to the GPU only while "
        "it runs. Big VRAM savings, roughly +15-50% step time.",
        step="advanced",
        affects=("memory", "speed"),
    )
    layer_offloading_transformer_percent: float = opt(
        1.0,
        "Share (0-1) of U-Net/transformer layers kept in RAM when layer offloading is on.",
        step="advanced",
        affects=("memory", "speed"),
        ge=0.0,
        le=1.0,
    )
    layer_offloading_text_encoder_percent: float = opt(
        1.0,
        "Share (0-1) of text-encoder layers kept in RAM when layer offloading is on.",
        step="advanced",
        affects=("memory", "speed"),
        ge=0.0,
        le=1.0,
    )
    attn_masking: bool = opt(
        False,
        "Flux: mask padding tokens of the prompt in attention, so short captions are not "
        "diluted by padding.",
        step="advanced",
        level="expert",
        archs=("flux",),
        affects=("quality",),
    )
    split_model_over_gpus: bool = opt(
        False,
        "Flux: spread the transformer's blocks over several GPUs when one is too small.",
        step="advanced",
        level="expert",
        archs=("flux",),
        affects=("memory", "speed"),
    )
    compile: bool = opt(
        False,
        "Compile the network with torch.compile: faster steps after a slow first one. "
        "Not with quantized 4-bit weights.",
        step="advanced",
        level="expert",
        affects=("speed",),
    )
    attention_backend: Literal["auto", "native", "math", "flash", "xformers", "sage"] = opt(
        "auto",
        "Attention implementation: auto picks PyTorch's native scaled-dot-product attention; "
        "flash / xformers / sage need their packages and an NVIDIA GPU; math is the slow "
        "reference.",
        step="advanced",
        level="expert",
        affects=("speed", "memory"),
    )
    vae_device: Device = opt(
        "auto",
        "Where the VAE runs. 'cpu' frees VRAM when latents are cached.",
        step="advanced",
        level="expert",
        affects=("memory", "speed"),
    )
    vae_dtype: Precision = opt(
        "auto",
        "VAE precision. SDXL's VAE gives NaN/black images in fp16: use fp32 or bf16.",
        step="advanced",
        level="expert",
        affects=("memory", "quality"),
    )
    te_device: Device = opt(
        "auto",
        "Where the text encoder(s) run. 'cpu' frees VRAM when embeddings are cached.",
        step="advanced",
        level="expert",
        affects=("memory", "speed"),
    )
    te_dtype: Precision = opt(
        "auto",
        "Text encoder precision.",
        step="advanced",
        level="expert",
        affects=("memory", "quality"),
    )


# ------------------------------------------------------------------------------------- network
class NetworkConfig(Section):
    type: Literal["lora", "locon", "loha", "lokr", "dora"] = opt(
        "lora",
        "Adapter kind. lora: the standard. locon: LoRA that also adapts convolution layers "
        "(good for styles). loha / lokr: LyCORIS adapters with more capacity per byte. dora: "
        "LoRA with a separate magnitude, often closer to full fine-tuning.",
        step="network",
        level="basic",
        affects=("quality", "disk"),
    )
    linear: Annotated[int, Field(ge=1, le=1024)] | Auto = opt(
        16,
        "Rank ('dim'): how much the LoRA can learn. 8-32 is typical; higher means bigger files "
        "and more risk of overfitting.",
        step="network",
        level="basic",
        affects=("quality", "memory", "disk"),
    )
    linear_alpha: Annotated[float, Field(gt=0, le=4096)] | Auto = opt(
        16.0,
        "Alpha: scales the LoRA's effect (scale = alpha / rank). alpha = rank is neutral; "
        "alpha = rank/2 learns more gently.",
        step="network",
        level="basic",
        affects=("quality",),
    )
    conv: int | None = opt(
        None,
        "Rank for convolution layers (LoCon / LoHa / LoKr). Empty: same as the linear rank "
        "for locon, no conv layers otherwise. SD models only.",
        step="network",
        archs=("sd15", "sdxl"),
        affects=("quality", "disk"),
        ge=1,
        le=512,
    )
    conv_alpha: float | None = opt(
        None,
        "Alpha for convolution layers. Empty: same as conv rank.",
        step="network",
        archs=("sd15", "sdxl"),
        gt=0,
        le=4096,
    )
    lokr_factor: int = opt(
        -1,
        "LoKr: the Kronecker factor splitting each weight; -1 picks it automatically, "
        "larger means smaller files.",
        step="network",
        ge=-1,
        le=64,
    )
    lokr_full_rank: bool = opt(
        False,
        "LoKr: train the large Kronecker factor at full rank (much more capacity).",
        step="network",
        level="expert",
        affects=("quality", "disk"),
    )
    dropout: float = opt(
        0.0,
        "Dropout inside the LoRA layers, a light defence against overfitting.",
        step="network",
        level="expert",
        affects=("quality",),
        ge=0.0,
        le=0.9,
    )
    target_modules: list[str] | Auto = opt(
        "auto",
        "Which layers get adapters (module name endings such as 'to_q'). 'auto' uses the "
        "proven set per architecture (attention projections).",
        step="network",
        level="expert",
        affects=("quality", "memory"),
    )

    @field_validator("lokr_factor")
    @classmethod
    def _no_zero_factor(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 is not a factor; use -1 for automatic or a number from 1 up")
        return value


# ------------------------------------------------------------------------------------ datasets
class Augmentation(Section):
    type: Literal["color_jitter", "blur", "rotate", "crop_scale", "flip_x", "flip_y"] = opt(
        ...,
        "The change applied to a training image: colour jitter, Gaussian blur, small rotation, "
        "random crop-and-scale, or a horizontal / vertical flip.",
        step="resolution",
    )
    probability: float = opt(
        0.5,
        "Chance (0-1) that this augmentation is applied to an image each time it is used.",
        step="resolution",
        ge=0.0,
        le=1.0,
    )
    strength: float = opt(
        0.1,
        "How strong the change is (0-1): jitter amount, blur radius share, rotation share of "
        "30 degrees, crop share.",
        step="resolution",
        ge=0.0,
        le=1.0,
    )


class DatasetConfig(Section):
    folder_path: str = opt(
        "demo:dataset",
        "Folder of images with a caption file beside each (same name, e.g. 'cat.png' + "
        "'cat.txt'). 'demo:dataset' is the small generated demo set.",
        step="dataset",
        level="basic",
        min_length=1,
    )
    trigger_word: str | None = opt(
        None,
        "A rare word that will call up what you train (e.g. 'sks'). It is put in front of each "
        "caption that lacks it, and '[trigger]' in prompts is replaced by it.",
        step="dataset",
        level="basic",
        affects=("quality",),
    )
    caption_ext: str = opt(
        "txt",
        "Extension of the caption files next to the images (txt, caption...).",
        step="dataset",
        level="basic",
        pattern=r"^[A-Za-z0-9_.-]{1,16}$",
    )
    default_caption: str = opt(
        "",
        "Caption used for images that have no caption file.",
        step="dataset",
        level="basic",
    )
    num_repeats: int = opt(
        1,
        "How many times each image is seen per epoch. Balances small datasets against large "
        "ones in the same run (like kohya's '10_name' folders).",
        step="dataset",
        level="basic",
        affects=("quality", "speed"),
        ge=1,
        le=1000,
    )
    keep_tokens: int = opt(
        0,
        "Number of leading comma-separated tags never shuffled or dropped (keep the trigger "
        "word first).",
        step="dataset",
        ge=0,
        le=64,
    )
    shuffle_tokens: bool = opt(
        False,
        "Shuffle comma-separated tags in each caption every time, so no tag order is learned.",
        step="dataset",
        affects=("quality",),
    )
    token_dropout_rate: float = opt(
        0.0,
        "Chance (0-1) of dropping each tag (after keep_tokens) each time a caption is used.",
        step="dataset",
        affects=("quality",),
        ge=0.0,
        le=1.0,
    )
    caption_dropout_rate: float = opt(
        0.05,
        "Chance (0-1) of training an image with an empty caption, which helps the LoRA work "
        "without exact prompts.",
        step="regularization",
        level="basic",
        affects=("quality",),
        ge=0.0,
        le=1.0,
    )
    is_reg: bool = opt(
        False,
        "This dataset holds regularisation images (generic images of the class) that keep the "
        "model from forgetting what the class looks like.",
        step="regularization",
        affects=("quality", "speed"),
    )
    loss_multiplier: float = opt(
        1.0,
        "Weight of this dataset's images in the loss (e.g. 0.5 for regularisation images).",
        step="regularization",
        ge=0.0,
        le=10.0,
    )
    resolution: list[Annotated[int, Field(ge=64, le=4096)]] = opt(
        [512],
        "Training resolution(s) in pixels. Several values train at several sizes. Use the "
        "model's native size (512 SD1.5, 1024 SDXL/Flux) unless memory is short.",
        step="resolution",
        level="basic",
        affects=("quality", "memory", "speed"),
        min_length=1,
        max_length=8,
    )
    enable_bucketing: bool = opt(
        True,
        "Group images by aspect ratio instead of cropping everything square.",
        step="resolution",
        affects=("quality",),
    )
    bucket_no_upscale: bool = opt(
        False,
        "Never upscale small images to fill a bucket; they train at their own size.",
        step="resolution",
        level="expert",
        affects=("quality",),
    )
    flip_x: bool = opt(
        False,
        "Also train on left-right mirrored images (doubles variety). Off for asymmetric "
        "subjects: faces with a parting, text, logos.",
        step="resolution",
        level="basic",
        affects=("quality",),
    )
    flip_y: bool = opt(
        False,
        "Also train on upside-down images. Rarely wanted except for textures.",
        step="resolution",
        affects=("quality",),
    )
    random_crop: bool = opt(
        False,
        "Crop a random region instead of the centre when an image does not fit its bucket.",
        step="resolution",
        affects=("quality",),
    )
    random_scale: bool = opt(
        False,
        "Randomly zoom in (up to 25%) before cropping, for variety in framing.",
        step="resolution",
        affects=("quality",),
    )
    augmentations: list[Augmentation] = opt(
        [],
        "Extra random changes to images while training. Turns latent caching off for this "
        "dataset, because cached latents cannot change (flips alone are cached per variant); "
        "the run log says which.",
        step="resolution",
        affects=("quality", "speed"),
        max_length=16,
    )
    cache_latents: bool = opt(
        False,
        "Encode each image with the VAE once and reuse it: much faster steps and the VAE can "
        "leave the GPU.",
        step="resolution",
        level="basic",
        affects=("speed", "memory"),
    )
    cache_latents_to_disk: bool = opt(
        False,
        "Keep the latent cache on disk so later runs reuse it and RAM stays free. Implies "
        "cache_latents.",
        step="memory",
        affects=("speed", "disk"),
    )
    mask_path: str | None = opt(
        None,
        "Folder of mask images (same names as the images; white = learn, black = ignore) for "
        "masked training.",
        step="dataset",
        level="expert",
        affects=("quality",),
    )
    alpha_mask: bool = opt(
        False,
        "Use each image's transparency as its mask (transparent = ignore).",
        step="dataset",
        level="expert",
        affects=("quality",),
    )
    invert_mask: bool = opt(
        False,
        "Swap learned and ignored areas of the masks.",
        step="dataset",
        level="expert",
    )
    mask_min_value: float = opt(
        0.0,
        "Loss weight (0-1) kept in masked-out areas; 0 ignores them entirely.",
        step="dataset",
        level="expert",
        ge=0.0,
        le=1.0,
    )
    control_path: str | list[str] | None = opt(
        None,
        "Control images (pose, depth, edges...) paired with the training images, for "
        "control or edit models. Up to three folders.",
        step="dataset",
        level="expert",
    )

    @field_validator("control_path")
    @classmethod
    def _at_most_three_controls(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 3:
            raise ValueError("at most three control folders")
        return value


# ------------------------------------------------------------------------------------ training
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
        "repeats per image typical for what you train.",
        step="training",
        level="basic",
        affects=("quality", "speed"),
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
    optimizer_params: dict[str, float | bool | list[float]] = opt(
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
        le=2**32 - 1,
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
        _raise_all(list(_train_problems(self)))
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
    if isinstance(train.steps, int) and warmup and warmup >= train.steps:
        yield (
            "lr_scheduler_params.warmup_steps",
            f"{warmup} warmup steps leave no training in a {train.steps}-step run — use "
            "about 5% of the steps",
        )


# ------------------------------------------------------------------------------------ sampling
class SamplePrompt(Section):
    prompt: str = opt(..., "Text of the preview image; '[trigger]' is replaced.", step="sampling")
    neg: str | None = opt(None, "Negative prompt for this preview only.", step="sampling")
    seed: int | None = opt(None, "Seed for this preview only.", step="sampling", ge=0)
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
        42, "Seed of the previews, so they are comparable across steps.", step="sampling", ge=0
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
            raise _field_error(
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
            raise _field_error("hf_repo_id", "is needed when push_to_hub is on ('user/name')")
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
        10,
        "Send metrics every this many steps (the live progress file updates every step).",
        step="save",
        ge=1,
        le=10_000,
    )
    verbose: bool = opt(False, "Write debug detail to the run's log.", step="save")
    log_system_metrics: bool = opt(
        True, "Record CPU, RAM, disk and GPU use in MLflow while training.", step="save"
    )


class RuntimeConfig(Section):
    device: Device = opt(
        "auto",
        "Where training runs: cuda (NVIDIA or AMD ROCm), mps (Apple Silicon) or cpu. 'auto' "
        "takes the best available.",
        step="advanced",
        level="advanced",
        affects=("speed",),
    )
    num_processes: int = opt(
        1,
        "Processes (GPUs) to train on at once, data-parallel: the studio starts them with "
        "accelerate launch (one GPU each, or CPU processes joined by gloo). Each process trains "
        "its own share of the images with the same batch size, so the effective batch is batch "
        "size x processes x gradient accumulation. Only the first process logs, samples and saves.",
        step="memory",
        level="advanced",
        affects=("speed",),
        ge=1,
        le=64,
    )
    num_workers: int = opt(
        0,
        "Background processes that load and prepare images. 0 loads in the training process.",
        step="memory",
        affects=("speed", "memory"),
        ge=0,
        le=32,
    )
    persistent_workers: bool = opt(
        False,
        "Keep loader workers alive between epochs (faster epochs, more RAM).",
        step="memory",
        affects=("speed",),
    )
    gpu_prefetch_batches: int = opt(
        0,
        "Batches moved to the GPU ahead of time so it never waits for data.",
        step="memory",
        affects=("speed", "memory"),
        ge=0,
        le=16,
    )

    @model_validator(mode="after")
    def _workers(self) -> RuntimeConfig:
        if self.persistent_workers and self.num_workers == 0:
            raise _field_error(
                "persistent_workers", "needs num_workers above 0 — set num_workers to 1 or more"
            )
        return self


# ------------------------------------------------------------------------------------------ all
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
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _cross_section(self) -> TrainingConfig:
        _raise_all(list(_cross_section_problems(self)))
        return self


def _cross_section_problems(cfg: TrainingConfig) -> Iterator[tuple[str, str]]:
    """Combinations that cannot work, as (dotted path, message — fix)."""
    arch, model, net, train = cfg.model.arch, cfg.model, cfg.network, cfg.train
    if all(ds.is_reg for ds in cfg.datasets):
        yield "datasets", "every dataset is a regularisation set — add one with your images"
    yield from _memory_problems(cfg)
    if arch == "flux":
        if train.noise_scheduler in ("ddpm", "euler"):
            yield (
                "train.noise_scheduler",
                f"{train.noise_scheduler} does not fit Flux, a flow-matching model — "
                "use flowmatch or auto",
            )
        if model.is_v_pred:
            yield "model.is_v_pred", "Flux is a flow-matching model, not v-prediction — turn off"
        if train.train_text_encoder:
            yield (
                "train.train_text_encoder",
                "text-encoder LoRA is not supported for Flux (its T5 encoder is too large to "
                "train usefully) — turn it off",
            )
        if net.type == "locon" or net.conv is not None:
            yield (
                "network.conv",
                "Flux's transformer blocks have no convolution layers — use type lora/lokr "
                "and leave conv empty",
            )
        negs = [("sample.neg", cfg.sample.neg)] + [
            (f"sample.prompts.{i}.neg", p.neg) for i, p in enumerate(cfg.sample.prompts)
        ]
        for path, neg in negs:
            if neg and neg.strip():
                yield (
                    path,
                    "Flux.1 is guidance-distilled and samples without a negative prompt, so it "
                    "would be ignored — leave it empty",
                )
    else:
        if train.noise_scheduler == "flowmatch":
            yield (
                "train.noise_scheduler",
                f"flow matching is for Flux; {arch} was trained with DDPM — use ddpm, euler "
                "or auto",
            )
        if cfg.sample.sampler == "flowmatch":
            yield "sample.sampler", f"flowmatch is Flux's sampler — pick euler for {arch}"
        for flag in ("attn_masking", "split_model_over_gpus"):
            if getattr(model, flag):
                yield f"model.{flag}", f"only applies to Flux, not {arch} — turn it off"
    if net.conv_alpha is not None and net.conv is None and net.type != "locon":
        yield (
            "network.conv_alpha",
            f"no convolution layers are adapted by {net.type} without network.conv, so "
            "conv_alpha would be ignored — set conv (or type locon) or leave conv_alpha empty",
        )
    if arch != "sdxl" and model.refiner_name_or_path:
        yield "model.refiner_name_or_path", f"refiners exist for SDXL only, not {arch}"
    if arch == "flux" and cfg.sample.sampler in ("ddpm", "euler", "euler_a", "dpmpp_2m"):
        yield "sample.sampler", "Flux samples with flowmatch (or auto)"
    if train.dtype == "fp16" and cfg.runtime.device == "cpu":
        yield "train.dtype", "fp16 on the CPU crashes in PyTorch — use fp32 (or auto) on CPU"
    if train.diff_output_preservation and not any(ds.trigger_word for ds in cfg.datasets):
        yield (
            "datasets.0.trigger_word",
            "differential output preservation swaps the trigger word for the class word, so a "
            "trigger word is needed",
        )
    if train.inverted_mask_prior and not any(ds.mask_path or ds.alpha_mask for ds in cfg.datasets):
        yield (
            "train.inverted_mask_prior",
            "needs masks — set mask_path or alpha_mask on a dataset, or turn it off",
        )
    yield from _objective_problems(cfg)
    if train.cache_text_embeddings:
        for i, ds in enumerate(cfg.datasets):
            if ds.shuffle_tokens or ds.token_dropout_rate > 0:
                yield (
                    f"datasets.{i}.shuffle_tokens"
                    if ds.shuffle_tokens
                    else f"datasets.{i}.token_dropout_rate",
                    "changes captions every step, which cached text embeddings cannot follow "
                    "— turn it off or turn train.cache_text_embeddings off",
                )
    multiple = ARCH_DEFAULTS[arch]["size_multiple"]
    for i, ds in enumerate(cfg.datasets):
        if ds.control_path:
            yield (
                f"datasets.{i}.control_path",
                f"control images need a control or edit model; plain {arch} LoRA training "
                "does not use them — leave it empty",
            )
        for size in ds.resolution:
            if size % multiple:
                yield (
                    f"datasets.{i}.resolution",
                    f"{size} is not a multiple of {multiple}, which {arch} needs — use "
                    f"{size // multiple * multiple or multiple}",
                )
    for axis in ("width", "height"):
        size = getattr(cfg.sample, axis)
        if size % multiple:
            yield (
                f"sample.{axis}",
                f"{size} is not a multiple of {multiple}, which {arch} needs — use "
                f"{size // multiple * multiple or multiple}",
            )


def _objective_problems(cfg: TrainingConfig) -> Iterator[tuple[str, str]]:
    """Loss options that cannot do anything for this architecture or data (trainer.engine.objective)."""
    arch, train = cfg.model.arch, cfg.train
    if arch == "flux":
        for path, value in (
            ("train.min_snr_gamma", train.min_snr_gamma),
            ("train.learnable_snr_gos", train.learnable_snr_gos),
        ):
            if value:
                yield (
                    path,
                    "SNR loss weighting is defined for DDPM noise schedules (ε/v-prediction); "
                    "Flux trains with flow matching, whose noise levels train.timestep_type "
                    "balances — leave it off",
                )
    elif train.min_snr_gamma and train.learnable_snr_gos:
        yield (
            "train.learnable_snr_gos",
            "replaces min_snr_gamma with learned weights — use one of them, not both",
        )
    if train.loss_target == "source" and arch != "flux" and not cfg.model.is_v_pred:
        yield (
            "train.loss_target",
            "for an ε-prediction model the noise-level weighted loss on the clean image equals "
            "the noise loss exactly — use noise (or set model.is_v_pred for a v-prediction model)",
        )
    photometric = ("color_jitter", "blur")
    if train.loss_target in ("unaugmented", "differential_noise") and not any(
        aug.type in photometric for ds in cfg.datasets for aug in ds.augmentations
    ):
        yield (
            "train.loss_target",
            f"{train.loss_target} compares with the image before colour augmentations, but no "
            "dataset has a color_jitter or blur augmentation, so it would change nothing — add "
            "one to datasets[].augmentations or use noise",
        )


BNB_QTYPES = ("int8", "nf4", "fp4")


def _memory_problems(cfg: TrainingConfig) -> Iterator[tuple[str, str]]:
    """Memory/speed combinations that cannot work (trainer/engine/memory.py says why in detail)."""
    model, net, device = cfg.model, cfg.network, cfg.runtime.device
    if model.quantize and model.qtype == "float8" and net.type == "dora":
        yield (
            "network.type",
            "DoRA reads the full-precision base weight to normalise it, and peft cannot read "
            "float8 weights — use qtype int8/nf4 or network type lora",
        )
    if model.quantize and model.qtype in ("nf4", "fp4"):
        if net.type in ("loha", "lokr"):
            yield (
                "network.type",
                f"{net.type} needs the base weight's shape, which 4-bit bitsandbytes packs away "
                "— use qtype float8/int8 or network type lora",
            )
        if model.compile:
            yield "model.compile", "torch.compile does not support 4-bit weights — turn it off"
    offloads = model.layer_offloading or model.low_vram
    if model.layer_offloading and model.quantize and model.qtype in BNB_QTYPES:
        yield (
            "model.layer_offloading",
            f"bitsandbytes {model.qtype} weights carry quantization state that offloading "
            "cannot move — use qtype float8 or turn layer offloading off",
        )
    if offloads and model.quantize_te and model.qtype_te in BNB_QTYPES:
        yield (
            "model.qtype_te",
            f"bitsandbytes {model.qtype_te} text encoders cannot be offloaded (layer_offloading "
            "/ low_vram) — use qtype_te float8",
        )
    if model.accuracy_recovery_adapter and net.type in ("loha", "lokr"):
        yield (
            "model.accuracy_recovery_adapter",
            f"the recovery adapter is a LoRA and peft cannot stack a {net.type} on it — use "
            "network type lora/locon/dora",
        )
    if model.attention_backend in ("flash", "xformers", "sage") and device in ("cpu", "mps"):
        yield (
            "model.attention_backend",
            f"{model.attention_backend} needs an NVIDIA GPU, not {device} — use auto or native",
        )
    if model.split_model_over_gpus and device in ("cpu", "mps"):
        yield "model.split_model_over_gpus", f"needs two or more CUDA GPUs, not {device}"
    if cfg.runtime.num_processes > 1 and model.split_model_over_gpus:
        yield (
            "runtime.num_processes",
            "split_model_over_gpus spreads one model over the GPUs; it cannot be combined with "
            "several data-parallel processes — set 1, or turn the split off",
        )
    if cfg.runtime.num_processes > 1 and device == "mps":
        yield (
            "runtime.num_processes",
            "Apple's MPS is one device; several processes cannot share it",
        )


class FieldProblems(ValueError):
    """Cross-field errors that know which fields they belong to (paths relative to the model)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"[{path}] {message}" for path, message in problems))
        self.problems = problems


def _field_error(path: str, message: str) -> FieldProblems:
    return FieldProblems([(path, message)])


def _raise_all(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise FieldProblems(problems)


# ----------------------------------------------------------------------------- introspection
SECTIONS = ("model", "network", "datasets", "train", "sample", "save", "logging", "runtime")


def iter_fields(
    model: type[BaseModel] = TrainingConfig, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf field as (dotted path, FieldInfo); list items appear as index 0."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(info)
        if nested is not None and not _is_list_of_leaf_models(info):
            index = ".0" if _is_list(info) else ""
            yield from iter_fields(nested, f"{path}{index}.")
        else:
            yield path, info


def _nested_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    args = getattr(annotation, "__args__", ())
    for candidate in (annotation, *args):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_list(info: FieldInfo) -> bool:
    return getattr(info.annotation, "__origin__", None) is list


def _is_list_of_leaf_models(info: FieldInfo) -> bool:
    # Lists the wizard edits as one table (prompts, augmentations) rather than per item.
    nested = _nested_model(info)
    return _is_list(info) and nested in (SamplePrompt, Augmentation)


def field_meta(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def field_info(path: str) -> FieldInfo:
    """The FieldInfo at a dotted path (list indices allowed)."""
    model: type[BaseModel] = TrainingConfig
    info: FieldInfo | None = None
    for part in path.split("."):
        if part.isdigit():
            continue
        if model is None or part not in model.model_fields:
            raise KeyError(path)
        info = model.model_fields[part]
        model = _nested_model(info)  # type: ignore[assignment]
    if info is None:
        raise KeyError(path)
    return info


def unresolved_autos(cfg: TrainingConfig) -> list[str]:
    """Decision fields still 'auto': the advisor must answer them before a run."""
    return [path for path in DECISION_AUTOS if get_path(cfg, path) == "auto"]


def get_path(cfg: BaseModel, path: str) -> Any:
    value: Any = cfg
    for part in path.split("."):
        value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


def resolved(cfg: TrainingConfig, key: str) -> Any:
    """A technical field's value with 'auto' answered by the architecture's default."""
    value = {
        "noise_scheduler": cfg.train.noise_scheduler,
        "timestep_type": cfg.train.timestep_type,
        "sampler": cfg.sample.sampler,
        "guidance_scale": cfg.sample.guidance_scale,
    }[key]
    return ARCH_DEFAULTS[cfg.model.arch][key] if value == "auto" else value
