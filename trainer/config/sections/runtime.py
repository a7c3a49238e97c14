"""The runtime section: the device training runs on, data-parallel processes and data loading."""

from __future__ import annotations

from pydantic import model_validator

from trainer.config.fields import Device, Section, field_error, opt


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
            raise field_error(
                "persistent_workers", "needs num_workers above 0 — set num_workers to 1 or more"
            )
        return self
