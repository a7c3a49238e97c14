"""X/Y grid on the tiny sd15 model: cells match direct generation; added to a run's artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.lora import io as lora_io
from trainer.lora.grid_layout import grid_layout
from trainer.lora.xy_grid import GridSpec, generate_grid, log_grid, row_label, save_grid


@pytest.fixture(scope="module")
def two_loras(demo_home: Path, tmp_path_factory: pytest.TempPathFactory):
    from test_lora_io import fresh_pipeline, make_arch

    out = tmp_path_factory.mktemp("xy")
    model = make_arch(demo_home, "sd15", {})
    first = lora_io.save_lora(model, out, "step10", "webui", "fp32")[0]
    with torch.no_grad():
        for comp in model.adapted_components().values():
            for name, param in comp.named_parameters():
                if "lora_B" in name:
                    param.mul_(-1.0)
    second = lora_io.save_lora(model, out, "step20", "webui", "fp32")[0]
    return fresh_pipeline(model), [first, second]


def test_grid_cells_are_the_lora_at_each_strength(two_loras, tmp_path: Path) -> None:
    pipe, loras = two_loras
    spec = GridSpec(loras, ["a photo of sks", "sks"], [0.0, 1.0], steps=2, width=64, height=64)
    grid, rows = generate_grid(pipe, spec)
    labels = [row_label(lora, prompt) for lora in loras for prompt in spec.prompts]
    layout = grid_layout((64, 64), labels, ["strength 0", "strength 1"])
    assert grid.size == layout.size and layout.size[0] == layout.label_w + 2 * 64
    cells = [[np.asarray(c, dtype=np.float64) for c in row] for row in rows]
    # strength 0 is the base model: the same for both checkpoints
    np.testing.assert_array_equal(cells[0][0], cells[2][0])
    # strength 1 differs between checkpoints and from the base
    assert np.abs(cells[0][1] - cells[2][1]).mean() > 0.5
    assert np.abs(cells[0][1] - cells[0][0]).mean() > 0.5
    # a cell equals generating directly with that LoRA at that strength
    pipe.load_lora_weights(str(loras[1]), adapter_name="check")
    direct = pipe(
        "sks",
        num_inference_steps=2,
        width=64,
        height=64,
        guidance_scale=spec.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(0),
    ).images[0]
    pipe.delete_adapters(["check"])
    np.testing.assert_array_equal(np.asarray(direct, dtype=np.float64), cells[3][1])
    # the pasted cell in the grid is that image
    x, y = layout.cell_origin(3, 1)
    pasted = np.asarray(grid, dtype=np.float64)[y : y + 64, x : x + 64]
    np.testing.assert_array_equal(pasted, cells[3][1])

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    store = (tmp_path / "artifacts").as_uri()  # not ./mlruns, MLflow's default beside a SQLite URI
    run_id = client.create_run(client.create_experiment("training", store)).info.run_id
    saved = save_grid(grid, spec, tmp_path / "g.png")
    logged = log_grid(saved, spec, uri, run_id)
    # the grid joins the run's artifacts; no run is made, the run's params stay its own
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1
    assert logged.artifact == "xy_grids/g.png" and client.get_run(run_id).data.params == {}
    listed = [a.path for a in client.list_artifacts(run_id, "xy_grids")]
    assert listed == ["xy_grids/g.json", "xy_grids/g.png"]
