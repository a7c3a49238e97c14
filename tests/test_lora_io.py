"""Saved LoRAs: both layouts load in diffusers and give the same images; metadata; dtypes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainer.arch.adapters import tuner_layers
from trainer.arch.base import Arch
from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.lora import io as lora_io
from trainer.lora.keys import classic_prefix

CPU = torch.device("cpu")
PROMPT = "a photo of sks"
FLUX_DOUBLE_ONLY = [
    "transformer_blocks.0.attn.to_q",
    "transformer_blocks.0.attn.to_k",
    "transformer_blocks.0.attn.to_v",
    "to_out.0",
    "add_q_proj",
    "add_k_proj",
    "add_v_proj",
    "to_add_out",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_arch(home: Path, arch: str, network: dict[str, Any], train_te: bool = False) -> Arch:
    cfg = TrainingConfig.model_validate(
        {
            "name": f"io_{arch}",
            "model": {"arch": arch, "name_or_path": f"demo:{arch}"},
            "network": {"linear": 4, "linear_alpha": 2, **network},
            "datasets": [{"folder_path": "x", "resolution": [64], "trigger_word": "sks"}],
            "train": {"train_text_encoder": train_te, "steps": 30},
        }
    )
    model = load_arch(cfg, home, CPU, torch.float32)
    groups = model.add_lora(cfg.network, train_text_encoder=train_te)
    # Stand-in for training: random adapter weights, so every layer (and alpha != rank) matters.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for group in groups.values():
            for param in group:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


def sampler_for(model: Arch) -> str:
    return "FlowMatchEulerDiscreteScheduler" if model.is_flow else "EulerDiscreteScheduler"


def fresh_pipeline(model: Arch):
    import diffusers

    pipe = model.pipeline_class().from_pretrained(
        model.model_path, dtype=torch.float32, **model.extra_pipeline_kwargs
    )
    pipe.scheduler = getattr(diffusers, sampler_for(model)).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe) -> np.ndarray:
    return pipe(
        PROMPT,
        num_inference_steps=3,
        width=64,
        height=64,
        guidance_scale=3.0,
        generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
    ).images[0]


def with_lora(pipe, path: Path) -> np.ndarray:
    pipe.load_lora_weights(str(path), adapter_name="under_test")
    try:
        return generate(pipe)
    finally:
        pipe.delete_adapters("under_test")


def own_sample(model: Arch, scale: float = 1.0) -> np.ndarray:
    sampler = "flowmatch" if model.is_flow else "euler"
    image = model.sample(
        [PROMPT],
        sampler=sampler,
        steps=3,
        width=64,
        height=64,
        seed=3,
        guidance_scale=3.0,
        lora_scale=scale,
    )[0]
    return np.asarray(image, dtype=np.float64) / 255.0


CASES = [
    pytest.param("sd15", {}, True, id="sd15-lora-te"),
    pytest.param("sd15", {"type": "locon", "conv": 2, "conv_alpha": 4}, False, id="sd15-locon"),
    pytest.param("sdxl", {}, True, id="sdxl-lora-te1-te2"),
    pytest.param("flux", {"target_modules": FLUX_DOUBLE_ONLY}, False, id="flux-lora-double"),
]


@pytest.mark.parametrize(("arch", "network", "train_te"), CASES)
def test_webui_file_gives_the_same_images_as_diffusers_layout(
    arch: str, network: dict, train_te: bool, demo_home: Path, tmp_path: Path
) -> None:
    model = make_arch(demo_home, arch, network, train_te)
    webui, diffusers_file = lora_io.save_lora(model, tmp_path, "look", "both", "fp32")
    assert webui == tmp_path / "look.safetensors"
    assert diffusers_file == tmp_path / "look" / lora_io.WEIGHTS_NAME
    pipe = fresh_pipeline(model)
    base = generate(pipe)
    from_diffusers = with_lora(pipe, diffusers_file.parent)
    np.testing.assert_array_equal(generate(pipe), base)  # deleting the adapter restores the base
    from_webui = with_lora(pipe, webui)
    assert np.abs(from_diffusers - base).mean() > 1e-3  # the LoRA changes the output
    np.testing.assert_allclose(from_webui, from_diffusers, atol=1e-5, rtol=0)
    # ... and both are what the trainer itself generates (PIL rounding: half a level).
    np.testing.assert_allclose(own_sample(model), from_diffusers, atol=0.5 / 255 + 1e-6, rtol=0)


def test_kohya_keys_match_diffusers_converter(demo_home: Path) -> None:
    from diffusers.utils import convert_state_dict_to_kohya

    model = make_arch(demo_home, "sd15", {}, train_te=True)
    ours = lora_io.webui_state_dict(model)
    sds = model.lora_state_dicts()
    prefixed = {f"unet.{k}": v for k, v in sds["unet"].items()}
    # Files use the classic CLIP names (text_model.encoder...) even on transformers 5.
    classic = classic_prefix(model.pipe.text_encoder)
    prefixed |= {f"text_encoder.{classic}{k}": v for k, v in sds["text_encoder"].items()}
    theirs = convert_state_dict_to_kohya(prefixed)
    renamed = {k.replace("lora_te1_", "lora_te_"): v for k, v in theirs.items()}
    assert set(ours) == set(renamed)
    for key, value in renamed.items():
        if key.endswith(".alpha"):
            assert value.item() == 4 and ours[key].item() == 2  # the real alpha, not rank
        else:
            assert torch.equal(ours[key], value)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in ours)


def test_flux_full_lora_fuses_qkv_exactly(demo_home: Path, tmp_path: Path) -> None:
    model = make_arch(demo_home, "flux", {})
    tensors = lora_io.webui_state_dict(model)
    layers = dict(tuner_layers(model.denoiser))

    def delta(name: str) -> torch.Tensor:
        layer = layers[name]
        return (
            layer.lora_B["default"].weight
            @ layer.lora_A["default"].weight
            * layer.scaling["default"]
        )

    def fused(key: str) -> torch.Tensor:
        down, up = tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"]
        return up @ down * (tensors[f"{key}.alpha"] / down.shape[0])

    qkv = fused("lora_unet_double_blocks_0_img_attn_qkv")
    expected = torch.cat([delta(f"transformer_blocks.0.attn.to_{x}") for x in "qkv"])
    torch.testing.assert_close(qkv, expected)
    linear1 = fused("lora_unet_single_blocks_0_linear1")
    block = model.denoiser.single_transformer_blocks[0]
    inner, mlp = block.attn.to_q.out_features, block.proj_mlp.out_features
    assert linear1.shape[0] == 3 * inner + mlp
    torch.testing.assert_close(
        linear1[: 3 * inner],
        torch.cat([delta(f"single_transformer_blocks.0.attn.to_{x}") for x in "qkv"]),
    )
    assert torch.count_nonzero(linear1[3 * inner :]) == 0  # no LoRA on the MLP part
    torch.testing.assert_close(
        fused("lora_unet_double_blocks_0_txt_attn_proj"),
        delta("transformer_blocks.0.attn.to_add_out"),
    )
    # Reading the file back restores the trained adapters exactly.
    path = lora_io.save_lora(model, tmp_path, "flux", "webui", "fp32")[0]
    before = model.lora_state_dicts()
    with torch.no_grad():
        for _, layer in layers.items():
            layer.lora_B["default"].weight.zero_()
    lora_io.load_lora_file(model, path)
    after = model.lora_state_dicts()
    for comp, state in before.items():
        for key, value in state.items():
            torch.testing.assert_close(after[comp][key], value)


@pytest.mark.parametrize(
    ("network", "markers"),
    [
        ({"type": "loha"}, ("hada_w1_a", "hada_w2_b")),
        ({"type": "lokr", "lokr_factor": 2}, ("lokr_w1", "lokr_w2_a", "lokr_w2_b")),
        ({"type": "lokr", "lokr_full_rank": True}, ("lokr_w1", "lokr_w2")),
        ({"type": "dora"}, ("lora_down.weight", "lora_up.weight", "dora_scale")),
    ],
    ids=["loha", "lokr", "lokr-full", "dora"],
)
def test_lycoris_and_dora_webui_layout(
    network: dict, markers: tuple[str, ...], demo_home: Path, tmp_path: Path
) -> None:
    model = make_arch(demo_home, "sd15", network)
    path = lora_io.save_lora(model, tmp_path, "lyco", "webui", "fp32")[0]
    tensors = lora_io.read_lora_tensors(path)
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert all(f"{module}.{marker}" in tensors for marker in markers)
    assert f"{module}.alpha" in tensors
    layer = dict(tuner_layers(model.denoiser))[
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    ]
    params = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(module + ".")}
    if network["type"] == "dora":
        assert params["dora_scale"].shape == (layer.out_features, 1)
    else:  # what LyCORIS / ComfyUI compute from the file equals peft's delta
        torch.testing.assert_close(lycoris_delta(params), layer.get_delta_weight("default"))
    image = own_sample(model)
    with torch.no_grad():  # wreck the adapters, then restore them from the file
        for _, layer in tuner_layers(model.denoiser):
            for store in (getattr(layer, "hada_w1_a", {}), getattr(layer, "lokr_w1", {})):
                for value in store.values():
                    value.zero_()
            if hasattr(layer, "lora_B") and "default" in layer.lora_B:
                layer.lora_B["default"].weight.zero_()
    assert np.abs(own_sample(model) - image).max() > 0
    lora_io.load_lora_file(model, path)
    np.testing.assert_array_equal(own_sample(model), image)


def lycoris_delta(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """A LoHa / LoKr weight delta the way LyCORIS and ComfyUI rebuild it from a file."""
    alpha = p["alpha"].item()
    if "hada_w1_a" in p:
        rank = p["hada_w1_b"].shape[0]
        w = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
        return w * alpha / rank
    dim = None
    w1 = p.get("lokr_w1")
    if w1 is None:
        dim = p["lokr_w1_b"].shape[0]
        w1 = p["lokr_w1_a"] @ p["lokr_w1_b"]
    w2 = p.get("lokr_w2")
    if w2 is None:
        dim = p["lokr_w2_b"].shape[0]
        w2 = p["lokr_w2_a"] @ p["lokr_w2_b"]
    scale = alpha / dim if dim is not None else 1.0
    return torch.kron(w1, w2) * scale


def test_dora_diffusers_layout_loads_in_diffusers(demo_home: Path, tmp_path: Path) -> None:
    model = make_arch(demo_home, "sd15", {"type": "dora"})
    folder = lora_io.save_lora(model, tmp_path, "dora", "diffusers", "fp32")[0].parent
    pipe = fresh_pipeline(model)
    loaded = with_lora(pipe, folder)
    np.testing.assert_allclose(own_sample(model), loaded, atol=0.5 / 255 + 1e-6, rtol=0)
    assert np.abs(loaded - generate(pipe)).mean() > 1e-3


def test_metadata_is_readable_strings(demo_home: Path, tmp_path: Path) -> None:
    model = make_arch(demo_home, "sdxl", {"type": "locon", "conv": 2})
    extra = {"steps": 123, "resolution": [64, 96], "note": "hello"}
    for path in lora_io.save_lora(model, tmp_path, "meta", "both", "fp16", extra):
        meta = lora_io.read_lora_metadata(path)
        assert all(isinstance(v, str) for v in meta.values())
        assert meta["base_model"] == "demo:sdxl" and meta["arch"] == "sdxl"
        assert meta["trigger_word"] == "sks" and meta["network_type"] == "locon"
        assert (meta["rank"], meta["alpha"], meta["steps"]) == ("4", "2.0", "123")
        assert json.loads(meta["resolution"]) == [64, 96] and meta["note"] == "hello"
        assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
        assert meta["ss_network_module"] == "networks.lora"
        assert json.loads(meta["ss_network_args"])["conv_dim"] == "2"
        assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    folder_meta = lora_io.read_lora_metadata(tmp_path / "meta")  # a folder works too
    adapter = json.loads(folder_meta[lora_io.ADAPTER_METADATA_KEY])
    assert adapter["unet.r"] == 4 and adapter["unet.lora_alpha"] == 2.0
    assert any(v == 2 for v in adapter["unet.rank_pattern"].values())


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
def test_save_dtype_and_atomic_files(dtype: str, demo_home: Path, tmp_path: Path) -> None:
    model = make_arch(demo_home, "sd15", {}, train_te=True)
    expected = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    paths = lora_io.save_lora(model, tmp_path, "dt", "both", dtype)
    paths += lora_io.save_lora(model, tmp_path, "dt", "both", dtype)  # overwriting is fine
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    for path in paths[:2]:
        tensors = lora_io.read_lora_tensors(path)
        weights = [v for k, v in tensors.items() if not k.endswith(".alpha")]
        assert weights and all(v.dtype == expected for v in weights)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or "tmp" in p.name]
    assert leftovers == []
    only = lora_io.save_lora(model, tmp_path / "one", "w", "webui", dtype)
    assert [p.name for p in only] == ["w.safetensors"]
    assert not (tmp_path / "one" / "w").exists()
    with pytest.raises(ValueError, match="formats"):
        lora_io.save_lora(model, tmp_path, "x", "ckpt", dtype)


def test_lora_file_initialises_a_new_run(demo_home: Path, tmp_path: Path) -> None:
    trained = make_arch(demo_home, "sd15", {}, train_te=True)
    webui, folder_file = lora_io.save_lora(trained, tmp_path, "init", "both", "fp32")
    expected = own_sample(trained)
    for source in (webui, folder_file.parent):
        fresh = load_arch(trained.cfg, demo_home, CPU, torch.float32)
        fresh.add_lora(trained.cfg.network, train_text_encoder=True)
        assert np.abs(own_sample(fresh) - expected).max() > 0
        lora_io.load_lora_file(fresh, source)
        np.testing.assert_array_equal(own_sample(fresh), expected)
    with pytest.raises(FileNotFoundError):
        lora_io.load_lora_file(trained, tmp_path / "missing.safetensors")
