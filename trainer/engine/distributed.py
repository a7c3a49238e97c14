"""Several processes, one run: data-parallel training under ``accelerate launch``.

The trainer runs unchanged under a multi-process launch (the studio does this when
``runtime.num_processes`` > 1; ``trainer.jobs.launch.train_command``)::

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 \\
        -m trainer run CONFIG --job-dir JOB

On a machine without CUDA (or with ``runtime.device: cpu``) every process trains on the CPU and
accelerate joins them with the gloo backend (``DistributedType.MULTI_CPU``); with CUDA each process
takes its own GPU (nccl). One process alone (``WORLD_SIZE`` unset or 1) is the plain trainer: no
process group, no accelerate state, nothing changes.

What each process does (``Dist``):

- **Data**: the global micro-batch plan (the same on every rank) is dealt out round-robin:
  rank r trains micro-batches r, r+N, r+2N, ... (``shard``). ``LoopState.micro_batches`` counts
  global micro-batches, so a resume skips exactly what every rank did.
- **Gradients**: after each step's accumulation the gradients of every optimised parameter are
  averaged over the processes (one flat all-reduce through accelerate's ``reduce``: what
  DistributedDataParallel does, once per optimizer step, without wrapping the UNet). The start
  weights are broadcast from rank 0, so all ranks stay bit-identical.
- **One voice**: only the main process logs to MLflow (the others get a ``NullTracker``),
  writes progress, samples previews, saves checkpoints and the LoRA; the others wait at those
  save points (``barrier``).
- **Stopping together**: every step the ranks agree on a stop (one all-reduce of the flag), so a
  SIGTERM that reaches any rank stops all of them at the same step; a non-finite loss is judged on
  the all-reduced loss, so every rank raises together.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def launched_world_size() -> int:
    """How many processes the launcher (accelerate / torchrun) started; 1 when run alone."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass
class Dist:
    """This process's place in the run; ``Dist()`` is the single-process trainer."""

    accelerator: Any = None
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device | None:
        """The device accelerate assigned this process (its own GPU), or None: pick as usual."""
        if not self.active or self.accelerator.device.type != "cuda":
            return None
        return self.accelerator.device

    # ------------------------------------------------------------------ data
    def shard(self, items: Iterable[T]) -> Iterator[T]:
        """This rank's share of a sequence every rank generates identically (round-robin)."""
        return itertools.islice(items, self.rank, None, self.world)

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.active:
            self.accelerator.wait_for_everyone()

    def broadcast(self, value: T) -> T:
        """The main process's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        from accelerate.utils import broadcast_object_list  # only with several processes

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def agree_stop(self, stop: Any) -> bool:
        """True on every rank when any rank was asked to stop (reads ``stop.requested`` once)."""
        requested = bool(stop.requested)
        if not self.active:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self._comm_device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def step_totals(self, loss: float, images: int) -> tuple[float, int]:
        """(mean loss over the processes, images of the step on all of them)."""
        if not self.active:
            return loss, images
        values = torch.tensor([loss, float(images)], dtype=torch.float64, device=self._comm_device)
        total = self.accelerator.reduce(values, reduction="sum").cpu()
        return float(total[0]) / self.world, round(float(total[1]))

    def sync_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average the gradients over the processes (DDP's all-reduce mean, one flat buffer)."""
        if not self.active:
            return
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            return
        flat = torch.cat([p.grad.detach().reshape(-1).to(torch.float32) for p in with_grad])
        flat = self.accelerator.reduce(flat.to(self._comm_device), reduction="mean")
        offset = 0
        for p in with_grad:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad).to(p.grad.dtype))
            offset += n

    def sync_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Every rank starts from rank 0's trainable weights (as DDP does when it wraps)."""
        if not self.active or not params:
            return
        with torch.no_grad():
            for p in params:
                buffer = p.data.to(self._comm_device)
                torch.distributed.broadcast(buffer, src=0)
                if buffer is not p.data:
                    p.data.copy_(buffer)

    def close(self) -> None:
        """Leave the process group (gloo aborts at exit when it is left open)."""
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        return (
            self.accelerator.device
            if self.accelerator.device.type == "cuda"
            else torch.device("cpu")
        )


def start(device_setting: str = "auto") -> Dist:
    """Join the launcher's process group, or the single-process ``Dist()`` when run alone."""
    if launched_world_size() <= 1:
        return Dist()
    from accelerate import Accelerator  # only with several processes

    cpu = device_setting == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu)
    return Dist(accelerator, accelerator.process_index, accelerator.num_processes)


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
