"""Which Arch class serves ``model.arch``, and ``load_arch`` to load a config's base model.

Usage: ``arch = load_arch(cfg, home, torch.device("cpu"), torch.float32)`` (the class follows
``cfg.model.arch``), then ``groups = arch.add_lora(cfg.network, cfg.train.train_text_encoder)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.arch.base import Arch
from trainer.arch.flux import FluxArch
from trainer.arch.sd15 import SD15Arch
from trainer.arch.sdxl import SDXLArch
from trainer.config.schema import TrainingConfig

ARCH_CLASSES: dict[str, type[Arch]] = {"sd15": SD15Arch, "sdxl": SDXLArch, "flux": FluxArch}


def arch_class(name: str) -> type[Arch]:
    """The Arch subclass for ``model.arch``."""
    if name not in ARCH_CLASSES:
        raise ValueError(f"unknown model.arch {name!r}; expected sd15, sdxl or flux")
    return ARCH_CLASSES[name]


def load_arch(cfg: TrainingConfig, home: Path, device: torch.device, dtype: torch.dtype) -> Arch:
    """Load ``cfg.model`` (demo ref, folder, single file or Hub id) for training on ``device``.

    Raises ModelLoadError with a fix when the model (or its VAE / text encoder) cannot be found.
    """
    return arch_class(cfg.model.arch).load(cfg, Path(home), torch.device(device), dtype)
