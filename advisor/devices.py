"""Throughput of known accelerators, for step-time priors.

Numbers are the vendors' published dense FP16/BF16 tensor throughput (FP32 accumulate where the
spec sheet distinguishes it; no sparsity) and memory bandwidth. They only set the scale of a
prior: measured seconds per step from past runs on the same device replace them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    tflops: float  # dense fp16/bf16 tensor TFLOPS
    bandwidth_gbs: float  # memory bandwidth, GB/s
    link_gbs: float = 25.0  # host link for block swapping (PCIe 4.0 x16 effective)
    efficiency_scale: float = 1.0  # software maturity (ROCm, MPS, CPU reach less of the peak)
    known: bool = True


# (pattern matched against the lower-cased device name, tflops, bandwidth). First match wins,
# so more specific names come first.
_GPUS: tuple[tuple[str, float, float], ...] = (
    (r"5090", 209.5, 1792),
    (r"5080", 112.6, 960),
    (r"4090", 165.2, 1008),
    (r"4080 super", 104.4, 736),
    (r"4080", 97.5, 717),
    (r"4070 ti", 80.2, 504),
    (r"4070", 58.3, 504),
    (r"4060 ti", 44.1, 288),
    (r"4060", 30.1, 272),
    (r"3090 ti", 80.0, 1008),
    (r"3090", 71.0, 936),
    (r"3080 ti", 68.2, 912),
    (r"3080", 59.5, 760),
    (r"3070", 40.6, 448),
    (r"3060 ti", 32.4, 448),
    (r"3060", 25.6, 360),
    (r"2080 ti", 53.8, 616),
    (r"2080", 40.3, 448),
    (r"2070", 29.9, 448),
    (r"2060", 25.8, 336),
    (r"h200", 989.0, 4800),
    (r"h100.*pcie", 756.0, 2000),
    (r"h100", 989.0, 3350),
    (r"a100", 312.0, 1555),
    (r"l40s", 362.0, 864),
    (r"l40", 181.0, 864),
    (r"l4\b", 121.0, 300),
    (r"a10g", 70.0, 600),
    (r"a10\b", 125.0, 600),
    (r"rtx 6000 ada", 364.0, 960),
    (r"a6000", 154.8, 768),
    (r"a5000", 111.1, 768),
    (r"a4000", 76.7, 448),
    (r"v100", 125.0, 900),
    (r"t4\b", 65.0, 320),
    (r"mi300", 1307.0, 5300),
    (r"mi250", 383.0, 3277),
    (r"mi210", 181.0, 1638),
    (r"7900 xtx", 122.8, 960),
    (r"7900 xt", 103.0, 800),
    (r"7800 xt", 74.6, 624),
    (r"6900 xt", 46.1, 512),
    (r"6800 xt", 41.5, 512),
    (r"m4 max", 34.0, 546),
    (r"m4 pro", 17.0, 273),
    (r"m3 ultra", 56.0, 800),
    (r"m3 max", 28.4, 400),
    (r"m3 pro", 14.0, 150),
    (r"m2 ultra", 54.0, 800),
    (r"m2 max", 27.2, 400),
    (r"m2 pro", 13.6, 200),
    (r"m1 ultra", 42.0, 800),
    (r"m1 max", 21.0, 400),
    (r"m1 pro", 10.4, 200),
    (r"\bm[1-4]\b", 5.0, 100),
)

_VENDOR_SCALE = {"nvidia": 1.0, "amd": 0.55, "apple": 0.35, "cpu": 1.0}
_FALLBACK = {"nvidia": (60.0, 600.0), "amd": (60.0, 600.0), "apple": (10.0, 200.0)}


@cache
def device_spec(vendor: str, name: str, cpu_cores: int = 1) -> DeviceSpec:
    """The spec of a device by vendor and marketing name; an explicit guess when unknown."""
    if vendor in ("cpu", "none", ""):
        # ~32 fp32 FLOP per cycle per core (AVX2, two FMA units) at ~3 GHz; PyTorch reaches
        # about 0.4 of it: the real-size SD1.5 U-Net's fastest CPU step (benchmarks/real_size.py,
        # docs/sources.md#real-size-cpu-step) was 11.1 s at 256 px, predicted 11.7 s with these.
        return DeviceSpec(f"CPU ({cpu_cores} cores)", 0.1 * cpu_cores, 20.0, 20.0, 0.4)
    lowered = name.lower()
    for pattern, tflops, bandwidth in _GPUS:
        if re.search(pattern, lowered):
            link = bandwidth if vendor == "apple" else 25.0
            return DeviceSpec(name, tflops, bandwidth, link, _VENDOR_SCALE.get(vendor, 1.0))
    tflops, bandwidth = _FALLBACK.get(vendor, (60.0, 600.0))
    link = bandwidth if vendor == "apple" else 25.0
    return DeviceSpec(name, tflops, bandwidth, link, _VENDOR_SCALE.get(vendor, 1.0), known=False)
