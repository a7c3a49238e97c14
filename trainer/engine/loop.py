"""The training loop: `train()` opens the run's accelerator; read `train_steps()` top to bottom.

Tiny CPU run (about a minute): ``python -m trainer run presets/demo_sd15.yaml``.
Everything architecture-specific sits behind `trainer.arch.base.Arch`; data behind
`trainer.data.batches.BucketBatches`, encoded one batch ahead in a thread (`trainer.engine.inputs`,
`trainer.engine.ahead`); MLflow behind a `Tracker` (a null tracker runs without it),
reached through the run's `RunContext` (trainer.engine.context). Memory options:
`trainer.engine.memory.prepare`; previews: `trainer.engine.previews`; step speed, memory and
what the ETA counts on: `trainer.engine.reporting`; validation loss and the best saved LoRA:
`trainer.engine.validation`; device and precision: `trainer.engine.device`.
Every run trains through accelerate (`ctx.dist`, trainer.engine.distributed: prepare/DDP,
accumulate, autocast, GradScaler); with several processes it also shards the data and lets only
the main process log, sample and save.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from trainer.arch.base import Arch
from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.data.batches import BucketBatches, build_report
from trainer.data.scanning import check_enough, scan_dataset
from trainer.demo.tiny import resolve_demo_ref
from trainer.engine.batching import batch_stream
from trainer.engine.checkpoint import PREFIX as CHECKPOINT_PREFIX
from trainer.engine.checkpoint import (
    CheckpointError,
    incompatibilities,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from trainer.engine.context import RunContext
from trainer.engine.cpu_threads import use_free_cores
from trainer.engine.device import DeviceUnavailable as DeviceUnavailable  # callers catch it here
from trainer.engine.device import pick_device, pick_dtype
from trainer.engine.distributed import Dist, TrainedModules, rank_seed
from trainer.engine.ema import build_ema, ema_weights
from trainer.engine.failures import NonFiniteLoss
from trainer.engine.inputs import ModelInputs
from trainer.engine.memory.prepare import check_environment, prepare_base, prepare_training
from trainer.engine.memory.prompts import unload_for_run
from trainer.engine.objective import ObjectiveState, compute_loss, needs_unaugmented
from trainer.engine.optim import build_optimizer, build_scheduler, param_groups
from trainer.engine.previews import sample_and_log, sample_due, wants_first_sample
from trainer.engine.reporting import Meter, peak_memory_mb, plan_clock
from trainer.engine.run_length import plan_steps, steps_before_data
from trainer.engine.validation import Validation, split_validation
from trainer.lora.hub import push_after_training
from trainer.lora.io import load_lora_file, save_lora
from trainer.lora.usage import publish_usage_files
from trainer.startup_gc import release as release_collector
from trainer.tracking.layout import TAG_FINAL_FROM_STEP


# ------------------------------------------------------------------------------- the loop
def train(cfg: TrainingConfig, ctx: RunContext, resume: Path | None = None) -> Outcome:
    dist = ctx.dist  # one process, or this rank of an `accelerate launch` (engine.distributed)
    device = dist.device or pick_device(cfg.runtime.device)
    use_free_cores(device)  # a CPU run: threads for the free cores only (engine.cpu_threads)
    dtype = pick_dtype(cfg.train.dtype, device)
    with dist.accelerating(cfg.train, device, dtype) as accelerator:  # autocast, DDP, scaler
        return train_steps(cfg, ctx, resume, device, dtype, accelerator)


def train_steps(
    cfg: TrainingConfig,
    ctx: RunContext,
    resume: Path | None,
    device: torch.device,
    dtype: torch.dtype,
    accelerator: Any,
) -> Outcome:
    dist = ctx.dist
    torch.manual_seed(cfg.train.seed)
    ctx.verbose = cfg.logging.verbose
    ctx.phase("loading", total_steps=steps_before_data(cfg), phase_detail="the base model")
    check_environment(cfg, device, processes=dist.world)
    validation = Validation(cfg, ctx)  # images never trained on, scored (engine.validation)
    # The datasets are scanned (files read, images checked) while the model loads; the scan uses
    # its own seeded RNGs, never torch's. A dataset error is raised after the model's, as before.
    with ThreadPoolExecutor(1, thread_name_prefix="dataset-scan") as scanning:
        scanned = scanning.submit(prepare_data, cfg, ctx, validation)
        arch = load_arch(cfg, ctx.home, device, dtype)
        prepare_base(arch, cfg)  # quantized weights, attention backend, accuracy recovery adapter
        release_collector()  # the long-lived objects are made: frozen (trainer.startup_gc)
        ctx.startup_done("model_load")  # start-up phases: startup.json (trainer.tracking.startup)
        ctx.phase_progress(detail="the dataset")
        data = scanned.result()
    ctx.startup_done("dataset_scan")
    groups = arch.add_lora(cfg.network, cfg.train.train_text_encoder)  # adapters in fp32
    if cfg.model.lora_path:
        load_lora_file(arch, cfg.model.lora_path)
    arch.set_gradient_checkpointing(cfg.train.gradient_checkpointing)
    prepare_training(arch, cfg)  # layer offloading, low_vram, compile (trainer.engine.memory)
    objective = ObjectiveState.for_run(cfg, device)  # learnable SNR weights, when on
    optimizer = build_optimizer(
        cfg.train, param_groups(cfg.train, groups) + objective.param_groups()
    )
    total = plan_steps(cfg, ctx, data)  # train.epochs made steps here (engine.run_length)
    scheduler = build_scheduler(cfg.train, optimizer, total)  # not prepared: one step per step
    # DDP with several processes (rank 0's start weights); fp16: the optimizer's GradScaler.
    model, optimizer = dist.prepare(trained_modules(arch, objective), optimizer)
    noise_gen = torch.Generator().manual_seed(rank_seed(cfg.train.seed, dist.rank))
    trainable = [p for group in groups.values() for p in group]
    state = LoopState(
        objective=objective, ema=build_ema(cfg.train, trainable), scaler=accelerator.scaler
    )
    state.validation = validation
    if resume is not None:  # every rank loads the same checkpoint
        state = restore(resume, cfg, arch, optimizer, scheduler, noise_gen, state)
        if dist.rank:  # the checkpoint holds rank 0's noise stream; the others start afresh
            noise_gen.manual_seed(rank_seed(cfg.train.seed, dist.rank, state.step))
    log_effective_batch(ctx, cfg, data)
    inputs = ModelInputs(arch, cfg, ctx.cache_dir, data)  # one VAE / encoder call per batch
    plan_clock(ctx, cfg, state.step, total, data, trainable, state.validation)  # for the ETA

    if wants_first_sample(cfg, resumed=resume is not None):
        sample_and_log(arch, cfg, ctx, state.step)
    ctx.startup_done("setup")
    if cfg.train.unload_text_encoder:  # every prompt the run needs is encoded first
        ctx.phase("caching", step=state.step, phase_detail="the text embeddings of every prompt")
        steps_left = (total - state.step) * dist.world  # the global plan: every rank's batches
        unload_for_run(arch, cfg, inputs, data, state.micro_batches, steps_left)
    ctx.startup_done("cache")
    ctx.phase("training", step=state.step, total_steps=total)
    accumulation = cfg.train.gradient_accumulation_steps
    loss_of = partial(compute_loss, arch, inputs)  # engine.objective: the loss of one batch
    stream = stream_batches(data, cfg, state, arch.device, dist)
    arch.train()
    # The next batches load and encode in a thread while this step trains (engine.ahead).
    with inputs.ahead(stream, count=(total - state.step) * accumulation) as batches:
        while state.step < total and not dist.agree_stop(ctx.stop):  # all ranks stop together
            started = time.perf_counter()
            step_loss, images = 0.0, 0
            for _ in range(accumulation):
                batch = next(batches)
                with accelerator.accumulate(model):  # DDP syncs on the last micro-batch only
                    with accelerator.autocast():
                        loss = model(partial(loss_of, batch, cfg, noise_gen, state.objective))
                    accelerator.backward(loss)  # divides by the accumulation steps; fp16: scaled
                step_loss += loss.item() / accumulation
                images += len(batch["captions"])
                state.micro_batches += dist.world  # global micro-batches (each rank did one)
            step_loss, images = dist.step_totals(step_loss, images)  # over all processes
            if not math.isfinite(step_loss):
                raise NonFiniteLoss(state.step + 1, step_loss)
            dist.clip_gradients(trainable, cfg.train.max_grad_norm)
            optimizer.step()  # fp16: skipped when the scaled gradients hold inf/nan
            if state.ema is not None:
                state.ema.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.meter.update(step_loss, time.perf_counter() - started, images, state.step)
            report(ctx, state, total, scheduler.get_last_lr()[0], inputs, cfg.logging.log_every)
            if sample_due(cfg, state.step, total):
                with ema_weights(state.ema), inputs.lock:  # previews: the weights to be saved
                    sample_and_log(arch, cfg, ctx, state.step)
                ctx.phase("training", step=state.step, total_steps=total)
            state.validation.after_step(arch, inputs, state, total, accelerator.autocast)
            if state.step % cfg.save.save_every == 0 and state.step < total:
                checkpoint(ctx, cfg, arch, optimizer, scheduler, noise_gen, state)
                ctx.phase("training", step=state.step, total_steps=total)

    stopped = state.step < total  # then the checkpoint is the only file saved
    state.validation.evaluate(arch, inputs, state, accelerator.autocast, saved=True)  # last LoRA
    checkpoint(ctx, cfg, arch, optimizer, scheduler, noise_gen, state, files=1 if stopped else 2)
    with ema_weights(state.ema):  # the saved LoRA is the average when train.use_ema is on
        files = [] if stopped or not dist.is_main else save_final(ctx, cfg, arch, state.step)
    dist.barrier()
    ctx.tracker.flush()
    return Outcome(step=state.step, total_steps=total, stopped=stopped, lora_files=files)


def trained_modules(arch: Arch, objective: ObjectiveState) -> TrainedModules:
    """The modules whose parameters the optimizer trains, for `Dist.prepare`."""
    parts = dict(arch.adapted_components())
    if objective.snr_weights is not None:
        parts["snr_weights"] = objective.snr_weights
    return TrainedModules(parts)


# ---------------------------------------------------------------------------- data
def prepare_data(
    cfg: TrainingConfig, ctx: RunContext, validation: Validation | None = None
) -> BucketBatches:
    """Scan every dataset and stop before training if any is unusable; validation images are
    taken out here, so they are never trained on (``validation`` scores on them)."""
    scans = [
        scan_dataset(ds, Path(resolve_demo_ref(ds.folder_path, ctx.home)).expanduser())
        for ds in cfg.datasets
    ]
    scans, held_out = split_validation(cfg, scans, ctx.home)
    if validation is not None:
        validation.use(held_out)
    train = cfg.train
    batch = train.max_batch_size if train.auto_scale_batch_size else int(train.batch_size)
    check_enough(scans, batch, cfg.train.gradient_accumulation_steps)
    data = BucketBatches(
        scans,
        batch_size=batch,
        seed=cfg.train.seed,
        size_multiple=16 if cfg.model.arch == "flux" else 8,
        want_unaugmented=needs_unaugmented(cfg.train),
    )
    for index, (ds, scan) in enumerate(zip(cfg.datasets, scans, strict=True)):
        ctx.tracker.log_dataset_input(  # MLflow's "datasets used": name, fingerprint, counts
            name=f"{index}:{scan.folder.name}",
            digest=dataset_fingerprint([scan]),
            source=str(scan.folder),
            profile={
                "images": len(scan.images),
                "skipped": len(scan.skipped),
                "num_repeats": ds.num_repeats,
                "is_reg": ds.is_reg,
            },
            context="regularisation" if ds.is_reg else "train",
        )
    report = build_report(data, cfg.train.gradient_accumulation_steps)
    ctx.dataset_report(report, dataset_fingerprint(scans))
    return data


def dataset_fingerprint(scans: list) -> str:
    """Same images and captions → same fingerprint, wherever the folder lives."""
    digest = hashlib.sha256()
    for scan in scans:
        for info in sorted(scan.images, key=lambda i: i.content_hash):
            digest.update(f"{info.content_hash}\0{info.caption}\0".encode())
    return digest.hexdigest()[:16]


def stream_batches(
    data: BucketBatches,
    cfg: TrainingConfig,
    state: LoopState,
    device: torch.device | None = None,
    dist: Dist | None = None,
) -> Iterator[dict]:
    """Endless batches, starting where `state.micro_batches` says (resume skips exactly).

    Per-step batch sizes (auto-scale), loader workers and prefetching: `trainer.engine.batching`.
    Several processes: this rank's round-robin share of the global plan (`Dist.shard`).
    """
    return batch_stream(data, cfg, state.micro_batches, device, shard=dist or Dist())


def log_effective_batch(ctx: RunContext, cfg: TrainingConfig, data: BucketBatches) -> None:
    """Images per optimizer step: per-process batch x processes x gradient accumulation."""
    processes, accum = ctx.dist.world, cfg.train.gradient_accumulation_steps
    effective = data.batch_size * processes * accum
    ctx.tracker.log_params({"effective_batch_size": effective, "num_processes": processes})
    if ctx.dist.is_main and processes > 1:
        print(
            f"{processes} processes: effective batch {effective} = batch {data.batch_size} x "
            f"{processes} processes x {accum} accumulation",
            flush=True,
        )


# ---------------------------------------------------------------------------- state
@dataclass
class LoopState:
    step: int = 0
    micro_batches: int = 0
    meter: Meter = field(default_factory=Meter)
    objective: ObjectiveState = field(default_factory=ObjectiveState)
    ema: Any = None  # trainer.engine.ema.LoraEMA when train.use_ema is on
    scaler: Any = None  # fp16 mixed precision: accelerate's GradScaler (its state is checkpointed)
    validation: Validation | None = None  # val_loss history and the best saved LoRA


@dataclass
class Outcome:
    step: int
    total_steps: int
    stopped: bool
    lora_files: list[Path]


# ---------------------------------------------------------------------- reporting
def report(
    ctx: RunContext, state: LoopState, total: int, lr: float, inputs: ModelInputs, log_every: int
) -> None:
    meter = state.meter
    per_step = meter.seconds_per_step
    ctx.clock.at_step(state.step, per_step if math.isfinite(per_step) else None)
    values = {
        "loss": meter.last_loss,
        "loss_smoothed": meter.smoothed,
        "lr": lr,
        "s_per_step": per_step if math.isfinite(per_step) else None,
        "images_per_s": meter.images / meter.seconds if meter.seconds else None,
        "eta_s": ctx.clock.seconds_left(),  # previews and saves still due included
        "batch_size": meter.last_images
        / inputs.cfg.train.gradient_accumulation_steps
        / ctx.dist.world,
        "effective_batch_size": meter.last_images,  # all processes and micro-batches of the step
    }
    ctx.phase("training", step=state.step, total_steps=total, **values)
    if ctx.verbose and ctx.dist.is_main:
        shown = " ".join(f"{k}={v:.6g}" for k, v in values.items() if v is not None)
        print(f"step {state.step}/{total} {shown}", flush=True)
    if state.step % log_every == 0 or state.step == total:
        metrics = {k: float(v) for k, v in values.items() if v is not None}
        metrics["peak_memory_mb"] = peak_memory_mb(inputs.arch.device)
        metrics.update(inputs.counters())
        # The tracker batches writes (every ~2 s); live values reach the monitor through the
        # progress file, so MLflow's SQLite writes never compete with every step.
        ctx.tracker.log_metrics(metrics, step=state.step)


# ---------------------------------------------------------------------- saving
def checkpoint(
    ctx, cfg, arch, optimizer, scheduler, noise_gen, state: LoopState, files: int = 1
) -> Path | None:
    """Main process saves; every rank waits for the files (a resume reads the same checkpoint).

    Enters the saving phase: the checkpoint is file 1 of ``files`` saved in it.
    """
    where = f"checkpoints/{CHECKPOINT_PREFIX}{state.step:08d}"
    ctx.phase("saving", step=state.step, phase_detail=where, phase_done=0, phase_total=files)
    with ctx.clock.save():
        path = _save_checkpoint(ctx, cfg, arch, optimizer, scheduler, noise_gen, state)
    ctx.dist.barrier()
    return path


def _save_checkpoint(ctx, cfg, arch, optimizer, scheduler, noise_gen, state) -> Path | None:
    if not ctx.dist.is_main:
        return None
    path = save_checkpoint(
        ctx.checkpoint_dir,
        state.step,
        arch.lora_state_dicts(),
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "noise_generator": noise_gen.get_state(),
            "rng": rng_state(),
            "micro_batches": state.micro_batches,
            "smoothed_loss": state.meter.smoothed,
            "run_id": getattr(ctx.tracker, "run_id", None),
            "objective": state.objective.state_dict(),
            "ema": state.ema.state_dict() if state.ema is not None else None,
            "scaler": state.scaler.state_dict() if state.scaler is not None else None,
            "validation": state.validation.state_dict() if state.validation else None,
        },
        cfg,
        keep=cfg.save.max_step_saves_to_keep,
    )
    with ema_weights(state.ema):  # the checkpoint's LoRA file holds the average, if any
        files = save_lora(
            arch, path / "lora", cfg.name, "webui", cfg.save.dtype, {"steps": state.step}
        )
    for file in files:
        ctx.tracker.log_artifact(file, f"checkpoints/{path.name}")
    return path


def save_final(ctx: RunContext, cfg: TrainingConfig, arch: Arch, step: int) -> list[Path]:
    out = ctx.job_dir / "lora"
    ctx.phase_progress(detail=f"lora/{cfg.name}", done=1, total=2)  # after the checkpoint
    with ctx.clock.save():
        files = save_lora(
            arch, out, cfg.name, cfg.save.save_format, cfg.save.dtype, {"steps": step}
        )
    for file in files:
        if file.parent == out:
            ctx.tracker.log_artifact(file, "lora")
        else:  # the diffusers layout is a folder of its own
            ctx.tracker.log_artifacts(file.parent, f"lora/{file.parent.name}")
    publish_usage_files(files[0], cfg, ctx.tracker, job_dir=ctx.job_dir, step=step, arch=arch)
    # The final is this step's, also where a checkpoint was made final before a resume.
    ctx.tracker.set_tags({TAG_FINAL_FROM_STEP: str(step)})
    if cfg.save.push_to_hub:  # only after the local save: a failed upload is a warning
        ctx.tracker.flush()
        push_after_training(out, cfg, ctx.tracker)
    return files


def restore(
    resume: Path, cfg, arch, optimizer, scheduler, noise_gen, state: LoopState
) -> LoopState:
    path = resume
    if not (resume / "training_state.pt").exists():
        found = latest_checkpoint(resume / "checkpoints") or latest_checkpoint(resume)
        if found is None:
            raise CheckpointError(f"no checkpoint found in {resume} — name a step_* folder")
        path = found
    saved = load_checkpoint(path)
    problems = incompatibilities(saved.config, cfg)
    if problems:
        raise CheckpointError(
            f"checkpoint {path.name} does not fit this config: "
            + "; ".join(problems)
            + " — resume with the config the run started with, or start a new run"
        )
    arch.load_lora_state(saved.lora)
    optimizer.load_state_dict(saved.state["optimizer"])
    scheduler.load_state_dict(saved.state["scheduler"])
    noise_gen.set_state(saved.state["noise_generator"])
    restore_rng(saved.state["rng"])
    state.step, state.micro_batches = saved.step, int(saved.state["micro_batches"])
    state.meter.smoothed = saved.state.get("smoothed_loss")
    state.objective.load_state_dict(saved.state.get("objective"))
    if state.ema is not None:
        state.ema.load_state_dict(saved.state.get("ema"))
    if state.scaler is not None and saved.state.get("scaler"):
        state.scaler.load_state_dict(saved.state["scaler"])
    if state.validation is not None:
        state.validation.load_state_dict(saved.state.get("validation"))
    return state
