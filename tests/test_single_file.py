"""Local folders and single files (issue 14 item 4): what a folder lacks, single checkpoints.

The single files are made from the tiny demo pipelines in the layouts users download
(tests/single_file_support.py): SD1.5 / SDXL full checkpoints with original (LDM) names, a Flux
transformer-only file with Black Forest Labs' names (also under ``model.diffusion_model.`` and
in diffusers names). Each must load through ``load_arch`` with exactly the tiny model's weights
and train; the architecture read from its tensor names must agree.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_flux_transformer_checkpoint_to_diffusers,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from options_support import run, tiny_config
from safetensors.torch import load_file, save_file
from single_file_support import (
    flux_to_bfl,
    unet_to_ldm,
    vae_to_ldm,
    write_flux_transformer,
    write_sd15_checkpoint,
    write_sdxl_checkpoint,
)

from trainer.arch.registry import load_arch
from trainer.arch.single_file import (
    arch_mismatch,
    detect_checkpoint,
    flux_bfl_to_diffusers,
)
from trainer.arch.sources import ModelLoadError
from trainer.config.schema import TrainingConfig
from trainer.demo.tiny import ensure_demo
from trainer.models.components import (
    NotAPipelineFolder,
    component_problems,
    missing_components,
)

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent

# name -> (arch, layout, components in the file, key prefix of the denoiser)
FILES = {
    "sd15": ("sd15", "ldm", ("unet", "vae", "text_encoder"), "model.diffusion_model."),
    "sdxl": (
        "sdxl",
        "ldm",
        ("unet", "vae", "text_encoder", "text_encoder_2"),
        "model.diffusion_model.",
    ),
    "flux_bfl": ("flux", "bfl", ("transformer",), ""),
    "flux_bfl_prefixed": ("flux", "bfl", ("transformer",), "model.diffusion_model."),
    "flux_diffusers": ("flux", "diffusers", ("transformer",), ""),
}


@pytest.fixture(scope="module")
def single_files(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("single_files")
    demo = {arch: ensure_demo(demo_home, arch) for arch in ("sd15", "sdxl", "flux")}
    return {
        "sd15": write_sd15_checkpoint(demo["sd15"], out / "sd15.safetensors"),
        "sdxl": write_sdxl_checkpoint(demo["sdxl"], out / "sdxl.safetensors"),
        "flux_bfl": write_flux_transformer(demo["flux"], out / "flux1-tiny.safetensors"),
        "flux_bfl_prefixed": write_flux_transformer(
            demo["flux"], out / "flux1-prefixed.safetensors", prefix="model.diffusion_model."
        ),
        "flux_diffusers": write_flux_transformer(
            demo["flux"], out / "flux1-diffusers.safetensors", layout="diffusers"
        ),
    }


PIPELINES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
}


def file_config(file: Path, arch: str, **model: Any) -> TrainingConfig:
    """A config whose base model is ``file``, its components from the tiny demo folder."""
    base = {"arch": arch, "name_or_path": str(file), "components_from": f"demo:{arch}"}
    return TrainingConfig.model_validate(
        {"model": {**base, **model}, "network": {"linear": 4, "linear_alpha": 4}}
    )


def weights(folder: Path, component: str) -> dict[str, torch.Tensor]:
    return load_file(next((folder / component).glob("*.safetensors")))


def assert_same_weights(module: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert set(expected) <= set(state)
    different = [name for name, tensor in expected.items() if not torch.equal(state[name], tensor)]
    assert different == []


# ------------------------------------------------------------------ the test files themselves


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "flux"])
def test_ldm_files_come_back_unchanged_through_diffusers_converters(
    arch: str, demo_home: Path
) -> None:
    """The test files' original-layout names are what diffusers' converters expect."""
    folder = ensure_demo(demo_home, arch)
    vae = weights(folder, "vae")
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    back = convert_ldm_vae_checkpoint(vae_to_ldm(vae, vae_config), vae_config)
    assert set(back) == set(vae) and all(torch.equal(back[k], vae[k]) for k in vae)
    if arch != "flux":
        unet = weights(folder, "unet")
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
        back = convert_ldm_unet_checkpoint(unet_to_ldm(unet, unet_config), unet_config)
        assert set(back) == set(unet) and all(torch.equal(back[k], unet[k]) for k in unet)


def test_flux_bfl_conversion_matches_diffusers_at_full_width(demo_home: Path) -> None:
    """diffusers' converter only knows the 3072-wide FLUX.1 (so it cannot read the tiny file);
    at that width ours must give exactly its result. Only the split rows need the real size."""
    bfl = flux_to_bfl(weights(ensure_demo(demo_home, "flux"), "transformer"))
    width, mlp = 3072, 4 * 3072
    gen = torch.Generator().manual_seed(0)
    bfl["single_blocks.0.linear1.weight"] = torch.randn(3 * width + mlp, 2, generator=gen)
    bfl["single_blocks.0.linear1.bias"] = torch.randn(3 * width + mlp, generator=gen)
    for fused in ("img_attn.qkv", "txt_attn.qkv"):
        bfl[f"double_blocks.0.{fused}.weight"] = torch.randn(3 * width, 2, generator=gen)
        bfl[f"double_blocks.0.{fused}.bias"] = torch.randn(3 * width, generator=gen)
    ours = flux_bfl_to_diffusers(bfl, {"num_attention_heads": 24, "attention_head_dim": 128})
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert set(ours) == set(theirs)
    assert [k for k in theirs if not torch.equal(ours[k], theirs[k])] == []


# ------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("name", list(FILES))
def test_detection_reads_arch_layout_and_contents(name: str, single_files: dict) -> None:
    info = detect_checkpoint(single_files[name])
    assert (info.arch, info.layout, info.contains, info.prefix) == FILES[name]
    assert arch_mismatch(info, info.arch) is None


def test_detection_of_other_files(demo_home: Path, single_files: dict, tmp_path: Path) -> None:
    unet = next((ensure_demo(demo_home, "sdxl") / "unet").glob("*.safetensors"))
    assert detect_checkpoint(unet).arch == "sdxl" and detect_checkpoint(unet).layout == "diffusers"
    vae = next((ensure_demo(demo_home, "sd15") / "vae").glob("*.safetensors"))
    assert detect_checkpoint(vae).arch is None
    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attn.lora_down.weight": torch.zeros(2, 2)}, lora)
    assert detect_checkpoint(lora).layout == "lora"
    ckpt = tmp_path / "sd15.ckpt"  # a pickled original checkpoint, read with weights_only
    torch.save({"state_dict": load_file(single_files["sd15"])}, ckpt)
    assert detect_checkpoint(ckpt).arch == "sd15"
    assert detect_checkpoint(ckpt).contains == FILES["sd15"][2]


def test_a_mismatched_file_is_refused_with_the_warning(single_files: dict, demo_home: Path) -> None:
    """diffusers loads the tiny SDXL file into the SD1.5 pipeline without an error (as noise),
    so the trainer refuses it before diffusers is asked, with the warning and its fix."""
    info = detect_checkpoint(single_files["sdxl"])
    warning = arch_mismatch(info, "sd15")
    assert warning and "looks like an SDXL checkpoint (original layout)" in warning
    assert "but model.arch is sd15" in warning and "set model.arch to sdxl" in warning
    with pytest.raises(ModelLoadError) as err:
        load_arch(file_config(single_files["sdxl"], "sd15"), demo_home, CPU, torch.float32)
    assert str(err.value).endswith(warning)
    with pytest.raises(ModelLoadError, match=r"set model.arch to sd15"):
        load_arch(file_config(single_files["sd15"], "flux"), demo_home, CPU, torch.float32)
    with pytest.raises(ModelLoadError, match=r"looks like a Flux checkpoint"):
        load_arch(file_config(single_files["flux_bfl"], "sdxl"), demo_home, CPU, torch.float32)


def test_a_lora_as_base_model_is_refused(demo_home: Path, tmp_path: Path) -> None:
    lora = tmp_path / "my_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attn.lora_down.weight": torch.zeros(2, 2)}, lora)
    with pytest.raises(ModelLoadError, match=r"model.lora_path"):
        load_arch(file_config(lora, "sd15"), demo_home, CPU, torch.float32)


def test_detection_needs_no_torch(single_files: dict) -> None:
    """The studio's pages read folders and file headers without importing torch."""
    code = (
        "import sys\n"
        "from trainer.models.components import missing_components\n"
        "from trainer.arch.single_file import detect_checkpoint\n"
        f"print(detect_checkpoint({str(single_files['sdxl'])!r}).arch)\n"
        "print('torch' in sys.modules, 'diffusers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["sdxl", "False", "False"]


# --------------------------------------------------------------------------- loading, training


def sgd_losses(model, steps: int = 4) -> list[float]:
    groups = model.add_lora(model.cfg.network)
    model.train()
    gen = torch.Generator().manual_seed(1)
    latents = model.encode_images(torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1)
    noise = torch.randn(latents.shape, generator=gen)
    t = model.sample_timesteps(2, gen)
    noisy = model.add_noise(latents, noise, t)
    cond = model.encode_prompts(["a photo of sks red circle", "a photo of sks blue square"])
    target = model.target(latents, noise, t)
    optimizer = torch.optim.Adam(groups["unet"], lr=3e-2)  # the denoiser, Flux too
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model.predict(noisy, t, cond, {}).float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", list(FILES))
def test_single_file_loads_the_tiny_weights_and_trains(
    name: str, single_files: dict, demo_home: Path
) -> None:
    arch = FILES[name][0]
    folder = ensure_demo(demo_home, arch)
    model = load_arch(file_config(single_files[name], arch), demo_home, CPU, torch.float32)
    assert type(model.pipe).__name__ == PIPELINES[arch]
    assert_same_weights(model.denoiser, weights(folder, model.denoiser_name))
    assert_same_weights(model.vae, weights(folder, "vae"))
    expected_encoders = ["text_encoder"] if arch == "sd15" else ["text_encoder", "text_encoder_2"]
    assert sorted(model.text_encoders) == expected_encoders
    for te_name, te in model.text_encoders.items():
        assert_same_weights(te, weights(folder, te_name))
    losses = sgd_losses(model)
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_components_from_supplies_what_a_flux_file_lacks(
    single_files: dict, demo_home: Path, tmp_path: Path
) -> None:
    """model.components_from changes what the trainer loads: another VAE there gives other
    latents (and another cache identity), and the run trains through the real loop."""
    from trainer.demo.tiny import _vae

    other = tmp_path / "flux_other_vae"
    shutil.copytree(ensure_demo(demo_home, "flux"), other)
    shutil.rmtree(other / "vae")
    other_vae = _vae(123, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159)
    other_vae.save_pretrained(other / "vae")
    file = single_files["flux_bfl"]
    own = load_arch(file_config(file, "flux"), demo_home, CPU, torch.float32)
    swapped = load_arch(
        file_config(file, "flux", components_from=str(other)), demo_home, CPU, torch.float32
    )
    assert_same_weights(swapped.vae, other_vae.state_dict())
    assert_same_weights(swapped.denoiser, own.denoiser.state_dict())
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    assert not torch.allclose(swapped.encode_images(pixels), own.encode_images(pixels))
    assert swapped.fingerprint() != own.fingerprint()

    cfg = tiny_config(
        model={"arch": "flux", "name_or_path": str(file), "components_from": str(other)}
    )
    outcome, record = run(cfg, demo_home, tmp_path / "job")
    assert outcome.step == 2 and len(record.losses()) == 2
    assert all(0 < loss < 10 for loss in record.losses())


def test_components_from_problems_are_named(single_files: dict, demo_home: Path) -> None:
    file = single_files["flux_bfl"]
    with pytest.raises(ModelLoadError, match=r"model.components_from: unknown demo reference"):
        load_arch(
            file_config(file, "flux", components_from="demo:nope"), demo_home, CPU, torch.float32
        )
    with pytest.raises(ModelLoadError, match=r"\(model.components_from\) '/no/such' was not found"):
        load_arch(
            file_config(file, "flux", components_from="/no/such"), demo_home, CPU, torch.float32
        )
    with pytest.raises(ModelLoadError, match=r"is a file; configs, tokenizers"):
        load_arch(
            file_config(file, "flux", components_from=str(file)), demo_home, CPU, torch.float32
        )
    # Empty: the usual base model, which this offline machine has not cached.
    with pytest.raises(ModelLoadError) as err:
        load_arch(file_config(file, "flux", components_from=None), demo_home, CPU, torch.float32)
    message = str(err.value)
    assert "(model.components_from): black-forest-labs/FLUX.1-dev is not in the local" in message
    assert "python -m trainer model download black-forest-labs/FLUX.1-dev" in message


def test_components_folder_needs_only_configs_for_what_the_file_holds(
    single_files: dict, demo_home: Path, tmp_path: Path
) -> None:
    configs = tmp_path / "sd15_configs"
    shutil.copytree(ensure_demo(demo_home, "sd15"), configs)
    for weight in configs.glob("*/*.safetensors"):
        weight.unlink()
    model = load_arch(
        file_config(single_files["sd15"], "sd15", components_from=str(configs)),
        demo_home,
        CPU,
        torch.float32,
    )
    assert_same_weights(model.denoiser, weights(ensure_demo(demo_home, "sd15"), "unet"))
    # A Flux transformer-only file needs the VAE and text encoders there, weights included.
    flux = tmp_path / "flux_configs"
    shutil.copytree(ensure_demo(demo_home, "flux"), flux)
    (flux / "text_encoder_2" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"text_encoder_2 \(no weights"):
        load_arch(
            file_config(single_files["flux_bfl"], "flux", components_from=str(flux)),
            demo_home,
            CPU,
            torch.float32,
        )


# ---------------------------------------------------------------------------------- folders


def copy_demo(demo_home: Path, arch: str, dest: Path) -> Path:
    shutil.copytree(ensure_demo(demo_home, arch), dest)
    return dest


def test_missing_components_lists_what_a_folder_lacks(demo_home: Path, tmp_path: Path) -> None:
    folder = copy_demo(demo_home, "sdxl", tmp_path / "sdxl")
    assert missing_components(folder, "sdxl") == []
    shutil.rmtree(folder / "vae")
    (folder / "tokenizer_2" / "tokenizer_config.json").unlink()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(
        folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    )
    assert missing_components(folder, "sdxl") == ["unet", "vae", "tokenizer_2"]
    problems = component_problems(folder, "sdxl")
    assert problems["vae"] == "no 'vae' subfolder"
    assert problems["tokenizer_2"] == "no tokenizer_config.json"
    assert "diffusion_pytorch_model.fp16.safetensors" in problems["unet"]
    assert missing_components(folder, "sdxl", skip=("vae",)) == ["unet", "tokenizer_2"]
    with pytest.raises(ModelLoadError) as err:
        load_arch(
            TrainingConfig.model_validate({"model": {"arch": "sdxl", "name_or_path": str(folder)}}),
            demo_home,
            CPU,
            torch.float32,
        )
    assert "vae (no 'vae' subfolder)" in str(err.value) and "tokenizer_2" in str(err.value)


def test_sharded_weights_and_model_index_entries(demo_home: Path, tmp_path: Path) -> None:
    folder = copy_demo(demo_home, "flux", tmp_path / "flux")
    te2 = folder / "text_encoder_2"
    state = load_file(te2 / "model.safetensors")
    names = sorted(state)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, te2 / shard)
    (te2 / "model.safetensors").unlink()
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (te2 / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert missing_components(folder, "flux") == []
    (te2 / "model-00002-of-00002.safetensors").unlink()
    assert component_problems(folder, "flux") == {
        "text_encoder_2": "weight shard(s) missing: model-00002-of-00002.safetensors"
    }
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    assert component_problems(folder, "flux")["tokenizer"] == "not listed in model_index.json"


def test_a_folder_that_lacks_the_vae_loads_when_vae_path_supplies_it(
    demo_home: Path, tmp_path: Path
) -> None:
    folder = copy_demo(demo_home, "sd15", tmp_path / "sd15")
    shutil.move(folder / "vae", tmp_path / "vae")
    model = load_arch(
        TrainingConfig.model_validate(
            {
                "model": {
                    "arch": "sd15",
                    "name_or_path": str(folder),
                    "vae_path": str(tmp_path / "vae"),
                }
            }
        ),
        demo_home,
        CPU,
        torch.float32,
    )
    assert_same_weights(
        model.vae, load_file(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    )


def test_a_folder_without_model_index_is_refused_clearly(demo_home: Path, tmp_path: Path) -> None:
    folder = copy_demo(demo_home, "sd15", tmp_path / "sd15")
    (folder / "model_index.json").unlink()
    with pytest.raises(NotAPipelineFolder, match=r"no model_index.json"):
        missing_components(folder, "sd15")
    with pytest.raises(ModelLoadError, match=r"folder without model_index.json"):
        load_arch(
            TrainingConfig.model_validate({"model": {"arch": "sd15", "name_or_path": str(folder)}}),
            demo_home,
            CPU,
            torch.float32,
        )
