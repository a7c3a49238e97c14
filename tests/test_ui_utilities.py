"""The utilities page in AppTest: inspect, resize and merge a LoRA file; the studio's LoRAs in
the picker; what the utilities make lands in an ``outputs/`` folder beside the chosen LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest
from ui_support import run_ok as run

from trainer.lora import tools as lora_tools
from trainer.tracking.job_file import write_job

ROOT = Path(__file__).resolve().parent.parent


def kohya_file(path: Path, rank: int, seed: int) -> Path:
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in ("lora_unet_a_to_q", "lora_unet_a_to_k"):
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, 16, generator=gen)
        tensors[f"{name}.lora_up.weight"] = torch.randn(12, rank, generator=gen)
        tensors[f"{name}.alpha"] = torch.tensor(float(rank) / 2)
    save_file(tensors, str(path), metadata={"arch": "sd15", "trigger_word": "sks"})
    return path


@pytest.fixture()
def home(home_with_store: Path) -> Path:
    return home_with_store


def test_inspect_resize_and_merge(home: Path, tmp_path: Path) -> None:
    a = kohya_file(tmp_path / "a.safetensors", 8, 0)
    b = kohya_file(tmp_path / "b.safetensors", 4, 1)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    run(at.switch_page("pages/utilities.py"))
    assert "Choose a LoRA file" in at.info[0].value
    run(at.text_input(key="lu:main:path").set_value(str(a)))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Layout": "kohya", "Layers": "2"}
    assert "rank 8 in 2 layers · alpha 4 in 2 layers" in [m.value for m in at.markdown]
    run(at.number_input(key="lu:param:rank").set_value(3.0))
    run(at.button(key="lu:resize").click())
    # a.safetensors lies outside the studio home: what is made from it goes to the home's outputs/
    out = home / "outputs" / "a_resized.safetensors"
    assert any("mean rank 3. " in s.value for s in at.success), [s.value for s in at.success]
    assert lora_tools.inspect(out)["ranks"] == {3: 2}
    run(at.text_input(key="lu:other:path").set_value(str(b)))
    run(at.number_input(key="lu:w2").set_value(0.5))
    run(at.button(key="lu:merge").click())
    merged = lora_tools.load(home / "outputs" / "a_merged.safetensors")
    la, lb = lora_tools.load(a), lora_tools.load(b)
    for name, module in merged.modules.items():
        expected = la.modules[name].delta() + 0.5 * lb.modules[name].delta()
        torch.testing.assert_close(module.delta(), expected, rtol=1e-5, atol=1e-5)
    run(at.text_input(key="lu:main:path").set_value(str(tmp_path / "nope.safetensors")))
    assert any("does not exist" in e.value for e in at.error)


def test_xy_grid_and_convert_on_the_demo_model(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from test_lora_io import make_arch

    from trainer.lora import io as lora_io

    monkeypatch.setenv("STUDIO_HOME", str(demo_home))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    path = lora_io.save_lora(make_arch(demo_home, "sd15", {}), tmp_path, "g", "webui", "fp32")[0]
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120)
    run(at.switch_page("pages/utilities.py"))
    run(at.text_input(key="lu:main:path").set_value(str(path)))
    run(at.button(key="lu:convert").click())  # to webui: no base model needed
    converted = demo_home / "outputs" / "g_webui.safetensors"  # in the studio home: see above
    assert lora_tools.inspect(converted)["layout"] == "kohya"
    converted.unlink()  # the demo home is shared by the session's tests
    at.text_area(key="lu:gridprompts").set_value("sks\na dog")
    run(at.number_input(key="lu:gridsteps").set_value(2))
    assert at.number_input(key="lu:gridsize").value == 64  # the LoRA's training size
    run(at.button(key="lu:grid").click())
    assert not at.error, [e.value for e in at.error]
    # not a run's LoRA: a PNG in the studio home (its settings in its text), and no MLflow run
    grid = demo_home / "outputs" / "g_xy_grid.png"
    try:
        assert Image.open(grid).text["xy_grid.prompts"] == "sks | a dog"
        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert client.search_runs(experiments) == []
        assert any(str(grid) in s.value for s in at.success)
        assert len(at.get("download_button")) == 1
    finally:
        grid.unlink(missing_ok=True)  # the demo home is shared by the session's tests


def studio_job(jobs: Path, run_id: str, name: str, rank: int, seed: int) -> Path:
    """A job folder as the studio and trainer leave it: job.json, the final LoRA and one
    checkpoint (its LoRA beside the resume state: lora_state.safetensors, training_state.pt)."""
    job = jobs / run_id
    (job / "lora").mkdir(parents=True)
    write_job(job, pid=1, run_id=run_id, started=0.0, command=["x"], config_path="c", name=name)
    kohya_file(job / "lora" / f"{name}.safetensors", rank, seed)
    step = job / "checkpoints" / "step_00000010"
    (step / "lora").mkdir(parents=True)
    kohya_file(step / "lora" / f"{name}.safetensors", rank, seed + 1)
    save_file({"unet.a.lora_A.weight": torch.zeros(rank, 16)}, str(step / "lora_state.safetensors"))
    torch.save({"optimizer": {}}, step / "training_state.pt")
    return job


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_picker_lists_usable_loras_and_outputs_follow_the_pick(home: Path) -> None:
    jobs = home / "jobs"
    first = studio_job(jobs, "1111aaaa2222bbbb", "my_lora", 8, 0)
    second = studio_job(jobs, "3333cccc4444dddd", "my_lora", 6, 5)
    checkpoints_before = files_under(first / "checkpoints")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    run(at.switch_page("pages/utilities.py"))
    picker = at.selectbox(key="lu:main:pick")
    # Both runs are called my_lora: the short id tells them apart; no checkpoint internals.
    assert set(picker.options) == {
        "(none)",
        "my_lora · 1111aaaa · final · my_lora.safetensors",
        "my_lora · 1111aaaa · step 10 · my_lora.safetensors",
        "my_lora · 3333cccc · final · my_lora.safetensors",
        "my_lora · 3333cccc · step 10 · my_lora.safetensors",
    }
    checkpoint_lora = first / "checkpoints" / "step_00000010" / "lora" / "my_lora.safetensors"
    run(picker.set_value(str(checkpoint_lora)))
    expected = first / "outputs" / "my_lora_step10_resized.safetensors"
    assert at.text_input(key="lu:rout").value == str(expected)
    # Picking another LoRA moves every save-as proposal with it (the first pick no longer rules).
    final = first / "lora" / "my_lora.safetensors"
    run(at.selectbox(key="lu:main:pick").set_value(str(final)))
    assert at.text_input(key="lu:rout").value == str(
        first / "outputs" / "my_lora_resized.safetensors"
    )
    assert at.text_input(key="lu:out2").value == str(
        first / "outputs" / "my_lora_merged.safetensors"
    )
    assert at.text_input(key="lu:cout").value == str(
        first / "outputs" / "my_lora_webui.safetensors"
    )
    rank_field = at.number_input(key="lu:param:rank")
    assert rank_field.value == 4 and isinstance(rank_field.value, int)  # shown "4", not "4.00"
    run(rank_field.set_value(3))
    run(at.button(key="lu:resize").click())
    out = first / "outputs" / "my_lora_resized.safetensors"
    assert any(f"{out}: mean rank 3. The resized LoRA" in s.value for s in at.success), [
        s.value for s in at.success
    ]
    assert lora_tools.inspect(out)["ranks"] == {3: 2}
    assert lora_tools.load(out).metadata["resized"] == "rank=3"
    assert files_under(first / "checkpoints") == checkpoints_before
    run(at)  # the next rerun lists what was made (the picker is drawn before the button)
    assert "my_lora · 1111aaaa · outputs · my_lora_resized.safetensors" in (
        at.selectbox(key="lu:main:pick").options
    )
    # A typed path after a pick wins, and the proposal follows it too.
    other = second / "lora" / "my_lora.safetensors"
    run(at.text_input(key="lu:main:path").set_value(str(other)))
    assert at.selectbox(key="lu:main:pick").value == ""
    assert "rank 6 in 2 layers · alpha 3 in 2 layers" in [m.value for m in at.markdown]
    assert at.text_input(key="lu:rout").value == str(
        second / "outputs" / "my_lora_resized.safetensors"
    )


def test_a_typed_save_as_path_stays_while_the_same_lora_is_chosen(home: Path) -> None:
    job = studio_job(home / "jobs", "5555eeee6666ffff", "mine", 4, 2)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    run(at.switch_page("pages/utilities.py"))
    run(at.selectbox(key="lu:main:pick").set_value(str(job / "lora" / "mine.safetensors")))
    run(at.text_input(key="lu:rout").set_value(str(home / "elsewhere.safetensors")))
    run(at.selectbox(key="lu:method").set_value("sv_ratio"))
    assert at.text_input(key="lu:rout").value == str(home / "elsewhere.safetensors")


def test_ranks_and_alphas_read_as_words() -> None:
    from ui.lora_utilities import rank_summary

    assert rank_summary({16: 32}, {8.0: 32}) == "rank 16 in 32 layers · alpha 8 in 32 layers"
    # Mixed ranks: the most common first; one layer is "1 layer"; a fractional alpha as written.
    assert rank_summary({4: 1, 16: 30, 8: 1}, {0.5: 1, 16.0: 31}) == (
        "rank 16 in 30 layers, rank 4 in 1 layer, rank 8 in 1 layer · "
        "alpha 16 in 31 layers, alpha 0.5 in 1 layer"
    )
    assert rank_summary({}, {}) == "no LoRA layers"
