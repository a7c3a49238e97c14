"""The model and network sections: which base model is loaded (and how: quantization,
offloading, devices, precision) and the adapter trained on it (type, rank, alpha)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from trainer.config.fields import Arch, Auto, Device, Precision, Section, opt


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
        "built-in models that train on a CPU in a few minutes.",
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
    components_from: str | None = opt(
        None,
        "Where the configs, tokenizers, text encoders and VAE come from that a single-file "
        "checkpoint (model.name_or_path ending in .safetensors) lacks: a Hugging Face id or a "
        "local diffusers folder of the same architecture ('demo:...' refs allowed). Empty = the "
        "architecture's usual base model (SD1.5, SDXL base or FLUX.1-dev). For a Flux "
        "transformer-only file such as flux1-dev.safetensors this is e.g. "
        "black-forest-labs/FLUX.1-dev.",
        step="model",
        level="expert",
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
