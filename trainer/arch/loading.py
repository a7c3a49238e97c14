"""Loading an architecture's base model: the pipeline ``model.name_or_path`` names (a demo
reference, a folder, a single file or a Hub id, ``sources``), with a different VAE or text
encoder(s) when ``model.vae_path`` / ``model.te_name_or_path`` name them.

``Arch.load`` hands its own class in as ``arch``: what to load is read from the class (its name,
pipeline class, text-encoder and tokenizer names), so every family loads the same way. Kept out of
``trainer.arch.base`` so that module reads as the interface a training step uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.arch.sources import (
    ModelLoadError,
    check_pipeline_source,
    classify_source,
    components_ref,
    hub_snapshot,
    load_pipeline,
    load_single_file,
    load_text_encoders,
    load_vae,
    supplied_elsewhere,
)
from trainer.config.schema import TrainingConfig
from trainer.demo.tiny import resolve_demo_ref


def load_base_pipeline(
    arch: Any, cfg: TrainingConfig, home: Path, dtype: torch.dtype
) -> tuple[Any, str]:
    """The pipeline of the base model named by ``cfg.model`` for the ``Arch`` subclass ``arch``,
    and its model path (``id@commit`` for a Hub model, ``file + components`` for a single file)."""
    ref = cfg.model.name_or_path
    try:
        path = resolve_demo_ref(ref, Path(home))
    except ValueError as exc:
        raise ModelLoadError(f"model.name_or_path: {exc}") from exc
    source = classify_source(path)
    what = f"The {arch.name} base model (model.name_or_path)"
    variant, from_hub = None, source == "hub"
    if from_hub:  # only the files this arch loads, downloaded first if not cached
        path, variant = hub_snapshot(what, path, arch.name)
        source = "dir"
    m = cfg.model
    elsewhere = supplied_elsewhere(m.vae_path, m.te_name_or_path, arch.name)
    check_pipeline_source(what, path, source, arch.name, skip=elsewhere)
    kwargs: dict[str, Any] = {"dtype": dtype, **arch.extra_pipeline_kwargs}
    kwargs.update(_component_overrides(arch, cfg, Path(home), dtype))
    if variant:
        kwargs["variant"] = variant
    # A Hub model is named by its id and commit (the snapshot folder's name).
    resolved_path = (
        f"{ref}@{Path(path).name}" if from_hub else str(Path(path).expanduser().resolve())
    )
    if source == "file":  # configs and the parts a checkpoint lacks: model.components_from
        components = components_ref(m.components_from, arch.name, Path(home))
        pipe = load_single_file(arch.pipeline_class(), path, what, arch.name, kwargs, components)
        resolved_path += f" + {components}"  # they make latents too: part of the identity
    else:
        pipe = load_pipeline(arch.pipeline_class(), path, source, what, arch.name, kwargs)
    return pipe, resolved_path


def _component_overrides(arch: Any, cfg: TrainingConfig, home: Path, dtype: torch.dtype) -> dict:
    """A different VAE and/or text encoder(s), loaded from model.vae_path / te_name_or_path."""
    overrides: dict[str, Any] = {}
    if cfg.model.vae_path:
        overrides["vae"] = load_vae(resolve_demo_ref(cfg.model.vae_path, home), dtype, arch.name)
    if cfg.model.te_name_or_path:
        te_names, tok_names = arch.text_encoder_names, arch.tokenizer_names
        primary = arch.primary_text_encoder
        overrides |= load_text_encoders(
            resolve_demo_ref(cfg.model.te_name_or_path, home),
            dtype,
            arch.name,
            pairs=list(zip(te_names, tok_names, strict=True)),
            primary=(primary, tok_names[te_names.index(primary)]),
            classes=arch.text_encoder_classes(),
        )
    return overrides
