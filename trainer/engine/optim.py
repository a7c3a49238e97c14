"""Optimizers, learning-rate schedules, the batch-size ramp and gradient clipping for a run.

Everything here reads the ``train`` section of the config (``TrainConfig``):

- ``param_groups`` turns the trainable parameters of each network into optimizer groups with the
  U-Net / transformer and text-encoder learning rates; ``build_optimizer`` builds the chosen
  optimizer over them, checking ``optimizer_params`` against the optimizer's own signature.
- ``build_scheduler`` returns a ``torch.optim.lr_scheduler.LambdaLR`` whose factor comes from the
  pure functions in ``SCHEDULES``; ``lr_at`` evaluates the same functions without an optimizer, so
  the advisor and the monitor can draw the planned curve.
- ``batch_size_at`` gives the batch size of a step (growing when auto-scaling is on) and
  ``clip_gradients`` clips and reports the gradient norm.

Why own schedule functions rather than ``diffusers.optimization.get_scheduler``: with
``min_lr_ratio == 0`` diffusers' constant, constant_with_warmup, linear, cosine and
cosine_with_restarts curves are exactly these (the tests check it), but diffusers has no floor,
no REX, anchors its polynomial end to ``optimizer.defaults["lr"]`` rather than to each group, and
its closures cannot be evaluated without an optimizer. One set of functions serves the scheduler
and ``lr_at`` alike, so the plotted plan and the run cannot drift apart.

Heavy optional optimizer packages (bitsandbytes, transformers, prodigyopt, lion-pytorch) are
imported only when their optimizer is built.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from trainer.config.sections.train import TrainConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "MissingOptimizerPackage",
    "OptimizerConfigError",
    "ResumableLambdaLR",
    "ScheduleShape",
    "batch_size_at",
    "build_optimizer",
    "build_scheduler",
    "clip_gradients",
    "lr_at",
    "lr_factor",
    "optimizer_class",
    "optimizer_options",
    "param_groups",
    "schedule_shape",
    "warmup_steps_for",
]


# ------------------------------------------------------------------------------------ errors
class OptimizerConfigError(ValueError):
    """An optimizer setting the chosen optimizer cannot take. The message says what to change."""

    def __init__(
        self,
        message: str,
        *,
        option: str | None = None,
        optimizer: str | None = None,
        valid: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.option = option
        self.optimizer = optimizer
        self.valid = tuple(valid)


class MissingOptimizerPackage(ImportError):
    """The package an optimizer lives in is not installed; the message names the pip package."""


# ---------------------------------------------------------------------------------- optimizers
@dataclass(frozen=True)
class _OptimizerSpec:
    module: str
    attr: str
    pip: str
    # Settings the studio chooses; optimizer_params may override them.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # Settings optimizer_params may not touch, with the reason shown to the user.
    reserved: Mapping[str, str] = field(default_factory=dict)


_COMMON_RESERVED = {
    "params": "the studio passes the LoRA parameters itself",
    "lr": "set train.lr (or train.unet_lr / train.text_encoder_lr) instead",
    "weight_decay": "set train.weight_decay instead",
}

OPTIMIZERS: dict[str, _OptimizerSpec] = {
    "adamw": _OptimizerSpec("torch.optim", "AdamW", "torch"),
    "adamw8bit": _OptimizerSpec("bitsandbytes.optim", "AdamW8bit", "bitsandbytes"),
    "adafactor": _OptimizerSpec(
        "transformers.optimization",
        "Adafactor",
        "transformers",
        # relative_step / warmup_init would make Adafactor ignore lr (set in _ADAFACTOR_FIXED);
        # scale_parameter would scale lr by each weight's RMS (a tunable, so only a default).
        defaults={"scale_parameter": False},
        reserved={
            "relative_step": "it would replace train.lr and the schedule with Adafactor's own",
            "warmup_init": "it only works with relative_step, which would ignore train.lr",
        },
    ),
    "prodigy": _OptimizerSpec("prodigyopt", "Prodigy", "prodigyopt"),
    "lion": _OptimizerSpec("lion_pytorch", "Lion", "lion-pytorch"),
}
_ADAFACTOR_FIXED = {"relative_step": False, "warmup_init": False}


def _spec(name: str) -> _OptimizerSpec:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, OPTIMIZERS, n=1)
        hint = f" — did you mean '{close[0]}'?" if close else ""
        raise OptimizerConfigError(
            f"unknown optimizer '{name}'{hint} Choose one of: {', '.join(OPTIMIZERS)}",
            option="optimizer",
            optimizer=name,
            valid=OPTIMIZERS,
        ) from None


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class for a config name, importing its package only now."""
    spec = _spec(name)
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise MissingOptimizerPackage(
            f"optimizer '{name}' needs the '{spec.pip}' package, which is not installed: "
            f"run `pip install {spec.pip}` or choose another optimizer ({exc})"
        ) from exc
    return getattr(module, spec.attr)


def _signature_options(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop("self", None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        k: p
        for k, p in parameters.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    return named, takes_any


def optimizer_options(name: str) -> list[str]:
    """The names ``optimizer_params`` may set for this optimizer (from its ``__init__``)."""
    spec = _spec(name)
    named, _ = _signature_options(optimizer_class(name))
    reserved = {**_COMMON_RESERVED, **spec.reserved}
    return [k for k in named if k not in reserved]


def _coerce(value: Any, default: Any) -> Any:
    # YAML / pydantic give lists and floats; optimizers want tuples (betas, eps) and ints.
    if isinstance(value, list):
        return tuple(value)
    if (
        isinstance(value, float)
        and value.is_integer()
        and isinstance(default, int)
        and not isinstance(default, bool)
    ):
        return int(value)
    return value


def _checked_params(name: str, cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    spec = _spec(name)
    named, takes_any = _signature_options(cls)
    reserved = {**_COMMON_RESERVED, **spec.reserved}
    valid = [k for k in named if k not in reserved]
    checked: dict[str, Any] = {}
    for key, value in params.items():
        if key in reserved:
            raise OptimizerConfigError(
                f"train.optimizer_params.{key} cannot be set for {name}: {reserved[key]}",
                option=key,
                optimizer=name,
                valid=valid,
            )
        if key not in named and not takes_any:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            raise OptimizerConfigError(
                f"train.optimizer_params has unknown option '{key}' for optimizer {name} "
                f"({cls.__module__}.{cls.__qualname__}){hint} Valid options: {', '.join(valid)}",
                option=key,
                optimizer=name,
                valid=valid,
            )
        default = named[key].default if key in named else None
        checked[key] = _coerce(value, default)
    return checked


def _resolved_lr(train: TrainConfig) -> float:
    if train.lr == "auto":
        raise ValueError("train.lr is still 'auto': let the advisor resolve it before a run")
    return float(train.lr)


def param_groups(
    train: TrainConfig, named_modules: Mapping[str, Iterable[torch.nn.Parameter]]
) -> list[dict[str, Any]]:
    """Optimizer groups, one per network, with their learning rates.

    ``named_modules`` maps a network name to its parameters, e.g. ``{"unet": [...],
    "text_encoder": [...], "text_encoder_2": [...]}``. Names starting with ``text_encoder`` get
    ``train.text_encoder_lr`` (empty: half of ``train.lr``); every other name (unet,
    transformer) gets ``train.unet_lr`` (empty: ``train.lr``). Parameters that do not require
    gradients are left out, and groups left empty are skipped.
    """
    lr = _resolved_lr(train)
    unet_lr = train.unet_lr if train.unet_lr is not None else lr
    te_lr = train.text_encoder_lr if train.text_encoder_lr is not None else lr / 2
    groups: list[dict[str, Any]] = []
    for name, params in named_modules.items():
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            continue
        group_lr = te_lr if name.startswith("text_encoder") else unet_lr
        groups.append({"params": trainable, "lr": group_lr, "name": name})
    return groups


def build_optimizer(
    train: TrainConfig, param_groups: Iterable[Mapping[str, Any]]
) -> torch.optim.Optimizer:
    """The configured optimizer over the caller's parameter groups.

    Groups without their own ``lr`` use ``train.lr``; ``train.weight_decay`` applies to all.
    ``train.optimizer_params`` is passed through after checking every name against the
    optimizer's ``__init__``; an unknown or reserved name raises ``OptimizerConfigError``.
    Adafactor runs with ``relative_step=False, warmup_init=False`` (fixed) and
    ``scale_parameter=False`` (overridable) so the configured rate and schedule are what it uses.
    """
    name = train.optimizer
    cls = optimizer_class(name)
    extra = _checked_params(name, cls, train.optimizer_params)
    kwargs: dict[str, Any] = {
        "lr": _resolved_lr(train),
        "weight_decay": train.weight_decay,
        **OPTIMIZERS[name].defaults,
        **extra,
    }
    if name == "adafactor":
        kwargs.update(_ADAFACTOR_FIXED)
    groups = [dict(group) for group in param_groups]
    return cls(groups, **kwargs)


# ---------------------------------------------------------------------------------- schedules
# Each decay curve maps progress p in [0, 1] (through the steps after warmup) to a factor that
# falls from 1 to 0. ``lr_factor`` adds the warmup ramp and lifts the curve onto
# [min_lr_ratio, 1] (as transformers' cosine_with_min_lr and the polynomial lr_end do).
def _constant(p: float, shape: ScheduleShape) -> float:
    return 1.0


def _linear(p: float, shape: ScheduleShape) -> float:
    return 1.0 - p


def _cosine(p: float, shape: ScheduleShape) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * p))


def _cosine_with_restarts(p: float, shape: ScheduleShape) -> float:
    # Hard restarts: num_cycles half-cosines, each jumping straight back to the full rate.
    if p >= 1.0:
        return 0.0
    return 0.5 * (1.0 + math.cos(math.pi * ((shape.num_cycles * p) % 1.0)))


def _polynomial(p: float, shape: ScheduleShape) -> float:
    return (1.0 - p) ** shape.power


def _rex(p: float, shape: ScheduleShape) -> float:
    # REX ("Revisiting Budgeted Training", Chen et al. 2021): stays high longer, then falls.
    return (1.0 - p) / (1.0 - p / 2.0)


SCHEDULES: dict[str, Callable[[float, ScheduleShape], float]] = {
    "constant": _constant,
    "constant_with_warmup": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "cosine_with_restarts": _cosine_with_restarts,
    "polynomial": _polynomial,
    "rex": _rex,
}
# "constant" means flat from step 0, as in diffusers and transformers; use
# constant_with_warmup for a ramp.
_WITHOUT_WARMUP = frozenset({"constant"})


@dataclass
class ScheduleShape:
    """Everything a schedule's factor depends on, as plain data.

    It is the ``lr_lambda`` of the scheduler: LambdaLR saves a callable object's attributes in
    its ``state_dict``, so a resumed scheduler continues the saved shape exactly.
    """

    name: str
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    num_cycles: int = 1
    power: float = 1.0

    def progress(self, step: int) -> float:
        """Share (0-1) of the decay done at ``step``; 0 during the warmup."""
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        return min(1.0, max(0.0, (step - self.warmup_steps) / decay_steps))

    def __call__(self, step: int) -> float:
        if self.name not in _WITHOUT_WARMUP and step < self.warmup_steps:
            return max(0.0, step / self.warmup_steps)
        decay = SCHEDULES[self.name](self.progress(step), self)
        if decay >= 1.0 or self.min_lr_ratio == 0.0:
            return decay
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay


def warmup_steps_for(train: TrainConfig, total_steps: int) -> int:
    """Warmup length: warmup_steps if set, else round(warmup_ratio × total), at most total."""
    params = train.lr_scheduler_params
    warmup = (
        params.warmup_steps if params.warmup_steps > 0 else round(params.warmup_ratio * total_steps)
    )
    return min(warmup, total_steps)


def schedule_shape(train: TrainConfig, total_steps: int) -> ScheduleShape:
    """The schedule of a run of ``total_steps`` optimizer steps."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a whole number from 1 up, not {total_steps!r}")
    if train.lr_scheduler not in SCHEDULES:
        raise ValueError(
            f"unknown lr_scheduler '{train.lr_scheduler}'; choose one of {', '.join(SCHEDULES)}"
        )
    params = train.lr_scheduler_params
    return ScheduleShape(
        name=train.lr_scheduler,
        total_steps=total_steps,
        warmup_steps=warmup_steps_for(train, total_steps),
        min_lr_ratio=params.min_lr_ratio,
        num_cycles=params.num_cycles,
        power=params.power,
    )


def lr_factor(train: TrainConfig, step: int, total_steps: int) -> float:
    """The schedule's multiplier of the base learning rate at ``step`` (0-based)."""
    return schedule_shape(train, total_steps)(step)


def lr_at(train: TrainConfig, step: int, total_steps: int, base_lr: float | None = None) -> float:
    """The planned learning rate at ``step``: the schedule's factor × the base rate.

    The base rate defaults to the U-Net / transformer group's (``unet_lr``, else ``lr``); pass
    ``base_lr`` for another group. Equals what ``build_scheduler`` sets at the same step.
    """
    if base_lr is None:
        base_lr = train.unet_lr if train.unet_lr is not None else _resolved_lr(train)
    return base_lr * lr_factor(train, step, total_steps)


class ResumableLambdaLR(LambdaLR):
    """LambdaLR whose ``load_state_dict`` also puts the resumed rates into the optimizer.

    Plain LambdaLR restores its counters but leaves the optimizer at the rate of a fresh
    schedule's step 0 until the next ``step()``, so the first resumed update would use the wrong
    rate whenever the optimizer's own state is loaded before the scheduler is built.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self.get_last_lr(), strict=True):
            group["lr"] = lr


def build_scheduler(
    train: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> LambdaLR:
    """The configured schedule over ``total_steps`` optimizer steps.

    Call ``scheduler.step()`` once after each ``optimizer.step()``. Every group keeps its own
    base rate and follows the same factor. ``state_dict`` / ``load_state_dict`` resume the curve.
    """
    return ResumableLambdaLR(optimizer, schedule_shape(train, total_steps))


# ------------------------------------------------------------------------------------- batch
def batch_size_at(train: TrainConfig, step: int) -> int:
    """The batch size at ``step``.

    With ``auto_scale_batch_size`` it grows linearly (rounded down) from ``min_batch_size`` at
    step 0 to ``max_batch_size`` at ``batch_size_warmup_steps`` and stays there; otherwise it is
    ``train.batch_size``.
    """
    if train.auto_scale_batch_size:
        low, high = train.min_batch_size, train.max_batch_size
        ramp = train.batch_size_warmup_steps
        if ramp <= 0 or step >= ramp:
            return high
        return low + (high - low) * max(0, step) // ramp
    if train.batch_size == "auto":
        raise ValueError(
            "train.batch_size is still 'auto': let the advisor resolve it before a run"
        )
    return int(train.batch_size)


# ----------------------------------------------------------------------------------- clipping
def clip_gradients(
    params: Iterable[torch.Tensor] | torch.Tensor,
    max_grad_norm: float,
    clip_grad_norm: Callable[..., torch.Tensor] = torch.nn.utils.clip_grad_norm_,
) -> float | None:
    """Clip the gradients' total norm to ``max_grad_norm``; return the norm before clipping.

    Returns None when ``max_grad_norm`` is 0 (clipping off). A non-finite norm is returned as
    it is (inf / nan) so the caller can skip the step. ``clip_grad_norm`` does the clipping
    (the training loop passes accelerate's, which unscales fp16 gradients first).
    """
    if max_grad_norm <= 0:
        return None
    return float(clip_grad_norm(params, max_grad_norm))
