"""What the GPU check trains, and which cases a machine cannot run (skipped, with the reason).

Each case is one training run a few dozen steps long: a tiny demo model through the real trainer
(``python -m trainer``'s ``run_job``, or ``accelerate launch`` for 2 processes) or the real-size
SD1.5 U-Net (random weights from its shipped config) through the trainer's own parts (quantizer,
attention backends, peft adapters, optimizers). Cases of one ``group`` run in one worker process
on CUDA; compiled and multi-process cases get a process of their own, so a crash or a hang there
cannot take the others with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # tiny-sd15 | tiny-sdxl | tiny-flux | real-sd15
    dtype: str = "bf16"  # bf16 | fp16 (with the gradient scaler)
    optimizer: str = "adamw"  # adamw | adamw8bit
    qtype: str | None = None  # the base's quantization: int8 | nf4 (bitsandbytes)
    attention: str = "native"  # native (PyTorch SDPA) | flash (flash-attn)
    compile: bool = False  # torch.compile (inductor) on the denoiser
    processes: int = 1  # 2: data-parallel over nccl (one GPU each)

    @property
    def arch(self) -> str:
        return self.model.split("-", 1)[1]

    @property
    def real_size(self) -> bool:
        return self.model.startswith("real-")

    @property
    def group(self) -> str:
        """The worker process the case runs in on CUDA."""
        base = "real" if self.real_size else "tiny"
        if self.compile:
            return f"{base}-compile"
        return f"{base}-nccl" if self.processes > 1 else base


CASES: tuple[Case, ...] = (
    Case("tiny-sd15 bf16 sdpa", "tiny-sd15"),
    Case("tiny-sd15 fp16 scaler", "tiny-sd15", dtype="fp16"),
    Case("tiny-sdxl bf16", "tiny-sdxl"),
    Case("tiny-flux bf16", "tiny-flux"),
    Case("tiny-sd15 adamw8bit", "tiny-sd15", optimizer="adamw8bit"),
    Case("tiny-sd15 int8 base", "tiny-sd15", qtype="int8"),
    Case("tiny-sd15 nf4 base", "tiny-sd15", qtype="nf4"),
    Case("tiny-sd15 flash", "tiny-sd15", attention="flash"),
    Case("real-sd15 bf16 sdpa", "real-sd15"),
    Case("real-sd15 fp16 scaler", "real-sd15", dtype="fp16"),
    Case("real-sd15 adamw8bit", "real-sd15", optimizer="adamw8bit"),
    Case("real-sd15 int8 base", "real-sd15", qtype="int8"),
    Case("real-sd15 nf4 base", "real-sd15", qtype="nf4"),
    Case("real-sd15 flash", "real-sd15", attention="flash"),
    Case("tiny-sd15 2 processes nccl", "tiny-sd15", processes=2),
    Case("real-sd15 compile", "real-sd15", compile=True),
    Case("tiny-sd15 compile", "tiny-sd15", compile=True),
)
# Groups in the order they run: what most users rely on first, the slow compiles last.
GROUP_ORDER = ("tiny", "real", "tiny-nccl", "real-compile", "tiny-compile")


@dataclass(frozen=True)
class Machine:
    """What the check found: CUDA (False in a dry run, which trains on the CPU), GPUs, packages."""

    cuda: bool
    gpus: int
    flash_attn: bool


def skip_reason(case: Case, machine: Machine) -> str | None:
    """Why ``case`` cannot run on ``machine`` (None: it runs)."""
    if not machine.cuda:
        if case.real_size:
            return "real-size U-Net: CUDA only here (benchmarks/real_size.py times it on a CPU)"
        if case.dtype == "fp16":
            return "fp16 mixed precision with the gradient scaler needs CUDA"
        if case.attention == "flash":
            return "flash attention needs CUDA"
        if case.compile:
            return "torch.compile (inductor) needs CUDA here: minutes per model on a CPU"
        if case.processes > 1:
            return "2 processes over nccl need 2 CUDA GPUs"
        return None
    if case.attention == "flash" and not machine.flash_attn:
        return "flash-attn is not installed"
    if case.processes > machine.gpus:
        return (
            f"{case.processes} processes over nccl need {case.processes} GPUs; found {machine.gpus}"
        )
    return None


def case_by_name(name: str) -> Case:
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no GPU-check case named {name!r}")


def result(case: Case, status: str, reason: str = "", **measured: Any) -> dict[str, Any]:
    """One row of the check's table (and of its --json file)."""
    empty = dict.fromkeys(
        ("s_per_step", "peak_vram_gib", "loss", "lora_delta", "pred_s_per_step", "pred_mem_gib")
    )
    return {
        "case": asdict(case),
        "name": case.name,
        "status": status,
        "reason": reason,
        **empty,
        **measured,
    }
