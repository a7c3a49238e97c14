"""Every published figure in docs/sources.md as a scenario, and what the predictors say.

The figures (docs/sources.md#published-memory-figures, docs/sources.md#block-swapping-on-flux,
docs/sources.md#memory-saving-trade-offs, docs/sources.md#system-ram-for-quantizing,
docs/sources.md#published-speed-figures) come without every setting behind them; each scenario
states the settings we assume (``setup``). "more than X GB" figures are compared with X. The test
``tests/test_advisor_figures.py`` requires every prediction within ±25% of the figure and
``benchmarks/advisor.py`` prints the errors.

Not reproduced: "each extra 20 frames at 512² costs about 3.5 GB" (video; the studio trains no
video architecture).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from advisor.memory import peak_ram, peak_vram
from advisor.models import kohya_swap_share
from advisor.profile import SystemProfile, synthetic_profile
from advisor.timing import step_time
from advisor.workload import Workload, workload
from trainer.config.paths import set_path
from trainer.config.schema import TrainingConfig

RTX_4090 = synthetic_profile("NVIDIA GeForce RTX 4090", 24.0, ram_gb=64.0)
BIG_GPU = synthetic_profile("NVIDIA A100-SXM4-80GB", 80.0, ram_gb=128.0)


@dataclass(frozen=True)
class Figure:
    key: str
    claim: str  # as docs/sources.md states it
    published: float
    unit: str  # GB | s/step | % | ratio
    setup: str  # the settings we assume
    predict: Callable[[], float]

    @property
    def predicted(self) -> float:
        return self.predict()

    @property
    def error(self) -> float:
        """Relative error of the prediction (+0.10 = 10% above the figure)."""
        return self.predicted / self.published - 1.0


# ------------------------------------------------------------------------------ scenarios
_FLUX: dict[str, Any] = {
    "model": {"arch": "flux", "name_or_path": "black-forest-labs/FLUX.1-dev"},
    "network": {"linear": 16, "linear_alpha": 16},
    "datasets": [{"folder_path": "data", "resolution": [512], "cache_latents": True}],
    "train": {
        "batch_size": 1,
        "steps": 1000,
        "gradient_checkpointing": True,
        "optimizer": "adamw8bit",
        "dtype": "bf16",
    },
    "sample": {"sample_every": 0, "width": 512, "height": 512},
}
_CACHED_TE = {"train.cache_text_embeddings": True, "train.unload_text_encoder": True}


def _cfg(base: dict[str, Any], **patch: Any) -> TrainingConfig:
    data = copy.deepcopy(base)
    for dotted, value in patch.items():
        set_path(data, dotted, value, create=True)
    return TrainingConfig.model_validate(data)


def flux(resolution: int = 512, profile: SystemProfile = BIG_GPU, **patch: Any) -> Workload:
    cfg = _cfg(_FLUX, **{"datasets.0.resolution": [resolution], **patch})
    return workload(cfg, profile)


def _quant(qtype: str, te: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"model.quantize": True, "model.qtype": qtype}
    if te:
        out.update({"model.quantize_te": True, "model.qtype_te": qtype})
    return out


def _vram(w: Workload) -> float:
    return peak_vram(w).total_gib


def _step(w: Workload) -> float:
    return step_time(w).seconds_per_step


def _int4(w: Workload) -> Workload:
    # quanto int4 is not a config choice (bitsandbytes nf4/fp4 are); same storage class.
    return replace(w, weights="int4", te_weights="int4")


def _swapped(
    share: float, resolution: int = 1024, profile: SystemProfile = BIG_GPU, **patch: Any
) -> Workload:
    offload = {"model.layer_offloading": True, "model.layer_offloading_transformer_percent": share}
    return flux(resolution, profile, **{**_CACHED_TE, **patch, **(offload if share else {})})


def _reduction(share: float) -> float:
    base = _vram(flux(512, **_CACHED_TE))
    swapped = _vram(_swapped(share, 512))
    return 100.0 * (1 - swapped / base)


def _swap_time(share: float) -> float:
    """Extra step time (%) of swapping ``share`` of the blocks: fp8 base, 1024 px, RTX 4090."""
    quant = _quant("float8", te=False)
    base = _step(_swapped(0.0, profile=RTX_4090, **quant))
    return 100.0 * (_step(_swapped(share, profile=RTX_4090, **quant)) / base - 1)


_SDXL: dict[str, Any] = {
    "model": {"arch": "sdxl", "name_or_path": "stabilityai/stable-diffusion-xl-base-1.0"},
    "network": {"linear": 8, "linear_alpha": 4},
    "datasets": [{"folder_path": "data", "resolution": [1024], "cache_latents": True}],
    "train": {
        "batch_size": 1,
        "steps": 1000,
        "gradient_checkpointing": True,
        "optimizer": "adamw8bit",
        "dtype": "bf16",
        "cache_text_embeddings": True,
        "unload_text_encoder": True,
    },
    "sample": {"sample_every": 0, "width": 1024, "height": 1024},
}
_SD15: dict[str, Any] = {
    "model": {"arch": "sd15", "name_or_path": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
    "network": {"linear": 32, "linear_alpha": 16},
    "datasets": [{"folder_path": "data", "resolution": [512], "cache_latents": True}],
    "train": {
        "batch_size": 2,
        "steps": 1000,
        "gradient_checkpointing": False,
        "optimizer": "adamw8bit",
        "dtype": "fp16",
        "train_text_encoder": True,
    },
    "sample": {"sample_every": 0},
}


def _sd15_6gb() -> float:
    cfg = _cfg(_SD15, **{"model.vae_device": "cpu"})
    return _vram(workload(cfg, synthetic_profile("NVIDIA GeForce RTX 3060", 12.0)))


def _sdxl_8gb() -> float:
    cfg = _cfg(_SDXL)
    return _vram(workload(cfg, synthetic_profile("NVIDIA GeForce RTX 3070", 8.0)))


FIGURES: tuple[Figure, ...] = (
    Figure(
        "flux_512_bf16",
        "Flux LoRA, bs1, 512 px: a bit over 30 GB unquantised",
        30.0,
        "GB",
        "bf16 transformer and text encoders on the GPU, cached latents, rank 16, "
        "AdamW8bit, gradient checkpointing",
        lambda: _vram(flux(512)),
    ),
    Figure(
        "flux_512_int8",
        "Flux LoRA, bs1, 512 px: >18 GB with an int8 base",
        18.0,
        "GB",
        "as above with transformer and text encoders in int8",
        lambda: _vram(flux(512, **_quant("int8"))),
    ),
    Figure(
        "flux_512_int4",
        "Flux LoRA, bs1, 512 px: >13 GB int4",
        13.0,
        "GB",
        "as above with transformer and text encoders in int4 (quanto)",
        lambda: _vram(_int4(flux(512, **_quant("int8")))),
    ),
    Figure(
        "flux_512_nf4_min",
        "Flux LoRA, bs1, 512 px: >9 GB NF4 (absolute minimum ~9.1 GB, NF4 + 8-bit optimizer)",
        9.1,
        "GB",
        "NF4 transformer, text embeddings cached and encoders unloaded, VAE off the GPU",
        lambda: _vram(
            flux(512, **_quant("nf4", te=False), **_CACHED_TE, **{"model.low_vram": True})
        ),
    ),
    Figure(
        "flux_1024_nf4",
        "Flux LoRA, 1024 px needs ≥12 GB even with NF4",
        12.0,
        "GB",
        "NF4 transformer, text embeddings cached and encoders unloaded, 1024 px",
        lambda: _vram(flux(1024, **_quant("nf4", te=False), **_CACHED_TE)),
    ),
    Figure(
        "flux_4090_512_speed",
        "Flux about 1.4 it/s on an RTX 4090 at 512 px",
        1 / 1.4,
        "s/step",
        "float8 base, cached latents and text embeddings, gradient checkpointing",
        lambda: _step(flux(512, RTX_4090, **_quant("float8", te=False), **_CACHED_TE)),
    ),
    Figure(
        "flux_nf4_512_speed",
        "Flux NF4: 1.4 s/step at 512 px",
        1.4,
        "s/step",
        "RTX 4090 (assumed), NF4 base, cached latents and text embeddings",
        lambda: _step(flux(512, RTX_4090, **_quant("nf4", te=False), **_CACHED_TE)),
    ),
    Figure(
        "flux_nf4_1024_speed",
        "Flux NF4: 3.5 s/step at 1024 px",
        3.5,
        "s/step",
        "RTX 4090 (assumed), NF4 base, cached latents and text embeddings",
        lambda: _step(flux(1024, RTX_4090, **_quant("nf4", te=False), **_CACHED_TE)),
    ),
    Figure(
        "flux_fp8_16gb",
        "Flux, fp8 base: 16 GB at batch 1 (with some blocks swapped)",
        16.0,
        "GB",
        "float8 base at 1024 px, cached text embeddings, no blocks swapped (read as: the "
        "unswapped need is just above 16 GB)",
        lambda: _vram(_swapped(0.0, **_quant("float8", te=False))),
    ),
    Figure(
        "flux_fp8_12gb_swap16",
        "Flux, fp8 base: 12 GB with 16 blocks swapped",
        12.0,
        "GB",
        "as above with kohya's --blocks_to_swap 16 (8 double + 16 single blocks = "
        f"{kohya_swap_share(16):.0%} of the weights)",
        lambda: _vram(_swapped(kohya_swap_share(16), **_quant("float8", te=False))),
    ),
    Figure(
        "flux_fp8_8gb_swap28",
        "Flux, fp8 base: 8 GB with 28 blocks swapped",
        8.0,
        "GB",
        f"kohya's --blocks_to_swap 28 (14 double + 28 single = {kohya_swap_share(28):.0%})",
        lambda: _vram(_swapped(kohya_swap_share(28), **_quant("float8", te=False))),
    ),
    Figure(
        "flux_swap16_time",
        "block swapping for 12 GB costs about +15% step time",
        15.0,
        "%",
        "16 of 57 blocks swapped (28% of the blocks)",
        lambda: _swap_time(16 / 57),
    ),
    Figure(
        "flux_swap28_time",
        "block swapping for 8 GB costs about +30% step time",
        30.0,
        "%",
        "28 of 57 blocks swapped (49% of the blocks)",
        lambda: _swap_time(28 / 57),
    ),
    Figure(
        "swap_quarter_vram",
        "block swap of a quarter of the blocks ≈ −20% VRAM",
        20.0,
        "%",
        "Flux bf16 at 512 px, cached text embeddings; reduction of peak VRAM",
        lambda: _reduction(0.25),
    ),
    Figure(
        "swap_half_vram",
        "block swap of half the blocks ≈ −45% VRAM",
        45.0,
        "%",
        "as above",
        lambda: _reduction(0.5),
    ),
    Figure(
        "swap_three_quarters_vram",
        "block swap of three quarters of the blocks ≈ −65% VRAM",
        65.0,
        "%",
        "as above",
        lambda: _reduction(0.75),
    ),
    Figure(
        "swap_quarter_time",
        "a quarter swapped ≈ +15% time",
        15.0,
        "%",
        "",
        lambda: _swap_time(0.25),
    ),
    Figure("swap_half_time", "half swapped ≈ +30% time", 30.0, "%", "", lambda: _swap_time(0.5)),
    Figure(
        "swap_three_quarters_time",
        "three quarters swapped ≈ +50% time",
        50.0,
        "%",
        "",
        lambda: _swap_time(0.75),
    ),
    Figure(
        "int8_vram",
        "int8 weights ≈ −50% VRAM",
        50.0,
        "%",
        "Flux at 512 px with cached text embeddings: int8 against bf16 transformer",
        lambda: (
            100.0
            * (
                1
                - _vram(flux(512, **_quant("int8", te=False), **_CACHED_TE))
                / _vram(flux(512, **_CACHED_TE))
            )
        ),
    ),
    Figure(
        "sdxl_8gb",
        "SDXL LoRA possible on 8 GB: U-Net only, checkpointing, cached TE outputs and latents, "
        "8-bit optimizer, rank 4–8",
        8.0,
        "GB",
        "rank 8, 1024 px, batch 1, bf16, VAE on the GPU",
        _sdxl_8gb,
    ),
    Figure(
        "sd15_bs2_6gb",
        "SD1.5 LoRA, batch 2, 512 px: about 6 GB",
        6.0,
        "GB",
        "kohya-style defaults: fp16, no gradient checkpointing, text encoder trained, rank 32, "
        "latents cached with the VAE moved off the GPU",
        _sd15_6gb,
    ),
    Figure(
        "flux_quantize_ram",
        "quantizing Flux alone needs ~50 GB RAM",
        50.0,
        "GB",
        "float8 quantization on load (fp32 weights materialised while quantizing)",
        lambda: peak_ram(flux(1024, RTX_4090, **_quant("float8"))).total_gib,
    ),
)


def figure_table() -> list[dict[str, Any]]:
    """Each figure with the published and predicted value and the relative error."""
    return [
        {
            "key": f.key,
            "claim": f.claim,
            "unit": f.unit,
            "published": f.published,
            "predicted": f.predicted,
            "error": f.error,
            "setup": f.setup,
        }
        for f in FIGURES
    ]
