"""The utilities page in AppTest: inspect, resize and merge a LoRA file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from trainer.lora import tools as lora_tools

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
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path / "home"


def run(target) -> AppTest:
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_inspect_resize_and_merge(home: Path, tmp_path: Path) -> None:
    a = kohya_file(tmp_path / "a.safetensors", 8, 0)
    b = kohya_file(tmp_path / "b.safetensors", 4, 1)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    run(at.switch_page("pages/utilities.py"))
    assert "Choose a LoRA file" in at.info[0].value
    run(at.text_input(key="lu:main:path").set_value(str(a)))
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Layout": "kohya", "Modules": "2", "Ranks": "8×2", "Alphas": "4×2"}
    run(at.number_input(key="lu:param:rank").set_value(3.0))
    run(at.button(key="lu:resize").click())
    out = tmp_path / "a_resized.safetensors"
    assert any("mean rank 3.00" in s.value for s in at.success)
    assert lora_tools.inspect(out)["ranks"] == {3: 2}
    run(at.text_input(key="lu:other:path").set_value(str(b)))
    run(at.number_input(key="lu:w2").set_value(0.5))
    run(at.button(key="lu:merge").click())
    merged = lora_tools.load(tmp_path / "a_merged.safetensors")
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
    assert lora_tools.inspect(tmp_path / "g_webui.safetensors")["layout"] == "kohya"
    at.text_area(key="lu:gridprompts").set_value("sks\na dog")
    at.number_input(key="lu:gridsteps").set_value(2)
    run(at.number_input(key="lu:gridsize").set_value(64))
    run(at.button(key="lu:grid").click())
    assert not at.error, [e.value for e in at.error]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("xy_grids").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["prompts"] == "sks | a dog"
    assert [a.path for a in client.list_artifacts(runs[0].info.run_id)] == ["xy_grid.png"]
