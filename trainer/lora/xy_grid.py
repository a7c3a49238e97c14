"""X/Y test grid: prompts × LoRA strengths × checkpoints (LoRA files), as one labelled image.

Rows are (checkpoint, prompt) pairs, columns are strengths; every cell uses the same seed, so
differences come from the LoRA alone. ``log_grid`` stores it in MLflow as one image artifact of a
new run (with the grid's settings as params).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from trainer.tracking.new_run import ensure_experiment

LABEL_H, LABEL_W = 16, 140


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


def generate_grid(pipe: Any, spec: GridSpec) -> tuple[Image.Image, list[list[Image.Image]]]:
    """Render every cell with ``pipe`` (a diffusers pipeline); returns (grid, cells by row)."""
    if not spec.loras or not spec.prompts or not spec.strengths:
        raise ValueError("the grid needs at least one LoRA, one prompt and one strength")
    rows: list[list[Image.Image]] = []
    labels: list[str] = []
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
                rows.append(row)
                labels.append(f"{Path(lora).stem}: {prompt}")
        finally:
            pipe.delete_adapters([name])
    return compose(rows, labels, [f"strength {s:g}" for s in spec.strengths]), rows


def compose(rows: list[list[Image.Image]], row_labels: list[str], col_labels: list[str]):
    """Cells in a grid with a header row and a label column."""
    cell_w, cell_h = rows[0][0].size
    grid = Image.new(
        "RGB", (LABEL_W + cell_w * len(col_labels), LABEL_H + cell_h * len(rows)), "white"
    )
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(col_labels):
        draw.text((LABEL_W + c * cell_w + 2, 2), label, fill="black")
    for r, (row, label) in enumerate(zip(rows, row_labels, strict=True)):
        draw.text((2, LABEL_H + r * cell_h + 2), label[:22], fill="black")
        for c, cell in enumerate(row):
            grid.paste(cell.convert("RGB"), (LABEL_W + c * cell_w, LABEL_H + r * cell_h))
    return grid


def log_grid(
    grid: Image.Image, spec: GridSpec, tracking_uri: str, experiment: str = "xy_grids"
) -> str:
    """Log the grid as ``xy_grid.png`` in a new MLflow run; returns the run id."""
    from mlflow import MlflowClient  # mlflow: ~2 s to import; only when a grid is logged

    client = MlflowClient(tracking_uri)
    run = client.create_run(ensure_experiment(tracking_uri, experiment))
    run_id = run.info.run_id
    params = {
        "loras": ", ".join(str(p) for p in spec.loras)[:500],
        "prompts": " | ".join(spec.prompts)[:500],
        "strengths": ", ".join(f"{s:g}" for s in spec.strengths),
        "steps": str(spec.steps),
        "size": f"{spec.width}x{spec.height}",
        "seed": str(spec.seed),
        "guidance_scale": str(spec.guidance_scale),
    }
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.log_image(run_id, grid, "xy_grid.png")
    client.set_terminated(run_id)
    return run_id
