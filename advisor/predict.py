"""Predictions with ranges and the assumptions behind them: VRAM, RAM, speed, time, disk.

``predict(cfg, profile, info, history)`` starts from priors (``memory``, ``timing``, ``disk``)
and, when comparable past runs exist (``advisor.runs.comparable``: the same base model family and
size, resolution and device), replaces the speed and memory priors by what those runs measured:
each run's measurement divided by the prior for that run's own config gives a correction factor,
and the median factor scales this config's prior. So a run at batch 2 still informs a prediction
at batch 4 on the same card, while the tiny demo model never calibrates a real one.
``Prediction.calibration`` says which runs did it, what they measured and the factors.

Times assume a quiet machine. When the CPU was already busy at detection
(``SystemProfile.cpu_busy``) the numbers stay as they are (how much longer depends on what else
runs) and ``Prediction.time_caveat`` says so in words (``advisor.cpu_load``), shown beside the
times and as a finding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from advisor.calibration import Calibration, calibrate
from advisor.cpu_load import busy_cpu_caveat
from advisor.dataset import DatasetInfo
from advisor.disk import disk_parts
from advisor.memory import CONTEXT_GIB, Breakdown, peak_ram, peak_vram
from advisor.profile import SystemProfile, detect_profile
from advisor.timing import run_parts, step_time
from advisor.workload import Workload, workload
from trainer.config.schema import TrainingConfig

VRAM_RANGE = (0.9, 1.15)
RAM_RANGE = (0.85, 1.25)
DISK_RANGE = (0.9, 1.2)
SPEED_RANGE_KNOWN = (0.75, 1.4)
SPEED_RANGE_UNKNOWN = (0.5, 2.0)
HISTORY_RANGE = (0.9, 1.12)


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    unit: str
    parts: dict[str, float] = field(default_factory=dict)
    source: str = "prior"  # prior | history

    @classmethod
    def of(
        cls,
        value: float,
        span: tuple[float, float],
        unit: str,
        parts: dict[str, float] | None = None,
        source: str = "prior",
    ) -> Estimate:
        return cls(value, value * span[0], value * span[1], unit, dict(parts or {}), source)

    def text(self) -> str:
        low, high = _fmt(self.low, self.unit), _fmt(self.high, self.unit)
        return f"{_fmt(self.value, self.unit)} ({low}–{high})"


@dataclass(frozen=True)
class Prediction:
    vram: Estimate
    ram: Estimate
    step_time: Estimate
    total_time: Estimate
    disk: Estimate
    vram_available_gb: float
    ram_available_gb: float
    disk_free_gb: float
    assumptions: tuple[str, ...] = ()
    history_runs: int = 0
    calibration: Calibration = field(default_factory=Calibration)
    time_caveat: str = ""  # why the times may be too short (a busy CPU); "" when none is known
    preview_images: int = 0  # the preview images the run makes (the "sampling" part of the time)

    @property
    def seconds_per_step(self) -> float:
        return self.step_time.value

    @property
    def vram_fit(self) -> str:
        """yes: fits with margin; tight: the range reaches the limit; no: the estimate is over."""
        return _fit(self.vram, self.vram_available_gb)

    @property
    def ram_fit(self) -> str:
        return _fit(self.ram, self.ram_available_gb)

    @property
    def disk_fit(self) -> str:
        return _fit(self.disk, self.disk_free_gb)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(vram_fit=self.vram_fit, ram_fit=self.ram_fit, disk_fit=self.disk_fit)
        return data


def _fit(estimate: Estimate, available: float) -> str:
    if estimate.value > available:
        return "no"
    return "tight" if estimate.high > available else "yes"


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return duration(value)
    return f"{value:.1f} GB" if unit == "GB" else f"{value:.3g} {unit}"


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# The phases of ``advisor.timing.run_parts`` in the words the studio shows them.
TIME_PART_WORDS = {
    "starting the trainer": "starting and loading",
    "loading models": "starting and loading",
    "sampling": "previews",
}
SMALL_TIME_PART = 0.02  # a part under this share of the total is left out of the split


def time_split(parts: dict[str, float], preview_images: int = 0) -> str:
    """The parts of a total time, largest first: 'starting and loading 6.01 s, training 2.34 s,
    previews 0.61 s for 8 images' (parts under 2% of the total left out)."""
    grouped: dict[str, float] = {}
    for part, seconds in parts.items():
        word = TIME_PART_WORDS.get(part, part)
        grouped[word] = grouped.get(word, 0.0) + seconds
    total = sum(grouped.values())
    words = []
    for word, seconds in sorted(grouped.items(), key=lambda item: -item[1]):
        if seconds <= 0 or seconds < SMALL_TIME_PART * total:
            continue
        images = preview_images if word == "previews" else 0
        count = f" for {images} image{'s' * (images != 1)}" if images else ""
        words.append(f"{word} {duration(seconds)}{count}")
    return ", ".join(words)


# ---------------------------------------------------------------------------------- predict
def predict(
    cfg: TrainingConfig,
    profile: SystemProfile | None = None,
    info: DatasetInfo | None = None,
    history: list[Any] | None = None,
) -> Prediction:
    """Predictions for ``cfg`` on ``profile`` (default: this machine, detected)."""
    profile = profile or detect_profile()
    w = workload(cfg, profile, info)
    calibration = calibrate(cfg, profile, history)
    vram, ram = _memory(w, calibration)
    step = _step(w, calibration)
    total = _total(w, step, profile)
    disk = disk_parts(w)
    return Prediction(
        vram=vram,
        ram=ram,
        step_time=step,
        total_time=total,
        disk=Estimate.of(sum(disk.values()), DISK_RANGE, "GB", disk),
        vram_available_gb=profile.usable_vram_gb,
        ram_available_gb=profile.ram_total_gb,
        disk_free_gb=profile.disk_free_gb,
        assumptions=tuple(assumptions(cfg, w, profile, info, calibration)),
        history_runs=len(calibration.runs),
        calibration=calibration,
        time_caveat=busy_cpu_caveat(
            profile.load_per_core,
            profile.cpu_busy_processes,
            w.device_kind,
            calibration.speed_factor,
        ),
        preview_images=w.sample_images,
    )


def _memory(w: Workload, calibration: Calibration) -> tuple[Estimate, Estimate]:
    """VRAM and RAM, the one the device's measured peaks are taken of (RAM on a CPU) corrected
    by the calibration's memory factor."""
    vram, ram = peak_vram(w), peak_ram(w)
    factor = calibration.memory_factor
    if factor is None:
        return _prior(vram, VRAM_RANGE), _prior(ram, RAM_RANGE)
    if calibration.memory == "ram":
        corrected = Estimate.of(ram.total_gib * factor, HISTORY_RANGE, "GB", ram.parts, "history")
        return _prior(vram, VRAM_RANGE), corrected
    context = CONTEXT_GIB.get(w.device_kind, 0.6)  # measured peaks leave the context out
    value = (vram.total_gib - context) * factor + context
    corrected = Estimate.of(value, HISTORY_RANGE, "GB", vram.parts, "history")
    return corrected, _prior(ram, RAM_RANGE)


def _prior(found: Breakdown, span: tuple[float, float]) -> Estimate:
    return Estimate.of(found.total_gib, span, "GB", found.parts)


def _step(w: Workload, calibration: Calibration) -> Estimate:
    prior = step_time(w)
    factor, factors = calibration.speed_factor, calibration.speed_factors
    if factor is None:
        span = SPEED_RANGE_KNOWN if w.device.known else SPEED_RANGE_UNKNOWN
        return Estimate.of(prior.seconds_per_step, span, "s", prior.parts)
    lowest, highest = min(factors) / factor, max(factors) / factor
    span = (min(HISTORY_RANGE[0], lowest), max(HISTORY_RANGE[1], highest))
    return Estimate.of(prior.seconds_per_step * factor, span, "s", prior.parts, "history")


def _total(w: Workload, step: Estimate, profile: SystemProfile) -> Estimate:
    parts = run_parts(w, step.value, profile.disk_type)
    value = sum(parts.values())
    fixed = value - parts["training"]
    low = fixed * 0.8 + w.steps * step.low
    high = fixed * 1.3 + w.steps * step.high
    return Estimate(value, low, high, "s", parts, step.source)


# ------------------------------------------------------------------------------ assumptions
def assumptions(
    cfg: TrainingConfig,
    w: Workload,
    profile: SystemProfile,
    info: DatasetInfo | None,
    calibration: Calibration,
) -> list[str]:
    cpu = w.device_kind == "cpu"
    source = "~32 FLOP a cycle on each core at ~3 GHz" if cpu else "vendor spec"
    found = [
        f"device: {w.device.name} at {w.device.tflops:g} {'fp32' if cpu else 'dense 16-bit'} "
        f"TFLOPS ({source}{'' if w.device.known or cpu else ', guessed: unknown model'}), "
        f"{w.model.compute_efficiency * w.device.efficiency_scale:.0%} of it reached by "
        f"{w.model.label} training",
        f"peak memory at the largest size ({w.resolution} px) and batch {w.batch}, "
        f"{w.dtype} compute, denoiser weights stored as {w.weights}"
        + (f", {w.offload:.0%} of them offloaded to RAM" if w.offload else ""),
        "text encoders "
        + (
            "in RAM with the model"
            if cpu
            else "stay on the GPU"
            if w.te_on_gpu
            else "are off the GPU during steps"
        )
        + (
            "; captions encoded once and cached"
            if w.text_cached
            else "; captions encoded every step"
        ),
        f"latent caching: {w.latent_mode.replace('_', ' ')}",
        "first run: caches are built (later runs reuse disk caches and load faster)",
        "MLflow keeps a copy of each checkpoint's LoRA file; local checkpoints are rotated "
        f"(keep {w.keep})",
    ]
    if w.steps_assumed:
        why = (
            "train.epochs needs the images counted" if cfg.train.epochs else "train.steps is 'auto'"
        )
        found.append(f"{why}: {w.steps} steps assumed until it is resolved")
    if info is None or not info.folders:
        found.append(f"{w.images} images assumed (dataset not scanned)")
    if w.processes > 1:
        found.append(f"{w.processes} processes: memory is per GPU, time per optimizer step")
    setup = f"{w.model.label} at {w.resolution} px on this device"
    if calibration.runs:
        memory = "RAM" if calibration.memory == "ram" else "memory"
        found.append(
            f"speed and {memory} corrected by {len(calibration.runs)} past run(s) like this one: "
            + setup
        )
    else:
        found.append(f"no past runs of {setup}: priors only")
    found += calibration.lines()
    load = profile.load_per_core
    if profile.cpu_busy:
        found.append(
            busy_cpu_caveat(
                load, profile.cpu_busy_processes, w.device_kind, calibration.speed_factor
            )
        )
    elif load is not None:
        found.append(
            f"the CPU was quiet when checked (load {load:.1f} per core): the times assume it "
            "stays so"
        )
    if profile.unified:
        found.append("unified memory: the GPU may use about 70% of RAM; RAM and VRAM overlap")
    return found
