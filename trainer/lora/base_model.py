"""The base model side of the LoRA utilities: load a base pipeline, fuse a LoRA into it and save.

Kept apart from ``trainer.lora.tools`` (which re-exports both functions) so the file-level tools
stay one readable module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig


def load_base_pipeline(arch: str, base: str, home: Path) -> Any:
    """The base pipeline (float32, CPU) for ``base``: a demo ref, folder, file or Hub id."""
    cfg = TrainingConfig.model_validate(
        {
            "name": "lora_tools",
            "model": {"arch": arch, "name_or_path": base},
            "datasets": [{"folder_path": "unused"}],
        }
    )
    return load_arch(cfg, home, torch.device("cpu"), torch.float32).pipe


def merge_into_base(lora_path: str | Path, pipe: Any, out_dir: str | Path, scale: float = 1.0):
    """Fuse the LoRA into the pipeline's weights (diffusers ``fuse_lora``) and save the pipeline.

    ``out_dir`` is written as given: callers check it first (``trainer.files.writable_target``).
    """
    pipe.load_lora_weights(str(lora_path), adapter_name="merge")
    pipe.fuse_lora(lora_scale=scale, adapter_names=["merge"])
    pipe.unload_lora_weights()
    out_dir = Path(out_dir)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir
