"""Every option the seeds name is a field of the config schema (seeds 000 and 001)."""

from __future__ import annotations

import pytest

from trainer.config.introspection import field_info, iter_fields
from trainer.config.schema import TrainingConfig

# Seed 000 ("config gaps"): option name as the seed writes it -> dotted schema path.
SEED_000 = {
    "lr_scheduler": "train.lr_scheduler",
    "noise_scheduler": "train.noise_scheduler",
    "cache_latents": "datasets.0.cache_latents",
    "cache_latents_to_disk": "datasets.0.cache_latents_to_disk",
    "loss_target": "train.loss_target",
    "do_cfg": "train.do_cfg",
    "cfg_scale": "train.cfg_scale",
    "augmentations": "datasets.0.augmentations",
    "layer_offloading": "model.layer_offloading",
    "lr_scheduler_params": "train.lr_scheduler_params",
    "batch_size_warmup_steps": "train.batch_size_warmup_steps",
    "noise_offset": "train.noise_offset",
    "min_denoising_steps": "train.min_denoising_steps",
    "max_denoising_steps": "train.max_denoising_steps",
    "unload_text_encoder": "train.unload_text_encoder",
    "inverted_mask_prior": "train.inverted_mask_prior",
    "blank_prompt_preservation": "train.blank_prompt_preservation",
    "learnable_snr_gos": "train.learnable_snr_gos",
    "optimal_noise_pairing": "train.optimal_noise_pairing",
    "force_consistent_noise": "train.force_consistent_noise",
    "use_wandb": "logging.use_mlflow",  # the studio tracks in MLflow instead of W&B
    "log_every": "logging.log_every",
    "verbose": "logging.verbose",
    "control_path": "datasets.0.control_path",
    "control_path_1": "datasets.0.control_path",  # up to three control folders, as a list
    "control_path_2": "datasets.0.control_path",
    "control_path_3": "datasets.0.control_path",
    "num_repeats": "datasets.0.num_repeats",
    "keep_tokens": "datasets.0.keep_tokens",
    "token_dropout_rate": "datasets.0.token_dropout_rate",
    "flip_x": "datasets.0.flip_x",
    "flip_y": "datasets.0.flip_y",
    "random_scale": "datasets.0.random_scale",
    "random_crop": "datasets.0.random_crop",
    "mask_path": "datasets.0.mask_path",
    "alpha_mask": "datasets.0.alpha_mask",
    "invert_mask": "datasets.0.invert_mask",
    "caption_ext": "datasets.0.caption_ext",
    "low_vram": "model.low_vram",
    "attn_masking": "model.attn_masking",
    "split_model_over_gpus": "model.split_model_over_gpus",
    "compile": "model.compile",
    "vae_path": "model.vae_path",
    "refiner_name_or_path": "model.refiner_name_or_path",
    "te_name_or_path": "model.te_name_or_path",
    "lora_path": "model.lora_path",
    "vae_device": "model.vae_device",
    "vae_dtype": "model.vae_dtype",
    "te_device": "model.te_device",
    "te_dtype": "model.te_dtype",
    "sampler": "sample.sampler",
    "sample_steps": "sample.sample_steps",
    "guidance_scale": "sample.guidance_scale",
    "seed": "sample.seed",
    "width": "sample.width",
    "height": "sample.height",
    "save_format": "save.save_format",
    "push_to_hub": "save.push_to_hub",
    "hf_repo_id": "save.hf_repo_id",
    "dtype": "save.dtype",
    "project_name": "logging.project_name",
    "run_name": "logging.run_name",
}

# Seed 000's adapter section configures IP-Adapter / ControlNet training, a different kind of
# model than the LoRA-family networks this studio trains; these names are deliberately absent.
SEED_000_NOT_LORA = {
    "type (adapter)",
    "channels",
    "num_tokens",
    "image_encoder_path",
    "train_image_encoder",
    "clip_layer",
    "control_image_dropout",
    "num_control_images",
}

# Seed 001 (the 12 wizard steps): setting as the seed words it -> dotted schema path.
SEED_001 = {
    "model architecture": "model.arch",
    "model path": "model.name_or_path",
    "transformer quantization": "model.quantize",
    "quantization type": "model.qtype",
    "text encoder quantization": "model.quantize_te",
    "ARAs (accuracy recovery adapters)": "model.accuracy_recovery_adapter",
    "target type (LoRA/LoKr)": "network.type",
    "rank": "network.linear",
    "alpha": "network.linear_alpha",
    "LoKr factor": "network.lokr_factor",
    "conv rank": "network.conv",
    "dataset path": "datasets.0.folder_path",
    "trigger word": "datasets.0.trigger_word",
    "caption extension": "datasets.0.caption_ext",
    "default caption": "datasets.0.default_caption",
    "training resolution": "datasets.0.resolution",
    "aspect ratio bucketing": "datasets.0.enable_bucketing",
    "flip X": "datasets.0.flip_x",
    "flip Y": "datasets.0.flip_y",
    "cache latents": "datasets.0.cache_latents",
    "batch size": "train.batch_size",
    "auto-scale batch size": "train.auto_scale_batch_size",
    "min batch size": "train.min_batch_size",
    "max batch size": "train.max_batch_size",
    "gradient accumulation": "train.gradient_accumulation_steps",
    "caching strategy (memory vs disk)": "datasets.0.cache_latents_to_disk",
    "GPU prefetch batches": "runtime.gpu_prefetch_batches",
    "num workers": "runtime.num_workers",
    "persistent workers": "runtime.persistent_workers",
    "optimizer": "train.optimizer",
    "learning rate": "train.lr",
    "weight decay": "train.weight_decay",
    "differential output preservation": "train.diff_output_preservation",
    "DOP multiplier": "train.diff_output_preservation_multiplier",
    "DOP class": "train.diff_output_preservation_class",
    "blank prompt preservation": "train.blank_prompt_preservation",
    "BPP multiplier": "train.blank_prompt_preservation_multiplier",
    "use_ema": "train.use_ema",
    "ema decay": "train.ema_decay",
    "caption dropout rate": "datasets.0.caption_dropout_rate",
    "steps": "train.steps",
    "timestep type": "train.timestep_type",
    "timestep bias (content_or_style)": "train.content_or_style",
    "loss type": "train.loss_type",
    "sample every": "sample.sample_every",
    "sampler type": "sample.sampler",
    "sample width": "sample.width",
    "sample height": "sample.height",
    "sample guidance scale": "sample.guidance_scale",
    "sample steps": "sample.sample_steps",
    "sample seed": "sample.seed",
    "walk seed": "sample.walk_seed",
    "skip first sample": "sample.skip_first_sample",
    "force first sample": "sample.force_first_sample",
    "sample prompts list": "sample.prompts",
    "save every": "save.save_every",
    "max step saves to keep": "save.max_step_saves_to_keep",
    "save dtype": "save.dtype",
    "save format": "save.save_format",
    "layer offloading (transformer %)": "model.layer_offloading_transformer_percent",
    "layer offloading (text encoder %)": "model.layer_offloading_text_encoder_percent",
}


@pytest.mark.parametrize(("option", "path"), sorted({**SEED_000, **SEED_001}.items()))
def test_seed_option_is_a_schema_field(option: str, path: str) -> None:
    info = field_info(path)
    assert info.description, f"{path} (seed option {option!r}) has no description"


def test_seed_000_names_keep_ai_toolkit_names() -> None:
    # Where the seed names an option, the schema field carries that very name.
    renamed = {"use_wandb", "control_path_1", "control_path_2", "control_path_3"}
    for option, path in SEED_000.items():
        if option not in renamed:
            assert path.split(".")[-1] == option


def test_adapter_options_are_absent_by_design() -> None:
    leaves = {path.split(".")[-1] for path, _ in iter_fields()}
    assert not (SEED_000_NOT_LORA - {"type (adapter)"}) & leaves


def test_issue_named_paths_exist() -> None:
    for path in (
        "train.lr_scheduler",
        "train.noise_offset",
        "datasets.0.folder_path",
        "datasets.0.cache_latents_to_disk",
        "model.low_vram",
        "sample.guidance_scale",
        "save.save_format",
        "train.lr_scheduler_params.warmup_steps",
    ):
        field_info(path)
    with pytest.raises(KeyError):
        field_info("train.no_such_option")
    assert TrainingConfig.model_fields.keys() >= {
        "model",
        "network",
        "datasets",
        "train",
        "sample",
        "save",
        "logging",
        "runtime",
    }
