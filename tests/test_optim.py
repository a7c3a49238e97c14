"""trainer.engine.optim: optimizers, schedules, batch-size ramp and clipping, on tiny CPU models."""

from __future__ import annotations

import copy
import io
import math
import sys
from itertools import pairwise
from typing import Any

import pytest
import torch

from trainer.config.sections.train import TrainConfig
from trainer.engine.optim import (
    SCHEDULES,
    MissingOptimizerPackage,
    OptimizerConfigError,
    batch_size_at,
    build_optimizer,
    build_scheduler,
    clip_gradients,
    lr_at,
    optimizer_options,
    param_groups,
)

# A learning rate each optimizer trains the toy regression well with (Prodigy sets its own).
OPTIMIZER_LRS = {"adamw": 1e-2, "adamw8bit": 1e-2, "adafactor": 1e-2, "prodigy": 1.0, "lion": 3e-3}
LR = 1e-3


def _train(**fields: Any) -> TrainConfig:
    return TrainConfig(**fields)


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(32, 64, generator=gen), torch.randn(32, 64, generator=gen)


def _model() -> torch.nn.Linear:
    # 64×64 = 4096 weights: exactly big enough for bitsandbytes' 8-bit state.
    torch.manual_seed(0)
    return torch.nn.Linear(64, 64)


def _optimizer(train: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    return build_optimizer(train, param_groups(train, {"unet": list(model.parameters())}))


def _steps(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> list[float]:
    x, y = _data()
    losses = []
    for _ in range(n):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    # Through bytes, as a checkpoint would be, and loadable with the safe loader.
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---------------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("name", list(OPTIMIZER_LRS))
def test_optimizer_trains_and_resumes_exactly(name: str) -> None:
    train = _train(optimizer=name, lr=OPTIMIZER_LRS[name], weight_decay=0.01)
    model = _model()
    opt = _optimizer(train, model)
    losses = _steps(model, opt, 50)
    assert losses[-1] < 0.5 * losses[0], f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"

    resumed_model = copy.deepcopy(model)
    resumed = _optimizer(train, resumed_model)
    resumed.load_state_dict(_roundtrip(opt.state_dict()))
    fresh_model = copy.deepcopy(model)  # same weights, no optimizer state: must diverge
    fresh = _optimizer(train, fresh_model)

    _steps(model, opt, 5)
    _steps(resumed_model, resumed, 5)
    _steps(fresh_model, fresh, 5)
    for original, again in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(original, again)
    assert not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True)
    ), "the resume check cannot tell loaded state from fresh state"


def test_adamw8bit_is_bitsandbytes_with_uint8_state() -> None:
    import bitsandbytes as bnb

    train = _train(optimizer="adamw8bit", lr=1e-2)
    model = _model()
    opt = _optimizer(train, model)
    assert isinstance(opt, bnb.optim.AdamW8bit)
    _steps(model, opt, 2)
    big = opt.state[model.weight]  # 4096 elements: 8-bit moments, with block-wise scales
    assert big["state1"].dtype == torch.uint8
    assert big["state2"].dtype == torch.uint8
    assert big["absmax1"].dtype == torch.float32
    # Below min_8bit_size (4096) bitsandbytes keeps 32-bit moments
    # (docs/sources.md#bitsandbytes-on-cpu).
    assert opt.state[model.bias]["state1"].dtype == torch.float32


def test_optimizer_params_pass_through_with_coercion() -> None:
    model = _model()
    train = _train(optimizer="adamw8bit", optimizer_params={"betas": [0.8, 0.95]})
    opt = _optimizer(train, model)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95)

    # YAML/pydantic hand over 4096.0; an int setting must get an int back.
    train = _train(optimizer="prodigy", lr=1.0, optimizer_params={"slice_p": 2, "d_coef": 0.5})
    opt = _optimizer(train, model)
    assert opt.param_groups[0]["slice_p"] == 2
    assert isinstance(opt.param_groups[0]["slice_p"], int)
    assert opt.param_groups[0]["d_coef"] == 0.5


def test_weight_decay_and_adafactor_use_configured_lr() -> None:
    model = _model()
    train = _train(optimizer="adafactor", lr=2e-3, weight_decay=0.05)
    opt = _optimizer(train, model)
    group = opt.param_groups[0]
    assert group["lr"] == 2e-3 and group["weight_decay"] == 0.05
    assert group["relative_step"] is False and group["warmup_init"] is False
    assert group["scale_parameter"] is False
    # The step really uses lr: with lr 0 nothing moves.
    still = _train(optimizer="adafactor", lr=2e-3, weight_decay=0.0)
    opt = _optimizer(still, model)
    for g in opt.param_groups:
        g["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    _steps(model, opt, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_unknown_optimizer_param_names_option_optimizer_and_suggestion() -> None:
    train = _train(optimizer="adamw", optimizer_params={"betaz": [0.9, 0.99]})
    with pytest.raises(OptimizerConfigError) as err:
        _optimizer(train, _model())
    message = str(err.value)
    assert "'betaz'" in message and "adamw" in message
    assert "did you mean 'betas'" in message
    assert "amsgrad" in message  # lists the valid names
    assert err.value.option == "betaz" and "betas" in err.value.valid

    train = _train(optimizer="prodigy", optimizer_params={"d_coeff": 2.0})
    with pytest.raises(OptimizerConfigError, match="did you mean 'd_coef'"):
        _optimizer(train, _model())


def test_reserved_optimizer_params_point_to_the_config_field() -> None:
    with pytest.raises(OptimizerConfigError, match=r"train\.lr"):
        _optimizer(_train(optimizer="lion", optimizer_params={"lr": 0.1}), _model())
    with pytest.raises(OptimizerConfigError, match="relative_step"):
        _optimizer(
            _train(optimizer="adafactor", optimizer_params={"relative_step": True}), _model()
        )
    assert "lr" not in optimizer_options("adamw")
    assert "d_coef" in optimizer_options("prodigy")


def test_missing_package_names_the_pip_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lion_pytorch", None)  # import now raises ImportError
    with pytest.raises(MissingOptimizerPackage, match="pip install lion-pytorch"):
        _optimizer(_train(optimizer="lion"), _model())


def test_auto_lr_is_refused() -> None:
    with pytest.raises(ValueError, match="auto"):
        param_groups(_train(lr="auto"), {"unet": list(_model().parameters())})


# ------------------------------------------------------------------------------- param groups
def test_param_groups_lrs_defaults_and_empty_groups() -> None:
    unet, te, frozen = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    frozen.requires_grad_(False)
    modules = {
        "unet": list(unet.parameters()),
        "text_encoder": list(te.parameters()),
        "text_encoder_2": list(frozen.parameters()),
        "transformer": [],
    }
    groups = param_groups(_train(lr=1e-4), modules)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-4), ("text_encoder", 5e-5)]
    assert groups[0]["params"] == list(unet.parameters())

    groups = param_groups(_train(lr=1e-4, unet_lr=3e-4, text_encoder_lr=2e-5), modules)
    assert [g["lr"] for g in groups] == [3e-4, 2e-5]

    opt = build_optimizer(
        _train(optimizer="adamw", lr=1e-4), param_groups(_train(lr=1e-4), modules)
    )
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [
        ("unet", 1e-4),
        ("text_encoder", 5e-5),
    ]


# ----------------------------------------------------------------------------------- schedules
TOTAL = 100
WARMUP = 10


def _sched_train(name: str, **params: Any) -> TrainConfig:
    params.setdefault("warmup_steps", WARMUP)
    return _train(optimizer="adamw", lr=LR, lr_scheduler=name, lr_scheduler_params=params)


def _curve(train: TrainConfig, total: int = TOTAL, extra: int = 5) -> list[float]:
    """The LR of each optimizer step 0..total+extra from a real optimizer and scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(train, [{"params": [param]}])
    sched = build_scheduler(train, opt, total)
    lrs = []
    for _ in range(total + extra + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _planned(train: TrainConfig, total: int = TOTAL, extra: int = 5) -> list[float]:
    return [lr_at(train, step, total) for step in range(total + extra + 1)]


def _jumps(lrs: list[float]) -> int:
    return sum(1 for a, b in pairwise(lrs) if b > a + 1e-12)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_scheduler_curve_equals_lr_at(name: str) -> None:
    train = _sched_train(name, min_lr_ratio=0.1, num_cycles=3, power=2.0)
    curve = _curve(train)
    assert curve == pytest.approx(_planned(train), rel=1e-12, abs=0)
    floor = 0.1 * LR
    if name not in ("constant", "constant_with_warmup"):
        assert min(curve[WARMUP:]) >= floor * (1 - 1e-9)
        assert curve[TOTAL] == pytest.approx(floor) and curve[-1] == pytest.approx(floor)


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "constant"])
def test_warmup_rises_from_zero_to_base_lr(name: str) -> None:
    lrs = _planned(_sched_train(name, num_cycles=2))
    assert lrs[0] == 0.0
    assert lrs[1] < 0.15 * LR
    assert all(a < b for a, b in pairwise(lrs[: WARMUP + 1]))
    assert lrs[WARMUP] == pytest.approx(LR)


def test_warmup_ratio_used_when_steps_zero() -> None:
    train = _sched_train("linear", warmup_steps=0, warmup_ratio=0.2)
    lrs = _planned(train, total=50)
    assert lrs[10] == pytest.approx(LR) and lrs[9] == pytest.approx(0.9 * LR)


def test_constant_is_flat_even_with_warmup_set() -> None:
    curve = _curve(_sched_train("constant"))
    assert set(curve) == {LR}


def test_linear_ends_at_floor() -> None:
    lrs = _planned(_sched_train("linear", min_lr_ratio=0.2))
    assert lrs[TOTAL] == pytest.approx(0.2 * LR)
    mid = WARMUP + (TOTAL - WARMUP) // 2
    assert lrs[mid] == pytest.approx((0.2 + 0.8 * 0.5) * LR)


def test_cosine_is_half_at_mid_decay() -> None:
    lrs = _planned(_sched_train("cosine"))
    mid = WARMUP + (TOTAL - WARMUP) // 2
    assert lrs[mid] == pytest.approx(0.5 * LR)
    assert lrs[TOTAL] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("cycles", [1, 3, 4])
def test_cosine_with_restarts_jumps_back_num_cycles_minus_one_times(cycles: int) -> None:
    lrs = _planned(_sched_train("cosine_with_restarts", num_cycles=cycles, min_lr_ratio=0.05))
    after_warmup = lrs[WARMUP:]
    assert _jumps(after_warmup) == cycles - 1
    # Hard restarts: each jump lands back at (about) the full rate; no second warmup ramp.
    rises = [b for a, b in pairwise(after_warmup) if b > a]
    assert all(b > 0.9 * LR for b in rises)


def test_polynomial_power_two_below_linear_and_power_one_is_linear() -> None:
    mid = WARMUP + (TOTAL - WARMUP) // 2
    linear = _planned(_sched_train("linear", min_lr_ratio=0.1))
    squared = _planned(_sched_train("polynomial", power=2.0, min_lr_ratio=0.1))
    straight = _planned(_sched_train("polynomial", power=1.0, min_lr_ratio=0.1))
    assert squared[mid] < linear[mid] - 0.1 * LR
    assert straight == pytest.approx(linear)
    assert squared[TOTAL] == pytest.approx(0.1 * LR)


def test_rex_stays_above_linear_and_ends_at_floor() -> None:
    mid = WARMUP + (TOTAL - WARMUP) // 2
    linear = _planned(_sched_train("linear", min_lr_ratio=0.1))
    rex = _planned(_sched_train("rex", min_lr_ratio=0.1))
    assert rex[mid] > linear[mid] + 0.1 * LR
    # (1 - p) / (1 - p/2) at p = 0.5 is 2/3.
    assert rex[mid] == pytest.approx((0.1 + 0.9 * (2 / 3)) * LR)
    assert rex[TOTAL] == pytest.approx(0.1 * LR)
    decay = rex[WARMUP : TOTAL + 1]
    assert all(a >= b for a, b in pairwise(decay))


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_scheduler_resumes_identically(name: str) -> None:
    train = _sched_train(name, num_cycles=3, min_lr_ratio=0.1)
    stop = 37
    reference = _curve(train)

    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(train, [{"params": [param]}])
    sched = build_scheduler(train, opt, TOTAL)
    for _ in range(stop):
        opt.step()
        sched.step()
    state = _roundtrip(sched.state_dict())

    # A fresh optimizer + scheduler, only the scheduler's state loaded.
    param2 = torch.nn.Parameter(torch.zeros(1))
    opt2 = build_optimizer(train, [{"params": [param2]}])
    sched2 = build_scheduler(train, opt2, TOTAL)
    sched2.load_state_dict(state)
    resumed = []
    for _ in range(stop, len(reference)):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == reference[stop:]


def test_resumed_scheduler_keeps_saved_shape() -> None:
    train = _sched_train("linear")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(train, [{"params": [param]}])
    sched = build_scheduler(train, opt, TOTAL)
    state = _roundtrip(sched.state_dict())
    other = build_scheduler(_sched_train("cosine"), opt, 10)
    other.load_state_dict(state)
    assert other.lr_lambdas[0].name == "linear" and other.lr_lambdas[0].total_steps == TOTAL


def test_scheduler_scales_each_group_from_its_own_base() -> None:
    train = _sched_train("cosine", min_lr_ratio=0.1)
    unet, te = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    groups = param_groups(train, {"unet": [unet], "text_encoder": [te]})
    opt = build_optimizer(train, groups)
    sched = build_scheduler(train, opt, TOTAL)
    for step in range(TOTAL):
        unet_lr, te_lr = (g["lr"] for g in opt.param_groups)
        assert unet_lr == pytest.approx(lr_at(train, step, TOTAL), rel=1e-12)
        assert te_lr == pytest.approx(lr_at(train, step, TOTAL, base_lr=LR / 2), rel=1e-12)
        opt.step()
        sched.step()


def test_matches_diffusers_where_it_has_the_same_schedule() -> None:
    """With no floor, diffusers' schedules coincide with ours (ecosystem cross-check)."""
    from diffusers.optimization import get_scheduler

    for name in ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts"):
        train = _sched_train(name, num_cycles=3)
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=LR)
        ref = get_scheduler(
            name, opt, num_warmup_steps=WARMUP, num_training_steps=TOTAL, num_cycles=3
        )
        theirs = []
        for _ in range(TOTAL + 1):
            theirs.append(opt.param_groups[0]["lr"])
            opt.step()
            ref.step()
        ours = _planned(train, extra=0)
        assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-18), name


def test_bad_total_steps_raise() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(_sched_train("linear"), 0, 0)


# --------------------------------------------------------------------------------- batch size
def test_batch_size_ramp_is_monotonic_with_exact_ends() -> None:
    train = _train(
        auto_scale_batch_size=True, min_batch_size=2, max_batch_size=9, batch_size_warmup_steps=40
    )
    sizes = [batch_size_at(train, step) for step in range(60)]
    assert all(isinstance(s, int) for s in sizes)
    assert sizes[0] == 2
    assert all(s == 9 for s in sizes[40:])
    assert sizes[39] < 9
    assert all(a <= b for a, b in pairwise(sizes))
    assert set(range(2, 10)) <= set(sizes)  # every size in between is used: it really ramps

    no_ramp = _train(
        auto_scale_batch_size=True, min_batch_size=2, max_batch_size=4, batch_size_warmup_steps=0
    )
    assert batch_size_at(no_ramp, 0) == 4


def test_batch_size_without_auto_scaling() -> None:
    assert batch_size_at(_train(batch_size=3), 500) == 3
    with pytest.raises(ValueError, match="auto"):
        batch_size_at(_train(batch_size="auto"), 0)


# ----------------------------------------------------------------------------------- clipping
def test_clip_gradients_returns_pre_clip_norm_and_clips() -> None:
    model = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8) * 100
    model(x).pow(2).sum().backward()
    expected = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert expected > 1.0

    grads = [p.grad.clone() for p in model.parameters()]
    assert clip_gradients(model.parameters(), 0.0) is None
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters(), strict=True))

    norm = clip_gradients(model.parameters(), 1.0)
    assert norm == pytest.approx(expected, rel=1e-5)
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters()))
    assert after == pytest.approx(1.0, rel=1e-4)
