"""Proofs that the Objective options of issue 4 do what they say (trainer/engine/objective.py).

Every test fails if its option is ignored: unit tests check the small functions against the
documented formula on the tiny models, and one parametrised in-process run per option shows it
changes the logged losses. ``PROVES`` maps each config path to the test that proves it.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from objective_support import batch, config, inputs_for, load, perturb_lora, run

from trainer.config.schema import TrainingConfig
from trainer.engine import objective
from trainer.engine.objective import (
    LearnableSNRWeights,
    ObjectiveState,
    compute_loss,
    differential_noise,
    min_snr_weight,
    noise_identity,
    predicted_clean,
    sample_noise,
    snr_weighting,
    target_loss,
)

PROVES = {
    "train.loss_target": [
        "test_loss_targets_compare_with_what_they_name",
        "test_objective_options_change_the_logged_losses",
    ],
    "model.is_v_pred": [
        "test_v_prediction_targets_the_velocity",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.do_cfg": [
        "test_do_cfg_guides_the_training_prediction",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.cfg_scale": "test_do_cfg_guides_the_training_prediction",
    "train.min_snr_gamma": [
        "test_min_snr_weights_are_min_snr_over_snr",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.learnable_snr_gos": [
        "test_learnable_snr_weights_learn_to_balance_the_loss",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.noise_offset": [
        "test_noise_offset_moves_each_channel_mean",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.optimal_noise_pairing": [
        "test_optimal_noise_pairing_picks_the_closest_draw",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.optimal_noise_pairing_samples": "test_optimal_noise_pairing_picks_the_closest_draw",
    "train.force_consistent_noise": [
        "test_force_consistent_noise_repeats_per_image",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.min_denoising_steps": [
        "test_denoising_step_range_bounds_the_timesteps",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.max_denoising_steps": [
        "test_denoising_step_range_bounds_the_timesteps",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.content_or_style": [
        "test_content_and_style_shift_the_timesteps",
        "test_objective_options_change_the_logged_losses",
    ],
    "train.loss_type": "test_loss_type_and_huber_delta_measure_the_error",
    "train.huber_delta": "test_loss_type_and_huber_delta_measure_the_error",
    "train.noise_scheduler": "test_noise_scheduler_ddpm_and_euler_noise_the_same_way",
    "train.timestep_type": "test_timestep_type_and_shift_shape_the_noise_levels",
    "train.timestep_shift": "test_timestep_type_and_shift_shape_the_noise_levels",
}

JITTER = [
    {
        "folder_path": "demo:dataset",
        "trigger_word": "sks",
        "resolution": [64],
        "augmentations": [{"type": "color_jitter", "probability": 1.0, "strength": 0.5}],
    }
]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ loss targets
def test_loss_targets_compare_with_what_they_name(demo_home: Path, tmp_path: Path) -> None:
    # x̂0 from a perfect prediction is the clean latents, in every parametrisation we train.
    setups = {
        "sd15 ε ddpm": config(),
        "sd15 v euler": config(model={"is_v_pred": True}, train={"noise_scheduler": "euler"}),
        "flux flow": config("flux"),
    }
    for name, cfg in setups.items():
        arch = load(cfg, demo_home, lora=False)
        x = torch.randn((2, arch.vae.config.latent_channels, 8, 8), generator=_gen(1))
        n = torch.randn(x.shape, generator=_gen(2))
        t = arch.sample_timesteps(2, _gen(3))
        noisy = arch.add_noise(x, n, t)
        x0 = predicted_clean(arch, noisy, arch.target(x, n, t), t)
        assert torch.allclose(x0, x, atol=1e-3), name

    # Flux: noise compares v; source compares x̂0 = x - σδ scaled by √SNR = (1-σ)/σ.
    cfg = config("flux")
    arch = load(cfg, demo_home, lora=False)
    x = torch.randn((2, 16, 8, 8), generator=_gen(1))
    n = torch.randn(x.shape, generator=_gen(2))
    u = x + 0.3 * torch.randn(x.shape, generator=_gen(4))  # "unaugmented" latents
    t = torch.tensor([250.0, 750.0])
    s = (t / 1000).view(-1, 1, 1, 1)
    noisy = arch.add_noise(x, n, t)
    delta = 0.1 * torch.randn(x.shape, generator=_gen(5))
    pred = arch.target(x, n, t) + delta

    def per_element(target: str, clean_u: torch.Tensor = u) -> torch.Tensor:
        train = cfg.train.model_copy(update={"loss_target": target})
        return target_loss(arch, train, x, clean_u, n, noisy, pred, t)

    assert torch.allclose(per_element("noise"), delta**2, atol=1e-6)
    assert torch.allclose(per_element("source"), ((1 - s) * delta) ** 2, atol=1e-5)
    x0 = x - s * delta
    expected_unaug = (((1 - s) / s) * (x0 - u)) ** 2
    assert torch.allclose(per_element("unaugmented"), expected_unaug, rtol=1e-4, atol=1e-5)
    assert torch.allclose(per_element("unaugmented", x), per_element("source"), atol=1e-6)

    # differential_noise: start from the unaugmented latents, half the change joins the noise.
    start, noise = differential_noise(x, u, n)
    assert torch.equal(start, u) and torch.allclose(noise, n + 0.5 * (x - u))

    # ...and compute_loss really noises the unaugmented latents with that noise.
    cfg = config(datasets=JITTER, train={"loss_target": "differential_noise"})
    arch = load(cfg, demo_home)
    seen = {}
    add_noise = arch.add_noise

    def spy(latents, noise, t):
        seen.update(latents=latents, noise=noise)
        return add_noise(latents, noise, t)

    arch.add_noise = spy
    b = batch(unaugmented=batch(seed=9)["pixels"])
    inputs = inputs_for(arch, cfg, tmp_path)
    compute_loss(arch, inputs, b, cfg, _gen(0))
    augmented = inputs.latents(b)
    unaugmented = objective.unaugmented_latents(arch, b, augmented)
    plain = torch.randn(augmented.shape, generator=_gen(0))
    assert torch.allclose(seen["latents"], unaugmented)
    assert torch.allclose(seen["noise"], plain + 0.5 * (augmented - unaugmented), atol=1e-6)

    # The schema refuses targets that would change nothing.
    with pytest.raises(ValueError, match="equals the noise loss"):
        config(train={"loss_target": "source"})
    with pytest.raises(ValueError, match="no dataset has a color_jitter or blur"):
        config(train={"loss_target": "unaugmented"})


def test_v_prediction_targets_the_velocity(demo_home: Path) -> None:
    from diffusers import DDPMScheduler

    arch = load(config(model={"is_v_pred": True}), demo_home, lora=False)
    x = torch.randn((3, 4, 8, 8), generator=_gen(1))
    n = torch.randn(x.shape, generator=_gen(2))
    t = torch.tensor([10, 500, 990])
    reference = DDPMScheduler.from_config(arch.base_scheduler_config)
    assert torch.allclose(arch.target(x, n, t), reference.get_velocity(x, n, t), atol=1e-6)
    assert arch.noise_scheduler.config.prediction_type == "v_prediction"  # samples agree
    noisy = arch.add_noise(x, n, t)
    train = arch.cfg.train
    velocity = reference.get_velocity(x, n, t)
    assert target_loss(arch, train, x, None, n, noisy, velocity, t).abs().max() < 1e-10
    assert target_loss(arch, train, x, None, n, noisy, n, t).mean() > 0.01  # ε is now wrong
    # An ε model with the same inputs targets the noise itself.
    eps = load(config(), demo_home, lora=False)
    assert torch.equal(eps.target(x, n, t), n)
    with pytest.raises(ValueError, match="not v-prediction"):
        config("flux", model={"is_v_pred": True})


def test_do_cfg_guides_the_training_prediction(demo_home: Path, tmp_path: Path) -> None:
    cfg = config(train={"do_cfg": True, "cfg_scale": 3.0})
    arch = load(cfg, demo_home)
    perturb_lora(arch)
    inputs = inputs_for(arch, cfg, tmp_path)
    b = batch()
    latents = inputs.latents(b)
    t = torch.tensor([300, 700])
    noisy = arch.add_noise(latents, torch.randn(latents.shape, generator=_gen(1)), t)
    extra = objective.sdxl_extra(b)
    cond = arch.predict(noisy, t, inputs.text(b["captions"]), extra)
    uncond = arch.predict(noisy, t, inputs.text(["", ""]), extra)
    assert (cond - uncond).abs().mean() > 1e-4

    def guided(**changes) -> torch.Tensor:
        train = cfg.train.model_copy(update=changes)
        return objective.predict(arch, inputs, noisy, t, b["captions"], extra, train)

    assert torch.allclose(guided(), uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert torch.allclose(guided(cfg_scale=5.0), uncond + 5.0 * (cond - uncond), atol=1e-5)
    assert torch.allclose(guided(cfg_scale=1.0), cond, atol=1e-5)
    assert torch.allclose(guided(do_cfg=False), cond, atol=1e-6)
    # Gradients reach the LoRA through the guided prediction.
    loss = compute_loss(arch, inputs, b, cfg, _gen(0))
    loss.backward()
    grads = [p.grad for p in arch.denoiser.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ------------------------------------------------------------------------------- weighting
def test_min_snr_weights_are_min_snr_over_snr(demo_home: Path) -> None:
    snr = torch.tensor([0.1, 1.0, 5.0, 20.0, 1000.0])
    eps = min_snr_weight(snr, 5.0, v_prediction=False)
    assert torch.allclose(eps, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert torch.allclose(eps, torch.tensor([1.0, 1.0, 1.0, 0.25, 0.005]))
    v = min_snr_weight(snr, 5.0, v_prediction=True)
    assert torch.allclose(v, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    # Wired to the model's own SNR at the sampled timesteps.
    cfg = config(train={"min_snr_gamma": 5.0})
    arch = load(cfg, demo_home, lora=False)
    t = torch.tensor([5, 200, 900])
    per_sample = torch.ones(3)
    weighted, _ = snr_weighting(per_sample, arch, t, cfg.train, ObjectiveState())
    expected = torch.minimum(arch.snr(t), torch.tensor(5.0)) / arch.snr(t)
    assert torch.allclose(weighted, expected)
    assert weighted[0] < 0.1 and weighted[2] == 1.0  # low noise (high SNR) weighs less
    unweighted, _ = snr_weighting(per_sample, arch, t, config().train, ObjectiveState())
    assert torch.equal(unweighted, per_sample)
    with pytest.raises(ValueError, match="flow matching"):
        config("flux", train={"min_snr_gamma": 5.0})


def test_learnable_snr_weights_learn_to_balance_the_loss(demo_home: Path) -> None:
    weights = LearnableSNRWeights()
    snr = torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0])
    start = LearnableSNRWeights.START
    expected = start["gamma"] / ((snr + start["offset_1"]) * start["scale"] + start["offset_2"])
    assert torch.allclose(weights.weight(snr), expected)
    # Its own optimizer group (as the loop adds it); trained on the balance loss only.
    state = ObjectiveState(snr_weights=weights)
    groups = state.param_groups()
    assert groups[0]["lr"] == objective.SNR_WEIGHTS_LR and len(groups[0]["params"]) == 4
    optimizer = torch.optim.AdamW(groups)
    raw = torch.ones(5, requires_grad=True)  # the same raw loss at every noise level

    def spread() -> float:
        with torch.no_grad():
            return float((raw * weights.weight(snr) - 1.0).pow(2).mean())

    before = spread()
    model = SimpleNamespace(snr=lambda t: snr)  # snr_weighting asks the model for SNR(t)
    for _ in range(200):
        weighted, balance = snr_weighting(raw, model, snr, config().train, state)
        assert balance is not None
        optimizer.zero_grad()
        (weighted.mean() + (balance - balance.detach())).backward()
        optimizer.step()
    assert spread() < 0.5 * before
    assert raw.grad is not None  # the weighted loss still reaches what it weighs
    assert not torch.allclose(weights.weight(snr), expected)
    # The loop builds it only when asked; the schema refuses it for Flux and with min-SNR.
    assert ObjectiveState.for_run(config(), torch.device("cpu")).param_groups() == []
    cfg = config(train={"learnable_snr_gos": True})
    assert ObjectiveState.for_run(cfg, torch.device("cpu")).snr_weights is not None
    with pytest.raises(ValueError, match="flow matching"):
        config("flux", train={"learnable_snr_gos": True})
    with pytest.raises(ValueError, match="not both"):
        config(train={"learnable_snr_gos": True, "min_snr_gamma": 5.0})


# ------------------------------------------------------------------------------------ noise
def _keys(n: int) -> list[str]:
    return [f"hash{i}|v1|64x64<64x64+0,0|fx0fy0" for i in range(n)]


def test_noise_offset_moves_each_channel_mean() -> None:
    latents = torch.zeros((64, 4, 8, 8))
    plain = sample_noise(latents, _keys(64), config().train, _gen(0))
    train = config(train={"noise_offset": 0.3}).train
    offset = sample_noise(latents, _keys(64), train, _gen(0))
    shift = offset - plain  # the same draws, plus one constant per (image, channel)
    assert torch.allclose(shift, shift[..., :1, :1].expand_as(shift), atol=1e-6)
    assert 0.2 < float(shift[..., 0, 0].std()) < 0.4  # 0.3 × N(0, 1)
    channel_means_plain = plain.mean(dim=(2, 3)).std()
    channel_means_offset = offset.mean(dim=(2, 3)).std()
    assert channel_means_plain < 0.2 < channel_means_offset


def test_optimal_noise_pairing_picks_the_closest_draw() -> None:
    latents = torch.randn((4, 4, 8, 8), generator=_gen(7))
    train = config(train={"optimal_noise_pairing": True, "optimal_noise_pairing_samples": 8}).train
    chosen = sample_noise(latents, _keys(4), train, _gen(5))
    replay = _gen(5)
    for latent, picked in zip(latents, chosen, strict=True):
        candidates = torch.randn((8, *latent.shape), generator=replay)
        distances = (candidates - latent).pow(2).flatten(1).mean(1)
        assert torch.equal(picked, candidates[distances.argmin()])
        assert float((picked - latent).pow(2).mean()) == float(distances.min())

    def mean_distance(samples: int | None) -> float:
        options = {"optimal_noise_pairing": samples is not None}
        if samples:
            options["optimal_noise_pairing_samples"] = samples
        noise = sample_noise(latents, _keys(4), config(train=options).train, _gen(1))
        return float((noise - latents).pow(2).mean())

    assert mean_distance(64) < mean_distance(2) < mean_distance(None) + 0.05


def test_force_consistent_noise_repeats_per_image(demo_home: Path) -> None:
    from trainer.data.batches import BucketBatches
    from trainer.data.scanning import scan_dataset
    from trainer.demo.tiny import resolve_demo_ref

    latents = torch.zeros((2, 4, 8, 8))
    keys = _keys(2)
    consistent = config(train={"force_consistent_noise": True}).train
    first = sample_noise(latents, keys, consistent, _gen(1))
    later = sample_noise(latents, keys, consistent, _gen(2))  # another epoch: other state
    assert torch.equal(first, later)
    assert not torch.equal(first[0], first[1])  # per image, not one draw for all
    swapped = sample_noise(latents, keys[::-1], consistent, _gen(3))
    assert torch.equal(swapped, first.flip(0))
    augmented = [key + "|color_jitter1.1,0.9,1.0" for key in keys]  # new augmentation draw
    assert torch.equal(sample_noise(latents, augmented, consistent, _gen(4)), first)
    plain = config().train
    assert not torch.equal(sample_noise(latents, keys, plain, _gen(1)), first)
    assert not torch.equal(
        sample_noise(latents, keys, plain, _gen(1)), sample_noise(latents, keys, plain, _gen(2))
    )
    # Real item keys of one image in two epochs (colour jitter redrawn) name the same noise.
    ds = config(datasets=JITTER).datasets[0]
    scan = scan_dataset(ds, Path(resolve_demo_ref(ds.folder_path, demo_home)))
    data = BucketBatches([scan], batch_size=2, seed=0)
    epoch0, epoch1 = data.describe((0, 3))["key"], data.describe((1, 3))["key"]
    assert epoch0 != epoch1 and noise_identity(epoch0) == noise_identity(epoch1)


# -------------------------------------------------------------------------------- timesteps
def _timesteps(arch, cfg: TrainingConfig, n: int = 4000) -> torch.Tensor:
    arch.cfg = cfg  # sample_timesteps reads the train section of the arch's config
    return arch.sample_timesteps(n, _gen(0)).float()


def test_denoising_step_range_bounds_the_timesteps(demo_home: Path) -> None:
    for name in ("sd15", "flux"):
        arch = load(config(name), demo_home, lora=False)
        wide = _timesteps(arch, config(name))
        narrow = _timesteps(
            arch, config(name, train={"min_denoising_steps": 200, "max_denoising_steps": 400})
        )
        assert wide.min() < 100 and wide.max() > 900, name
        assert narrow.min() >= 200 and narrow.max() <= 400, name
        assert narrow.min() < 215 and narrow.max() > 385, name


def test_content_and_style_shift_the_timesteps(demo_home: Path) -> None:
    for name in ("sd15", "flux"):
        arch = load(config(name), demo_home, lora=False)
        means = {
            bias: float(_timesteps(arch, config(name, train={"content_or_style": bias})).mean())
            for bias in ("content", "balanced", "style")
        }
        # content favours high noise (composition), style low noise (detail).
        assert means["content"] > means["balanced"] + 100 > means["style"] + 200, (name, means)


# ----------------------------------------------------------------------- training core
def test_loss_type_and_huber_delta_measure_the_error(demo_home: Path) -> None:
    cfg = config()
    arch = load(cfg, demo_home, lora=False)
    x = torch.randn((2, 4, 8, 8), generator=_gen(1))
    n = torch.randn(x.shape, generator=_gen(2))
    t = torch.tensor([100, 800])
    delta = torch.randn(x.shape, generator=_gen(3))
    pred = arch.target(x, n, t) + delta

    def error(**changes) -> torch.Tensor:
        train = cfg.train.model_copy(update=changes)
        return target_loss(arch, train, x, None, n, arch.add_noise(x, n, t), pred, t)

    d = delta.abs()
    assert torch.allclose(error(loss_type="mse"), delta**2, atol=1e-6)
    assert torch.allclose(error(loss_type="l1"), d, atol=1e-6)
    for k in (0.1, 1.0):  # squared below k, linear above
        huber = torch.where(d < k, 0.5 * delta**2, k * (d - 0.5 * k))
        assert torch.allclose(error(loss_type="huber", huber_delta=k), huber, atol=1e-6)


def test_noise_scheduler_ddpm_and_euler_noise_the_same_way(demo_home: Path) -> None:
    ddpm = load(config(), demo_home, lora=False)
    euler = load(config(train={"noise_scheduler": "euler"}), demo_home, lora=False)
    assert type(euler.noise_scheduler).__name__ == "EulerDiscreteScheduler"
    assert type(ddpm.noise_scheduler).__name__ == "DDPMScheduler"
    x = torch.randn((2, 4, 8, 8), generator=_gen(1))
    n = torch.randn(x.shape, generator=_gen(2))
    t = torch.tensor([100, 800])
    a = ddpm.alphas_cumprod[t].view(-1, 1, 1, 1)
    sigma = ((1 - a) / a).sqrt()
    assert torch.allclose(ddpm.add_noise(x, n, t), a.sqrt() * x + (1 - a).sqrt() * n, atol=1e-6)
    noisy = euler.add_noise(x, n, t)
    assert torch.allclose(noisy, x + sigma * n, atol=1e-5)  # k-diffusion form
    # ...rescaled, the U-Net sees what DDPM gives it, and the target stays the noise.
    assert torch.allclose(euler.model_input(noisy, t), ddpm.add_noise(x, n, t), atol=1e-5)
    assert torch.equal(euler.target(x, n, t), n)
    with pytest.raises(ValueError, match="flow matching is for Flux"):
        config(train={"noise_scheduler": "flowmatch"})


def test_timestep_type_and_shift_shape_the_noise_levels(demo_home: Path) -> None:
    arch = load(config(), demo_home, lora=False)

    def draws(**train) -> torch.Tensor:
        return _timesteps(arch, config(train=train)) / 1000

    uniform, sigmoid = draws(timestep_type="uniform"), draws(timestep_type="sigmoid")
    shift3 = draws(timestep_type="shift", timestep_shift=3.0)
    shift6 = draws(timestep_type="shift", timestep_shift=6.0)
    assert abs(float(uniform.std()) - 1 / math.sqrt(12)) < 0.01  # flat
    assert float(sigmoid.std()) < 0.25 and abs(float(sigmoid.mean()) - 0.5) < 0.02  # middle
    # shift bends u to s·u / (1 + (s-1)·u): more high-noise draws, more with a larger shift.
    assert 0.5 + 0.1 < float(shift3.mean()) < float(shift6.mean())
    # shift 3: u > 0.5 lands above 0.75, so half of the draws do (a quarter when flat).
    assert float((shift3 > 0.75).float().mean()) == pytest.approx(0.5, abs=0.03)


# ----------------------------------------------------------- the options in a training run
RUNS = {
    "noise_offset": {"train": {"noise_offset": 0.1}},
    "min_snr_gamma": {"train": {"min_snr_gamma": 1.0}},
    "learnable_snr_gos": {"train": {"learnable_snr_gos": True}},
    "do_cfg": {"train": {"do_cfg": True, "cfg_scale": 2.0}},
    "content_or_style": {"train": {"content_or_style": "style"}},
    "min_denoising_steps": {"train": {"min_denoising_steps": 900}},
    "max_denoising_steps": {"train": {"max_denoising_steps": 100}},
    "force_consistent_noise": {"train": {"force_consistent_noise": True}},
    "optimal_noise_pairing": {"train": {"optimal_noise_pairing": True}},
    "is_v_pred": {"model": {"is_v_pred": True}},
    "source": {"model": {"is_v_pred": True}, "train": {"loss_target": "source"}},
    "unaugmented": {"datasets": JITTER, "train": {"loss_target": "unaugmented"}},
    "differential_noise": {"datasets": JITTER, "train": {"loss_target": "differential_noise"}},
}


@pytest.fixture(scope="module")
def baselines(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Default-objective runs (plain data, colour-jittered data; ε and v-prediction)."""
    found = {}
    for name, sections in {
        "plain": {},
        "jitter": {"datasets": JITTER},
        "v": {"model": {"is_v_pred": True}},
    }.items():
        _, tracker = run(config(**sections), demo_home, tmp_path_factory.mktemp(name))
        found[name] = tracker.losses()
    return found


@pytest.mark.parametrize("option", list(RUNS))
def test_objective_options_change_the_logged_losses(
    option: str, baselines: dict, demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    sections = RUNS[option]
    seen_unaugmented = []
    original = objective.unaugmented_latents

    def spy(arch, batch, latents):
        seen_unaugmented.append(batch["unaugmented"] is not None)
        return original(arch, batch, latents)

    monkeypatch.setattr(objective, "unaugmented_latents", spy)
    _, tracker = run(config(**sections), demo_home, tmp_path / "job")
    losses = tracker.losses()
    base = baselines["jitter" if "datasets" in sections else "plain"]
    if option == "source":
        base = baselines["v"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[0] != pytest.approx(base[0], rel=1e-6, abs=0), option  # before any update
    if option == "min_snr_gamma":
        assert losses[0] < base[0]  # weights min(SNR, 1)/SNR ≤ 1
    if option in ("unaugmented", "differential_noise"):
        assert seen_unaugmented and all(seen_unaugmented)  # the loop asked data for the copy
    if option == "learnable_snr_gos":
        state = torch.load(
            sorted((tmp_path / "job" / "checkpoints").iterdir())[-1] / "training_state.pt",
            weights_only=False,
        )
        saved = state["objective"]["snr_weights"]
        assert float(saved["gamma"]) != pytest.approx(LearnableSNRWeights.START["gamma"])
        assert len(state["optimizer"]["param_groups"]) == 2  # LoRA + SNR weights
