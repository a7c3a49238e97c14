"""Per-architecture code behind one interface (``Arch``); ``load_arch`` picks the class.

Usage: ``arch = load_arch(cfg, home, torch.device("cpu"), torch.float32)`` (the class follows
``cfg.model.arch``), then ``groups = arch.add_lora(cfg.network, cfg.train.train_text_encoder)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.arch.base import Arch, ModelLoadError
from trainer.config.schema import TrainingConfig


def arch_class(name: str) -> type[Arch]:
    """The Arch subclass for ``model.arch`` (imported lazily: each pulls in diffusers)."""
    if name == "sd15":
        from trainer.arch.sd15 import SD15Arch

        return SD15Arch
    if name == "sdxl":
        from trainer.arch.sdxl import SDXLArch

        return SDXLArch
    if name == "flux":
        from trainer.arch.flux import FluxArch

        return FluxArch
    raise ValueError(f"unknown model.arch {name!r}; expected sd15, sdxl or flux")


def load_arch(cfg: TrainingConfig, home: Path, device: torch.device, dtype: torch.dtype) -> Arch:
    """Load ``cfg.model`` (demo ref, folder, single file or Hub id) for training on ``device``.

    Raises ModelLoadError with a fix when the model (or its VAE / text encoder) cannot be found.
    """
    return arch_class(cfg.model.arch).load(cfg, Path(home), torch.device(device), dtype)


__all__ = ["Arch", "ModelLoadError", "arch_class", "load_arch"]
