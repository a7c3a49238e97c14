"""Memory and speed options of the base model: what the training loop calls, and in which order.

::

    check_environment(cfg, device)           # refuse what this machine cannot do, before loading
    arch = load_arch(cfg, home, device, dtype)
    prepare_base(arch, cfg)                  # before adapters: quantize, attention backend, ARA
    groups = arch.add_lora(...)
    prepare_training(arch, cfg)              # after adapters: ARA active, offloading, compile
    ...
    unload_for_run(arch, cfg, ...)           # train.unload_text_encoder, before step 1

Each option lives in its own module of this package: ``quantize`` (float8 / bitsandbytes),
``offload`` (layer offloading, ``low_vram``), ``attention`` (diffusers' attention backends),
``accuracy_recovery`` (the frozen ``ara`` adapter), ``prompts`` (unloading the text encoders),
``multi_gpu`` (``split_model_over_gpus``). ``compile`` is ``nn.Module.compile`` on the denoiser,
in place, so adapters, state dicts and saving see the same module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from trainer.arch.adapters import ADAPTER_NAME, ARA_NAME, activate_adapters
from trainer.arch.base import Arch
from trainer.config.schema import TrainingConfig
from trainer.engine.failures import MemoryOptionError
from trainer.engine.memory.accuracy_recovery import load_accuracy_recovery_adapter
from trainer.engine.memory.attention import ATTENTION_NEEDS, set_attention_backend
from trainer.engine.memory.multi_gpu import split_over_devices
from trainer.engine.memory.offload import LayerOffloader, offload_component
from trainer.engine.memory.quantize import QuantReport, quantize_module

# What torch.compile uses; the tests swap in a counting backend (inductor needs minutes here).
COMPILE_BACKEND: Any = "inductor"


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_available(kind: str) -> bool:
    if kind == "cuda":
        return cuda_count() > 0
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    return True


def check_environment(cfg: TrainingConfig, device: torch.device, processes: int = 1) -> None:
    """Refuse, before anything loads, what this machine cannot do (devices, GPUs, processes).

    ``processes``: how many the launcher started (``trainer.engine.distributed``); it must be the
    config's ``runtime.num_processes``, which is what the studio launches with."""
    problems = []
    m = cfg.model
    for path, value in (("model.vae_device", m.vae_device), ("model.te_device", m.te_device)):
        if value not in ("auto", "cpu") and not device_available(value):
            problems.append(
                f"{path} is '{value}' but this machine has no {value.upper()} device — use "
                "'auto' or 'cpu'"
            )
    if m.split_model_over_gpus and cuda_count() < 2:
        problems.append(
            f"model.split_model_over_gpus needs at least 2 CUDA GPUs; this machine has "
            f"{cuda_count()} — turn it off (layer offloading or quantization save memory on one)"
        )
    if m.attention_backend in ATTENTION_NEEDS and device.type != "cuda":
        problems.append(
            f"model.attention_backend '{m.attention_backend}' needs "
            f"{ATTENTION_NEEDS[m.attention_backend]} and an NVIDIA GPU; training runs on "
            f"{device.type} — use 'auto' or 'native'"
        )
    wanted = cfg.runtime.num_processes
    if wanted != processes:
        how = (
            f"start it with `accelerate launch --multi_gpu --num_processes {wanted} -m trainer "
            "run ...` (the studio does this)"
            if processes == 1
            else f"launch {wanted} processes, or set runtime.num_processes to {processes}"
        )
        problems.append(
            f"runtime.num_processes is {wanted} but {processes} process(es) were started — {how}"
        )
    if processes > 1 and device.type == "cuda" and processes > cuda_count():
        problems.append(
            f"{processes} processes need one CUDA GPU each; this machine has {cuda_count()} — "
            "lower runtime.num_processes"
        )
    if processes > 1 and device.type == "mps":
        problems.append("Apple's MPS is one device: several processes cannot share it — use 1")
    if processes > 1 and m.split_model_over_gpus:
        problems.append(
            "model.split_model_over_gpus spreads one model over the GPUs; it cannot be combined "
            "with several training processes — use one or the other"
        )
    if problems:
        raise MemoryOptionError("; ".join(problems))


@dataclass
class MemoryReport:
    """What was applied, for the run log and the tests."""

    quantized: list[QuantReport] = field(default_factory=list)
    attention_backend: str | None = None
    ara_layers: int = 0
    offloaded: dict[str, int] = field(default_factory=dict)
    compiled: bool = False
    device_map: dict[str, Any] | None = None

    def lines(self) -> list[str]:
        """One line per option that acted, for the run log."""
        out = [
            f"quantized {q.component} to {q.qtype}: {q.layers} layers, "
            f"{q.bytes_before / 2**20:.1f} MB -> {q.bytes_after / 2**20:.1f} MB"
            for q in self.quantized
        ]
        if self.attention_backend:
            out.append(f"attention backend: {self.attention_backend}")
        if self.ara_layers:
            out.append(f"accuracy recovery adapter on {self.ara_layers} layers (frozen)")
        out += [f"offloaded {n} modules of {name}" for name, n in self.offloaded.items()]
        if self.device_map:
            out.append(f"split over {len(set(map(str, self.device_map.values())))} GPUs")
        if self.compiled:
            out.append("denoiser compiled with torch.compile")
        return out


def prepare_base(arch: Arch, cfg: TrainingConfig) -> MemoryReport:
    """Before adapters: quantize the denoiser / text encoders, attention backend, ARA."""
    m = cfg.model
    report = MemoryReport()
    arch.memory_report = report
    if m.quantize:
        report.quantized.append(
            quantize_module(
                arch.denoiser,
                m.qtype,
                device=arch.device,
                compute_dtype=arch.dtype,
                component=arch.denoiser_name,
                what="model.qtype",
            )
        )
    if m.quantize_te:
        for name, te in arch.text_encoders.items():
            report.quantized.append(
                quantize_module(
                    te,
                    m.qtype_te,
                    device=arch.te_device,
                    compute_dtype=arch.te_dtype,
                    component=name,
                    what="model.qtype_te",
                )
            )
    report.attention_backend = set_attention_backend(
        arch.denoiser, m.attention_backend, arch.device
    )
    if m.accuracy_recovery_adapter:
        report.ara_layers = load_accuracy_recovery_adapter(arch, m.accuracy_recovery_adapter)
    return report


def prepare_training(arch: Arch, cfg: TrainingConfig) -> MemoryReport:
    """After adapters: ARA active under the trained LoRA, offloading, split, compile."""
    m = cfg.model
    report = getattr(arch, "memory_report", None) or MemoryReport()
    arch.memory_report = report
    if getattr(arch, "frozen_adapter", None):
        activate_adapters(arch.denoiser, [ARA_NAME, ADAPTER_NAME])
    offloaders: dict[str, LayerOffloader] = {}
    if m.layer_offloading:
        offloaders["denoiser"] = offload_component(
            arch.denoiser, m.layer_offloading_transformer_percent, arch.device, name="denoiser"
        )
        for name, te in arch.text_encoders.items():
            offloaders[name] = offload_component(
                te, m.layer_offloading_text_encoder_percent, arch.te_device, name=name
            )
    if m.low_vram:
        offloaders["vae"] = offload_component(
            arch.vae, 1.0, arch.vae_device, kind="all", name="vae"
        )
        for name, te in arch.text_encoders.items():
            if name in offloaders:
                offloaders[name].detach()
            offloaders[name] = offload_component(te, 1.0, arch.te_device, kind="all", name=name)
    arch.offloaders = offloaders
    report.offloaded = {name: len(o.units) for name, o in offloaders.items()}
    if offloaders:
        arch.pin_execution_device = True
    if m.split_model_over_gpus:
        devices = [torch.device("cuda", i) for i in range(cuda_count())]
        if len(devices) < 2:
            raise MemoryOptionError(
                f"model.split_model_over_gpus needs at least 2 CUDA GPUs; found {len(devices)}"
            )
        report.device_map = split_over_devices(arch.denoiser, devices)
    if m.compile:
        arch.denoiser.compile(backend=COMPILE_BACKEND)
        report.compiled = True
    for line in report.lines():
        print(f"memory: {line}", flush=True)
    return report
