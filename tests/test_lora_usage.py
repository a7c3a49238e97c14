"""A LoRA ready to use (issue 17, item 4): the model card, the diffusers script and the ComfyUI
workflow written beside the final LoRA, as MLflow artifacts and in a Hub upload.

One tiny SD1.5 demo run (3 steps, previews at steps 0 and 3) trains in this process into a SQLite
MLflow store; its diffusers script is executed and must make the run's last preview exactly.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from huggingface_hub import ModelCard
from options_support import run, tiny_config
from PIL import Image

pytest_plugins = ["hub_server"]  # the fixtures: hub_server, hub_env

from hub_server import GATED_REPO, PUBLIC_REPO, HubEnv  # noqa: E402

from trainer.config.schema import TrainingConfig  # noqa: E402
from trainer.lora import hub as lora_hub  # noqa: E402
from trainer.lora.card import ValidationSummary, base_model_licence  # noqa: E402
from trainer.lora.recipes import BaseModel, preview_recipes  # noqa: E402
from trainer.lora.usage import (  # noqa: E402
    CARD_NAME,
    SNIPPET_NAME,
    WORKFLOW_NAME,
    comfyui_workflow,
    diffusers_snippet,
    write_usage_files,
)

CONFIG = """\
name: ready
model: {arch: sd15, name_or_path: "demo:sd15"}
network: {linear: 4, linear_alpha: 4}
datasets: [{folder_path: "demo:dataset", trigger_word: sks, resolution: [64]}]
train: {steps: 3, batch_size: 2, lr: 1.0e-2, optimizer: adamw, gradient_checkpointing: false}
sample:
  sample_every: 3
  sample_steps: 3
  width: 64
  height: 64
  seed: 11
  neg: blurry
  prompts: ["a photo of [trigger] red circle", {prompt: "[trigger] square", seed: 5}]
save: {save_every: 100, dtype: fp32, save_format: webui}
"""

# ComfyUI's node definitions (nodes.py, comfy_extras/nodes_flux.py): the inputs each class
# requires and the types of its outputs, by index.
COMFY_NODES: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "CheckpointLoaderSimple": ({"ckpt_name"}, ("MODEL", "CLIP", "VAE")),
    "UNETLoader": ({"unet_name", "weight_dtype"}, ("MODEL",)),
    "DualCLIPLoader": ({"clip_name1", "clip_name2", "type"}, ("CLIP",)),
    "VAELoader": ({"vae_name"}, ("VAE",)),
    "LoraLoader": (
        {"model", "clip", "lora_name", "strength_model", "strength_clip"},
        ("MODEL", "CLIP"),
    ),
    "CLIPTextEncode": ({"text", "clip"}, ("CONDITIONING",)),
    "FluxGuidance": ({"conditioning", "guidance"}, ("CONDITIONING",)),
    "EmptyLatentImage": ({"width", "height", "batch_size"}, ("LATENT",)),
    "KSampler": (
        {
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        },
        ("LATENT",),
    ),
    "VAEDecode": ({"samples", "vae"}, ("IMAGE",)),
    "SaveImage": ({"images", "filename_prefix"}, ()),
}
# The type each linked input expects.
LINK_TYPES = {
    "model": "MODEL",
    "clip": "CLIP",
    "vae": "VAE",
    "positive": "CONDITIONING",
    "negative": "CONDITIONING",
    "conditioning": "CONDITIONING",
    "latent_image": "LATENT",
    "samples": "LATENT",
    "images": "IMAGE",
}
COMFY_SAMPLER_NAMES = {"euler", "euler_ancestral", "dpmpp_2m", "ddpm"}
COMFY_SCHEDULER_NAMES = {"normal", "karras", "exponential", "sgm_uniform", "simple", "beta"}


def check_api_prompt(workflow: dict[str, Any]) -> dict[str, str]:
    """Fail unless ``workflow`` is a ComfyUI API prompt whose nodes and links fit the node
    definitions above; returns node id -> class_type."""
    classes = {}
    for node_id, node in workflow.items():
        assert set(node) >= {"class_type", "inputs"}, node_id
        required, _ = COMFY_NODES[node["class_type"]]
        assert required <= set(node["inputs"]), (node_id, required - set(node["inputs"]))
        classes[node_id] = node["class_type"]
    for node_id, node in workflow.items():
        for name, value in node["inputs"].items():
            if name not in LINK_TYPES:
                assert not isinstance(value, list), (node_id, name)
                continue
            assert isinstance(value, list) and len(value) == 2, (node_id, name, value)
            source, index = value
            assert source in workflow, (node_id, name, source)
            outputs = COMFY_NODES[classes[source]][1]
            assert 0 <= index < len(outputs), (node_id, name, value)
            assert outputs[index] == LINK_TYPES[name], (node_id, name, outputs[index])
    return classes


def of_class(workflow: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    return [node for node in workflow.values() if node["class_type"] == class_type]


@dataclass
class Finished:
    run_id: str
    job_dir: Path
    uri: str
    cfg: TrainingConfig


@pytest.fixture(scope="module")
def finished(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Finished:
    from trainer.config.io import loads_config
    from trainer.engine.run import run_job

    root = tmp_path_factory.mktemp("usage")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    (root / "c.yaml").write_text(CONFIG)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_HOME", str(demo_home))
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        result = run_job(root / "c.yaml", job_dir=root / "job", tracking_uri=uri)
    assert result.status == "FINISHED", result.message
    return Finished(result.run_id, root / "job", uri, loads_config(CONFIG))


def last_preview(finished: Finished, key: str = "sample_0") -> Image.Image:
    from trainer.tracking.artifacts import sample_images

    images = [s for s in sample_images(finished.uri, finished.run_id) if s.key == key]
    last = max(images, key=lambda s: s.step)
    assert last.step == 3
    return Image.open(last.path_or_uri).convert("RGB")


def test_the_diffusers_script_makes_the_runs_last_preview_exactly(
    finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = finished.job_dir / "lora" / SNIPPET_NAME
    monkeypatch.chdir(tmp_path)
    namespace = {"__file__": str(script), "__name__": "__main__"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)  # as `python script`
    made = np.asarray(Image.open(tmp_path / "ready_preview.png").convert("RGB"))
    preview = np.asarray(last_preview(finished))
    assert made.shape == preview.shape == (64, 64, 3)
    assert np.array_equal(made, preview)
    # The other prompt's preview differs: the comparison can tell images apart.
    assert not np.array_equal(made, np.asarray(last_preview(finished, "sample_1")))
    assert namespace["NEGATIVE_PROMPT"] == "blurry" and namespace["SEED"] == 11


def test_the_script_finds_the_lora_saved_loose_beside_it_as_the_monitor_names_it(
    finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A browser saves both downloads loose in one folder, under the Monitor's file names.
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    script = downloads / SNIPPET_NAME
    shutil.copyfile(finished.job_dir / "lora" / SNIPPET_NAME, script)
    text = script.read_text()
    assert "put it next to this script" in text and "LORA_WEIGHTS = 'ready.safetensors'" in text
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"Put ready\.safetensors next to this script"):
        exec(compile(text, str(script), "exec"), {"__file__": str(script)})  # no LoRA yet
    shutil.copyfile(
        finished.job_dir / "lora" / "ready.safetensors", downloads / "ready.safetensors"
    )
    exec(compile(text, str(script), "exec"), {"__file__": str(script), "__name__": "__main__"})
    made = np.asarray(Image.open(tmp_path / "ready_preview.png").convert("RGB"))
    assert np.array_equal(made, np.asarray(last_preview(finished)))


def test_the_model_card_names_base_model_trigger_licence_settings_and_samples(
    finished: Finished,
) -> None:
    folder = finished.job_dir / "lora"
    card = ModelCard.load(folder / CARD_NAME)
    data = card.data
    assert data.base_model == "demo:sd15"
    assert data.instance_prompt == "sks"
    assert data.license == "other" and data.license_name == "unknown"  # a local demo model
    assert {"lora", "diffusers", "text-to-image", "stable-diffusion"} <= set(data.tags)
    widget = data.widget
    assert [w["text"] for w in widget] == ["a photo of sks red circle", "sks square"]
    assert widget[0]["parameters"]["negative_prompt"] == "blurry"
    for entry, key in zip(widget, ("sample_0", "sample_1"), strict=True):
        shown = np.asarray(Image.open(folder / entry["output"]["url"]).convert("RGB"))
        assert np.array_equal(shown, np.asarray(last_preview(finished, key)))  # step 3's round
    body = card.text
    assert "`` sks ``" in body and "rank 4, alpha 4" in body and "adamw" in body
    assert "0.01 (constant)" in body and "| resolution | 64 |" in body
    assert "](samples/sample_0.png)" in body
    assert str(finished.job_dir.parent) not in str(card)  # no local path in a card for sharing
    assert "LORA_WEIGHTS = 'ready.safetensors'" in body
    assert "load_lora_weights(str(LORA_PATH.parent), weight_name=LORA_PATH.name" in body


def test_the_comfyui_workflow_is_an_api_prompt_with_the_previews_settings(
    finished: Finished,
) -> None:
    workflow = json.loads((finished.job_dir / "lora" / WORKFLOW_NAME).read_text())
    classes = check_api_prompt(workflow)
    assert sorted(classes.values()) == sorted(
        [
            "CheckpointLoaderSimple",
            "LoraLoader",
            "CLIPTextEncode",
            "CLIPTextEncode",
            "EmptyLatentImage",
            "KSampler",
            "VAEDecode",
            "SaveImage",
        ]
    )
    (lora,) = of_class(workflow, "LoraLoader")
    assert lora["inputs"]["lora_name"] == "ready.safetensors"
    assert lora["inputs"]["strength_model"] == lora["inputs"]["strength_clip"] == 1.0
    (sampler,) = of_class(workflow, "KSampler")
    inputs = sampler["inputs"]
    assert (inputs["seed"], inputs["steps"], inputs["cfg"]) == (11, 3, 7.0)
    assert (inputs["sampler_name"], inputs["scheduler"]) == ("euler", "normal")
    texts = {workflow[inputs[side][0]]["inputs"]["text"] for side in ("positive", "negative")}
    assert texts == {"a photo of sks red circle", "blurry"}
    (latent,) = of_class(workflow, "EmptyLatentImage")
    assert (latent["inputs"]["width"], latent["inputs"]["height"]) == (64, 64)
    # The positive prompt reaches the sampler through the LoRA's CLIP, not the bare checkpoint's.
    assert workflow[inputs["positive"][0]]["inputs"]["clip"][0] in {
        i for i, c in classes.items() if c == "LoraLoader"
    }


def test_the_usage_files_are_mlflow_artifacts_of_the_run(finished: Finished) -> None:
    from trainer.tracking.artifacts import fetch_artifact, lora_artifacts

    stored = set(lora_artifacts(finished.uri, finished.run_id))
    wanted = {f"lora/{name}" for name in (CARD_NAME, SNIPPET_NAME, WORKFLOW_NAME)}
    wanted |= {"lora/samples/sample_0.png", "lora/samples/sample_1.png", "lora/ready.safetensors"}
    assert wanted <= stored
    for name in (CARD_NAME, SNIPPET_NAME, WORKFLOW_NAME):
        logged = fetch_artifact(finished.uri, finished.run_id, f"lora/{name}")
        assert logged.read_bytes() == (finished.job_dir / "lora" / name).read_bytes()


# --------------------------------------------------------------------------- pure generators
def _cfg(arch: str = "sd15", **sample: Any) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "name": "x",
            "model": {"arch": arch, "name_or_path": "demo:" + arch},
            "network": {"linear": 8, "linear_alpha": 8},
            "datasets": [{"folder_path": "demo:dataset", "trigger_word": "zk"}],
            "train": {"steps": 10},
            "sample": {"prompts": ["[trigger] cat", {"prompt": "dog", "width": 96}], **sample},
        }
    )


def test_recipes_resolve_like_the_previews() -> None:
    walked = preview_recipes(_cfg(walk_seed=True, seed=100, network_multiplier=0.7))
    assert [(r.prompt, r.seed, r.width) for r in walked] == [("zk cat", 100, 512), ("dog", 101, 96)]
    assert walked[0].lora_scale == 0.7 and walked[0].sampler == "euler"
    assert walked[0].guidance_scale == 7.0  # 'auto': SD1.5's default
    flux = preview_recipes(_cfg("flux"))[0]
    assert (flux.sampler, flux.guidance_scale) == ("flowmatch", 3.5)
    bare = _cfg(prompts=[])
    assert [r.prompt for r in preview_recipes(bare)] == ["zk"]  # no prompts: the trigger word


def test_flux_workflow_loads_parts_separately_and_guides_through_flux_guidance() -> None:
    cfg = _cfg("flux", network_multiplier=0.8)
    base = BaseModel("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-dev", on_hub=True)
    workflow = comfyui_workflow(cfg, preview_recipes(cfg)[0], base, "x.safetensors")
    classes = set(check_api_prompt(workflow).values())
    assert {"UNETLoader", "DualCLIPLoader", "VAELoader", "FluxGuidance"} <= classes
    assert "CheckpointLoaderSimple" not in classes
    (sampler,) = of_class(workflow, "KSampler")
    assert sampler["inputs"]["cfg"] == 1.0 and sampler["inputs"]["scheduler"] == "simple"
    assert workflow[sampler["inputs"]["positive"][0]]["class_type"] == "FluxGuidance"
    assert of_class(workflow, "FluxGuidance")[0]["inputs"]["guidance"] == 3.5
    assert of_class(workflow, "LoraLoader")[0]["inputs"]["strength_model"] == 0.8
    assert of_class(workflow, "UNETLoader")[0]["inputs"]["unet_name"] == "FLUX.1-dev.safetensors"


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_each_architectures_script_is_valid_python_for_its_pipeline(arch: str) -> None:
    cfg = _cfg(arch, network_multiplier=0.5, **({} if arch == "flux" else {"neg": "bad"}))
    base = BaseModel("me/base", "me/base", revision="abc123", on_hub=True)
    text = diffusers_snippet(cfg, preview_recipes(cfg)[0], base, "x.safetensors", "me/lora")
    compile(text, SNIPPET_NAME, "exec")
    pipeline = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}
    assert f"{pipeline.get(arch, 'FluxPipeline')}.from_pretrained(" in text
    assert "revision='abc123'" in text and "LORA = 'me/lora'" in text
    assert "set_adapters" in text and "LORA_SCALE = 0.5" in text
    assert ("add_watermarker=False" in text) == (arch == "sdxl")  # a watermark changes pixels
    assert ("negative_prompt=" in text) == (arch != "flux")  # Flux previews take none


def test_a_diffusers_layout_lora_gets_its_card_above_its_folder(
    tmp_path: Path, demo_home: Path
) -> None:
    weights = tmp_path / "lora" / "x" / "pytorch_lora_weights.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"")
    written = write_usage_files(weights, _cfg(), step=10, home=demo_home)
    assert {p.name for p in written} == {CARD_NAME, SNIPPET_NAME, WORKFLOW_NAME}
    assert all(p.parent == tmp_path / "lora" for p in written)
    script = written[1].read_text()  # the download's name first, then the job folder's place
    assert "LORA_WEIGHTS = 'x_diffusers.safetensors'" in script
    assert "LORA_PATH = LORA_PATH.parent / 'x/pytorch_lora_weights.safetensors'" in script
    namespace = {"__file__": str(written[1])}
    exec(script.split("PROMPT = ", 1)[0].split("import torch", 1)[1], {"Path": Path}, namespace)
    assert namespace["LORA_PATH"] == weights  # run where the job folder keeps it: found
    workflow = json.loads((tmp_path / "lora" / WORKFLOW_NAME).read_text())
    assert of_class(workflow, "LoraLoader")[0]["inputs"]["lora_name"] == "x_diffusers.safetensors"
    assert "This run made no previews." in (tmp_path / "lora" / CARD_NAME).read_text()


def _card_code(card_text: str) -> str:
    return card_text.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_card_and_its_script_agree_on_what_it_makes_and_the_base_model(
    finished: Finished, demo_home: Path
) -> None:
    folder = finished.job_dir / "lora"
    card, script = (folder / CARD_NAME).read_text(), (folder / SNIPPET_NAME).read_text()
    assert "makes the run's first preview of step 3 again" in card
    assert "it makes the run's first preview of step 3 again" in " ".join(script.split())
    shown, downloaded = _card_code(card).splitlines(), script.rstrip().splitlines()
    differ = [(a, b) for a, b in zip(shown, downloaded, strict=True) if a != b]
    assert len(differ) == 1 and differ[0][0].startswith("BASE_MODEL = 'demo:sd15'")
    assert differ[0][1].startswith(f"BASE_MODEL = '{demo_home}")  # the demo model's folder
    assert "the downloaded script has its path on the machine that trained it" in card
    assert "## Validation" not in card  # the run scored no validation images


def test_the_card_reports_the_validation_loss_and_the_best_checkpoint(
    demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        validation={"holdout": 2, "every": 1}, train={"steps": 4}, save={"save_every": 2}
    )
    outcome, tracker = run(cfg, demo_home, tmp_path / "job")
    best_step, best_loss = (
        int(tracker.tags["studio.best_step"]),
        tracker.tags["studio.best_val_loss"],
    )
    card = ModelCard.load(outcome.lora_files[0].parent / CARD_NAME).text
    section = card.split("## Validation\n\n", 1)[1].split("\n## ", 1)[0]
    assert section.startswith("2 validation images, held out of the training images and never")
    best = f"The best checkpoint by validation loss is step {best_step} ({float(best_loss):.4f})"
    assert best in section
    final = tracker.metrics[4]["val_loss"]
    assert (": this LoRA." in section) == (best_step == 4)
    if best_step != 4:
        assert f"this LoRA (step 4) scored {final:.4f}." in section


def test_a_checkpoint_made_final_gets_its_own_validation_loss_on_the_card(
    tmp_path: Path, demo_home: Path
) -> None:
    lora = tmp_path / "lora" / "x.safetensors"
    lora.parent.mkdir()
    lora.write_bytes(b"")
    summary = ValidationSummary(3, False, {2: 0.91234, 4: 0.87654}, (4, 0.87654))
    (tmp_path / "validation.json").write_text(json.dumps(summary.to_json()))
    assert ValidationSummary.read(tmp_path) == summary  # what the job folder keeps
    write_usage_files(lora, _cfg(), step=2, home=demo_home, validation=summary)
    card = (tmp_path / "lora" / CARD_NAME).read_text()
    assert "3 validation images, from a separate validation folder" in card
    assert "is step 4 (0.8765); this LoRA (step 2) scored 0.9123." in card
    assert "makes the run's first preview of step 2 again" in card
    assert ValidationSummary.read(tmp_path / "lora") is None  # none there


# ------------------------------------------------------------------------------ licence, Hub
def test_the_licence_comes_from_the_base_models_hub_page(hub_env: HubEnv) -> None:
    public = base_model_licence(_cfg().model_copy(update={"model": _model(PUBLIC_REPO)}))
    assert public.license == "openrail" and public.name is None
    gated = base_model_licence(_cfg().model_copy(update={"model": _model(GATED_REPO)}))
    assert gated.license == "other" and gated.link.endswith(GATED_REPO)


def test_offline_the_licence_is_unknown_and_points_at_the_page() -> None:
    offline = base_model_licence(_cfg().model_copy(update={"model": _model("someone/model")}))
    assert (offline.license, offline.name) == ("other", "unknown")
    assert offline.link.endswith("/someone/model") and "offline" in offline.note


def _model(name: str) -> Any:
    return _cfg().model.model_copy(update={"name_or_path": name})


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: keeps the uploaded folder's card at upload time."""

    uploads: list[dict[str, Any]] = []  # noqa: RUF012 - one list for the test

    def __init__(self, token: str | None = None) -> None:
        pass

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        pass

    def upload_folder(self, *, folder_path: str, repo_id: str, **kwargs: Any) -> None:
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        card = folder / CARD_NAME
        text = card.read_text() if card.is_file() else None
        RecordingHfApi.uploads.append({"repo_id": repo_id, "files": files, "card": text})


def test_push_to_hub_uploads_the_model_card(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    RecordingHfApi.uploads = []
    save = {"push_to_hub": True, "hf_repo_id": "me/my-lora"}
    cfg = tiny_config(train={"steps": 1}, save=save)
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    (upload,) = RecordingHfApi.uploads
    assert {CARD_NAME, SNIPPET_NAME, WORKFLOW_NAME, "t.safetensors"} <= set(upload["files"])
    card = ModelCard(upload["card"])
    assert card.data.instance_prompt == "sks" and card.data.license == "other"
    assert card.data.base_model is None  # a local base model: the Hub would refuse its name
    assert "LORA = 'me/my-lora'" in card.text  # the card's script loads the LoRA from the Hub
    # A folder without a card (uploaded by hand) gets one before the upload.
    (outcome.lora_files[0].parent / CARD_NAME).unlink()
    lora_hub.push_lora_folder(outcome.lora_files[0].parent, cfg)
    assert ModelCard(RecordingHfApi.uploads[-1]["card"]).data.instance_prompt == "sks"


def test_the_monitor_offers_the_card_script_and_workflow_for_download(
    finished: Finished, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    # A studio home without the job folder: the files come from MLflow (a teammate's run).
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", finished.uri)
    at = AppTest.from_file(str(root / "streamlit_app.py"), default_timeout=60)
    at.session_state["monitor_run_id"] = finished.run_id
    at.switch_page("pages/monitor.py").run()
    assert not at.exception, at.exception
    buttons = {b.proto.label: b.key for b in at.get("download_button")}
    assert buttons["Model card"] == f"dlu_{finished.run_id}_{CARD_NAME}"
    assert buttons["diffusers script"] == f"dlu_{finished.run_id}_{SNIPPET_NAME}"
    assert buttons["ComfyUI workflow"] == f"dlu_{finished.run_id}_{WORKFLOW_NAME}"


def _usage_downloads(lora_dir: str, stored: list[str]) -> None:
    from pathlib import Path

    from trainer.settings import load_settings
    from ui.monitor_usage import render_usage_downloads

    render_usage_downloads(load_settings(), "run1", Path(lora_dir), stored)


def test_the_monitor_offers_the_job_folders_files_first(tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    (tmp_path / CARD_NAME).write_text("card")
    at = AppTest.from_function(_usage_downloads, args=(str(tmp_path), [])).run()
    assert [b.proto.label for b in at.get("download_button")] == ["Model card"]
    nothing = AppTest.from_function(_usage_downloads, args=(str(tmp_path / "none"), [])).run()
    assert not nothing.get("download_button") and not nothing.caption
