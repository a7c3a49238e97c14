"""Where the LoRA utilities put what they make: an ``outputs/`` folder beside the chosen LoRA.

The names of a job folder's parts that matter here live here too: ``checkpoints/`` (rotated away
by the trainer) and ``lora/`` (the final LoRA, what a Hub push uploads), neither of which the
utilities write into. ``kept_out(home)`` lists the studio home's folders the utilities never
write in, whatever "Replace the existing file" says: each run's folder (but its ``outputs/``) and
MLflow's artifact stores.
"""

from __future__ import annotations

from pathlib import Path

from trainer.files import KeepOut

OUTPUTS_DIR = "outputs"
CHECKPOINTS_DIR = "checkpoints"  # a job's checkpoints: the trainer deletes all but the newest few
FINAL_DIR = "lora"  # a job's final LoRA (also what a Hub push uploads: keep other files out)
JOBS_DIR = "jobs"
ARTIFACT_STORES = ("mlartifacts", "mlruns")  # MLflow's: ours, and its default elsewhere

NEVER_THERE = "the LoRA utilities never write there, not even to replace a file"


def kept_out(home: Path) -> list[KeepOut]:
    """The studio home's folders no utility output lands in: a run's folder holds the run's own
    files (its final LoRA, which the Monitor, the model card and a Hub push use; checkpoints;
    samples), except its ``outputs/`` folder; MLflow's stores hold what runs logged."""
    outputs = home / OUTPUTS_DIR
    jobs = home / JOBS_DIR
    run_folder = (
        f"a run's folder ({jobs}/<run>), which holds what the run made (its final LoRA, its "
        f"checkpoints): {NEVER_THERE}. Save under {outputs} or the run's {OUTPUTS_DIR} folder "
        f"({jobs}/<run>/{OUTPUTS_DIR})"
    )
    stores = [
        KeepOut(
            home / name,
            f"MLflow's artifact store ({home / name}), which holds what runs logged: "
            f"{NEVER_THERE}. Save under {outputs}",
        )
        for name in ARTIFACT_STORES
    ]
    studio_own = [
        KeepOut(
            home / name,
            f"the studio's own {name} folder ({home / name}), which holds {what}: "
            f"{NEVER_THERE}. Save under {outputs}",
        )
        for name, what in STUDIO_FOLDERS.items()
    ]
    return [KeepOut(jobs, run_folder, open_in=OUTPUTS_DIR), *stores, *studio_own]


# A replaced file here breaks the studio itself (a base model's weights, a dataset, a preset).
STUDIO_FOLDERS = {
    "models": "base models and the demo models",
    "cache": "cached latents and downloads",
    "downloads": "model downloads in progress",
    "datasets": "your datasets",
    "presets": "saved presets",
    "drafts": "saved drafts",
}


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
