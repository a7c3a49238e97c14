"""Networks options: each test trains the tiny models through `train()` (or builds the adapters)
and fails if the option is ignored.

Adapter kinds are read back from the saved web-UI file (kohya / LyCORIS keys), so a test proves
both that the option reached peft and that the file other tools load carries it. Every adapter
starts as an exact no-op (peft's zero init), so a non-zero weight change in the file after two
steps proves the layers received gradients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from options_support import run, tiny_config
from pydantic import ValidationError

from trainer.arch.adapters import tuner_layers
from trainer.arch.base import Arch
from trainer.arch.registry import load_arch
from trainer.config.schema import TrainingConfig
from trainer.engine import loop
from trainer.lora.io import load_lora_file, read_lora_metadata, read_lora_tensors

PROVES = {
    "network.type": [
        "test_network_type_picks_the_adapter_that_is_trained_and_saved",
        "test_locon_adapts_convolutions_with_their_own_rank",
    ],
    "network.linear": "test_network_type_picks_the_adapter_that_is_trained_and_saved",
    "network.linear_alpha": "test_network_type_picks_the_adapter_that_is_trained_and_saved",
    "network.conv": [
        "test_locon_adapts_convolutions_with_their_own_rank",
        "test_schema_refuses_network_options_that_cannot_work",
    ],
    "network.conv_alpha": "test_locon_adapts_convolutions_with_their_own_rank",
    "network.lokr_factor": "test_lokr_factor_and_full_rank_change_the_factors",
    "network.lokr_full_rank": "test_lokr_factor_and_full_rank_change_the_factors",
    "network.dropout": "test_dropout_changes_training_after_the_first_step",
    "network.target_modules": "test_target_modules_choose_the_adapted_layers",
    "train.train_text_encoder": [
        "test_text_encoder_lora_trains_with_its_own_lr",
        "test_schema_refuses_network_options_that_cannot_work",
    ],
    "train.text_encoder_lr": "test_text_encoder_lora_trains_with_its_own_lr",
    "train.unet_lr": "test_text_encoder_lora_trains_with_its_own_lr",
    "train.train_unet": "test_text_encoder_only_lora_leaves_the_unet_without_adapter",
    "model.lora_path": "test_lora_path_starts_from_the_loaded_lora",
}

TO_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"
MARKERS = {
    "lora": {"lora_down.weight", "lora_up.weight", "alpha"},
    "dora": {"lora_down.weight", "lora_up.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "lokr": {"lokr_w1", "lokr_w2", "alpha"},  # rank 4 >= half of the 8-wide factor: full
}


def module_params(tensors: dict[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    return {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == module}


def delta(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weight change a web-UI / LyCORIS file describes for one module (as ComfyUI computes)."""
    alpha = float(p["alpha"])
    if "lora_down.weight" in p:
        down, up = p["lora_down.weight"].flatten(1), p["lora_up.weight"].flatten(1)
        return up @ down * alpha / down.shape[0]
    if "hada_w1_a" in p:
        w = (p["hada_w1_a"] @ p["hada_w1_b"]) * (p["hada_w2_a"] @ p["hada_w2_b"])
        return w * alpha / p["hada_w1_b"].shape[0]
    w2 = p["lokr_w2"] if "lokr_w2" in p else p["lokr_w2_a"] @ p["lokr_w2_b"]
    return torch.kron(p["lokr_w1"], w2)


@pytest.fixture(scope="module")
def baseline(demo_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """Plain LoRA rank 4 / alpha 4, 3 steps, saved fp32 web-UI: the run others differ from."""
    outcome, rec = run(
        tiny_config(train={"steps": 3}), demo_home, tmp_path_factory.mktemp("baseline")
    )
    return outcome, rec


# --------------------------------------------------------------------------------- adapter kinds
@pytest.mark.parametrize("kind", ["lora", "loha", "lokr", "dora"])
def test_network_type_picks_the_adapter_that_is_trained_and_saved(
    kind: str, demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(network={"type": kind, "linear": 4, "linear_alpha": 2})
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    tensors = read_lora_tensors(outcome.lora_files[0])
    params = module_params(tensors, TO_Q)
    assert set(params) == MARKERS[kind]
    assert read_lora_metadata(outcome.lora_files[0])["network_type"] == kind
    # network.linear / linear_alpha reach the adapter (the defaults are 16 / 16).
    assert float(params["alpha"]) == pytest.approx(2.0 if kind != "lokr" else 4.0)
    if kind in ("lora", "dora"):
        assert params["lora_down.weight"].shape == (4, 32)
    if kind == "loha":
        assert params["hada_w1_b"].shape == (4, 32) and params["hada_w2_b"].shape == (4, 32)
    if kind == "dora":  # DoRA's magnitude vector: one per output row
        assert params["dora_scale"].shape == (32, 1)
    if kind == "lokr":
        assert params["lokr_w1"].shape == (4, 4) and params["lokr_w2"].shape == (8, 8)
    # Zero-init adapters that changed in two steps received gradients.
    assert delta(params).abs().max() > 1e-5
    # Attention projections only: no convolution was adapted without locon / conv.
    assert not any("resnets" in key or "conv" in key for key in tensors)
    other = {"lora_down.weight", "hada_w1_a", "lokr_w1", "dora_scale"} - MARKERS[kind]
    assert not any(key.endswith(tuple("." + m for m in other)) for key in tensors)


def test_locon_adapts_convolutions_with_their_own_rank(demo_home: Path, tmp_path: Path) -> None:
    cfg = tiny_config(
        network={"type": "locon", "linear": 4, "linear_alpha": 4, "conv": 2, "conv_alpha": 1}
    )
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    tensors = read_lora_tensors(outcome.lora_files[0])
    conv = module_params(tensors, CONV)
    assert conv["lora_down.weight"].shape[:2] == (2, 32)  # conv rank 2, 3x3 kernel kept
    assert conv["lora_down.weight"].shape[2:] == (3, 3)
    assert float(conv["alpha"]) == pytest.approx(1.0)  # conv_alpha, not the conv rank
    assert conv["lora_up.weight"].abs().max() > 0  # the conv adapter got gradients
    assert module_params(tensors, TO_Q)["lora_down.weight"].shape[0] == 4  # linear rank
    conv_modules = {k.split(".")[0] for k in tensors if "resnets" in k or "samplers" in k}
    assert len(conv_modules) >= 4


def _adapters(cfg: TrainingConfig, home: Path) -> tuple[Arch, dict[str, list]]:
    arch = load_arch(cfg, home, torch.device("cpu"), torch.float32)
    return arch, arch.add_lora(cfg.network, cfg.train.train_text_encoder)


def test_lokr_factor_and_full_rank_change_the_factors(demo_home: Path) -> None:
    def build(**network):
        cfg = tiny_config(network={"type": "lokr", "linear": 2, "linear_alpha": 2, **network})
        arch, groups = _adapters(cfg, demo_home)
        layer = dict(tuner_layers(arch.denoiser))[
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
        ]
        shapes = {
            name: tuple(getattr(layer, name)["default"].shape)
            for name in ("lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
            if "default" in getattr(layer, name)
        }
        return shapes, sum(p.numel() for p in groups["unet"])

    factor2, count2 = build(lokr_factor=2)
    factor4, count4 = build(lokr_factor=4)
    full, count_full = build(lokr_factor=4, lokr_full_rank=True)
    # 32 = 2 x 16 or 4 x 8: the factor is the small Kronecker factor's size.
    assert factor2 == {"lokr_w1": (2, 2), "lokr_w2_a": (16, 2), "lokr_w2_b": (2, 16)}
    assert factor4 == {"lokr_w1": (4, 4), "lokr_w2_a": (8, 2), "lokr_w2_b": (2, 8)}
    assert count2 != count4
    # Full rank: the large factor is one full matrix instead of a rank-2 product.
    assert full == {"lokr_w1": (4, 4), "lokr_w2": (8, 8)}
    assert count_full > count4


def test_dropout_changes_training_after_the_first_step(
    baseline, demo_home: Path, tmp_path: Path
) -> None:
    _, base = baseline
    cfg = tiny_config(train={"steps": 3}, network={"dropout": 0.5})
    _, rec = run(cfg, demo_home, tmp_path / "job")
    # Step 1: the up-projections are still zero, so dropout cannot change the output yet.
    assert rec.losses()[0] == base.losses()[0]
    assert rec.losses()[1:] != base.losses()[1:]
    arch, _ = _adapters(cfg, demo_home)
    layer = next(layer for _, layer in tuner_layers(arch.denoiser))
    assert layer.lora_dropout["default"].p == 0.5


def test_target_modules_choose_the_adapted_layers(
    baseline, demo_home: Path, tmp_path: Path
) -> None:
    default_file = read_lora_tensors(baseline[0].lora_files[0])
    endings = {key.split(".")[0].rsplit("_", 1)[-1] for key in default_file}
    assert endings == {"q", "k", "v", "0"}  # auto: to_q, to_k, to_v, to_out.0
    cfg = tiny_config(network={"target_modules": ["to_k"]}, train={"steps": 1})
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    modules = {key.split(".")[0] for key in read_lora_tensors(outcome.lora_files[0])}
    assert modules and all(name.endswith("_to_k") for name in modules)


# --------------------------------------------------------------------------------- text encoder
def _spy_optimizer(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    seen: list[dict[str, float]] = []
    real = loop.build_optimizer

    def spy(train, groups):
        optimizer = real(train, groups)
        seen.append({g.get("name", "?"): g["lr"] for g in optimizer.param_groups})
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", spy)
    return seen


@pytest.mark.parametrize(
    ("arch", "prefixes"), [("sd15", ("lora_te_",)), ("sdxl", ("lora_te1_", "lora_te2_"))]
)
def test_text_encoder_lora_trains_with_its_own_lr(
    arch: str, prefixes: tuple[str, ...], demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    seen = _spy_optimizer(monkeypatch)
    cfg = tiny_config(
        model={"arch": arch, "name_or_path": f"demo:{arch}"},
        train={"train_text_encoder": True, "unet_lr": 2e-3, "text_encoder_lr": 5e-3},
    )
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    assert seen == [{"unet": 2e-3, "text_encoder": 5e-3}]
    tensors = read_lora_tensors(outcome.lora_files[0])
    for prefix in prefixes:
        ups = [v for k, v in tensors.items() if k.startswith(prefix) and "lora_up" in k]
        assert ups, f"no {prefix} layers saved"
        assert max(float(v.abs().max()) for v in ups) > 0  # zero-init: they trained
    assert any(k.startswith("lora_unet_") for k in tensors)


def test_text_encoder_only_lora_leaves_the_unet_without_adapter(
    demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    seen = _spy_optimizer(monkeypatch)
    cfg = tiny_config(train={"train_text_encoder": True, "train_unet": False})
    outcome, _ = run(cfg, demo_home, tmp_path / "job")
    assert seen == [{"text_encoder": 5e-4}]  # text_encoder_lr empty: half of lr
    tensors = read_lora_tensors(outcome.lora_files[0])
    assert tensors and all(k.startswith("lora_te_") for k in tensors)
    assert max(float(v.abs().max()) for k, v in tensors.items() if "lora_up" in k) > 0


def test_schema_refuses_network_options_that_cannot_work() -> None:
    flux = {"model": {"arch": "flux", "name_or_path": "demo:flux"}}
    cases = [
        ({**flux, "network": {"type": "locon"}}, "network.conv", "no convolution layers"),
        ({**flux, "train": {"train_text_encoder": True}}, "train.train_text_encoder", "Flux"),
        ({"network": {"type": "loha", "conv_alpha": 2}}, "network.conv_alpha", "ignored"),
    ]
    for sections, path, reason in cases:
        with pytest.raises(ValidationError) as info:
            tiny_config(**sections)
        assert path in str(info.value) and reason in str(info.value)


# --------------------------------------------------------------------------------- lora_path
def test_lora_path_starts_from_the_loaded_lora(
    baseline, demo_home: Path, tmp_path: Path, monkeypatch
) -> None:
    source_outcome, fresh = baseline
    source = source_outcome.lora_files[0]
    cfg = tiny_config(model={"lora_path": str(source)}, train={"steps": 1})
    outcome, loaded = run(cfg, demo_home, tmp_path / "loaded")
    # The first step already sees the loaded LoRA: its loss is not the fresh (no-op) one...
    assert loaded.losses()[0] != fresh.losses()[0]
    # ... but exactly the loss of the same run with the file put into the adapters by hand.
    real_add_lora = Arch.add_lora

    def add_then_load(self, *args, **kwargs):
        groups = real_add_lora(self, *args, **kwargs)
        load_lora_file(self, source)
        return groups

    monkeypatch.setattr(Arch, "add_lora", add_then_load)
    _, by_hand = run(tiny_config(train={"steps": 1}), demo_home, tmp_path / "by_hand")
    monkeypatch.undo()
    assert loaded.losses()[0] == by_hand.losses()[0]
    # Training continued from it: one small step away from the source weights.
    start, end = read_lora_tensors(source), read_lora_tensors(outcome.lora_files[0])
    assert set(start) == set(end)
    ups = [k for k in start if "lora_up" in k]
    assert max(float((end[k] - start[k]).abs().max()) for k in ups) < 3e-3
    assert max(float(start[k].abs().max()) for k in ups) > 3e-3
    # A LoRA of another rank is refused with the reason.
    other = tiny_config(model={"lora_path": str(source)}, network={"linear": 8, "linear_alpha": 8})
    with pytest.raises(ValueError, match="does not match this network"):
        run(other, demo_home, tmp_path / "mismatch")
