"""The smart-default rules of thumb (docs/sources.md#smart-default-rules-of-thumb), as pure functions.

They are hardware rules of thumb that do not know the model; ``advisor.defaults`` starts from
them and then checks the result against the VRAM model (a batch of 4 at 1024 px fits an SDXL
U-Net on 24 GB, not Flux).
"""

from __future__ import annotations

from dataclasses import dataclass

from advisor.profile import GB, SystemProfile
from trainer.engine.failures import human_bytes

SOURCE = "docs/sources.md#smart-default-rules-of-thumb"
OS_RESERVE_GB = 8.0
RAM_CACHE_SHARE = 0.7
SEED_CACHE_MB_PER_IMAGE = 6.0  # a flat estimate; the advisor uses model facts instead


@dataclass(frozen=True)
class BatchDefaults:
    batch_size: int
    max_batch_size: int
    auto_scale: bool
    min_batch_size: int = 1
    warmup_steps: int = 100


def batch_defaults(vram_gb: float, resolution: int, priority: str) -> BatchDefaults:
    """calculateBatchDefaults: batch by resolution band and VRAM; quality keeps it fixed."""
    if resolution <= 512:
        initial = min(16, max(4, int(vram_gb // 3)))
        most = initial * 2
    elif resolution <= 768:
        initial = min(8, max(2, int(vram_gb // 4)))
        most = min(16, initial * 2)
    elif resolution <= 1024:
        initial = min(4, max(1, int(vram_gb // 6)))
        most = min(8, initial * 2)
    else:
        initial = min(2, max(1, int(vram_gb // 8)))
        most = min(4, initial * 2)
    return BatchDefaults(initial, most, auto_scale=priority != "quality")


@dataclass(frozen=True)
class CacheDefaults:
    cache_latents: bool
    to_disk: bool
    reason: str


def caching_defaults(profile: SystemProfile, cache_gb: float) -> CacheDefaults:
    """Caching: the original rule turns cache_latents off for the disk case; here
    cache_latents stays on, because the schema reads cache_latents_to_disk as "cache, on disk"."""
    available = profile.ram_available_gb - OS_RESERVE_GB
    if profile.unified:
        return CacheDefaults(True, False, "unified memory: an in-memory cache is optimal")
    # Not the free RAM (the header shows that): the share of it a cache may take, once the OS's
    # reserve is set aside; quoted as "free" it read as a contradiction of the header.
    allowed = available * RAM_CACHE_SHARE
    size = human_bytes(cache_gb * GB)  # the tiny demo's cache is KB: never a "0.0 GB"
    if cache_gb < allowed:
        return CacheDefaults(
            True, False, f"cache fits in RAM ({size} of the {allowed:.1f} GB a cache may use)"
        )
    return CacheDefaults(
        True, True, f"cache too large for RAM ({size}): kept on disk, memory-mapped"
    )


def prefetch_defaults(profile: SystemProfile, priority: str) -> int:
    """calculatePrefetching: slower disks prefetch more; unified memory gains little.
    (No GPU: nothing to prefetch to, so 0 — these rules do not cover CPU-only.)"""
    if profile.kind == "cpu":
        return 0
    if profile.unified:
        return 1
    base = {"hdd": 3, "ssd": 2, "nvme": 1}.get(profile.disk_type, 2)
    if priority == "speed":
        return base + 1
    if priority == "memory":
        return max(0, base - 1)
    return base


def worker_defaults(profile: SystemProfile) -> tuple[int, bool]:
    """calculateWorkers: one loader process per 8 GB of RAM, at most the cores and 8."""
    workers = min(int(profile.ram_total_gb // 8), profile.cpu_cores, 8)
    return workers, workers > 0


def unified_memory_notes(profile: SystemProfile) -> list[str]:
    """handleUnifiedMemory: what to tell a person with unified memory."""
    if not profile.unified:
        return []
    return [
        f"Unified memory detected: {profile.ram_total_gb:.0f} GB shared between CPU and GPU, so "
        "VRAM and RAM are the same pool. Batch sizes assume the GPU may use about 70% of it.",
        "GPU prefetching helps little on unified memory (there is no copy to a separate card); "
        "an in-memory cache is always the best cache.",
    ]
