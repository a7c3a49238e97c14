"""Proofs that the Regularisation options of issue 4 do what they say.

Preservation losses, masks and dataset weights live in trainer/engine/objective.py, the EMA in
trainer/engine/ema.py, masks and caption/token dropout come from trainer/data/transforms.py and
trainer/data/captions.py. Every test fails if its option is ignored; ``PROVES`` maps each config
path to the test that proves it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from objective_support import (
    batch,
    config,
    inputs_for,
    left_half_masks,
    load,
    perturb_lora,
    run,
    tagged_folder,
)
from safetensors.torch import load_file
from torch import nn

from trainer.data.batches import BucketBatches
from trainer.data.scanning import scan_dataset
from trainer.engine import loop
from trainer.engine.context import StopSignal
from trainer.engine.ema import LoraEMA, build_ema
from trainer.engine.objective import (
    base_prediction,
    batch_triggers,
    class_prompts,
    compute_loss,
    inverted_mask_prior,
    preservation_loss,
    sdxl_extra,
    weighted_mean,
)

PROVES = {
    "train.diff_output_preservation": [
        "test_diff_output_preservation_keeps_the_class_prompt",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "train.diff_output_preservation_multiplier": "test_diff_output_preservation_keeps_the_class_prompt",
    "train.diff_output_preservation_class": "test_diff_output_preservation_keeps_the_class_prompt",
    "train.blank_prompt_preservation": [
        "test_blank_prompt_preservation_keeps_the_empty_prompt",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "train.blank_prompt_preservation_multiplier": "test_blank_prompt_preservation_keeps_the_empty_prompt",
    "train.inverted_mask_prior": [
        "test_inverted_mask_prior_pulls_the_masked_out_area_to_the_base",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "train.inverted_mask_prior_multiplier": "test_inverted_mask_prior_pulls_the_masked_out_area_to_the_base",
    "datasets[].mask_path": [
        "test_masked_out_area_gets_no_gradient",
        "test_masks_from_files_and_alpha_reach_the_batch",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "datasets[].alpha_mask": "test_masks_from_files_and_alpha_reach_the_batch",
    "datasets[].invert_mask": "test_masks_from_files_and_alpha_reach_the_batch",
    "datasets[].mask_min_value": "test_masks_from_files_and_alpha_reach_the_batch",
    "datasets[].is_reg": [
        "test_regularisation_images_weigh_by_their_loss_multiplier",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "datasets[].loss_multiplier": [
        "test_regularisation_images_weigh_by_their_loss_multiplier",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "train.use_ema": [
        "test_saved_lora_and_checkpoint_hold_the_ema_average",
        "test_resume_continues_the_ema_and_learned_snr_weights",
    ],
    "train.ema_decay": [
        "test_ema_lags_the_raw_weights_by_the_decay",
        "test_saved_lora_and_checkpoint_hold_the_ema_average",
    ],
    "datasets[].caption_dropout_rate": [
        "test_caption_and_token_dropout_happen_at_their_rates",
        "test_regularisation_options_change_the_logged_losses",
    ],
    "datasets[].token_dropout_rate": [
        "test_caption_and_token_dropout_happen_at_their_rates",
        "test_token_dropout_reaches_the_text_encoder",
    ],
}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _noisy(arch, inputs, b: dict[str, Any], seed: int = 1):
    latents = inputs.latents(b)
    t = torch.tensor([300, 700])[: latents.shape[0]]
    noise = torch.randn(latents.shape, generator=_gen(seed))
    return arch.add_noise(latents, noise, t), t


def _lora_grads(arch) -> float:
    return sum(
        float(p.grad.abs().sum())
        for p in arch.denoiser.parameters()
        if p.requires_grad and p.grad is not None
    )


# ------------------------------------------------------------------------------ preservation
def test_diff_output_preservation_keeps_the_class_prompt(demo_home: Path, tmp_path: Path) -> None:
    cfg = config(
        train={
            "diff_output_preservation": True,
            "diff_output_preservation_class": "person",
            "diff_output_preservation_multiplier": 2.0,
        }
    )
    arch = load(cfg, demo_home)
    inputs = inputs_for(arch, cfg, tmp_path)
    b = batch(captions=["a photo of sks smiling", "SKS, outdoors, tasks"])
    prompts = class_prompts(b["captions"], batch_triggers(b, cfg), cfg.train)
    assert prompts == ["a photo of person smiling", "person, outdoors, tasks"]
    noisy, t = _noisy(arch, inputs, b)
    extra = sdxl_extra(b)
    # A zero-initialised LoRA changes nothing, so there is nothing to preserve yet...
    assert preservation_loss(arch, inputs, noisy, t, prompts, extra, cfg.train).item() == 0.0
    perturb_lora(arch)  # ...after training steps the class prompt drifts and the term grows.
    dop = preservation_loss(arch, inputs, noisy, t, prompts, extra, cfg.train)
    assert dop.item() > 1e-6
    dop.backward()  # it trains the LoRA (the base prediction is a constant)
    assert _lora_grads(arch) > 0
    # compute_loss adds exactly multiplier × DOP, on the class prompts.
    seen: list[str] = []
    text = inputs.text

    def spy(captions):
        seen.extend(captions)
        return text(captions)

    inputs.text = spy
    off = config(train={"steps": 3})
    with torch.no_grad():
        with_dop = compute_loss(arch, inputs, b, cfg, _gen(0))
        without = compute_loss(arch, inputs, b, off, _gen(0))
        latents = inputs.latents(b)
        gen = _gen(0)
        noise = torch.randn(latents.shape, generator=gen)
        t = arch.sample_timesteps(2, gen)
        noisy = arch.add_noise(latents, noise, t)
        expected = preservation_loss(arch, inputs, noisy, t, prompts, extra, cfg.train)
    assert float(with_dop - without) == pytest.approx(2.0 * float(expected), rel=1e-4)
    assert "a photo of person smiling" in seen
    with pytest.raises(ValueError, match="class word"):
        config(train={"diff_output_preservation": True, "diff_output_preservation_class": " "})


def test_blank_prompt_preservation_keeps_the_empty_prompt(demo_home: Path, tmp_path: Path) -> None:
    cfg = config(
        train={"blank_prompt_preservation": True, "blank_prompt_preservation_multiplier": 3.0}
    )
    arch = load(cfg, demo_home)
    inputs = inputs_for(arch, cfg, tmp_path)
    b = batch()
    noisy, t = _noisy(arch, inputs, b)
    extra, blank = sdxl_extra(b), ["", ""]
    assert preservation_loss(arch, inputs, noisy, t, blank, extra, cfg.train).item() == 0.0
    perturb_lora(arch)
    bpp = preservation_loss(arch, inputs, noisy, t, blank, extra, cfg.train)
    assert bpp.item() > 1e-6
    # It is the distance to the base model's empty-prompt prediction.
    with torch.no_grad():
        base = base_prediction(arch, inputs, noisy, t, blank, extra, cfg.train)
        lora = arch.predict(noisy, t, inputs.text(blank), extra)
    assert bpp.item() == pytest.approx(float((lora - base).pow(2).mean()), rel=1e-5)
    with torch.no_grad():
        with_bpp = compute_loss(arch, inputs, b, cfg, _gen(0))
        without = compute_loss(arch, inputs, b, config(), _gen(0))
        latents = inputs.latents(b)
        gen = _gen(0)
        noise = torch.randn(latents.shape, generator=gen)
        t = arch.sample_timesteps(2, gen)
        noisy = arch.add_noise(latents, noise, t)
        expected = preservation_loss(arch, inputs, noisy, t, blank, extra, cfg.train)
    assert float(with_bpp - without) == pytest.approx(3.0 * float(expected), rel=1e-4)


# ------------------------------------------------------------------------------------ masks
def _capture_prediction(arch) -> list[torch.Tensor]:
    """Keep the gradient of every training prediction (the main one is the first)."""
    kept: list[torch.Tensor] = []
    predict = arch.predict

    def spy(*args, **kwargs):
        out = predict(*args, **kwargs)
        if out.requires_grad:
            out.retain_grad()
            kept.append(out)
        return out

    arch.predict = spy
    return kept


def test_masked_out_area_gets_no_gradient(demo_home: Path, tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    cfg = config(
        datasets=[{"folder_path": "demo:dataset", "resolution": [64], "mask_path": str(masks)}]
    )
    arch = load(cfg, demo_home)
    perturb_lora(arch)
    inputs = inputs_for(arch, cfg, tmp_path)
    kept = _capture_prediction(arch)
    b = batch(masks=left_half_masks())
    compute_loss(arch, inputs, b, cfg, _gen(0)).backward()
    grad = kept[0].grad
    assert torch.count_nonzero(grad[..., :4]) == 0  # d loss / d prediction: masked-out half
    assert grad[..., 4:].abs().min() > 0
    # Without a mask both halves train.
    kept.clear()
    compute_loss(arch, inputs, batch(), cfg, _gen(0)).backward()
    assert kept[0].grad[..., :4].abs().min() > 0


def test_masks_from_files_and_alpha_reach_the_batch(demo_home: Path, tmp_path: Path) -> None:
    folder = tagged_folder(tmp_path / "data", 2, masks=True)
    rgba = tagged_folder(tmp_path / "rgba", 2, alpha=True)

    def first_mask(**options) -> torch.Tensor | None:
        source = options.pop("folder", folder)
        ds = config(datasets=[{"folder_path": str(source), "resolution": [64], **options}])
        scan = scan_dataset(ds.datasets[0], source)
        data = BucketBatches([scan], batch_size=2, seed=0)
        masks = next(iter(data.loader(0)))["masks"]
        return None if masks is None else masks[0, 0]

    assert first_mask() is None
    from_file = first_mask(mask_path=str(folder / "masks"))
    assert from_file[:, :30].max() == 0 and from_file[:, 34:].min() == 1  # learn the right half
    inverted = first_mask(mask_path=str(folder / "masks"), invert_mask=True)
    assert torch.allclose(inverted, 1 - from_file)
    floored = first_mask(mask_path=str(folder / "masks"), mask_min_value=0.25)
    assert torch.allclose(floored, 0.25 + 0.75 * from_file)
    alpha = first_mask(folder=rgba, alpha_mask=True)
    assert torch.allclose(alpha, from_file, atol=1 / 255)
    assert first_mask(folder=rgba) is None  # transparency is ignored unless alpha_mask is on


def test_inverted_mask_prior_pulls_the_masked_out_area_to_the_base(
    demo_home: Path, tmp_path: Path
) -> None:
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    dataset = {"folder_path": "demo:dataset", "resolution": [64], "mask_path": str(masks_dir)}
    cfg = config(
        datasets=[dataset],
        train={"inverted_mask_prior": True, "inverted_mask_prior_multiplier": 0.5},
    )
    arch = load(cfg, demo_home)
    inputs = inputs_for(arch, cfg, tmp_path)
    b = batch(masks=left_half_masks())
    noisy, t = _noisy(arch, inputs, b)
    extra = sdxl_extra(b)

    def term() -> torch.Tensor:
        pred = arch.predict(noisy, t, inputs.text(b["captions"]), extra)
        prior = base_prediction(arch, inputs, noisy, t, b["captions"], extra, cfg.train)
        return inverted_mask_prior(pred, prior, b["masks"], 0.5), pred, prior

    zero, _, _ = term()
    assert zero.abs().max().item() == 0.0  # a zero LoRA already predicts what the base does
    perturb_lora(arch)
    value, pred, prior = term()
    left = (pred - prior).pow(2)[..., :4].mean(dim=(1, 2, 3))
    assert torch.allclose(value, 0.5 * left, rtol=1e-4)  # only the masked-out half counts
    # In compute_loss it gives the masked-out area a gradient, towards the base prediction.
    kept = _capture_prediction(arch)
    compute_loss(arch, inputs, b, cfg, _gen(0)).backward()
    assert kept[0].grad[..., :4].abs().max() > 0
    with pytest.raises(ValueError, match="needs masks"):
        config(train={"inverted_mask_prior": True})


# ----------------------------------------------------------------------- regularisation sets
def test_regularisation_images_weigh_by_their_loss_multiplier(
    demo_home: Path, tmp_path: Path
) -> None:
    per_sample = torch.tensor([2.0, 4.0])
    assert float(weighted_mean(per_sample, torch.tensor([1.0, 0.25]))) == pytest.approx(1.5)
    cfg = config()
    arch = load(cfg, demo_home)
    inputs = inputs_for(arch, cfg, tmp_path)
    with torch.no_grad():
        full = compute_loss(arch, inputs, batch(), cfg, _gen(0))
        half = compute_loss(arch, inputs, batch(multipliers=[0.5, 0.5]), cfg, _gen(0))
    assert float(half) == pytest.approx(0.5 * float(full), rel=1e-6)  # even with one dataset
    # The data marks a regularisation set's images and gives them its multiplier.
    own = tagged_folder(tmp_path / "own", 2)
    reg = tagged_folder(tmp_path / "reg", 2)
    cfg = config(
        datasets=[
            {"folder_path": str(own), "resolution": [64], "trigger_word": "sks"},
            {"folder_path": str(reg), "resolution": [64], "is_reg": True, "loss_multiplier": 0.3},
        ]
    )
    scans = [scan_dataset(ds, Path(ds.folder_path)) for ds in cfg.datasets]
    data = BucketBatches(scans, batch_size=4, seed=0)
    b = next(iter(data.loader(0)))
    flags = zip(b["is_reg"].tolist(), b["loss_multiplier"].tolist(), strict=True)
    by_path = dict(zip(b["paths"], flags, strict=True))
    assert {k: v for k, v in by_path.items() if "/reg/" in k} == {
        str(reg / f"img{i}.png"): (True, pytest.approx(0.3)) for i in range(2)
    }
    assert all(v == (False, 1.0) for k, v in by_path.items() if "/own/" in k)
    with pytest.raises(ValueError, match="regularisation set"):
        config(datasets=[{"folder_path": str(reg), "resolution": [64], "is_reg": True}])


# -------------------------------------------------------------------------------------- EMA
def test_ema_lags_the_raw_weights_by_the_decay() -> None:
    params = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2))]
    ema = build_ema(config(train={"use_ema": True, "ema_decay": 0.9}).train, params)
    assert isinstance(ema, LoraEMA) and build_ema(config().train, params) is None
    for k in range(1, 301):
        with torch.no_grad():
            for p in params:
                p.add_(1.0)  # the raw weights climb one unit per step
        before = [s.clone() for s in ema.shadow]
        decay = ema.current_decay()
        assert decay == pytest.approx(0.0 if k == 1 else min(0.9, k / (9 + k)))
        ema.update()
        for shadow, old, p in zip(ema.shadow, before, params, strict=True):
            assert torch.allclose(shadow, old - (1 - decay) * (old - p), atol=1e-4)
    # At the configured decay d the average trails a steady climb by d / (1 - d) steps.
    assert ema.current_decay() == pytest.approx(0.9)
    for shadow, p in zip(ema.shadow, params, strict=True):
        assert torch.allclose(p - shadow, torch.full_like(p, 0.9 / 0.1), atol=1e-3)
    raw = [p.detach().clone() for p in params]
    with ema.applied():
        assert all(torch.equal(p, s) for p, s in zip(params, ema.shadow, strict=True))
    assert all(torch.equal(p, r) for p, r in zip(params, raw, strict=True))
    again = LoraEMA(params, 0.9)
    again.load_state_dict(ema.state_dict())  # a resumed run continues the same average
    assert all(torch.equal(a, b) for a, b in zip(again.shadow, ema.shadow, strict=True))
    assert again.current_decay() == ema.current_decay()


def test_saved_lora_and_checkpoint_hold_the_ema_average(
    demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    snapshots: list[list[torch.Tensor]] = []
    update = LoraEMA.update

    def record(self):
        snapshots.append([p.detach().clone() for p in self.params])
        update(self)

    saved: dict[str, Any] = {}
    save_final = loop.save_final

    def capture(ctx, cfg, arch, step):
        saved["ema"] = [p.detach().clone() for p in saved["params"]]
        return save_final(ctx, cfg, arch, step)

    build = loop.build_ema

    def keep(train, params):
        params = list(params)
        saved["params"] = params
        return build(train, params)

    sample_and_log = loop.sample_and_log

    def preview(arch, cfg, ctx, step):
        if step == 4:
            saved["preview"] = [p.detach().clone() for p in saved["params"]]
        return sample_and_log(arch, cfg, ctx, step)

    previews = {"prompts": ["sks circle"], "sample_every": 4, "sample_steps": 1}
    previews.update(width=64, height=64, skip_first_sample=True)
    _, plain = run(config(train={"steps": 4}), demo_home, tmp_path / "plain")
    monkeypatch.setattr(LoraEMA, "update", record)
    monkeypatch.setattr(loop, "save_final", capture)
    monkeypatch.setattr(loop, "build_ema", keep)
    monkeypatch.setattr(loop, "sample_and_log", preview)
    cfg = config(train={"use_ema": True, "ema_decay": 0.5, "steps": 4}, sample=previews)
    outcome, tracker = run(cfg, demo_home, tmp_path / "ema")
    assert tracker.losses() == plain.losses()  # EMA never changes what is trained...
    expected = snapshots[0]
    for k, weights in enumerate(snapshots[1:], start=2):
        d = min(0.5, k / (9 + k))
        expected = [e - (1 - d) * (e - w) for e, w in zip(expected, weights, strict=True)]
    # ...but the saved LoRA is the average, and the run goes on with the raw weights after it.
    for got, want in zip(saved["ema"], expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    for got, want in zip(saved["preview"], expected, strict=True):  # previews show it too
        assert torch.allclose(got, want, atol=1e-6)
    raw_final = snapshots[-1]
    assert any(not torch.equal(g, r) for g, r in zip(saved["ema"], raw_final, strict=True))
    assert all(torch.equal(p, r) for p, r in zip(saved["params"], raw_final, strict=True))
    ema_file = load_file(str(outcome.lora_files[0]))
    plain_file = load_file(str(next((tmp_path / "plain" / "lora").glob("*.safetensors"))))
    assert ema_file.keys() == plain_file.keys()
    assert any(not torch.equal(ema_file[k], plain_file[k]) for k in ema_file)
    checkpoint = sorted((tmp_path / "ema" / "checkpoints").iterdir())[-1]
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    for got, want in zip(state["ema"]["shadow_params"], expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


class _StopAfter(StopSignal):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.checks, self.limit = 0, steps

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks > self.limit

    @requested.setter
    def requested(self, value: bool) -> None:
        pass


def test_resume_continues_the_ema_and_learned_snr_weights(demo_home: Path, tmp_path: Path) -> None:
    from options_support import RecordingTracker

    from trainer.engine.context import RunContext
    from trainer.engine.loop import train

    cfg = config(train={"use_ema": True, "ema_decay": 0.8, "learnable_snr_gos": True, "steps": 4})
    run(cfg, demo_home, tmp_path / "whole")
    first = RunContext(
        home=demo_home, job_dir=tmp_path / "split", tracker=RecordingTracker(), stop=_StopAfter(2)
    )
    assert train(cfg, first).stopped
    run(cfg, demo_home, tmp_path / "split", resume=tmp_path / "split")

    def final_state(job: str) -> dict:
        folder = sorted((tmp_path / job / "checkpoints").iterdir())[-1]
        return torch.load(folder / "training_state.pt", weights_only=False)

    whole, split = final_state("whole"), final_state("split")
    for a, b in zip(whole["ema"]["shadow_params"], split["ema"]["shadow_params"], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert whole["ema"]["optimization_step"] == split["ema"]["optimization_step"] == 4
    for key, value in whole["objective"]["snr_weights"].items():
        assert torch.allclose(value, split["objective"]["snr_weights"][key], atol=1e-6), key


# -------------------------------------------------------------------------- caption dropout
def test_caption_and_token_dropout_happen_at_their_rates(tmp_path: Path) -> None:
    folder = tagged_folder(tmp_path / "data", 4)
    full = "sks, red, round, shiny, small, centred, plain"

    def captions(**options) -> list[str]:
        ds = config(
            datasets=[
                {"folder_path": str(folder), "resolution": [64], "trigger_word": "sks", **options}
            ]
        ).datasets[0]
        data = BucketBatches([scan_dataset(ds, folder)], batch_size=2, seed=0)
        return [data.describe((epoch, i))["caption"] for epoch in range(100) for i in range(4)]

    none = captions(caption_dropout_rate=0.0)
    assert set(none) == {full}
    dropped = captions(caption_dropout_rate=0.3)
    share = dropped.count("") / len(dropped)
    assert abs(share - 0.3) < 0.07, share  # 400 draws: 3.4 standard deviations
    assert set(dropped) == {"", full}
    tokens = captions(caption_dropout_rate=0.0, token_dropout_rate=0.5)
    kept = [len(c.split(", ")) - 1 for c in tokens]  # tags besides the trigger, 6 at most
    assert all(c.startswith("sks") for c in tokens)  # the trigger is never dropped
    assert abs(sum(kept) / (6 * len(kept)) - 0.5) < 0.05
    assert min(kept) < 6


# -------------------------------------------------------------- the options in training runs
def _masked_data(tmp: Path, **options) -> list[dict]:
    folder = tmp / "masked"
    if not folder.exists():
        tagged_folder(folder, 4, masks=True)
    return [{"folder_path": str(folder), "resolution": [64], "trigger_word": "sks", **options}]


RUNS: dict[str, tuple[dict, dict, str]] = {
    # option: (its sections, baseline sections, how the logged losses must differ)
    "diff_output_preservation": (
        {"train": {"diff_output_preservation": True, "diff_output_preservation_class": "shape"}},
        {},
        "later",  # 0 while the LoRA is zero (step 1), positive once it has trained
    ),
    "blank_prompt_preservation": ({"train": {"blank_prompt_preservation": True}}, {}, "later"),
    "inverted_mask_prior": ("imp", "masks", "later"),
    "mask_path": ("masks", "unmasked", "first"),
    "is_reg": ("reg 0", "reg 1", "any"),
    "caption_dropout_rate": (
        {
            "datasets": [
                {"folder_path": "demo:dataset", "resolution": [64], "caption_dropout_rate": 1.0}
            ]
        },
        {},
        "first",
    ),
}


def _sections(name: Any, tmp: Path) -> dict:
    if isinstance(name, dict):
        return name
    masks = str(tmp / "masked" / "masks")
    demo = {"folder_path": "demo:dataset", "resolution": [64], "trigger_word": "sks"}
    reg = {"folder_path": "demo:dataset", "resolution": [64], "is_reg": True}
    return {
        "imp": {
            "datasets": _masked_data(tmp, mask_path=masks),
            "train": {"inverted_mask_prior": True},
        },
        "masks": {"datasets": _masked_data(tmp, mask_path=masks)},
        "unmasked": {"datasets": _masked_data(tmp)},
        "reg 0": {"datasets": [demo, {**reg, "loss_multiplier": 0.0}]},
        "reg 1": {"datasets": [demo, {**reg, "loss_multiplier": 1.0}]},
    }[name]


@pytest.fixture(scope="module")
def runs_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data folders and baseline runs shared by the parametrised runs below."""
    return tmp_path_factory.mktemp("regularisation_runs")


_BASELINES: dict[str, list[float]] = {}


@pytest.mark.parametrize("option", list(RUNS))
def test_regularisation_options_change_the_logged_losses(
    option: str, demo_home: Path, runs_home: Path, tmp_path: Path
) -> None:
    ours, theirs, how = RUNS[option]
    _, tracker = run(config(**_sections(ours, runs_home)), demo_home, tmp_path / "on")
    key = repr(theirs)
    if key not in _BASELINES:  # several options share a baseline: train it once
        job = runs_home / f"baseline_{len(_BASELINES)}"
        _BASELINES[key] = run(config(**_sections(theirs, runs_home)), demo_home, job)[1].losses()
    losses, baseline = tracker.losses(), _BASELINES[key]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    if how == "later":
        assert losses[0] == pytest.approx(baseline[0], rel=1e-6)
        assert losses[1:] != pytest.approx(baseline[1:], rel=1e-6)
    elif how == "first":
        assert losses[0] != pytest.approx(baseline[0], rel=1e-6)
    else:
        assert losses != pytest.approx(baseline, rel=1e-6)


def test_token_dropout_reaches_the_text_encoder(
    demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    folder = tagged_folder(tmp_path / "data", 4)
    seen: list[str] = []
    text = loop.ModelInputs.text

    def spy(self, captions):
        seen.extend(captions)
        return text(self, captions)

    monkeypatch.setattr(loop.ModelInputs, "text", spy)
    dataset = {"folder_path": str(folder), "resolution": [64], "trigger_word": "sks"}
    run(config(datasets=[{**dataset, "token_dropout_rate": 0.5}]), demo_home, tmp_path / "job")
    assert seen and all(c.startswith("sks") or c == "" for c in seen)
    assert any(0 < c.count(",") < 6 for c in seen)  # some tags were dropped
