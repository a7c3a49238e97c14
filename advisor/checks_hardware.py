"""Rules about the machine: memory, disk, precision, devices, quantization backends."""

from __future__ import annotations

from collections.abc import Iterator

from advisor.findings import Context, Finding, finding, rule
from advisor.fit import fit_to_memory, merged_patch
from advisor.patch import try_patch
from advisor.predict import predict
from advisor.workload import resolved_dtype

INT_QTYPES = ("int8", "nf4", "fp4")
FOUR_BIT = ("nf4", "fp4")
NVIDIA_ATTENTION = ("flash", "xformers", "sage")


@rule(
    "vram_over",
    ("train.batch_size", "train.gradient_checkpointing", "model.quantize"),
    "the predicted peak VRAM exceeds the GPU",
)
def vram_over(ctx: Context) -> Iterator[Finding]:
    pred, profile = ctx.prediction, ctx.profile
    if pred is None or profile is None or pred.vram_fit == "yes":
        return
    have, need = pred.vram_available_gb, pred.vram
    # Aim so that even the top of the predicted range fits.
    target = have / (need.high / need.value) if need.value else have
    _fitted, rungs = fit_to_memory(ctx.cfg, profile, ctx.counted, target)
    fix = merged_patch(rungs) if rungs else None
    steps = "; ".join(r.reason for r in rungs)
    if pred.vram_fit == "no":
        yield finding(
            "vram_over",
            "error",
            ("train.batch_size", "train.gradient_checkpointing", "model.quantize"),
            f"predicted peak VRAM {need.text()} is more than the {have:.1f} GB available: "
            f"out of memory. {('Fix: ' + steps) if steps else 'No memory saving is left.'}",
            fix,
        )
    else:
        yield finding(
            "vram_over",
            "warning",
            ("train.batch_size",),
            f"predicted peak VRAM {need.text()} may reach the {have:.1f} GB available",
            fix,
        )


@rule(
    "ram_over",
    ("model.quantize", "datasets.0.cache_latents_to_disk"),
    "the predicted system RAM exceeds the machine's",
)
def ram_over(ctx: Context) -> Iterator[Finding]:
    pred, work = ctx.prediction, ctx.work
    if pred is None or work is None or pred.ram_fit == "yes":
        return
    parts = pred.ram.parts
    big = max(parts, key=lambda k: parts[k])
    fix = None
    if parts.get("latent cache", 0) > 1.0:
        fix = {f"datasets.{i}.cache_latents_to_disk": True for i in range(len(ctx.cfg.datasets))}
    why = "quantizing on load materialises fp32 weights" if big == "loading peak" else big
    yield finding(
        "ram_over",
        "error" if pred.ram_fit == "no" else "warning",
        ("model.quantize",),
        f"predicted system RAM {pred.ram.text()} against {pred.ram_available_gb:.0f} GB; the "
        f"largest part is {why} ({parts[big]:.1f} GB). Add swap or RAM, or quantize once and "
        "load the quantized model",
        fix,
    )


@rule(
    "disk_over",
    ("save.max_step_saves_to_keep", "datasets.0.cache_latents_to_disk"),
    "the run would fill the disk",
)
def disk_over(ctx: Context) -> Iterator[Finding]:
    pred = ctx.prediction
    if pred is None or pred.disk_fit == "yes":
        return
    yield finding(
        "disk_over",
        "error" if pred.disk_fit == "no" else "warning",
        ("save.max_step_saves_to_keep", "datasets.0.cache_latents_to_disk"),
        f"the run writes about {pred.disk.text()} but {pred.disk_free_gb:.1f} GB are free",
        _disk_fix(ctx),
    )


def _disk_fix(ctx: Context) -> dict[str, object] | None:
    """Fewer kept checkpoints, then latent caches in RAM instead of on disk: the first that fits."""
    cfg = ctx.cfg
    on_disk = [i for i, ds in enumerate(cfg.datasets) if ds.cache_latents_to_disk]
    steps: list[dict[str, object]] = [{"save.max_step_saves_to_keep": 1}]
    steps.append(
        {f"datasets.{i}.cache_latents_to_disk": False for i in on_disk}
        | {f"datasets.{i}.cache_latents": True for i in on_disk}
    )
    patch: dict[str, object] = {}
    for step in steps:
        patch.update(step)
        patched = try_patch(cfg, patch)
        if patched is not None and predict(patched, ctx.profile, ctx.counted).disk_fit == "yes":
            return dict(patch)
    return None


@rule("vram_underused", ("train.batch_size",), "a bigger batch would fit")
def vram_underused(ctx: Context) -> Iterator[Finding]:
    pred, cfg, work = ctx.prediction, ctx.cfg, ctx.work
    batch = cfg.train.batch_size
    if pred is None or work is None or not isinstance(batch, int):
        return
    if cfg.train.auto_scale_batch_size or cfg.model.arch == "flux" or work.device_kind == "cpu":
        return
    if pred.vram.high > 0.45 * pred.vram_available_gb:
        return
    best = _largest_batch(ctx, batch)
    if best > batch:
        yield finding(
            "vram_underused",
            "suggestion",
            ("train.batch_size",),
            f"only {pred.vram.value:.1f} of {pred.vram_available_gb:.0f} GB used: batch {best} "
            "fits and uses the GPU better (raise the LR a little, or keep the repeats per image "
            "by lowering the steps)",
            {"train.batch_size": best},
        )


def _largest_batch(ctx: Context, batch: int) -> int:
    """Double the batch while the top of the predicted range stays under 80% of VRAM."""
    limit = min(16, _items(ctx) // ctx.cfg.train.gradient_accumulation_steps)
    best = batch
    while best * 2 <= limit:
        bigger = try_patch(ctx.cfg, {"train.batch_size": best * 2})
        if bigger is None:
            break
        pred = predict(bigger, ctx.profile, ctx.counted)
        if pred.vram.high > 0.8 * pred.vram_available_gb:
            break
        best *= 2
    return best


def _items(ctx: Context) -> int:
    """Images per epoch (repeats included); unknown datasets count as plenty."""
    if not ctx.has_data:
        return 1 << 30
    return sum(
        f.images * ds.num_repeats * len(ds.resolution)
        for ds, f in zip(ctx.cfg.datasets, ctx.dataset.folders, strict=False)
    )


@rule("bf16_unsupported", ("train.dtype",), "bf16 on a GPU without bf16")
def bf16_unsupported(ctx: Context) -> Iterator[Finding]:
    profile, cfg = ctx.profile, ctx.cfg
    if profile is None or profile.gpu is None or profile.bf16 or cfg.runtime.device == "cpu":
        return
    if cfg.train.dtype != "bf16":
        return
    fix = {"train.dtype": "fp32" if cfg.model.arch == "flux" else "fp16"}
    if cfg.model.arch == "sdxl":
        fix["model.vae_dtype"] = "fp32"
    yield finding(
        "bf16_unsupported",
        "error",
        ("train.dtype",),
        f"{profile.label} has no bf16 support (needs an Ampere/RDNA3/M2 or newer GPU)",
        fix,
    )


@rule("fp16_sdxl_vae", ("train.dtype", "model.vae_dtype"), "SDXL's VAE in fp16 gives NaN")
def fp16_sdxl_vae(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.model.arch != "sdxl" or cfg.model.vae_path:
        return
    dtype = resolved_dtype(cfg, ctx.profile) if ctx.profile else cfg.train.dtype
    vae = cfg.model.vae_dtype if cfg.model.vae_dtype != "auto" else dtype
    if vae == "fp16":
        yield finding(
            "fp16_sdxl_vae",
            "warning",
            ("model.vae_dtype", "train.dtype"),
            "SDXL's VAE overflows in fp16: NaN loss and black images. Use fp32 for the VAE "
            "(or an fp16-fixed VAE in model.vae_path)",
            {"model.vae_dtype": "fp32"},
        )


@rule("fp16_flux", ("train.dtype",), "Flux in fp16 gives NaN/black images")
def fp16_flux(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    dtype = resolved_dtype(cfg, ctx.profile) if ctx.profile else cfg.train.dtype
    if cfg.model.arch == "flux" and dtype == "fp16":
        bf16 = ctx.profile is None or ctx.profile.bf16
        yield finding(
            "fp16_flux",
            "error",
            ("train.dtype",),
            "Flux overflows in fp16: NaN loss and black images. Train in bf16"
            + ("" if bf16 else " (not on this GPU: fp32)"),
            {"train.dtype": "bf16" if bf16 else "fp32"},
        )


@rule("quant_needs_nvidia", ("model.qtype", "model.qtype_te"), "int8/4-bit need NVIDIA")
def quant_needs_nvidia(ctx: Context) -> Iterator[Finding]:
    profile, model = ctx.profile, ctx.cfg.model
    if profile is None or profile.kind == "nvidia":
        return
    fix = {}
    if model.quantize and model.qtype in INT_QTYPES:
        fix["model.qtype"] = "float8"
    if model.quantize_te and model.qtype_te in INT_QTYPES:
        fix["model.qtype_te"] = "float8"
    if fix:
        yield finding(
            "quant_needs_nvidia",
            "error",
            tuple(fix),
            f"int8 / NF4 / FP4 kernels (bitsandbytes) need an NVIDIA GPU; this is "
            f"{profile.label}. float8 works everywhere",
            fix,
        )


@rule("nf4_optimizer", ("train.optimizer", "train.max_grad_norm"), "NF4 wants AdamW8bit")
def nf4_optimizer(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not (cfg.model.quantize and cfg.model.qtype in FOUR_BIT):
        return
    train = cfg.train
    if train.optimizer == "adamw8bit" and 0 < train.max_grad_norm <= 0.5:
        return
    yield finding(
        "nf4_optimizer",
        "suggestion",
        ("train.optimizer", "train.max_grad_norm"),
        "on an NF4 base, AdamW8bit with a low gradient clip (0.5) trains most steadily",
        {"train.optimizer": "adamw8bit", "train.max_grad_norm": 0.5},
    )


@rule("quantized_samples", ("model.quantize",), "quantized base: generate at the same precision")
def quantized_samples(ctx: Context) -> Iterator[Finding]:
    model = ctx.cfg.model
    if model.quantize:
        yield finding(  # about using the LoRA later: nothing to change in this config
            "quantized_samples",
            "info",
            ("model.quantize", "model.qtype"),
            f"the LoRA learns on a {model.qtype} base and previews use it too; generate with the "
            "same quantization, or small LoRA changes get 'rounded away' on a 16-bit base",
        )


@rule("quantize_small_model", ("model.quantize",), "quantizing SD1.5 saves little")
def quantize_small_model(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.model.arch != "sd15" or not cfg.model.quantize:
        return
    off = try_patch(cfg, {"model.quantize": False})
    if off is not None and ctx.profile is not None:
        pred = predict(off, ctx.profile, ctx.counted)
        if pred.vram_fit != "yes":
            return
    yield finding(
        "quantize_small_model",
        "suggestion",
        ("model.quantize",),
        "SD1.5's U-Net is 1.7 GB in 16 bits: quantizing saves under 1 GB and costs quality",
        {"model.quantize": False},
    )


@rule("device_missing", ("runtime.device",), "the chosen device does not exist here")
def device_missing(ctx: Context) -> Iterator[Finding]:
    profile, device = ctx.profile, ctx.cfg.runtime.device
    if profile is None or device in ("auto", "cpu"):
        return
    if (device == "cuda" and profile.kind in ("nvidia", "amd")) or (
        device == "mps" and profile.kind == "apple"
    ):
        return
    yield finding(
        "device_missing",
        "error",
        ("runtime.device",),
        f"runtime.device is {device} but this machine has {profile.label}",
        {"runtime.device": "auto"},
    )


@rule("processes_over_devices", ("runtime.num_processes",), "more processes than GPUs or cores")
def processes_over_devices(ctx: Context) -> Iterator[Finding]:
    profile, cfg = ctx.profile, ctx.cfg
    wanted = cfg.runtime.num_processes
    if profile is None or wanted <= 1:
        return
    device = profile.device if cfg.runtime.device == "auto" else cfg.runtime.device
    if device == "cuda":
        have, what = len(profile.gpus), "GPU"
    elif device == "mps":
        have, what = 1, "MPS device"
    else:
        have, what = profile.cpu_cores, "CPU core"
    if wanted <= have:
        return
    yield finding(
        "processes_over_devices",
        "warning",
        ("runtime.num_processes",),
        f"{wanted} training processes but this machine has {have} {what}(s): "
        + (
            "each process needs a GPU of its own, so the launch would fail"
            if device != "cpu"
            else "the processes would compete for the cores and train slower than fewer"
        ),
        {"runtime.num_processes": max(1, have)},
    )


@rule("attention_unavailable", ("model.attention_backend",), "flash/xformers/sage need NVIDIA")
def attention_unavailable(ctx: Context) -> Iterator[Finding]:
    profile, backend = ctx.profile, ctx.cfg.model.attention_backend
    if profile is None or backend not in NVIDIA_ATTENTION or profile.kind == "nvidia":
        return
    yield finding(
        "attention_unavailable",
        "error",
        ("model.attention_backend",),
        f"{backend} attention needs an NVIDIA GPU and its package; PyTorch's native attention "
        "is as fast on other devices",
        {"model.attention_backend": "native"},
    )


@rule("cpu_training", ("runtime.device", "model.name_or_path"), "training a real model on CPU")
def cpu_training(ctx: Context) -> Iterator[Finding]:
    pred, cfg = ctx.prediction, ctx.cfg
    if pred is None or ctx.work is None or ctx.work.device_kind != "cpu":
        return
    if cfg.model.name_or_path.startswith("demo:"):
        return
    yield finding(
        "cpu_training",
        "warning",
        ("runtime.device", "model.name_or_path"),
        f"training {ctx.work.model.label} on the CPU: about {pred.total_time.text()}. A GPU "
        "(or a rented one) is 50-500x faster; the demo models are made for CPUs",
    )


@rule("cpu_busy", ("runtime.device",), "the CPU is already busy: times run longer")
def cpu_busy(ctx: Context) -> Iterator[Finding]:
    """The predicted times assume a quiet machine; a busy CPU slows a CPU run several times
    (and a GPU run's start, loading and batches). Only a person can free the cores: no fix."""
    pred, work = ctx.prediction, ctx.work
    if pred is None or work is None or not pred.time_caveat:
        return
    on_cpu = work.device_kind == "cpu"
    yield finding(
        "cpu_busy",
        "warning" if on_cpu else "info",
        ("runtime.device",),  # the machine's state, not a setting: shown where the device is
        f"predicted {pred.total_time.text()} in all, but {pred.time_caveat}"
        + (". Close other programs or wait for them to finish before launching" if on_cpu else ""),
    )


@rule("fp32_on_gpu", ("train.dtype",), "fp32 on a GPU that has bf16")
def fp32_on_gpu(ctx: Context) -> Iterator[Finding]:
    profile, cfg = ctx.profile, ctx.cfg
    if profile is None or not profile.bf16 or cfg.train.dtype != "fp32":
        return
    if cfg.runtime.device == "cpu":
        return
    yield finding(
        "fp32_on_gpu",
        "suggestion",
        ("train.dtype",),
        f"fp32 on {profile.label}: bf16 halves activation memory and runs ~2-3x faster with the "
        "same range",
        {"train.dtype": "bf16"},
    )


@rule("workers_over_cores", ("runtime.num_workers",), "more loader processes than cores")
def workers_over_cores(ctx: Context) -> Iterator[Finding]:
    profile, workers = ctx.profile, ctx.cfg.runtime.num_workers
    if profile is None or workers <= profile.cpu_cores:
        return
    yield finding(
        "workers_over_cores",
        "warning",
        ("runtime.num_workers",),
        f"{workers} loader workers on {profile.cpu_cores} CPU cores: they compete with the "
        "training process",
        {"runtime.num_workers": profile.cpu_cores},
    )


@rule("prefetch_without_gpu", ("runtime.gpu_prefetch_batches",), "GPU prefetch on a CPU")
def prefetch_without_gpu(ctx: Context) -> Iterator[Finding]:
    work = ctx.work
    if work is None or work.device_kind != "cpu" or not ctx.cfg.runtime.gpu_prefetch_batches:
        return
    yield finding(
        "prefetch_without_gpu",
        "suggestion",
        ("runtime.gpu_prefetch_batches",),
        "there is no GPU to prefetch batches to; prefetching only holds memory",
        {"runtime.gpu_prefetch_batches": 0},
    )


@rule("checkpointing_not_needed", ("train.gradient_checkpointing",), "checkpointing costs time")
def checkpointing_not_needed(ctx: Context) -> Iterator[Finding]:
    cfg, pred = ctx.cfg, ctx.prediction
    if pred is None or not cfg.train.gradient_checkpointing or ctx.profile is None:
        return
    if ctx.work is None or ctx.work.device_kind == "cpu":
        return
    off = try_patch(cfg, {"train.gradient_checkpointing": False})
    if off is None:
        return
    if predict(off, ctx.profile, ctx.counted).vram.high <= 0.7 * pred.vram_available_gb:
        yield finding(
            "checkpointing_not_needed",
            "suggestion",
            ("train.gradient_checkpointing",),
            "the run fits comfortably without gradient checkpointing, which would make steps "
            "~20-30% faster",
            {"train.gradient_checkpointing": False},
        )
