"""Facts about the three base models that the predictions and defaults rest on.

Parameter counts are those of the released checkpoints as diffusers / transformers load them:

- SD1.5 (stable-diffusion-v1-5): U-Net 859,520,964; CLIP ViT-L/14 text model 123,060,480;
  VAE (AutoencoderKL, 4 latent channels) 83,653,863. Source: the model card and
  ``sum(p.numel())`` over the diffusers components; the SD paper quotes "860M U-Net, 123M text
  encoder".
- SDXL 1.0 base: U-Net 2,567,463,684 (the SDXL paper, Podell et al. 2023: "2.6B U-Net"); text
  encoders CLIP ViT-L 123,060,480 and OpenCLIP ViT-bigG/14 with projection 694,659,840; the same
  4-channel VAE design (83,653,863).
- FLUX.1-dev / schnell: transformer 11,901,408,320 (Black Forest Labs model card: "12 billion
  parameter rectified flow transformer"; 19 double-stream and 38 single-stream blocks, hidden
  size 3072, MLP ratio 4); T5-XXL v1.1 encoder 4,762,310,656; CLIP ViT-L 123,060,480; VAE with
  16 latent channels 83,819,683.

LoRA sizes are counted from the layer shapes the trainer adapts (``trainer/arch/base.py``:
attention projections ``to_q, to_k, to_v, to_out.0``, plus ``add_q/k/v_proj, to_add_out`` on
Flux), so a rank-r LoRA has ``r × lora_units`` parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

GIB = 2**30

# Per-architecture layer lists the trainer adapts when network.target_modules is "auto"
# (mirrors trainer/arch/base.py, which imports torch and is therefore not imported here).
SD_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FLUX_TARGETS = (*SD_TARGETS, "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@dataclass(frozen=True)
class ModelFacts:
    arch: str
    label: str
    denoiser_params: int  # U-Net or transformer
    text_encoder_params: tuple[int, ...]  # each text encoder
    vae_params: int
    latent_channels: int
    vae_scale: int  # pixels per latent cell along one side
    native_resolution: int
    text_tokens: int  # prompt tokens the denoiser attends to
    text_embed_dims: tuple[int, ...]  # per-token width of each cached text output
    pooled_dims: int  # pooled text vector(s) cached per caption
    lora_units: int  # LoRA params per unit of rank on the denoiser's attention projections
    te_lora_units: int  # the same for the text encoder(s) (q, k, v, out projections)
    conv_units: int  # extra params per unit of conv rank (LoCon on resnet convolutions)
    fwd_tflops_native: float  # one forward pass of the denoiser at native size, batch 1
    compute_efficiency: float  # share of the GPU's dense tensor throughput a training step gets
    blocks: int = 0  # transformer blocks (block swapping); 0 for U-Nets
    block_params: tuple[int, ...] = ()
    distilled_guidance: bool = False  # one forward per sampling step (no CFG pair)
    cpu_overhead_scale: float = 10.0  # per-step Python/optimizer overhead on a CPU vs a GPU
    vae_cost_scale: float = 1.0  # VAE FLOPs per megapixel against the real SD/Flux VAE

    @property
    def text_encoder_total(self) -> int:
        return sum(self.text_encoder_params)

    def latent_cells(self, resolution: int) -> int:
        side = resolution // self.vae_scale
        return side * side

    def image_tokens(self, resolution: int) -> int:
        """Flux packs 2×2 latent cells into one token."""
        return self.latent_cells(resolution) // 4

    def work_units(self, resolution: int) -> float:
        """Activation/compute units per image: latent cells (U-Net) or tokens (Flux)."""
        if self.blocks:
            return float(self.image_tokens(resolution) + self.text_tokens)
        return float(self.latent_cells(resolution))

    def lora_params(self, rank: int, conv_rank: int | None = None) -> int:
        return rank * self.lora_units + (conv_rank or 0) * self.conv_units

    def te_lora_params(self, rank: int) -> int:
        return rank * self.te_lora_units


def _unet_lora_units(blocks_by_width: dict[int, int], cross_dim: int) -> int:
    # Per transformer block of width C: self-attention 4 × (C + C); cross-attention to_q and
    # to_out (C + C) each, to_k and to_v (cross_dim + C) each.
    return sum(n * (14 * c + 2 * cross_dim) for c, n in blocks_by_width.items())


def _clip_lora_units(layers: int, width: int) -> int:
    return layers * 4 * (2 * width)


_FLUX_DOUBLE = 339_831_296  # per double-stream block (two streams + modulation)
_FLUX_SINGLE = 141_591_808  # per single-stream block
_FLUX_HIDDEN = 3072

FACTS: dict[str, ModelFacts] = {
    "sd15": ModelFacts(
        arch="sd15",
        label="Stable Diffusion 1.5",
        denoiser_params=859_520_964,
        text_encoder_params=(123_060_480,),
        vae_params=83_653_863,
        latent_channels=4,
        vae_scale=8,
        native_resolution=512,
        text_tokens=77,
        text_embed_dims=(768,),
        pooled_dims=0,
        # 16 transformer blocks: 5 at 320, 5 at 640, 6 at 1280 channels; cross-attention 768.
        lora_units=_unet_lora_units({320: 5, 640: 5, 1280: 6}, 768),
        te_lora_units=_clip_lora_units(12, 768),
        conv_units=1_100_000,
        fwd_tflops_native=0.8,
        compute_efficiency=0.35,
    ),
    "sdxl": ModelFacts(
        arch="sdxl",
        label="SDXL 1.0",
        denoiser_params=2_567_463_684,
        text_encoder_params=(123_060_480, 694_659_840),
        vae_params=83_653_863,
        latent_channels=4,
        vae_scale=8,
        native_resolution=1024,
        text_tokens=77,
        text_embed_dims=(2048,),
        pooled_dims=1280,
        # 70 transformer blocks: 10 at 640, 60 at 1280 channels; cross-attention 2048.
        lora_units=_unet_lora_units({640: 10, 1280: 60}, 2048),
        te_lora_units=_clip_lora_units(12, 768) + _clip_lora_units(32, 1280),
        conv_units=1_700_000,
        fwd_tflops_native=5.0,
        compute_efficiency=0.35,
    ),
    "flux": ModelFacts(
        arch="flux",
        label="FLUX.1",
        denoiser_params=11_901_408_320,
        text_encoder_params=(4_762_310_656, 123_060_480),
        vae_params=83_819_683,
        latent_channels=16,
        vae_scale=8,
        native_resolution=1024,
        text_tokens=512,
        text_embed_dims=(4096,),
        pooled_dims=768,
        # 19 double blocks × 8 projections + 38 single blocks × 3 projections, all 3072 → 3072.
        lora_units=(19 * 8 + 38 * 3) * 2 * _FLUX_HIDDEN,
        te_lora_units=0,
        conv_units=0,
        # Per token: 113.2M weights in each double-block stream and each single block
        # (6.45B in all) → 12.9 GFLOP, plus attention 4·T·d per block; at 1024 px T = 4608.
        fwd_tflops_native=(2 * 6.45e9 + 4 * 4608 * _FLUX_HIDDEN * 57) * 4608 / 1e12,
        compute_efficiency=0.6,
        blocks=57,
        block_params=(_FLUX_DOUBLE,) * 19 + (_FLUX_SINGLE,) * 38,
        distilled_guidance=True,
    ),
}


# The tiny built-in demo models (trainer/demo/tiny.py: 3-11 MB each, 64 px): rough sizes, so
# predictions for a demo run are small instead of those of the real model.
DEMO_FACTS: dict[str, ModelFacts] = {
    arch: replace(
        real,
        label=f"demo {real.label}",
        denoiser_params=2_000_000,
        text_encoder_params=tuple(500_000 for _ in real.text_encoder_params),
        vae_params=200_000,
        lora_units=2_000,
        te_lora_units=1_000,
        conv_units=1_000 if real.conv_units else 0,
        fwd_tflops_native=0.0001,  # ~2M parameters over 8x8 latent cells
        native_resolution=64,
        text_tokens=16,
        # Measured on the demo SD1.5 at 64 px, batch 2, one CPU thread: 0.03 s/step on a quiet
        # core, 0.14-0.57 s/step on a loaded 2-core machine (e2e runs).
        compute_efficiency=0.3,
        cpu_overhead_scale=1.0,  # a 2k-parameter LoRA: the optimizer step costs next to nothing
        vae_cost_scale=0.01,  # a 200k-parameter VAE
        blocks=2 if real.blocks else 0,
        block_params=(1_000_000, 1_000_000) if real.blocks else (),
    )
    for arch, real in FACTS.items()
}


def facts(arch: str, demo: bool = False) -> ModelFacts:
    return DEMO_FACTS[arch] if demo else FACTS[arch]


def is_demo(name_or_path: str) -> bool:
    return name_or_path.startswith("demo:")


def forward_tflops(model: ModelFacts, resolution: int) -> float:
    """One denoiser forward pass at ``resolution``, batch 1, in TFLOP."""
    if model.blocks:
        tokens = model.work_units(resolution)
        weights = 2 * 6.45e9 * model.denoiser_params / FACTS["flux"].denoiser_params
        per_token = weights + 4 * tokens * _FLUX_HIDDEN * model.blocks
        return per_token * tokens / 1e12
    # U-Nets: linear in pixels plus self-attention growing with the square (≈ exponent 1.15).
    ratio = model.latent_cells(resolution) / model.latent_cells(model.native_resolution)
    return model.fwd_tflops_native * ratio**1.15


# ----------------------------------------------------------------------------- block swapping
def kohya_swap_share(blocks_to_swap: int) -> float:
    """Share of Flux transformer weights that kohya's ``--blocks_to_swap N`` keeps in RAM.

    kohya-ss/sd-scripts ``flux_models.Flux.enable_block_swap`` swaps N // 2 double blocks and
    (N - N // 2) × 2 single blocks (at most 17 and 36).
    """
    double = min(17, blocks_to_swap // 2)
    single = min(36, (blocks_to_swap - blocks_to_swap // 2) * 2)
    return (double * _FLUX_DOUBLE + single * _FLUX_SINGLE) / FACTS["flux"].denoiser_params


def largest_block_bytes(model: ModelFacts, bytes_per_param: float) -> float:
    return max(model.block_params, default=0) * bytes_per_param


# ----------------------------------------------------------------------------- quantization
# Bytes per weight including scales: int8/float8 per-channel scales (~1%), 4-bit kinds one
# absmax per 64 weights (bitsandbytes NF4/FP4) or scale+shift per 128 (quanto int4), plus the
# layers every backend leaves in 16 bits (embedders, norms, final projection; ~2%).
QUANT_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "float8": 1.03,
    "int8": 1.03,
    "int4": 0.56,
    "nf4": 0.56,
    "fp4": 0.56,
}

# Time cost of dequantizing per weight and pass, as bytes moved (calibrated: NF4 on an RTX 4090
# is 1.4 s/step at 512 px and 3.5 s/step at 1024 px, docs/sources.md#published-speed-figures);
# plus a compute slow-down.
QUANT_DEQUANT_BYTES: dict[str, float] = {"float8": 2.0, "int8": 3.0, "int4": 15.0, "nf4": 15.0}
QUANT_COMPUTE_FACTOR: dict[str, float] = {"float8": 1.0, "int8": 1.0, "int4": 1.33, "nf4": 1.33}
QUANT_COMPUTE_FACTOR["fp4"] = QUANT_COMPUTE_FACTOR["nf4"]
QUANT_DEQUANT_BYTES["fp4"] = QUANT_DEQUANT_BYTES["nf4"]

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# Optimizer state per trainable parameter, bytes (fp32 LoRA weights): AdamW two fp32 moments;
# AdamW8bit two 8-bit moments (+ block scales); Adafactor factored second moment (~0.1 of one);
# Prodigy two moments + its own two copies; Lion one moment.
OPTIMIZER_STATE_BYTES = {
    "adamw": 8.0,
    "adamw8bit": 2.1,
    "adafactor": 0.5,
    "prodigy": 16.0,
    "lion": 4.0,
}


def lokr_units_factor(factor: int) -> float:
    """LoKr stores far fewer parameters than LoRA at the same 'rank' (rough, per LyCORIS)."""
    return 0.25 if factor == -1 else max(0.05, 1.0 / math.sqrt(max(1, factor)))
