"""Cross-section rules: combinations of settings from different sections that cannot work.

Each rule yields ``(dotted path, "what is wrong — how to fix it")``; ``TrainingConfig`` (in
``trainer/config/schema.py``) raises them all at once as ``FieldProblems``, and the error messages
(``trainer/config/io.py``) show each under the field it names. Rules inside one section live with
that section (``trainer/config/sections/``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.sections.datasets import DatasetConfig
from trainer.config.sections.model import ModelConfig, NetworkConfig
from trainer.config.sections.outputs import SampleConfig
from trainer.config.sections.runtime import RuntimeConfig
from trainer.config.sections.train import TrainConfig
from trainer.config.sections.validation import ValidationConfig


class ConfigSections(Protocol):
    """The sections the rules read: in practice a ``TrainingConfig``, described here rather than
    imported because ``trainer/config/schema.py`` imports this module."""

    model: ModelConfig
    network: NetworkConfig
    datasets: list[DatasetConfig]
    train: TrainConfig
    sample: SampleConfig
    runtime: RuntimeConfig
    validation: ValidationConfig


def cross_section_problems(cfg: ConfigSections) -> Iterator[tuple[str, str]]:
    """Combinations that cannot work, as (dotted path, message — fix)."""
    arch, model, net, train = cfg.model.arch, cfg.model, cfg.network, cfg.train
    if all(ds.is_reg for ds in cfg.datasets):
        yield "datasets", "every dataset is a regularisation set — add one with your images"
    yield from memory_problems(cfg)
    if arch == "flux":
        if train.noise_scheduler in ("ddpm", "euler"):
            yield (
                "train.noise_scheduler",
                f"{train.noise_scheduler} does not fit Flux, a flow-matching model — "
                "use flowmatch or auto",
            )
        if model.is_v_pred:
            yield "model.is_v_pred", "Flux is a flow-matching model, not v-prediction — turn off"
        if train.train_text_encoder:
            yield (
                "train.train_text_encoder",
                "text-encoder LoRA is not supported for Flux (its T5 encoder is too large to "
                "train usefully) — turn it off",
            )
        if net.type == "locon" or net.conv is not None:
            yield (
                "network.conv",
                "Flux's transformer blocks have no convolution layers — use type lora/lokr "
                "and leave conv empty",
            )
        negs = [("sample.neg", cfg.sample.neg)] + [
            (f"sample.prompts.{i}.neg", p.neg) for i, p in enumerate(cfg.sample.prompts)
        ]
        for path, neg in negs:
            if neg and neg.strip():
                yield (
                    path,
                    "Flux.1 is guidance-distilled and samples without a negative prompt, so it "
                    "would be ignored — leave it empty",
                )
    else:
        if train.noise_scheduler == "flowmatch":
            yield (
                "train.noise_scheduler",
                f"flow matching is for Flux; {arch} was trained with DDPM — use ddpm, euler "
                "or auto",
            )
        if cfg.sample.sampler == "flowmatch":
            yield "sample.sampler", f"flowmatch is Flux's sampler — pick euler for {arch}"
        for flag in ("attn_masking", "split_model_over_gpus"):
            if getattr(model, flag):
                yield f"model.{flag}", f"only applies to Flux, not {arch} — turn it off"
    if net.conv_alpha is not None and net.conv is None and net.type != "locon":
        yield (
            "network.conv_alpha",
            f"no convolution layers are adapted by {net.type} without network.conv, so "
            "conv_alpha would be ignored — set conv (or type locon) or leave conv_alpha empty",
        )
    if arch != "sdxl" and model.refiner_name_or_path:
        yield "model.refiner_name_or_path", f"refiners exist for SDXL only, not {arch}"
    if arch == "flux" and cfg.sample.sampler in ("ddpm", "euler", "euler_a", "dpmpp_2m"):
        yield "sample.sampler", "Flux samples with flowmatch (or auto)"
    if train.dtype == "fp16" and cfg.runtime.device == "cpu":
        yield "train.dtype", "fp16 on the CPU crashes in PyTorch — use fp32 (or auto) on CPU"
    if train.diff_output_preservation and not any(ds.trigger_word for ds in cfg.datasets):
        yield (
            "datasets.0.trigger_word",
            "differential output preservation swaps the trigger word for the class word, so a "
            "trigger word is needed",
        )
    if train.inverted_mask_prior and not any(ds.mask_path or ds.alpha_mask for ds in cfg.datasets):
        yield (
            "train.inverted_mask_prior",
            "needs masks — set mask_path or alpha_mask on a dataset, or turn it off",
        )
    yield from objective_problems(cfg)
    yield from validation_problems(cfg)
    if train.cache_text_embeddings:
        for i, ds in enumerate(cfg.datasets):
            if ds.shuffle_tokens or ds.token_dropout_rate > 0:
                yield (
                    f"datasets.{i}.shuffle_tokens"
                    if ds.shuffle_tokens
                    else f"datasets.{i}.token_dropout_rate",
                    "changes captions every step, which cached text embeddings cannot follow "
                    "— turn it off or turn train.cache_text_embeddings off",
                )
    multiple = ARCH_DEFAULTS[arch]["size_multiple"]
    for i, ds in enumerate(cfg.datasets):
        if ds.control_path:
            yield (
                f"datasets.{i}.control_path",
                f"control images need a control or edit model; plain {arch} LoRA training "
                "does not use them — leave it empty",
            )
        for size in ds.resolution:
            if size % multiple:
                yield (
                    f"datasets.{i}.resolution",
                    f"{size} is not a multiple of {multiple}, which {arch} needs — use "
                    f"{size // multiple * multiple or multiple}",
                )
    for axis in ("width", "height"):
        size = getattr(cfg.sample, axis)
        if size % multiple:
            yield (
                f"sample.{axis}",
                f"{size} is not a multiple of {multiple}, which {arch} needs — use "
                f"{size // multiple * multiple or multiple}",
            )


def objective_problems(cfg: ConfigSections) -> Iterator[tuple[str, str]]:
    """Loss options that cannot do anything for this architecture or data (trainer.engine.objective)."""
    arch, train = cfg.model.arch, cfg.train
    if arch == "flux":
        for path, value in (
            ("train.min_snr_gamma", train.min_snr_gamma),
            ("train.learnable_snr_gos", train.learnable_snr_gos),
        ):
            if value:
                yield (
                    path,
                    "SNR loss weighting is defined for DDPM noise schedules (ε/v-prediction); "
                    "Flux trains with flow matching, whose noise levels train.timestep_type "
                    "balances — leave it off",
                )
    elif train.min_snr_gamma and train.learnable_snr_gos:
        yield (
            "train.learnable_snr_gos",
            "replaces min_snr_gamma with learned weights — use one of them, not both",
        )
    if train.loss_target == "source" and arch != "flux" and not cfg.model.is_v_pred:
        yield (
            "train.loss_target",
            "for an ε-prediction model the noise-level weighted loss on the clean image equals "
            "the noise loss exactly — use noise (or set model.is_v_pred for a v-prediction model)",
        )
    photometric = ("color_jitter", "blur")
    if train.loss_target in ("unaugmented", "differential_noise") and not any(
        aug.type in photometric for ds in cfg.datasets for aug in ds.augmentations
    ):
        yield (
            "train.loss_target",
            f"{train.loss_target} compares with the image before colour augmentations, but no "
            "dataset has a color_jitter or blur augmentation, so it would change nothing — add "
            "one to datasets[].augmentations or use noise",
        )


def validation_problems(cfg: ConfigSections) -> Iterator[tuple[str, str]]:
    """Validation images that cannot be scored (trainer.engine.validation). That the folder
    exists and the hold-out leaves images to train on is checked when the datasets are scanned."""
    validation = cfg.validation
    if not validation.enabled:
        return
    where = "validation.holdout" if validation.holdout else "validation.folder_path"
    if cfg.train.unload_text_encoder:
        yield (
            where,
            "the validation captions need the text encoders, which train.unload_text_encoder "
            "frees after encoding the training captions — turn one of them off",
        )
    if validation.holdout and not any(not ds.is_reg for ds in cfg.datasets):
        yield where, "held-out images come from your datasets, but every one is regularisation"


BNB_QTYPES = ("int8", "nf4", "fp4")


def memory_problems(cfg: ConfigSections) -> Iterator[tuple[str, str]]:
    """Memory/speed combinations that cannot work (trainer/engine/memory.py says why in detail)."""
    model, net, device = cfg.model, cfg.network, cfg.runtime.device
    if model.quantize and model.qtype == "float8" and net.type == "dora":
        yield (
            "network.type",
            "DoRA reads the full-precision base weight to normalise it, and peft cannot read "
            "float8 weights — use qtype int8/nf4 or network type lora",
        )
    if model.quantize and model.qtype in ("nf4", "fp4"):
        if net.type in ("loha", "lokr"):
            yield (
                "network.type",
                f"{net.type} needs the base weight's shape, which 4-bit bitsandbytes packs away "
                "— use qtype float8/int8 or network type lora",
            )
        if model.compile:
            yield "model.compile", "torch.compile does not support 4-bit weights — turn it off"
    offloads = model.layer_offloading or model.low_vram
    if model.layer_offloading and model.quantize and model.qtype in BNB_QTYPES:
        yield (
            "model.layer_offloading",
            f"bitsandbytes {model.qtype} weights carry quantization state that offloading "
            "cannot move — use qtype float8 or turn layer offloading off",
        )
    if offloads and model.quantize_te and model.qtype_te in BNB_QTYPES:
        yield (
            "model.qtype_te",
            f"bitsandbytes {model.qtype_te} text encoders cannot be offloaded (layer_offloading "
            "/ low_vram) — use qtype_te float8",
        )
    if model.accuracy_recovery_adapter and net.type in ("loha", "lokr"):
        yield (
            "model.accuracy_recovery_adapter",
            f"the recovery adapter is a LoRA and peft cannot stack a {net.type} on it — use "
            "network type lora/locon/dora",
        )
    if model.attention_backend in ("flash", "xformers", "sage") and device in ("cpu", "mps"):
        yield (
            "model.attention_backend",
            f"{model.attention_backend} needs an NVIDIA GPU, not {device} — use auto or native",
        )
    if model.split_model_over_gpus and device in ("cpu", "mps"):
        yield "model.split_model_over_gpus", f"needs two or more CUDA GPUs, not {device}"
    if cfg.runtime.num_processes > 1 and model.split_model_over_gpus:
        yield (
            "runtime.num_processes",
            "split_model_over_gpus spreads one model over the GPUs; it cannot be combined with "
            "several data-parallel processes — set 1, or turn the split off",
        )
    if cfg.runtime.num_processes > 1 and device == "mps":
        yield (
            "runtime.num_processes",
            "Apple's MPS is one device; several processes cannot share it",
        )
