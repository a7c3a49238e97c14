"""Several processes, one run: data-parallel and mixed-precision training through accelerate.

The trainer runs unchanged under a multi-process launch (the studio does this when
``runtime.num_processes`` > 1; ``trainer.jobs.launch.train_command``)::

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 \\
        -m trainer run CONFIG --job-dir JOB

On a machine without CUDA (or with ``runtime.device: cpu``) every process trains on the CPU and
accelerate joins them with the gloo backend (``DistributedType.MULTI_CPU``); with CUDA each process
takes its own GPU (nccl). One process alone (``WORLD_SIZE`` unset or 1) joins no process group.

Every run, one process or several, trains through one ``accelerate.Accelerator`` (``Dist.accelerating``):

- **prepare**: the modules that carry trained parameters go through ``accelerator.prepare`` as
  one ``TrainedModules`` whose forward computes a batch's whole loss. With several processes that
  is a ``DistributedDataParallel``: it broadcasts rank 0's trainable weights when it wraps and
  averages the gradients in backward. The frozen base weights and all buffers are left out of DDP
  (identical on every rank; no multi-GB broadcast, quantized or offloaded weights untouched). The
  optimizer is prepared too (fp16: GradScaler, a step with inf/nan gradients is skipped); the LR
  scheduler is not, so it steps once per optimizer step exactly as the loop says.
- **accumulate**: each micro-batch runs inside ``accelerator.accumulate``: DDP's ``no_sync`` on
  all but the step's last one, so the processes all-reduce once per optimizer step;
  ``accelerator.backward`` divides the loss by the accumulation steps.
- **autocast**: ``train.dtype`` fp16/bf16 on CUDA (and bf16 on the CPU) is mixed precision
  (``mixed_precision``): the frozen base keeps the low dtype, the trained adapters stay fp32 and
  the forward runs under ``accelerator.autocast()`` (the VAE and frozen text encoders opt out and
  keep their configured dtypes). ``clip_gradients`` unscales fp16 gradients before clipping.
- **Data**: the global micro-batch plan (the same on every rank) is dealt out round-robin:
  rank r trains micro-batches r, r+N, r+2N, ... (``shard``). ``LoopState.micro_batches`` counts
  global micro-batches, so a resume skips exactly what every rank did.
- **One voice**: only the main process logs to MLflow (the others get a ``NullTracker``),
  writes progress, samples previews, saves checkpoints and the LoRA; the others wait at those
  save points (``barrier``).
- **Stopping together**: every step the ranks agree on a stop (one all-reduce of the flag), so a
  SIGTERM that reaches any rank stops all of them at the same step; a non-finite loss is judged on
  the all-reduced loss, so every rank raises together.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from trainer.config.sections.train import TrainConfig
from trainer.engine.optim import clip_gradients

T = TypeVar("T")
# accelerate's DistributedType values whose gradients are plain, already reduced tensors
PLAIN_CLIPPING = ("NO", "MULTI_GPU", "MULTI_CPU")


def launched_world_size() -> int:
    """How many processes the launcher (accelerate / torchrun) started; 1 when run alone."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


# ------------------------------------------------------------------------- precision
@dataclass(frozen=True)
class MixedPrecision:
    """How accelerate runs ``train.dtype`` on the training device."""

    mixed_precision: str  # accelerate's setting: "no", "fp16" or "bf16"
    loss_scaling: bool  # a GradScaler (fp16 autocast on CUDA)


def precision_for(dtype: torch.dtype, device: torch.device) -> MixedPrecision:
    """fp16/bf16 on CUDA and bf16 on the CPU: autocast (fp16 with a GradScaler). fp32, and fp16
    on the CPU or MPS: no autocast, the weights simply load in ``dtype`` (as before accelerate)."""
    if dtype == torch.float16 and device.type == "cuda":
        return MixedPrecision("fp16", loss_scaling=True)
    if dtype == torch.bfloat16 and device.type in ("cuda", "cpu"):
        return MixedPrecision("bf16", loss_scaling=False)
    return MixedPrecision("no", loss_scaling=False)


def build_accelerator(train: TrainConfig, device: torch.device, dtype: torch.dtype) -> Any:
    """This run's ``accelerate.Accelerator`` (tests replace it to compare against plain torch)."""
    from accelerate import Accelerator  # accelerate: 0.3 s to import; only when a run trains
    from accelerate.utils import DistributedDataParallelKwargs

    precision = precision_for(dtype, device)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=precision.mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        # Trained text encoders can leave a layer unused (SDXL reads the penultimate hidden
        # state), which DDP must be told to expect; the U-Net / transformer uses every adapter.
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=train.train_text_encoder)
        ],
    )
    if precision.loss_scaling and accelerator.scaler is None:
        raise RuntimeError("fp16 mixed precision without a gradient scaler")  # accelerate changed
    return accelerator


def reset_accelerate_state(keep_process_group: bool) -> None:
    """Forget accelerate's process-wide state so the next run can build its own Accelerator.

    accelerate keeps one AcceleratorState per interpreter and refuses a second Accelerator with
    other settings ("AcceleratorState has already been initialized"); tests and the multi-process
    probe train many runs in one interpreter. ``keep_process_group``: with several processes the
    PartialState holds the joined process group, which outlives a run (``Dist.close`` ends it).
    """
    from accelerate.state import AcceleratorState, GradientState  # accelerate: see above

    reset = getattr(AcceleratorState, "_reset_state", None)  # private API: guard its absence
    if reset is not None:
        reset(not keep_process_group)
    if hasattr(GradientState, "_reset_state"):
        GradientState._reset_state()


class TrainedModules(nn.Module):
    """What accelerate prepares: every module with trained parameters (the denoiser and trained
    text encoders with their adapters, the learnable SNR weights), as one module.

    ``forward(step)`` runs ``step()``, the batch's whole loss, so DDP (and accelerate's autocast)
    see every prediction of the step in one forward. The arch keeps calling its own
    ``unet`` / ``transformer``; this module only holds references to them.
    """

    def __init__(self, parts: dict[str, nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(parts)

    def forward(self, step: Callable[[], Tensor]) -> Tensor:
        return step()

    def frozen_names(self) -> list[str]:
        """Frozen parameters and all buffers: identical on every rank, so DDP ignores them."""
        frozen = [name for name, p in self.named_parameters() if not p.requires_grad]
        return frozen + [name for name, _ in self.named_buffers()]


# ------------------------------------------------------------------------- the process
@dataclass
class Dist:
    """This process's place in the run; ``Dist()`` is the single-process trainer."""

    rank: int = 0
    world: int = 1
    assigned: torch.device | None = None  # the device accelerate gave this process
    accelerator: Any = None  # the current run's Accelerator (``accelerating``)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device accelerate assigned this process (its own GPU), or None: pick as usual."""
        if not self.active or self.assigned is None or self.assigned.type != "cuda":
            return None
        return self.assigned

    # ------------------------------------------------------------------ one run
    @contextlib.contextmanager
    def accelerating(
        self, train: TrainConfig, device: torch.device, dtype: torch.dtype
    ) -> Iterator[Any]:
        """This run's Accelerator; accelerate's state is reset when the run ends, however."""
        self.accelerator = build_accelerator(train, device, dtype)
        try:
            yield self.accelerator
        finally:
            self.end_run()

    def end_run(self) -> None:
        if self.accelerator is not None:
            self.accelerator = None
            reset_accelerate_state(keep_process_group=self.active)

    def prepare(self, trained: TrainedModules, optimizer: Any) -> tuple[nn.Module, Any]:
        """(the trained modules: DDP with several processes, the accelerate-wrapped optimizer).

        Nothing moves: the arch placed every component itself (offloading, split devices)."""
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            trained, trained.frozen_names()
        )
        model, optimizer = self.accelerator.prepare(
            trained, optimizer, device_placement=[False, False]
        )
        return model, optimizer

    def clip_gradients(self, params: Iterable[Tensor], max_grad_norm: float) -> float | None:
        """``optim.clip_gradients``' contract through accelerate: 0 turns clipping off; fp16
        gradients are unscaled first, so the norm is the true one (inf/nan returned as is)."""
        accelerator = self.accelerator
        plain = accelerator.scaler is None and accelerator.distributed_type.value in PLAIN_CLIPPING
        # accelerate's clip_grad_norm_ ends in torch's for these, after checks that cost ~1 ms
        # a step (unscale_gradients looks installed packages up on every call).
        clip = torch.nn.utils.clip_grad_norm_ if plain else accelerator.clip_grad_norm_
        return clip_gradients(list(params), max_grad_norm, clip)

    # ------------------------------------------------------------------ data
    def shard(self, items: Iterable[T]) -> Iterator[T]:
        """This rank's share of a sequence every rank generates identically (round-robin)."""
        return itertools.islice(items, self.rank, None, self.world)

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.active:
            from accelerate.utils import wait_for_everyone  # accelerate: see build_accelerator

            wait_for_everyone()

    def broadcast(self, value: T) -> T:
        """The main process's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        from accelerate.utils import broadcast_object_list  # accelerate: see build_accelerator

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def agree_stop(self, stop: Any) -> bool:
        """True on every rank when any rank was asked to stop (reads ``stop.requested`` once)."""
        requested = bool(stop.requested)
        if not self.active:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self._comm_device)
        return bool(self._reduce_sum(flag).item() > 0)

    def step_totals(self, loss: float, images: int) -> tuple[float, int]:
        """(mean loss over the processes, images of the step on all of them)."""
        if not self.active:
            return loss, images
        values = torch.tensor([loss, float(images)], dtype=torch.float64, device=self._comm_device)
        total = self._reduce_sum(values).cpu()
        return float(total[0]) / self.world, round(float(total[1]))

    def close(self) -> None:
        """End the run's accelerate state and leave the process group (gloo aborts at exit
        when it is left open). Runs on every path (``run_job``'s finally)."""
        self.end_run()
        if self.active:
            reset_accelerate_state(keep_process_group=False)
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    def _reduce_sum(self, tensor: Tensor) -> Tensor:
        from accelerate.utils import reduce  # accelerate: see build_accelerator

        return reduce(tensor, reduction="sum")

    @property
    def _comm_device(self) -> torch.device:
        cuda = self.assigned is not None and self.assigned.type == "cuda"
        return self.assigned if cuda else torch.device("cpu")


def start(device_setting: str = "auto") -> Dist:
    """Join the launcher's process group, or the single-process ``Dist()`` when run alone."""
    if launched_world_size() <= 1:
        return Dist()
    from accelerate import PartialState  # accelerate: see build_accelerator

    cpu = device_setting == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)  # joins the process group (gloo on CPUs, nccl on GPUs)
    return Dist(rank=state.process_index, world=state.num_processes, assigned=state.device)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """Rank 0 keeps the run's seed (a single-process run is unchanged); the others get their own
    noise stream, derived from the seed, their rank and the step they (re)start at."""
    if rank == 0:
        return seed
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


class NullProgress:
    """The progress file's stand-in on ranks other than the main one."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def update(self, force: bool = False, **fields: Any) -> bool:
        self.last.update(fields)
        return False

    def close(self, **fields: Any) -> None:
        self.last.update(fields)
