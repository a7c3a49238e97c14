"""Real-size architectures without a download (issue 18, item 3): the shipped configs build the
released SD1.5 / SDXL U-Nets and Flux transformer, counted on the meta device (nothing allocated),
and agree with the advisor's parameter and LoRA counts."""

from __future__ import annotations

import pytest
import torch

from advisor.models import FACTS
from trainer.arch.adapters import FLUX_TARGETS, SD_TARGETS, adapter_config, add_adapter
from trainer.config.sections.model import NetworkConfig
from trainer.demo.real_size import (
    build_denoiser,
    denoiser_config,
    denoiser_inputs,
    parameter_count,
)

ARCHS = ("sd15", "sdxl", "flux")


@pytest.fixture(scope="module")
def empty_models() -> dict[str, torch.nn.Module]:
    return {arch: build_denoiser(arch, empty=True) for arch in ARCHS}


def test_parameter_counts_are_the_released_models_and_allocate_nothing(empty_models) -> None:
    counts = {arch: parameter_count(arch) for arch in ARCHS}
    assert counts == {"sd15": 859_520_964, "sdxl": 2_567_463_684, "flux": 11_901_408_320}
    assert counts == {arch: FACTS[arch].denoiser_params for arch in ARCHS}  # the advisor's facts
    for model in empty_models.values():
        assert {p.device.type for p in model.parameters()} == {"meta"}
        assert not any(p.requires_grad for p in model.parameters())


def test_the_configs_carry_the_documented_values() -> None:
    sd15, sdxl, flux = (denoiser_config(arch) for arch in ARCHS)
    assert sd15["block_out_channels"] == [320, 640, 1280, 1280]
    assert (sd15["cross_attention_dim"], sd15["layers_per_block"]) == (768, 2)
    assert (sd15["attention_head_dim"], sd15["sample_size"]) == (8, 64)
    assert sdxl["transformer_layers_per_block"] == [1, 2, 10]
    assert sdxl["attention_head_dim"] == [5, 10, 20] and sdxl["use_linear_projection"] is True
    assert sdxl["addition_embed_type"] == "text_time"
    assert (sdxl["projection_class_embeddings_input_dim"], sdxl["addition_time_embed_dim"]) == (
        2816,
        256,
    )
    assert (flux["num_layers"], flux["num_single_layers"], flux["in_channels"]) == (19, 38, 64)
    assert (flux["joint_attention_dim"], flux["pooled_projection_dim"]) == (4096, 768)
    assert flux["guidance_embeds"] is True
    with pytest.raises(ValueError, match="no real-size config"):
        denoiser_config("sd3")


@pytest.mark.parametrize(
    ("arch", "targets"), [("sd15", SD_TARGETS), ("sdxl", SD_TARGETS), ("flux", FLUX_TARGETS)]
)
def test_the_trainers_lora_on_the_real_shapes_is_the_advisors_size(arch, targets) -> None:
    model = build_denoiser(arch, empty=True)
    network = NetworkConfig.model_validate({"linear": 4, "linear_alpha": 4})
    trainable = add_adapter(model, adapter_config(network, list(targets)))
    assert sum(p.numel() for p in trainable) == FACTS[arch].lora_params(4)


@pytest.mark.parametrize("arch", ARCHS)
def test_pre_encoded_inputs_fit_the_real_model(empty_models, arch) -> None:
    # A forward on the meta device checks every shape the real model needs, at no cost.
    kwargs, target = denoiser_inputs(
        arch, denoiser_config(arch), batch=2, latent_side=16, device="meta"
    )
    out = empty_models[arch](**kwargs)[0]
    assert out.shape == target.shape
    expected = (2, 64, 64) if arch == "flux" else (2, 4, 16, 16)  # Flux: 2x2 cells per token
    assert tuple(out.shape) == expected


def test_a_built_model_is_seeded_and_in_the_dtype_asked(monkeypatch) -> None:
    # The real build path (weights made on the device, then cast), on a shrunken SD1.5 config.
    small = denoiser_config("sd15") | {"block_out_channels": [32, 64, 64, 64], "norm_num_groups": 8}
    monkeypatch.setattr("trainer.demo.real_size.denoiser_config", lambda arch: small)
    first = build_denoiser("sd15", dtype=torch.bfloat16, seed=3)
    again = build_denoiser("sd15", dtype=torch.bfloat16, seed=3)
    other = build_denoiser("sd15", dtype=torch.bfloat16, seed=4)
    assert {p.dtype for p in first.parameters()} == {torch.bfloat16}
    weights = first.conv_in.weight
    torch.testing.assert_close(weights, again.conv_in.weight)
    assert not torch.equal(weights, other.conv_in.weight)
    assert not first.training
