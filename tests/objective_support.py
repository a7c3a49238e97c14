"""Shared helpers for the option proofs (test_options_objective.py, test_options_regularisation.py).

Unit-level proofs call ``trainer.engine.objective`` functions on the tiny demo models with hand-made
batches; each group also trains a few steps in-process and compares the logged losses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from options_support import run as run_in_process
from PIL import Image

from trainer.arch.base import Arch
from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.engine.loop import ModelInputs

SIZE = 64  # pixels; latents are 8x8 for every tiny model


def config(arch: str = "sd15", **sections: Any) -> TrainingConfig:
    """A tiny, fast config; ``sections`` update (dict) or replace (list) the defaults."""
    data: dict[str, Any] = {
        "name": "proof",
        "model": {"arch": arch, "name_or_path": f"demo:{arch}"},
        "network": {"linear": 4, "linear_alpha": 4},
        "datasets": [{"folder_path": "demo:dataset", "trigger_word": "sks", "resolution": [SIZE]}],
        "train": {
            "steps": 3,
            "batch_size": 2,
            "lr": 1e-2,
            "optimizer": "adamw",
            "gradient_checkpointing": False,
        },
        "sample": {"sample_every": 0},
        "save": {"save_every": 100},
        "logging": {"log_every": 1, "use_mlflow": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return TrainingConfig.model_validate(data)


def load(cfg: TrainingConfig, home: Path, lora: bool = True) -> Arch:
    arch = load_arch(cfg, home, torch.device("cpu"), torch.float32)
    if lora:
        arch.add_lora(cfg.network)
    return arch


def inputs_for(arch: Arch, cfg: TrainingConfig, tmp: Path) -> ModelInputs:
    return ModelInputs(arch, cfg, tmp / "cache")


def batch(
    n: int = 2,
    *,
    seed: int = 0,
    captions: list[str] | None = None,
    masks: torch.Tensor | None = None,
    unaugmented: torch.Tensor | None = None,
    multipliers: list[float] | None = None,
    keys: list[str] | None = None,
) -> dict[str, Any]:
    """A batch as ``trainer.data.batches.collate_batch`` makes it, with seeded random pixels."""
    pixels = torch.rand((n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return {
        "pixels": pixels,
        "masks": masks,
        "unaugmented": unaugmented,
        "captions": captions or [f"a photo of sks thing {i}" for i in range(n)],
        "original_sizes": [(SIZE, SIZE)] * n,
        "crop_top_lefts": [(0, 0)] * n,
        "target_sizes": [(SIZE, SIZE)] * n,
        "loss_multiplier": torch.tensor(multipliers or [1.0] * n),
        "is_reg": torch.zeros(n, dtype=torch.bool),
        "keys": keys or [f"hash{i}|v1|{SIZE}x{SIZE}<{SIZE}x{SIZE}+0,0|fx0fy0" for i in range(n)],
        "cacheable": [False] * n,
        "paths": [f"img{i}.png" for i in range(n)],
        "dataset_indices": [0] * n,
    }


def left_half_masks(n: int = 2) -> torch.Tensor:
    """Masks (pixel size) that ignore the left half: exactly the left 4 of 8 latent columns."""
    masks = torch.ones((n, 1, SIZE, SIZE))
    masks[..., : SIZE // 2] = 0.0
    return masks


def perturb_lora(arch: Arch, scale: float = 0.05, seed: int = 1) -> None:
    """Stand-in for training: give every adapter weight a small random change."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in arch.adapted_components().values():
            for name, param in module.named_parameters():
                if "lora_" in name:
                    param.add_(scale * torch.randn(param.shape, generator=gen))


def run(cfg: TrainingConfig, home: Path, job: Path, resume: Path | None = None):
    return run_in_process(cfg, home, job, resume=resume)


def tagged_folder(
    folder: Path, count: int = 4, *, masks: bool = False, alpha: bool = False
) -> Path:
    """Images whose captions are comma-separated tags, optionally with mask files or alpha.

    Masks keep the right half (white) and ignore the left half (black); alpha is opaque on the
    right half only.
    """
    folder.mkdir(parents=True)
    if masks:
        (folder / "masks").mkdir()
    for i in range(count):
        colour = (40 * i % 255, 90, 160)
        if alpha:
            image = Image.new("RGBA", (SIZE, SIZE), (*colour, 0))
            image.paste((*colour, 255), (SIZE // 2, 0, SIZE, SIZE))
        else:
            image = Image.new("RGB", (SIZE, SIZE), colour)
        image.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("sks, red, round, shiny, small, centred, plain")
        if masks:
            mask = Image.new("L", (SIZE, SIZE), 0)
            mask.paste(255, (SIZE // 2, 0, SIZE, SIZE))
            mask.save(folder / "masks" / f"img{i}.png")
    return folder
