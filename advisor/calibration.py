"""Which past runs correct a prediction's priors, and the evidence shown for it.

    found = calibrate(cfg, profile, history)   # runs like this one: same model, size, device
    found.speed_factor, found.memory_factor    # measured ÷ prior, median over those runs
    found.lines()                              # "Speed corrected ×1.8 from 2 past runs like …"

A run's factor divides what it measured by the prior for its own config on this device, so a run
at batch 2 informs a prediction at batch 4. Only ``advisor.runs.comparable`` runs count: the tiny
demo model never calibrates a real model, nor the other way round.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any

from advisor.memory import CONTEXT_GIB, peak_ram, peak_vram
from advisor.profile import SystemProfile
from advisor.runs import PastRun, as_runs, median, mismatches, model_kind
from advisor.timing import step_time
from advisor.workload import Workload, workload
from trainer.config.schema import TrainingConfig

SHOWN_RUNS = 3  # runs named in the evidence line; the rest are counted


@dataclass(frozen=True)
class RunEvidence:
    """What one past run measured, and its correction factors (measured ÷ its own prior)."""

    run: str  # its name, else its short id
    seconds_per_step: float | None
    peak_gb: float | None
    speed_factor: float | None
    memory_factor: float | None


@dataclass(frozen=True)
class Calibration:
    """The runs that correct the priors, and the measured runs left out for another model."""

    model: str = ""  # this config's base model (``advisor.runs.model_kind``)
    memory: str = "vram"  # the memory a run's peak measures: vram, or ram on a CPU (its RSS)
    runs: tuple[RunEvidence, ...] = ()
    # (model, runs) measured on this device at this size, but on another base model: not used
    other_models: tuple[tuple[str, int], ...] = ()

    @property
    def speed_factor(self) -> float | None:
        return median(r.speed_factor for r in self.runs if r.speed_factor)

    @property
    def memory_factor(self) -> float | None:
        return median(r.memory_factor for r in self.runs if r.memory_factor)

    @property
    def speed_factors(self) -> list[float]:
        return [r.speed_factor for r in self.runs if r.speed_factor]

    def lines(self) -> list[str]:
        """The evidence in words; empty without past runs on this device at this size."""
        found = [self._used()] if self.runs else []
        for other, count in self.other_models:
            were = "run was" if count == 1 else "runs were"
            found.append(f"{count} past {were} on {_model_words(other)}: not used for this model")
        return found

    def _used(self) -> str:
        """'Speed corrected ×1.8 and memory ×0.92 from 2 past runs like this one (a, b: 0.41
        and 0.44 s/step, peak 3.1 and 3.2 GB measured)'."""
        memory = "RAM" if self.memory == "ram" else "memory"
        factors = [
            f"{what} ×{factor:.2g}"
            for what, factor in (("speed", self.speed_factor), (memory, self.memory_factor))
            if factor is not None
        ]
        corrected = factors[0].replace(" ", " corrected ", 1) + "".join(
            f" and {f}" for f in factors[1:]
        )
        shown = self.runs[:SHOWN_RUNS]
        names = ", ".join(r.run for r in shown)
        if len(self.runs) > len(shown):
            names += f" and {len(self.runs) - len(shown)} more"
        steps = [f"{r.seconds_per_step:.3g}" for r in shown if r.seconds_per_step]
        peaks = [f"{r.peak_gb:.1f}" for r in shown if r.peak_gb]
        measured = ([f"{_joined(steps)} s/step"] if steps else []) + (
            [f"peak {_joined(peaks)} GB"] if peaks else []
        )
        runs = "1 past run" if len(self.runs) == 1 else f"{len(self.runs)} past runs"
        return (
            f"{corrected[0].upper()}{corrected[1:]} from {runs} like this one "
            f"({names}: {', '.join(measured)} measured)"
        )


def _joined(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _model_words(model: str) -> str:
    return f"the {model} model" if model.startswith("demo ") else model


def calibrate(
    cfg: TrainingConfig,
    profile: SystemProfile,
    history: list[Any] | None,
    host: str | None = None,
) -> Calibration:
    """The past runs (RunRecords, dicts or PastRuns) whose measurements correct ``cfg``'s
    priors on ``profile`` (``host``: this machine's name, for runs tagged only 'cpu'/'cuda')."""
    host = socket.gethostname() if host is None else host
    memory = memory_kind(workload(cfg, profile))
    used: list[RunEvidence] = []
    others: Counter[str] = Counter()
    for run in as_runs(history):
        if not (run.seconds_per_step or run.peak_gb):
            continue
        why = mismatches(run, cfg, profile.label, host)
        if not why:
            used.append(_evidence(run, profile, memory))
        elif why == ("model",) and run.model:
            others[run.model] += 1
    return Calibration(model_kind(cfg), memory, tuple(used), tuple(sorted(others.items())))


def memory_kind(w: Workload) -> str:
    """What a run's measured peak is of: torch's allocated VRAM on a GPU, the process's RAM
    (RSS, Python and libraries included) on a CPU."""
    return "ram" if w.device_kind == "cpu" else "vram"


def _evidence(run: PastRun, profile: SystemProfile, memory: str) -> RunEvidence:
    prior_memory, prior_step, measured_kind = _run_priors(run, profile)
    speed = run.seconds_per_step / prior_step if run.seconds_per_step else None
    same_memory = run.peak_gb and measured_kind == memory  # a CPU run's RSS says nothing of VRAM
    factor = run.peak_gb / max(prior_memory, 1e-6) if same_memory else None
    return RunEvidence(run.label, run.seconds_per_step, run.peak_gb, speed, factor)


def _run_priors(run: PastRun, profile: SystemProfile) -> tuple[float, float, str]:
    """The priors for a past run's own config on ``profile``, memoised on the run: the memory
    its peak measures (GiB; VRAM without the device context, which torch does not count),
    seconds per step, and which memory that is."""
    if profile not in run.memo:
        if run.config is None:
            raise ValueError(f"run {run.run_id} has no readable config")
        w = workload(run.config, profile)
        kind = memory_kind(w)
        if kind == "ram":
            memory = peak_ram(w).total_gib
        else:
            memory = peak_vram(w).total_gib - CONTEXT_GIB.get(w.device_kind, 0.6)
        run.memo[profile] = (memory, step_time(w).seconds_per_step, kind)
    return run.memo[profile]
