"""The per-architecture layer on the tiny demo models: loading, encoders, objective, adapters."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainer.arch.base import Arch
from trainer.arch.registry import load_arch
from trainer.arch.sources import ModelLoadError
from trainer.arch.tensors import draw_unit_timesteps
from trainer.config.schema import TrainingConfig

ARCHS = ("sd15", "sdxl", "flux")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are dominated by thread start-up; on a busy 2-CPU box one thread is ~10x faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_cfg(arch: str, **sections: dict[str, Any]) -> TrainingConfig:
    data: dict[str, Any] = {
        "model": {"arch": arch, "name_or_path": f"demo:{arch}"},
        "network": {"linear": 4, "linear_alpha": 4},
        "datasets": [{"folder_path": "demo:dataset", "resolution": [64], "trigger_word": "sks"}],
        "sample": {"width": 64, "height": 64},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return TrainingConfig.model_validate(data)


def load(arch: str, home: Path, dtype: torch.dtype = torch.float32, **sections) -> Arch:
    return load_arch(make_cfg(arch, **sections), home, CPU, dtype)


@pytest.fixture(scope="module")
def base_archs(demo_home: Path) -> dict[str, Arch]:
    """One adapter-free model per arch, for tests that only read."""
    return {arch: load(arch, demo_home) for arch in ARCHS}


def pixels(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1


def image_array(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.float64) for image in images])


SAMPLE = {"steps": 3, "width": 64, "height": 64, "seed": 7, "guidance_scale": 3.0}


# ------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_demo_frozen_with_its_own_classes(arch: str, base_archs: dict[str, Arch]) -> None:
    model = base_archs[arch]
    expected = {"sd15": "UNet2DConditionModel", "sdxl": "UNet2DConditionModel"}
    assert type(model.denoiser).__name__ == expected.get(arch, "FluxTransformer2DModel")
    assert model.name == arch
    modules = [model.denoiser, model.vae, *model.text_encoders.values()]
    assert len(model.text_encoders) == (1 if arch == "sd15" else 2)
    assert all(not p.requires_grad for m in modules for p in m.parameters())
    assert model.fingerprint() == model.fingerprint()
    assert model.fingerprint().startswith(f"{arch}-")
    assert Path(model.model_path).is_absolute() and Path(model.model_path).name == arch


def test_fingerprints_differ_by_model_and_vae(base_archs: dict[str, Arch], demo_home: Path) -> None:
    prints = {a.fingerprint() for a in base_archs.values()}
    assert len(prints) == 3
    # The same model with a different VAE must not share cached latents.
    sd15_vae = str(demo_home / "models" / "demo" / "sd15")
    other = load("sd15", demo_home, model={"vae_path": sd15_vae})
    assert other.fingerprint() != base_archs["sd15"].fingerprint()
    again = load("sd15", demo_home)
    assert again.fingerprint() == base_archs["sd15"].fingerprint()


def test_vae_and_text_encoder_overrides_devices_and_dtypes(demo_home: Path) -> None:
    folder = demo_home / "models" / "demo" / "sd15"
    model = load(
        "sd15",
        demo_home,
        model={"vae_path": str(folder), "te_name_or_path": str(folder), "te_dtype": "bf16"},
    )
    assert model.te_dtype == torch.bfloat16
    assert next(model.pipe.text_encoder.parameters()).dtype == torch.bfloat16
    assert next(model.denoiser.parameters()).dtype == torch.float32
    assert next(model.vae.parameters()).dtype == torch.float32
    embeds = model.encode_prompts(["a photo of sks"])["prompt_embeds"]
    assert embeds.dtype == torch.float32  # handed to the U-Net in the training dtype
    assert not any(p.requires_grad for p in model.pipe.text_encoder.parameters())


def test_missing_local_path_raises_model_load_error(demo_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(ModelLoadError) as info:
        load("sd15", demo_home, model={"name_or_path": str(missing)})
    message = str(info.value)
    assert str(missing) in message and "not found" in message
    assert "demo:sd15" in message and "local diffusers folder" in message
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        load("sd15", demo_home, model={"name_or_path": str(tmp_path)})  # a folder, not a model
    with pytest.raises(ModelLoadError, match="VAE"):
        load("sd15", demo_home, model={"vae_path": str(missing)})
    with pytest.raises(ModelLoadError, match="unknown demo"):
        load("sd15", demo_home, model={"name_or_path": "demo:sd3"})


def test_uncached_hub_id_offline_raises_model_load_error(
    demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_id = "lora-studio-tests/definitely-not-cached-model"
    with pytest.raises(ModelLoadError) as info:
        load("sdxl", demo_home, model={"name_or_path": hub_id})
    message = str(info.value)
    assert hub_id in message and "offline" in message and "HF_HUB_OFFLINE" in message
    assert f"python -m trainer model download {hub_id}" in message and "demo:sdxl" in message
    assert type(info.value.__cause__).__name__ == "ModelNotAvailable"


# ------------------------------------------------------------------------------------ encoders


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_prompts_shapes(arch: str, base_archs: dict[str, Arch]) -> None:
    model = base_archs[arch]
    cond = model.encode_prompts(["a photo of sks", "a red circle on a blue background"])
    tes = model.text_encoders
    if arch == "sd15":
        assert set(cond) == {"prompt_embeds"}
        assert cond["prompt_embeds"].shape == (2, 77, tes["text_encoder"].config.hidden_size)
    elif arch == "sdxl":
        width = tes["text_encoder"].config.hidden_size + tes["text_encoder_2"].config.hidden_size
        assert width == model.denoiser.config.cross_attention_dim
        assert cond["prompt_embeds"].shape == (2, 77, width)
        pooled = tes["text_encoder_2"].config.projection_dim
        assert cond["pooled_prompt_embeds"].shape == (2, pooled)
    else:
        t5 = tes["text_encoder_2"].config.d_model
        assert cond["prompt_embeds"].shape == (2, model.max_sequence_length, t5)
        clip = tes["text_encoder"].config.hidden_size
        assert cond["pooled_prompt_embeds"].shape == (2, clip)
        assert cond["text_ids"].shape == (2, model.max_sequence_length, 3)  # batch-first
    embeds = cond["prompt_embeds"]
    assert not torch.allclose(embeds[0], embeds[1])  # different captions, different embeddings
    assert not embeds.requires_grad
    # Caches store one caption's row of each entry and stack them again: same result.
    rows = [
        model.encode_prompts([c]) for c in ("a photo of sks", "a red circle on a blue background")
    ]
    stacked = {k: torch.stack([row[k][0] for row in rows]) for k in cond}
    for key, value in cond.items():
        torch.testing.assert_close(stacked[key], value)
    latents = torch.randn(2, model.vae.config.latent_channels, 8, 8)
    t = torch.tensor([100, 700])
    with torch.no_grad():
        torch.testing.assert_close(
            model.predict(latents, t, stacked), model.predict(latents, t, cond)
        )


def test_encode_prompts_with_grad_when_text_encoder_trains(demo_home: Path) -> None:
    model = load("sd15", demo_home, train={"train_text_encoder": True})
    groups = model.add_lora(model.cfg.network, train_text_encoder=True)
    assert groups["text_encoder"]
    cond = model.encode_prompts(["a photo of sks"], with_grad=True)
    assert cond["prompt_embeds"].requires_grad
    cond["prompt_embeds"].pow(2).mean().backward()
    grads = [p.grad for p in groups["text_encoder"] if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert not model.encode_prompts(["a photo of sks"])["prompt_embeds"].requires_grad


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_images_decode_round_trip(arch: str, base_archs: dict[str, Arch]) -> None:
    model = base_archs[arch]
    x = pixels(2, 64)
    latents = model.encode_images(x)
    channels = model.vae.config.latent_channels
    assert latents.shape == (2, channels, 8, 8)
    assert channels == (16 if arch == "flux" else 4)
    with torch.no_grad():
        mean = model.vae.encode(x).latent_dist.mean
    config = model.vae.config
    shift = config.shift_factor if arch == "flux" else 0.0
    assert shift != 0.0 or arch != "flux"
    torch.testing.assert_close(latents, (mean - shift) * config.scaling_factor)
    decoded = model.decode_latents(latents)
    assert decoded.shape == (2, 3, 64, 64)
    assert decoded.min() >= -1 and decoded.max() <= 1
    sampled = model.encode_images(x, generator=torch.Generator().manual_seed(0), sample=True)
    assert sampled.shape == latents.shape and not torch.equal(sampled, latents)


# ------------------------------------------------------------------------------------ adapters


def lora_named(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    markers = ("lora_", "hada_", "lokr_")
    return {n: p for n, p in module.named_parameters() if any(m in n for m in markers)}


@pytest.mark.parametrize("arch", ARCHS)
def test_add_lora_returns_only_trainable_fp32_adapter_params(arch: str, demo_home: Path) -> None:
    model = load(arch, demo_home, dtype=torch.bfloat16)
    train_te = arch != "flux"
    groups = model.add_lora(model.cfg.network, train_text_encoder=train_te)
    assert set(groups) == {"unet", "text_encoder"}
    adapters = lora_named(model.denoiser)
    assert groups["unet"] and {id(p) for p in groups["unet"]} == {id(p) for p in adapters.values()}
    assert all(p.requires_grad and p.dtype == torch.float32 for p in groups["unet"])
    base = [p for n, p in model.denoiser.named_parameters() if n not in adapters]
    assert base and all(not p.requires_grad and p.dtype == torch.bfloat16 for p in base)
    assert all(not p.requires_grad for p in model.vae.parameters())
    # Default targets: attention projections only (plus Flux's context projections).
    names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters}
    expected = {"to_q", "to_k", "to_v", "0"}
    if arch == "flux":
        expected |= {"add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"}
    assert names == expected
    if train_te:
        te_params = [p for te in model.text_encoders.values() for p in lora_named(te).values()]
        assert len(groups["text_encoder"]) == len(te_params) > 0
        assert all(p.dtype == torch.float32 and p.requires_grad for p in groups["text_encoder"])
        for te in model.text_encoders.values():
            assert lora_named(te), "every text encoder gets adapters"
    else:
        assert groups["text_encoder"] == []
        with pytest.raises(ValueError, match="text-encoder"):
            load(arch, demo_home).add_lora(model.cfg.network, train_text_encoder=True)
    with pytest.raises(RuntimeError, match="already"):
        model.add_lora(model.cfg.network)


@pytest.mark.parametrize(
    ("network", "expect"),
    [
        ({"type": "dora"}, "lora_magnitude_vector"),
        ({"type": "locon", "conv": 2, "conv_alpha": 1}, "conv"),
        ({"type": "loha"}, "hada_w1_a"),
        ({"type": "lokr", "lokr_factor": 4}, "lokr_w"),
        ({"type": "lokr", "lokr_full_rank": True}, "full"),
    ],
    ids=["dora", "locon", "loha", "lokr", "lokr_full"],
)
def test_network_types_build_and_train(network: dict, expect: str, demo_home: Path) -> None:
    model = load("sd15", demo_home, network=network)
    groups = model.add_lora(model.cfg.network)
    names = set(lora_named(model.denoiser))
    modules = dict(model.denoiser.named_modules())
    if expect == "conv":
        conv = modules["down_blocks.0.resnets.0.conv1"]
        assert conv.lora_A["default"].weight.shape[0] == 2  # 3x3 convs take the conv rank
        assert conv.scaling["default"] == pytest.approx(0.5)  # conv_alpha / conv
        proj = modules["down_blocks.0.attentions.0.proj_in"]  # a 1x1 conv: linear rank
        assert proj.lora_A["default"].weight.shape[0] == 4
        assert any("upsamplers.0.conv.lora_A" in n for n in names)
    elif expect == "full":
        layer = modules["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
        assert "default" in layer.lokr_w1 and "default" in layer.lokr_w2
        assert layer.scaling["default"] == pytest.approx(1.0)
    else:
        assert any(expect in n for n in names)
    if expect == "lokr_w":
        layer = modules["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"]
        assert layer.lokr_w1["default"].shape == (4, 4)  # 32 = 4 x 8 with factor 4
    # Every adapter type trains: a loss gives gradients to the adapter parameters.
    latents = model.encode_images(pixels(1))
    noise = torch.randn_like(latents)
    t = torch.tensor([500])
    cond = model.encode_prompts(["a photo of sks"])
    pred = model.predict(model.add_noise(latents, noise, t), t, cond)
    torch.nn.functional.mse_loss(pred, model.target(latents, noise, t)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["unet"])


@pytest.mark.parametrize("arch", ARCHS)
def test_sgd_steps_reduce_loss_and_change_samples(arch: str, demo_home: Path) -> None:
    model = load(arch, demo_home)
    before = image_array(model.sample(["a photo of sks"], **SAMPLE))
    groups = model.add_lora(model.cfg.network)
    model.train()
    gen = torch.Generator().manual_seed(1)
    latents = model.encode_images(pixels(2, 64, seed=3))
    noise = torch.randn(latents.shape, generator=gen)
    t = model.sample_timesteps(2, gen)
    noisy = model.add_noise(latents, noise, t)
    cond = model.encode_prompts(["a photo of sks red circle", "a photo of sks blue square"])
    target = model.target(latents, noise, t)
    optimizer = torch.optim.Adam(groups["unet"], lr=3e-2)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.mse_loss(model.predict(noisy, t, cond, {}).float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < losses[0] * 0.97, losses
    after = image_array(model.sample(["a photo of sks"], **SAMPLE))
    assert np.abs(after - before).mean() > 0.5  # the LoRA changes the image
    off = image_array(model.sample(["a photo of sks"], lora_scale=0.0, **SAMPLE))
    np.testing.assert_array_equal(off, before)  # scale 0 is exactly the base model
    half = image_array(
        model.sample([{"prompt": "a photo of sks", "network_multiplier": 0.5}], **SAMPLE)
    )
    assert 0 < np.abs(half - before).mean() < np.abs(after - before).mean() * 1.5
    assert model.denoiser.training  # sampling restored train mode


def test_sample_per_prompt_overrides_and_seeds(base_archs: dict[str, Arch]) -> None:
    model = base_archs["sd15"]
    prompts = [
        {"prompt": "a photo of sks", "seed": 1},
        {"prompt": "a photo of sks", "seed": 1},
        {"prompt": "a photo of sks", "seed": 2, "width": 96, "sample_steps": 2},
        "a red circle",
    ]
    images = model.sample(
        prompts, sampler="dpmpp_2m", steps=3, width=64, height=64, seed=5, neg="blurry"
    )
    assert [im.size for im in images] == [(64, 64), (64, 64), (96, 64), (64, 64)]
    first, second = (np.asarray(im, dtype=float) for im in images[:2])
    np.testing.assert_array_equal(first, second)  # same seed, same image
    assert not model.denoiser.training
    with pytest.raises(ValueError, match="sampler"):
        model.sample(["x"], sampler="flowmatch", steps=1, width=64, height=64)
    for sampler in ("euler_a", "ddpm", "euler"):
        image = model.sample(["x"], sampler=sampler, steps=2, width=64, height=64)[0]
        assert image.size == (64, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_with_vae_and_encoders_on_another_device(arch: str, demo_home: Path) -> None:
    model = load(arch, demo_home)
    plain = image_array(model.sample(["a photo of sks"], **SAMPLE))
    # "cpu:0" is another device object than "cpu" but runs here: it takes the split-device path.
    model.vae_device = model.te_device = torch.device("cpu", 0)
    assert model._pipeline_on_training_device() is not model.pipe
    np.testing.assert_array_equal(image_array(model.sample(["a photo of sks"], **SAMPLE)), plain)
    assert model.sampler_pipe is model.pipe


def test_gradient_checkpointing_keeps_gradients(demo_home: Path) -> None:
    model = load("sd15", demo_home)
    groups = model.add_lora(model.cfg.network)
    model.set_gradient_checkpointing(True)
    model.train()
    assert model.denoiser.is_gradient_checkpointing
    latents = model.encode_images(pixels(1))
    t = torch.tensor([300])
    pred = model.predict(latents, t, model.encode_prompts(["a photo of sks"]))
    pred.pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["unet"])


# ------------------------------------------------------------------------------------ noise


def test_timesteps_honour_range_and_bias(base_archs: dict[str, Arch]) -> None:
    model = base_archs["sd15"]
    train = model.cfg.train
    means = {}
    try:
        for bias in ("balanced", "content", "style"):
            train.content_or_style = bias
            t = model.sample_timesteps(4000, torch.Generator().manual_seed(0))
            assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 999
            means[bias] = t.float().mean().item()
        train.content_or_style = "balanced"
        train.min_denoising_steps, train.max_denoising_steps = 200, 300
        t = model.sample_timesteps(4000, torch.Generator().manual_seed(1))
        assert t.min().item() == 200 and t.max().item() == 300
        a = model.sample_timesteps(8, torch.Generator().manual_seed(5))
        b = model.sample_timesteps(8, torch.Generator().manual_seed(5))
        assert torch.equal(a, b)
    finally:
        train.content_or_style = "balanced"
        train.min_denoising_steps, train.max_denoising_steps = 0, 999
    assert abs(means["balanced"] - 500) < 30
    assert means["content"] > means["balanced"] + 150  # high noise: composition
    assert means["style"] < means["balanced"] - 150  # low noise: texture


def test_flux_timesteps_are_continuous_and_shifted(base_archs: dict[str, Arch]) -> None:
    model = base_archs["flux"]
    train = model.cfg.train
    t = model.sample_timesteps(4000, torch.Generator().manual_seed(0))  # auto -> shift (3.0)
    assert t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 999
    assert len(torch.unique(t)) > 3900
    assert t.mean() > 600  # shift 3 leans towards high noise
    try:
        train.min_denoising_steps, train.max_denoising_steps = 100, 400
        t = model.sample_timesteps(2000, torch.Generator().manual_seed(0))
        assert t.min() >= 100 and t.max() <= 400
    finally:
        train.min_denoising_steps, train.max_denoising_steps = 0, 999


def test_timestep_distributions() -> None:
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    uniform = draw_unit_timesteps(4000, "uniform", "balanced", 3.0, gen())
    sigmoid = draw_unit_timesteps(4000, "sigmoid", "balanced", 3.0, gen())
    shifted = draw_unit_timesteps(4000, "shift", "balanced", 3.0, gen())
    assert abs(uniform.mean() - 0.5) < 0.02 and abs(sigmoid.mean() - 0.5) < 0.02
    assert sigmoid.std() < uniform.std() - 0.05  # logit-normal: more middle levels
    assert shifted.mean() > uniform.mean() + 0.15
    assert all(u.min() >= 0 and u.max() < 1 for u in (uniform, sigmoid, shifted))


def test_v_prediction_target_differs_from_epsilon(demo_home: Path) -> None:
    eps = load("sd15", demo_home)
    vpred = load("sd15", demo_home, model={"is_v_pred": True})
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([100, 800])
    assert torch.equal(eps.target(latents, noise, t), noise)
    velocity = vpred.target(latents, noise, t)
    assert not torch.allclose(velocity, noise)
    torch.testing.assert_close(velocity, vpred.noise_scheduler.get_velocity(latents, noise, t))
    assert vpred.noise_scheduler.config.prediction_type == "v_prediction"
    assert vpred._sampling_scheduler("euler").config.prediction_type == "v_prediction"
    # Same noisy input for both; DDPM's own add_noise agrees.
    torch.testing.assert_close(
        eps.add_noise(latents, noise, t), eps.noise_scheduler.add_noise(latents, noise, t)
    )


def test_euler_formulation_gives_the_ddpm_model_input(demo_home: Path) -> None:
    ddpm = load("sd15", demo_home, train={"noise_scheduler": "ddpm"})
    euler = load("sd15", demo_home, train={"noise_scheduler": "euler"})
    assert type(euler.noise_scheduler).__name__ == "EulerDiscreteScheduler"
    torch.testing.assert_close(euler.alphas_cumprod, ddpm.alphas_cumprod)
    gen = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([10, 900])
    noisy_euler = euler.add_noise(latents, noise, t)
    assert not torch.allclose(noisy_euler, ddpm.add_noise(latents, noise, t))
    torch.testing.assert_close(
        euler.model_input(noisy_euler, t), ddpm.add_noise(latents, noise, t), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="flowmatch"):
        ddpm._make_noise_scheduler("flowmatch")


def test_snr_and_flow_objective(base_archs: dict[str, Arch]) -> None:
    sd = base_archs["sd15"]
    snr = sd.snr(torch.tensor([0, 500, 999]))
    assert snr[0] > snr[1] > snr[2] > 0
    a = sd.alphas_cumprod[500]
    assert snr[1].item() == pytest.approx((a / (1 - a)).item(), rel=1e-5)
    flux = base_archs["flux"]
    assert flux.snr(torch.tensor([500.0])).item() == pytest.approx(1.0)
    assert flux.snr(torch.tensor([250.0])).item() == pytest.approx(9.0)
    latents, noise = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    torch.testing.assert_close(flux.add_noise(latents, noise, torch.tensor([0.0])), latents)
    torch.testing.assert_close(flux.add_noise(latents, noise, torch.tensor([1000.0])), noise)
    mid = flux.add_noise(latents, noise, torch.tensor([250.0]))
    torch.testing.assert_close(mid, 0.75 * latents + 0.25 * noise)
    torch.testing.assert_close(flux.target(latents, noise, torch.tensor([1.0])), noise - latents)


def test_flux_predict_packs_and_uses_guidance(base_archs: dict[str, Arch]) -> None:
    model = base_archs["flux"]
    assert model.denoiser.config.guidance_embeds
    latents = torch.randn(1, 16, 8, 12)  # non-square: packing must keep height and width apart
    torch.testing.assert_close(model.unpack(model.pack(latents), 8, 12), latents)
    cond = model.encode_prompts(["a photo of sks"])
    t = torch.tensor([600.0])
    with torch.no_grad():
        out = model.predict(latents, t, cond, {})
        other = model.predict(latents, t, cond, {"guidance": 4.0})
    assert out.shape == latents.shape
    assert not torch.allclose(out, other)


def test_sdxl_micro_conditioning_reaches_the_unet(base_archs: dict[str, Arch]) -> None:
    model = base_archs["sdxl"]
    ids = model.add_time_ids(2, (8, 12), {})
    assert ids.tolist() == [[64, 96, 0, 0, 64, 96]] * 2
    ids = model.add_time_ids(
        2, (8, 8), {"original_size": [(128, 96), (64, 64)], "crop_top_left": (4, 0)}
    )
    assert ids[0].tolist() == [128, 96, 4, 0, 64, 64] and ids[1].tolist() == [64, 64, 4, 0, 64, 64]
    latents = torch.randn(1, 4, 8, 8)
    cond = model.encode_prompts(["a photo of sks"])
    t = torch.tensor([500])
    with torch.no_grad():
        plain = model.predict(latents, t, cond, {})
        cropped = model.predict(latents, t, cond, {"crop_top_left": [(32, 32)]})
    assert plain.shape == latents.shape and not torch.allclose(plain, cropped)


# ------------------------------------------------------------------------------------ state


def test_lora_state_round_trip_and_mismatch(demo_home: Path) -> None:
    model = load("sd15", demo_home)
    model.add_lora(model.cfg.network)
    saved = model.lora_state_dicts()
    assert set(saved) == {"unet"} and all(".lora_" in k for k in saved["unet"])
    assert not any(".default." in k for k in saved["unet"])
    with torch.no_grad():
        for p in lora_named(model.denoiser).values():
            p.add_(1.0)
    assert not torch.equal(
        next(iter(model.lora_state_dicts()["unet"].values())), next(iter(saved["unet"].values()))
    )
    model.load_lora_state(saved)
    restored = model.lora_state_dicts()["unet"]
    assert all(torch.equal(restored[k], saved["unet"][k]) for k in saved["unet"])
    other = load("sd15", demo_home, network={"linear": 8, "linear_alpha": 8})
    other.add_lora(other.cfg.network)
    with pytest.raises(ValueError, match="wrongly shaped"):
        other.load_lora_state(saved)
    with pytest.raises(ValueError, match="text_encoder"):
        model.load_lora_state({"text_encoder": {}})
