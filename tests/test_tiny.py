"""The tiny offline demo pipelines and dataset: loadable, usable, deterministic, built once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from trainer.demo import tiny
from trainer.demo.dataset import build_demo_dataset

PIPELINE_CLASSES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
}
SD_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
FLUX_EXTRA_TARGETS = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each tiny pipeline built once for the session (plain build, no demo-home machinery)."""
    root = tmp_path_factory.mktemp("tiny_pipelines")
    return {arch: tiny.build_tiny_pipeline(arch, root / arch) for arch in tiny.DEMO_ARCHS}


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A studio home with every demo built through build_all, shared by the read-only tests."""
    home = tmp_path_factory.mktemp("studio_home")
    tiny.build_all(home)
    return home


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _load(folder: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _safetensors_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*.safetensors"))}


def _tree_fingerprint(folder: Path) -> dict[str, tuple[int, int]]:
    # Inode + mtime: a rebuild replaces files, so either changes even within one clock tick.
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


# ---------------------------------------------------------------- pipelines


@pytest.mark.parametrize("arch", tiny.DEMO_ARCHS)
def test_pipeline_loads_offline_and_generates(arch: str, built: dict[str, Path], offline) -> None:
    pipe = _load(built[arch])
    assert type(pipe).__name__ == PIPELINE_CLASSES[arch]
    denoiser = pipe.transformer if arch == "flux" else pipe.unet
    assert {p.dtype for p in denoiser.parameters()} == {torch.float32}

    extra = {"max_sequence_length": 32} if arch == "flux" else {}
    image = pipe(
        "a photo of sks red circle on a blue background",
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        **extra,
    ).images[0]

    pixels = np.asarray(image, dtype=np.float32)
    assert image.size == (64, 64)
    assert pixels.std() > 1.0, "a constant image means the pipeline is not really running"


def test_pipeline_folders_are_small(built: dict[str, Path]) -> None:
    for arch, folder in built.items():
        size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
        assert 0.5 < size_mb < 15, f"{arch} is {size_mb:.1f} MB"


def test_sd_unets_have_lora_and_locon_targets(built: dict[str, Path], offline) -> None:
    for arch in ("sd15", "sdxl"):
        names = dict(_load(built[arch]).unet.named_modules())
        for target in SD_LORA_TARGETS:
            assert any(n.endswith("." + target) for n in names), f"{arch} lacks {target}"
        convs = [n for n, m in names.items() if isinstance(m, torch.nn.Conv2d)]
        assert any(".resnets." in n for n in convs), f"{arch} has no resnet conv for LoCon"


def test_flux_transformer_has_lora_targets_and_guidance(built: dict[str, Path], offline) -> None:
    transformer = _load(built["flux"]).transformer
    names = [n for n, _ in transformer.named_modules()]
    for target in (*SD_LORA_TARGETS, *FLUX_EXTRA_TARGETS):
        assert any(n.endswith("." + target) for n in names), f"flux lacks {target}"
    assert len(transformer.transformer_blocks) == 1
    assert len(transformer.single_transformer_blocks) == 1
    assert transformer.config.guidance_embeds is True


def test_sdxl_config_rules_hold(built: dict[str, Path], offline) -> None:
    pipe = _load(built["sdxl"])
    te1, te2, unet = pipe.text_encoder.config, pipe.text_encoder_2.config, pipe.unet.config
    assert te1.hidden_size != te2.hidden_size, "equal widths would hide encoder mix-ups"
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    assert unet.projection_class_embeddings_input_dim == (
        6 * unet.addition_time_embed_dim + te2.projection_dim
    )
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.config.force_zeros_for_empty_prompt is True
    assert pipe.vae_scale_factor == 8


def test_flux_config_rules_hold(built: dict[str, Path], offline) -> None:
    pipe = _load(built["flux"])
    transformer, vae = pipe.transformer.config, pipe.vae.config
    assert transformer.in_channels == 4 * vae.latent_channels
    assert sum(transformer.axes_dims_rope) == transformer.attention_head_dim
    assert transformer.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert transformer.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert vae.shift_factor is not None and vae.scaling_factor != 0.18215
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"


def test_tokenizers_match_text_encoders(built: dict[str, Path], offline) -> None:
    pipe = _load(built["flux"])
    clip, clip_config = pipe.tokenizer, pipe.text_encoder.config
    ids = clip("sks").input_ids
    # CLIP pools at the eos token, so the model's ids must be the tokenizer's.
    assert ids[0] == clip.bos_token_id == clip_config.bos_token_id
    assert ids[-1] == clip.eos_token_id == clip_config.eos_token_id
    assert len(ids) == 3, "the trigger word should be a single token"
    assert max(clip.get_vocab().values()) < clip_config.vocab_size
    assert clip.model_max_length == 77

    t5 = pipe.tokenizer_2
    text = "a photo of sks Zebra 42!"
    t5_ids = t5(text).input_ids
    assert t5_ids[-1] == t5.eos_token_id == 1
    assert t5.unk_token_id not in t5_ids, "letters and digits must always be covered"
    assert t5.decode(t5_ids, skip_special_tokens=True) == text
    assert len(t5.get_vocab()) <= pipe.text_encoder_2.config.vocab_size


@pytest.mark.parametrize("arch", tiny.DEMO_ARCHS)
def test_builds_are_bit_identical(arch: str, built: dict[str, Path], tmp_path: Path) -> None:
    again = tiny.build_tiny_pipeline(arch, tmp_path / arch)
    first, second = _safetensors_files(built[arch]), _safetensors_files(again)
    assert first.keys() == second.keys() and len(first) >= 3
    for name, path in first.items():
        a, b = load_file(path), load_file(second[name])
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{arch}/{name}:{key} differs between builds"


def test_seed_changes_weights(built: dict[str, Path], tmp_path: Path) -> None:
    other = tiny.build_tiny_pipeline("sd15", tmp_path / "sd15", seed=1)
    rel = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(built["sd15"] / rel), load_file(other / rel)
    assert not torch.equal(a["conv_in.weight"], b["conv_in.weight"])


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sd15, sdxl, flux"):
        tiny.build_tiny_pipeline("sd3", tmp_path / "x")


# ---------------------------------------------------------------- dataset


def test_demo_dataset_has_captioned_images_in_several_ratios(tmp_path: Path) -> None:
    folder = build_demo_dataset(tmp_path / "ds")
    images = sorted(folder.glob("*.png"))
    assert len(images) >= 12
    ratios = set()
    for path in images:
        caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        assert caption.startswith("a photo of sks "), caption
        with Image.open(path) as image:
            assert image.mode == "RGB"
            ratios.add(round(image.width / image.height, 3))
            assert np.asarray(image).std() > 1.0, f"{path.name} is a flat colour"
    assert len(ratios) >= 2


def test_demo_dataset_is_deterministic_and_seeded(tmp_path: Path) -> None:
    def contents(seed: int, name: str) -> dict[str, bytes]:
        folder = build_demo_dataset(tmp_path / name, seed=seed, count=6)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    first = contents(0, "a")
    assert len(first) == 12  # 6 images + 6 captions
    assert contents(0, "b") == first
    assert contents(1, "c") != first


# ---------------------------------------------------------------- demo home


def test_build_all_lays_out_the_home(demo_home: Path) -> None:
    paths = tiny.build_all(demo_home)
    assert set(paths) == {*tiny.DEMO_ARCHS, "dataset"}
    assert tiny.demo_root(demo_home) == demo_home / "models" / "demo"
    for arch in tiny.DEMO_ARCHS:
        assert paths[arch] == demo_home / "models" / "demo" / arch
        assert (paths[arch] / "model_index.json").is_file()
    assert paths["dataset"] == demo_home / "datasets" / "demo"
    assert len(list(paths["dataset"].glob("*.png"))) >= 12
    for path in paths.values():
        marker = path / tiny.MARKER_NAME
        assert marker.read_text(encoding="utf-8").strip() == tiny.DEMO_VERSION


def test_ensure_demo_does_not_rebuild(demo_home: Path) -> None:
    for what in (*tiny.DEMO_ARCHS, "dataset"):
        folder = tiny.ensure_demo(demo_home, what)
        before = _tree_fingerprint(folder)
        assert tiny.ensure_demo(demo_home, what) == folder
        assert _tree_fingerprint(folder) == before, f"{what} was rebuilt"


def test_resolve_demo_ref(demo_home: Path) -> None:
    assert tiny.resolve_demo_ref("demo:sd15", demo_home) == str(demo_home / "models/demo/sd15")
    assert tiny.resolve_demo_ref("demo:flux", demo_home) == str(demo_home / "models/demo/flux")
    assert tiny.resolve_demo_ref("demo:dataset", demo_home) == str(demo_home / "datasets/demo")
    for passthrough in ("runwayml/stable-diffusion-v1-5", "/models/x.safetensors", "demo"):
        assert tiny.resolve_demo_ref(passthrough, demo_home) == passthrough


def test_resolve_demo_ref_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as excinfo:
        tiny.resolve_demo_ref("demo:xyz", tmp_path)
    message = str(excinfo.value)
    assert "demo:xyz" in message
    for valid in ("demo:sd15", "demo:sdxl", "demo:flux", "demo:dataset"):
        assert valid in message
    assert not (tmp_path / "models").exists(), "nothing should be built for a bad name"


@pytest.mark.parametrize("marker_text", [None, "tiny-v0-old"])
def test_incomplete_or_stale_folder_is_rebuilt(tmp_path: Path, marker_text: str | None) -> None:
    target = tiny.demo_root(tmp_path) / "sd15"
    target.mkdir(parents=True)
    (target / "junk.bin").write_bytes(b"half written")
    if marker_text is not None:
        (target / tiny.MARKER_NAME).write_text(marker_text)

    folder = tiny.ensure_demo(tmp_path, "sd15")

    assert folder == target
    assert not (target / "junk.bin").exists()
    assert (target / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (target / tiny.MARKER_NAME).read_text().strip() == tiny.DEMO_VERSION
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".sd15.")) == [
        ".sd15.lock"
    ], "temporary build folders were left behind"


def test_crashed_build_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(out_dir: Path, seed: int = 0, count: int = 12) -> Path:
        (Path(out_dir) / "img_000.png").write_bytes(b"partial")
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(tiny, "build_demo_dataset", crash)
        with pytest.raises(RuntimeError, match="disk full"):
            tiny.ensure_demo(tmp_path, "dataset")
    datasets = tmp_path / "datasets"
    assert [p.name for p in datasets.iterdir()] == [".demo.lock"]

    folder = tiny.ensure_demo(tmp_path, "dataset")
    assert len(list(folder.glob("*.png"))) >= 12


def test_racing_callers_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_build = tiny.build_demo_dataset
    calls: list[int] = []

    def slow_build(out_dir: Path, seed: int = 0, count: int = 12) -> Path:
        calls.append(1)
        time.sleep(0.2)  # widen the window in which the others arrive
        return real_build(out_dir, seed, count)

    monkeypatch.setattr(tiny, "build_demo_dataset", slow_build)
    results: list[Path] = []
    # flock locks belong to open file descriptions, so threads contend just like processes.
    threads = [
        threading.Thread(target=lambda: results.append(tiny.ensure_demo(tmp_path, "dataset")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(calls) == 1
    assert results == [tmp_path / "datasets" / "demo"] * 4
    assert len(list(results[0].glob("*.png"))) >= 12
