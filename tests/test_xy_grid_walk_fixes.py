"""The X/Y grid after a newcomer's walk: it makes no MLflow run (a run's LoRA gets the grid among
that run's artifacts; any other LoRA gets a file), its size, steps and guidance start from what
the LoRA was trained with (64 px for the demo), it says "image i of n" while it works, and its
row labels wrap whole in a font that scales with the cells."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest
from ui_support import run_ok as run

from trainer.lora import io as lora_io
from trainer.lora.grid_layout import PAD, compose, font_px, grid_layout, label_font, wrap_label
from trainer.lora.xy_grid import GridSpec, TrainedWith, generate_grid, row_label, trained_with
from trainer.tracking.job_file import write_job
from ui.xy_grid_panel import grid_defaults

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_lora(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA of the tiny SD1.5 demo trained at 64 px (its metadata says so), outside any run."""
    from test_lora_io import make_arch

    out = tmp_path_factory.mktemp("xy_walk")
    return lora_io.save_lora(make_arch(demo_home, "sd15", {}), out, "my_lora_2", "webui", "fp32")[0]


def run_job(home: Path, run_id: str, lora: Path, sample: dict) -> Path:
    """``lora`` as the final LoRA of a studio job folder, with job.json and the run's config."""
    job = home / "jobs" / run_id
    (job / "lora").mkdir(parents=True)
    shutil.copy(lora, job / "lora" / lora.name)
    write_job(job, pid=1, run_id=run_id, started=0.0, command=["x"], config_path="c", name="my")
    (job / "config.yaml").write_text(yaml.safe_dump({"name": "my_lora_2", "sample": sample}))
    return job / "lora" / lora.name


def count_runs(client) -> int:
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


# ------------------------------------------------------------------------------ labels


def test_a_long_row_label_wraps_whole_in_a_font_that_scales() -> None:
    label = row_label(Path("my_lora_2.safetensors"), "a photo of sks at the beach at dusk")
    layout = grid_layout((64, 64), [label], ["strength 0", "strength 0.5"])
    lines = layout.row_lines[0]
    # nothing cut: every character but the spaces broken at is on some line (was label[:22])
    assert "".join(lines).replace(" ", "") == label.replace("\n", "").replace(" ", "")
    assert lines[0] == "my_lora_2:" and len(lines) >= 3
    font = label_font(layout.font_px)
    assert all(font.getlength(line) <= layout.label_w - 2 * PAD for line in lines)
    # the row grows to hold its label rather than clip it
    assert layout.size[1] - layout.header_h >= 2 * PAD + len(lines) * layout.line_h
    assert layout.col_lines[1] == ("strength", "0.5")  # wider than a 64 px cell: two lines
    assert (font_px(64, 64), font_px(512, 512), font_px(1024, 1024)) == (11, 42, 48)
    # every wrapped line is drawn: ink in each line's band of the label column
    grid = np.asarray(compose([[Image.new("RGB", (64, 64), "gray")] * 2], [label], ["a", "b"]))
    top = grid_layout((64, 64), [label], ["a", "b"]).row_tops[0]
    for i in range(len(lines)):
        band = grid[top + PAD + i * layout.line_h : top + PAD + (i + 1) * layout.line_h]
        assert band[:, : layout.label_w].min() < 100, f"line {i + 1} of {lines} not drawn"


def test_a_word_wider_than_the_column_is_split_not_dropped() -> None:
    font = label_font(11)
    word = "my_lora_with_a_very_long_file_name_step20"
    lines = wrap_label(word, font, 60)
    assert len(lines) > 1 and "".join(lines) == word
    assert all(font.getlength(line) <= 60 for line in lines)


# ------------------------------------------------------------------------------ progress


class FakePipe:
    """The four calls ``generate_grid`` makes of a diffusers pipeline."""

    def load_lora_weights(self, path: str, adapter_name: str) -> None: ...
    def set_adapters(self, names: list[str], weights: list[float]) -> None: ...
    def delete_adapters(self, names: list[str]) -> None: ...

    def __call__(self, prompt: str, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(images=[Image.new("RGB", (kwargs["width"], kwargs["height"]))])


def test_progress_is_reported_for_every_image() -> None:
    seen: list[tuple[int, int]] = []
    spec = GridSpec([Path("a.safetensors")], ["x", "y"], [0.0, 1.0], width=64, height=64)
    generate_grid(FakePipe(), spec, lambda done, total: seen.append((done, total)))
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


# ------------------------------------------------------------------------------ defaults


def test_defaults_come_from_the_loras_training(demo_lora: Path, tmp_path: Path) -> None:
    alone = trained_with(demo_lora, tmp_path)
    assert (alone.arch, alone.base_model, alone.resolution) == ("sd15", "demo:sd15", 64)
    assert (alone.steps, alone.guidance, alone.run_id) == (None, None, "")
    defaults = grid_defaults(alone)
    assert (defaults.size, defaults.steps, defaults.guidance) == (64, 20, 7.0)  # was 512

    run_id = "ab" * 16
    in_run = run_job(tmp_path, run_id, demo_lora, {"sample_steps": 6, "guidance_scale": 3.5})
    known = trained_with(in_run, tmp_path)
    assert (known.resolution, known.steps, known.guidance, known.run_id) == (64, 6, 3.5, run_id)
    assert grid_defaults(known).steps == 6 and grid_defaults(known).guidance == 3.5
    auto = run_job(tmp_path, "cd" * 16, demo_lora, {"sample_steps": 6, "guidance_scale": "auto"})
    assert trained_with(auto, tmp_path).guidance is None  # "auto": the architecture's

    # a LoRA in MLflow's local artifact store is its run's too
    stored = tmp_path / "mlartifacts" / "1" / ("ef" * 16) / "artifacts" / "lora" / "x.safetensors"
    stored.parent.mkdir(parents=True)
    shutil.copy(demo_lora, stored)
    assert trained_with(stored, tmp_path).run_id == "ef" * 16

    # without a training size: the base model's native size (the demo's is 64 px)
    assert grid_defaults(TrainedWith(arch="sd15", base_model="demo:sd15")).size == 64
    assert grid_defaults(TrainedWith(arch="sd15", base_model="sd-legacy/sd15")).size == 512
    assert grid_defaults(TrainedWith(arch="sdxl")).size == 1024
    assert grid_defaults(TrainedWith(arch="sdxl")).guidance == 6.0


# ------------------------------------------------------------------------------ the page


def test_a_runs_lora_gets_the_grid_in_its_artifacts_and_no_run_is_made(
    demo_home: Path, demo_lora: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("STUDIO_HOME", str(demo_home))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    store = (tmp_path / "artifacts").as_uri()  # not ./mlruns, MLflow's default beside a SQLite URI
    training = client.create_run(client.create_experiment("lora", store), run_name="my_lora_2")
    run_id = training.info.run_id
    client.set_terminated(run_id)
    lora = run_job(demo_home, run_id, demo_lora, {"sample_steps": 3, "guidance_scale": 4.0})
    try:
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
        run(at.switch_page("pages/utilities.py"))
        run(at.text_input(key="lu:main:path").set_value(str(lora)))
        # the LoRA's own settings, not 512 px
        assert at.number_input(key="lu:gridsize").value == 64
        assert at.number_input(key="lu:gridsteps").value == 3
        assert at.number_input(key="lu:gridguidance").value == 4.0
        out = demo_home / "jobs" / run_id / "outputs" / "my_lora_2_xy_grid.png"
        assert at.text_input(key="lu:gridout").value == str(out)
        before = count_runs(client)
        run(at.button(key="lu:grid").click())
        assert not at.error, [e.value for e in at.error]
        assert count_runs(client) == before == 1  # the old grid made a run of its own
        listed = [a.path for a in client.list_artifacts(run_id, "xy_grids")]
        assert listed == ["xy_grids/my_lora_2_xy_grid.json", "xy_grids/my_lora_2_xy_grid.png"]
        assert Image.open(out).size[1] > 64  # the grid saved where the page said
        # what the page shows: where it went, the image, a download, "image i of n" done
        assert any(str(out) in s.value and "my_lora_2" in s.value for s in at.success)
        assert len(at.get("image")) == 1 and len(at.get("download_button")) == 1
        assert at.progress[0].value == 100 and at.progress[0].text == "3 of 3 images made"
        assert at.status[0].label == "X/Y grid made: 3 images"
        # the next grid is proposed beside it, never over it; the grid stays shown
        run(at)
        assert at.text_input(key="lu:gridout").value == str(out.with_name(out.stem + "_2.png"))
        assert len(at.get("image")) == 1 and any(str(out) in s.value for s in at.success)
    finally:
        shutil.rmtree(demo_home / "jobs" / run_id)  # the demo home is shared by the session


def test_grid_runs_of_older_studios_are_not_listed_as_training_runs(tmp_path: Path) -> None:
    """Grids used to get runs of their own, in experiment 'xy_grids': the Monitor and Compare
    listed them as nameless, empty training runs."""
    from mlflow import MlflowClient

    from trainer.tracking.layout import LEGACY_GRID_EXPERIMENT
    from trainer.tracking.records import list_all_runs, list_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    artifacts = (tmp_path / "artifacts").as_uri()
    trained = client.create_run(client.create_experiment("studio", artifacts)).info.run_id
    client.create_run(client.create_experiment(LEGACY_GRID_EXPERIMENT, artifacts))
    assert [r.run_id for r in list_runs(uri)] == [trained]
    assert [r.run_id for r in list_all_runs(uri)] == [trained]
