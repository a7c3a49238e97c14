"""X/Y test grid: prompts × LoRA strengths × checkpoints (LoRA files), as one labelled image.

Rows are (checkpoint, prompt) pairs, columns are strengths; every cell uses the same seed, so
differences come from the LoRA alone.

A grid is not a training run, so it never makes an MLflow run of its own (one would show in the
Monitor's and Compare's run lists as a run with no steps and no LoRA): ``save_grid`` writes it as
a PNG file (its settings in the PNG's text), and ``log_grid`` adds that file to the artifacts of
the run the LoRA came from (``GRID_ARTIFACT_DIR``), when ``trained_with`` knows that run.
``trained_with`` also reads what the LoRA was trained with (size, preview steps and guidance),
the grid's defaults.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image, PngImagePlugin

from trainer.files import atomic_path
from trainer.lora import io as lora_io
from trainer.lora.grid_layout import compose
from trainer.lora.outputs import JOBS_DIR
from trainer.tracking.connect import mlflow_client
from trainer.tracking.job_file import read_job
from trainer.tracking.layout import CONFIG_ARTIFACT

GRID_ARTIFACT_DIR = "xy_grids"  # in the artifacts of the run whose LoRA the grid was made from
RUN_CONFIG = "config.yaml"  # a job folder's copy of the run's config (trainer.jobs.folder)
_RUN_ID = re.compile(r"[0-9a-f]{32}")  # MLflow's run ids: uuid4 hex
_ARCH_OF_VERSION = {version: arch for arch, version in lora_io.BASE_MODEL_VERSION.items()}

Progress = Callable[[int, int], None]  # (images made, images in all)


@dataclass
class GridSpec:
    loras: list[Path]
    prompts: list[str]
    strengths: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    steps: int = 20
    width: int = 512
    height: int = 512
    guidance_scale: float = 5.0
    seed: int = 0
    negative_prompt: str = ""

    @property
    def images(self) -> int:
        return len(self.loras) * len(self.prompts) * len(self.strengths)


def row_label(lora: Path, prompt: str) -> str:
    return f"{Path(lora).stem}:\n{prompt}"  # the name and the prompt each start a line


def generate_grid(
    pipe: Any, spec: GridSpec, progress: Progress | None = None
) -> tuple[Image.Image, list[list[Image.Image]]]:
    """Render every cell with ``pipe`` (a diffusers pipeline); returns (grid, cells by row).
    ``progress(done, total)`` is called before the first image and after each one."""
    if not spec.loras or not spec.prompts or not spec.strengths:
        raise ValueError("the grid needs at least one LoRA, one prompt and one strength")
    rows: list[list[Image.Image]] = []
    labels: list[str] = []
    done, total = 0, spec.images
    if progress:
        progress(done, total)
    for index, lora in enumerate(spec.loras):
        name = f"xy{index}"
        pipe.load_lora_weights(str(lora), adapter_name=name)
        try:
            for prompt in spec.prompts:
                row = []
                for strength in spec.strengths:
                    pipe.set_adapters([name], [strength])
                    kwargs: dict[str, Any] = {}
                    if spec.negative_prompt:
                        kwargs["negative_prompt"] = spec.negative_prompt
                    image = pipe(
                        prompt,
                        num_inference_steps=spec.steps,
                        width=spec.width,
                        height=spec.height,
                        guidance_scale=spec.guidance_scale,
                        generator=torch.Generator("cpu").manual_seed(spec.seed),
                        **kwargs,
                    ).images[0]
                    row.append(image)
                    done += 1
                    if progress:
                        progress(done, total)
                rows.append(row)
                labels.append(row_label(lora, prompt))
        finally:
            pipe.delete_adapters([name])
    return compose(rows, labels, [f"strength {s:g}" for s in spec.strengths]), rows


# ------------------------------------------------------------------- what the LoRA came from


@dataclass(frozen=True)
class TrainedWith:
    """What a LoRA's file and run say about making images with it; None / "" where unknown."""

    arch: str = ""
    base_model: str = ""
    resolution: int | None = None  # the largest training resolution
    steps: int | None = None  # its run's preview steps (sample.sample_steps)
    guidance: float | None = None  # its run's preview guidance, unless "auto"
    run_id: str = ""  # the studio run that made it


def _run_place(lora: Path, home: Path) -> tuple[str, Path | None]:
    """(run id, that run's config file) when ``lora`` lies in a run's job folder, in a local
    MLflow artifact store (``<run id>/artifacts/...``) or in the artifact download cache
    (``artifacts/<run id>/...``); ("", None) otherwise."""
    path = lora.resolve()
    jobs = (home / JOBS_DIR).resolve()
    if path.is_relative_to(jobs) and path != jobs:
        folder = jobs / path.relative_to(jobs).parts[0]
        info = read_job(folder)  # its run id; a folder without job.json is named after it
        run_id = info.run_id if info else folder.name if _RUN_ID.fullmatch(folder.name) else ""
        return run_id, folder / RUN_CONFIG
    parts = path.parts
    for i, part in enumerate(parts[1:-1], start=1):
        if part == "artifacts" and _RUN_ID.fullmatch(parts[i - 1]):
            return parts[i - 1], Path(*parts[: i + 1], CONFIG_ARTIFACT)
        if part == "artifacts" and _RUN_ID.fullmatch(parts[i + 1]):
            return parts[i + 1], None  # a download: the cache holds only what was fetched
    return "", None


def _largest_int(text: str) -> int | None:
    numbers = [int(n) for n in re.findall(r"\d+", text or "")]
    return max(numbers) if numbers else None


def _sample_settings(config: Path | None) -> tuple[int | None, float | None]:
    if config is None or not config.is_file():
        return None, None
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    sample = data.get("sample") if isinstance(data, dict) else None
    if not isinstance(sample, dict):
        return None, None
    steps, guidance = sample.get("sample_steps"), sample.get("guidance_scale")
    return (
        steps if isinstance(steps, int) and steps > 0 else None,
        float(guidance) if isinstance(guidance, int | float) else None,  # not "auto"
    )


def trained_with(lora: str | Path, home: Path) -> TrainedWith:
    """What ``lora`` was trained with: its file's metadata (``trainer.lora.io.lora_metadata``:
    arch, base model, resolution; kohya's ``ss_*`` keys for files made elsewhere) and, for a
    studio run's LoRA, its run and that run's preview steps and guidance."""
    lora = Path(lora)
    try:
        meta = lora_io.read_lora_metadata(lora)
    except (lora_io.UnreadableLora, OSError, ValueError):
        meta = {}
    arch = meta.get("arch") or _ARCH_OF_VERSION.get(meta.get("ss_base_model_version", ""), "")
    run_id, config = _run_place(lora, home)
    steps, guidance = _sample_settings(config)
    return TrainedWith(
        arch=arch,
        base_model=meta.get("base_model") or meta.get("ss_sd_model_name") or "",
        resolution=_largest_int(meta.get("resolution") or meta.get("ss_resolution") or ""),
        steps=steps,
        guidance=guidance,
        run_id=run_id,
    )


# ------------------------------------------------------------------- saving and logging


def grid_settings(spec: GridSpec) -> dict[str, str]:
    return {
        "loras": ", ".join(str(p) for p in spec.loras),
        "prompts": " | ".join(spec.prompts),
        "strengths": ", ".join(f"{s:g}" for s in spec.strengths),
        "steps": str(spec.steps),
        "size": f"{spec.width}x{spec.height}",
        "seed": str(spec.seed),
        "guidance_scale": f"{spec.guidance_scale:g}",
        "negative_prompt": spec.negative_prompt,
    }


def save_grid(grid: Image.Image, spec: GridSpec, target: str | Path) -> Path:
    """Write the grid as a PNG at ``target`` (callers check the place first:
    ``trainer.files.writable_target``), its settings in the PNG's text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in grid_settings(spec).items():
        info.add_itxt(f"xy_grid.{key}", value)
    target = Path(target)
    with atomic_path(target) as tmp:
        grid.save(tmp, format="PNG", pnginfo=info)
    return target


def next_free(path: Path) -> Path:
    """``path``, or ``<stem>_2<suffix>``, ``_3`` ... : the first that does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


class GridNotLogged(Exception):
    """The grid could not be added to its run's artifacts (it stays saved as a file)."""


@dataclass(frozen=True)
class LoggedGrid:
    run_id: str
    run_name: str
    artifact: str  # the grid's path among the run's artifacts


def log_grid(grid_file: Path, spec: GridSpec, tracking_uri: str, run_id: str) -> LoggedGrid:
    """Add the saved grid (and its settings as JSON beside it) to the artifacts of run
    ``run_id`` under ``GRID_ARTIFACT_DIR``: no run is made, nothing of that run's params, metrics
    or tags changes. Raises ``GridNotLogged`` when the store has no such run or refuses the
    file (``StoreUnreachable`` when it does not answer)."""
    from mlflow.exceptions import MlflowException  # mlflow: 1-2 s to import, only to log

    client = mlflow_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise GridNotLogged(f"the tracking store has no run {run_id}") from err
    try:
        client.log_artifact(run_id, str(grid_file), GRID_ARTIFACT_DIR)
        with tempfile.TemporaryDirectory() as folder:  # not beside the grid: a file may be there
            settings = Path(folder) / f"{grid_file.stem}.json"
            settings.write_text(json.dumps(grid_settings(spec), indent=1), encoding="utf-8")
            client.log_artifact(run_id, str(settings), GRID_ARTIFACT_DIR)
    except MlflowException as err:
        raise GridNotLogged(f"MLflow refused the artifact ({err.message})") from err
    return LoggedGrid(run_id, run.info.run_name or "", f"{GRID_ARTIFACT_DIR}/{grid_file.name}")
