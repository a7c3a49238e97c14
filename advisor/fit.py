"""Make a config fit the GPU: memory savings in the order that costs least, until it fits.

The ladder (docs/sources.md#published-memory-figures and
docs/sources.md#memory-saving-trade-offs):
gradient checkpointing → smaller batch → cached text embeddings with the encoders unloaded →
cached latents → 8-bit text encoders → an 8-bit base → NF4 (NVIDIA) → low-VRAM mode → block
swapping of 25 / 50 / 75% of the layers → a smaller training size. Each rung is a config patch
with its reason; the smart defaults and the VRAM rule's fix both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from advisor.dataset import DatasetInfo
from advisor.memory import peak_ram, peak_vram
from advisor.patch import Patch, changed, try_patch
from advisor.profile import SystemProfile
from advisor.workload import latent_mode, workload
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.schema import TrainingConfig

SAFETY = 0.95  # keep 5% of the budget free: drivers, the desktop, fragmentation spikes


@dataclass(frozen=True)
class Rung:
    patch: Patch
    reason: str


def predicted_gb(cfg: TrainingConfig, profile: SystemProfile, info: DatasetInfo | None) -> float:
    return peak_vram(workload(cfg, profile, info)).total_gib


def budget_gb(profile: SystemProfile) -> float:
    return profile.usable_vram_gb * SAFETY


def fits(cfg: TrainingConfig, profile: SystemProfile, info: DatasetInfo | None = None) -> bool:
    return predicted_gb(cfg, profile, info) <= budget_gb(profile)


def _ckpt(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    yield Rung(
        {"train.gradient_checkpointing": True},
        "gradient checkpointing recomputes activations: far less VRAM for ~20-30% more time",
    )


def _batch(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    batch = cfg.train.batch_size if isinstance(cfg.train.batch_size, int) else 1
    peak = cfg.train.max_batch_size if cfg.train.auto_scale_batch_size else batch
    while peak > 1:
        peak //= 2
        patch: Patch = {"train.batch_size": peak}
        if cfg.train.auto_scale_batch_size:
            patch.update({"train.max_batch_size": peak, "train.min_batch_size": 1})
            if peak == 1:
                patch["train.auto_scale_batch_size"] = False
        yield Rung(patch, f"batch {peak}: activations grow with the batch")


def _text_cache(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    shuffles = any(ds.shuffle_tokens or ds.token_dropout_rate > 0 for ds in cfg.datasets)
    if not cfg.train.train_text_encoder and not shuffles:
        yield Rung(
            {"train.cache_text_embeddings": True, "train.unload_text_encoder": True},
            "captions encoded once, then the text encoders leave the GPU",
        )


def _latent_cache(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    if latent_mode(cfg) == "not_requested":
        patch = {f"datasets.{i}.cache_latents": True for i in range(len(cfg.datasets))}
        yield Rung(patch, "images encoded once by the VAE: faster steps, the VAE can rest")


def _quantize(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    if cfg.model.arch == "flux" and not cfg.model.quantize_te:
        yield Rung(
            {"model.quantize_te": True, "model.qtype_te": "float8"},
            "8-bit text encoders (Flux's T5 holds 4.8B weights)",
        )
    if not cfg.model.quantize:
        yield Rung(
            {"model.quantize": True, "model.qtype": "float8"},
            "8-bit base weights: about half the VRAM of the weights, small quality cost",
        )
    if profile.kind == "nvidia" and cfg.model.qtype not in ("nf4", "fp4"):
        yield Rung(
            {"model.quantize": True, "model.qtype": "nf4", "model.compile": False},
            "NF4 (4-bit) base weights: a quarter of 16-bit; slower steps, some quality cost",
        )


def _low_vram(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    yield Rung({"model.low_vram": True}, "VAE and text encoders leave the GPU when not needed")


def _offload(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    for share in (0.25, 0.5, 0.75):
        yield Rung(
            {"model.layer_offloading": True, "model.layer_offloading_transformer_percent": share},
            f"{share:.0%} of the layers kept in RAM (≈ +{share * 65:.0f}% step time)",
        )


def _resolution(cfg: TrainingConfig, profile: SystemProfile) -> Iterator[Rung]:
    multiple = ARCH_DEFAULTS[cfg.model.arch]["size_multiple"]
    for size in (768, 512):
        if max(max(ds.resolution) for ds in cfg.datasets) > size and size % multiple == 0:
            patch: Patch = {
                f"datasets.{i}.resolution": [min(r, size) for r in ds.resolution]
                for i, ds in enumerate(cfg.datasets)
            }
            yield Rung(patch, f"train at {size} px: activations shrink with the pixel count")


LADDER: tuple[Callable[[TrainingConfig, SystemProfile], Iterator[Rung]], ...] = (
    _ckpt,
    _batch,
    _text_cache,
    _latent_cache,
    _quantize,
    _low_vram,
    _offload,
    _resolution,
)


def fit_to_memory(
    cfg: TrainingConfig,
    profile: SystemProfile,
    info: DatasetInfo | None = None,
    budget: float | None = None,
) -> tuple[TrainingConfig, list[Rung]]:
    """The config after the fewest rungs that bring the predicted peak under ``budget``
    (default: 95% of the usable VRAM); all rungs when nothing is enough."""
    taken: list[Rung] = []
    budget = budget_gb(profile) if budget is None else budget
    need = predicted_gb(cfg, profile, info)
    for step in LADDER:
        for rung in step(cfg, profile):
            if need <= budget:
                return cfg, taken
            patch = changed(cfg, rung.patch)
            patched = try_patch(cfg, patch) if patch else None
            if patched is None:
                continue
            after = predicted_gb(patched, profile, info)
            # Only rungs that save VRAM for this config and do not run the machine out of RAM
            # (quantizing Flux on load needs ~50 GB of it).
            if after < need * 0.99 and _ram_ok(cfg, patched, profile, info):
                cfg, need = patched, after
                taken.append(Rung(patch, rung.reason))
    return cfg, taken


def _ram_ok(
    before: TrainingConfig, after: TrainingConfig, profile: SystemProfile, info: DatasetInfo | None
) -> bool:
    ram_after = peak_ram(workload(after, profile, info)).total_gib
    if ram_after <= profile.ram_total_gb:
        return True
    return ram_after <= peak_ram(workload(before, profile, info)).total_gib


def merged_patch(rungs: list[Rung]) -> Patch:
    out: Patch = {}
    for rung in rungs:
        out.update(rung.patch)
    return out
