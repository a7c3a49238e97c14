"""Where the LoRA utilities put what they make: an ``outputs/`` folder beside the chosen LoRA.

The names of a job folder's parts that matter here live here too: ``checkpoints/`` (rotated away
by the trainer) and ``lora/`` (the final LoRA, what a Hub push uploads), neither of which the
utilities write into.
"""

from __future__ import annotations

from pathlib import Path

OUTPUTS_DIR = "outputs"
CHECKPOINTS_DIR = "checkpoints"  # a job's checkpoints: the trainer deletes all but the newest few
FINAL_DIR = "lora"  # a job's final LoRA (also what a Hub push uploads: keep other files out)


def output_path(source: str | Path, tag: str, suffix: str = ".safetensors") -> Path:
    """Where a utility saves what it made from the LoRA ``source``: an ``outputs/`` folder beside
    it, never inside a job's ``checkpoints/`` (rotated away) nor its ``lora/`` (pushed to the Hub).

    ``<job>/lora/x.safetensors`` or ``<job>/lora/x/`` (diffusers) -> ``<job>/outputs/x_<tag>``;
    ``<job>/checkpoints/step_00000020/lora/x.safetensors`` -> ``<job>/outputs/x_step20_<tag>``;
    ``<dir>/outputs/x.safetensors`` -> the same folder; ``<dir>/x.safetensors`` ->
    ``<dir>/outputs/x_<tag>``. ``suffix`` "" names a folder (a diffusers LoRA, a pipeline)."""
    source = Path(source)
    stem = source.stem if source.suffix == ".safetensors" else source.name
    parts = source.parts
    if CHECKPOINTS_DIR in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index(CHECKPOINTS_DIR)
        step = parts[at + 1] if at + 2 < len(parts) else ""
        if step.startswith("step_") and step[5:].isdigit():
            stem = f"{stem}_step{int(step[5:])}"
        folder = Path(*parts[:at]) / OUTPUTS_DIR
    elif source.parent.name == FINAL_DIR:
        folder = source.parent.parent / OUTPUTS_DIR
    elif source.parent.name == OUTPUTS_DIR:
        folder = source.parent
    else:
        folder = source.parent / OUTPUTS_DIR
    return folder / f"{stem}_{tag}{suffix}"
