"""The batches the training loop consumes: per-step batch sizes, loader workers, prefetching.

``batch_stream(data, cfg, start, device)`` is what ``loop.stream_batches`` returns::

    plan      = micro_batch_plan(data, cfg.train, start)   # endless (epoch, [item keys])
    loaders   = one DataLoader per epoch, or one kept alive (runtime.persistent_workers)
    prefetch  = runtime.gpu_prefetch_batches batches moved to the device ahead of use

- **Batch-size warmup** (``train.auto_scale_batch_size``): micro-batch ``i`` belongs to step
  ``i // gradient_accumulation_steps`` and holds ``optim.batch_size_at(train, step)`` images, all
  from one bucket. Items come in each epoch's seeded order; a bucket fills up to the size the
  step needs (leftovers carry over), so the plan is deterministic and a resume regenerates it and
  skips what was done. Without auto-scaling the plan is exactly ``BucketBatches.batches_for_epoch``
  epoch after epoch.
- **Workers** (``runtime.num_workers``): batches are rendered and collated in that many loader
  processes; each batch records the process (``loader_pid``) and worker id (``loader_worker``) it
  was made in. With ``persistent_workers`` one DataLoader serves every epoch (its batch sampler is
  re-pointed at the next epoch's batches), so the same worker processes live for the whole run;
  otherwise each epoch starts new ones.
- **Prefetch** (``runtime.gpu_prefetch_batches``): the next N batches are already moved to the
  training device (``non_blocking`` from pinned memory on CUDA) while the current one trains;
  they come out in the same order.
- **Several processes** (``shard``, a ``trainer.engine.distributed.Dist``): every rank generates the same
  global plan and trains its round-robin share (micro-batches ``rank, rank + N, ...``); ``start``
  counts global micro-batches, and batch-size warmup advances per optimizer step of all ranks.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info

from trainer.config.schema import TrainingConfig
from trainer.config.sections.train import TrainConfig
from trainer.data.batches import BucketBatches, ItemKey, collate_batch
from trainer.engine.optim import batch_size_at

Plan = Iterator[tuple[int, list[ItemKey]]]


# ------------------------------------------------------------------------------------- plans
def micro_batch_plan(data: BucketBatches, train: TrainConfig, start: int = 0) -> Plan:
    """Endless (epoch, keys) micro-batches from micro-batch ``start`` on."""
    if not train.auto_scale_batch_size:
        epoch, skip = data.resume_position(start)
        while True:
            for keys in data.batches_for_epoch(epoch)[skip:]:
                yield epoch, keys
            epoch, skip = epoch + 1, 0
    accum = train.gradient_accumulation_steps
    pending: dict[tuple[int, int], list[ItemKey]] = {}
    items = _item_stream(data)
    index = 0
    while True:
        size = batch_size_at(train, index // accum)
        bucket = next((b for b, keys in pending.items() if len(keys) >= size), None)
        while bucket is None:
            key = next(items)
            b = data.entries[key[1]].bucket
            pending.setdefault(b, []).append(key)
            if len(pending[b]) >= size:
                bucket = b
        keys, pending[bucket] = pending[bucket][:size], pending[bucket][size:]
        if index >= start:
            yield max(key[0] for key in keys), keys
        index += 1


def _item_stream(data: BucketBatches) -> Iterator[ItemKey]:
    epoch = 0
    while True:
        for keys in data.batches_for_epoch(epoch):
            yield from keys
        epoch += 1


def planned_captions(data: BucketBatches, train: TrainConfig, start: int, steps: int) -> list[str]:
    """Every caption the next ``steps`` optimizer steps will train on (no image is decoded)."""
    plan = micro_batch_plan(data, train, start)
    captions: dict[str, None] = {}
    for _ in range(steps * train.gradient_accumulation_steps):
        _, keys = next(plan)
        captions.update(dict.fromkeys(data.describe(key)["caption"] for key in keys))
    return list(captions)


def _epochs(plan: Plan) -> Iterator[list[list[ItemKey]]]:
    """The plan cut into its epochs (a resumed first epoch is the part left to do)."""
    current, batches = None, []
    for epoch, keys in plan:
        if current is not None and epoch != current and batches:
            yield batches
            batches = []
        current = epoch
        batches.append(keys)


# ------------------------------------------------------------------------------------ loading
class PlanBatchSampler(Sampler[list[ItemKey]]):
    """A batch sampler whose batches can be replaced between epochs (persistent workers)."""

    def __init__(self) -> None:
        self.batches: list[list[ItemKey]] = []

    def __iter__(self) -> Iterator[list[ItemKey]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


def collate_with_origin(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate_batch`` plus the process and loader worker the batch was made in."""
    batch = collate_batch(items)
    info = get_worker_info()
    batch["loader_pid"] = os.getpid()
    batch["loader_worker"] = None if info is None else info.id
    return batch


def _worker_ignores_stop(_worker_id: int) -> None:
    """Loader workers ignore SIGTERM. Stop signals the trainer's whole process group; a worker
    that died of it would make the loader raise ("DataLoader worker ... killed by signal") and
    fail the run instead of letting it checkpoint and stop. The loader still ends its workers
    (and they leave by themselves when the trainer is gone); SIGKILL still kills them."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def prefetched(batches: Iterator[dict], depth: int, device: torch.device | None) -> Iterator[dict]:
    """The same batches in the same order, each moved to ``device`` ``depth`` batches ahead."""
    if depth <= 0:
        yield from batches
        return
    queue: deque[dict] = deque()
    for batch in batches:
        queue.append(to_device(batch, device) if device is not None else batch)
        if len(queue) > depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def batch_stream(
    data: BucketBatches,
    cfg: TrainingConfig,
    start: int = 0,
    device: torch.device | None = None,
    shard: Any = None,
) -> Iterator[dict]:
    """Endless training batches from micro-batch ``start`` (see the module docstring)."""
    runtime = cfg.runtime
    world = getattr(shard, "world", 1)
    train = cfg.train
    if world > 1:  # a global micro-batch index i belongs to step i // (accumulation x processes)
        accum = train.gradient_accumulation_steps * world
        train = train.model_copy(update={"gradient_accumulation_steps": accum})
    plan = micro_batch_plan(data, train, start)
    if world > 1:
        plan = shard.shard(plan)
    workers = runtime.num_workers
    persistent = runtime.persistent_workers and workers > 0
    pin = device is not None and device.type == "cuda" and runtime.gpu_prefetch_batches > 0

    def epochs() -> Iterator[dict]:
        loader: DataLoader | None = None
        sampler = PlanBatchSampler()
        for batches in _epochs(plan):
            if loader is None or not persistent:
                sampler = PlanBatchSampler()
                loader = DataLoader(
                    data,
                    batch_sampler=sampler,
                    collate_fn=collate_with_origin,
                    num_workers=workers,
                    worker_init_fn=_worker_ignores_stop if workers else None,
                    persistent_workers=persistent,
                    pin_memory=pin,
                )
            sampler.batches = batches
            yield from loader

    return prefetched(epochs(), runtime.gpu_prefetch_batches, device)
