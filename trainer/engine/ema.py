"""EMA of the LoRA weights (``train.use_ema`` / ``train.ema_decay``), with diffusers' EMAModel.

After every optimizer step the average moves towards the raw weights::

    ema ← ema − (1 − d) · (ema − weights),   d = min(ema_decay, (1 + n) / (10 + n))

where n counts the updates before this one (EMAModel's warm-up: the first update copies the
weights, and the decay reaches ``ema_decay`` after about 9 / (1 − ema_decay) steps, so the
average is never stuck near the zero-initialised adapter). The saved LoRA files (final and in
checkpoints) and the preview samples use the average; training continues on the raw weights,
and checkpoints keep both, so a resumed run continues the same average.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from trainer.config.sections.train import TrainConfig


class LoraEMA:
    """An exponential moving average of a fixed list of (adapter) parameters."""

    def __init__(self, params: Iterable[nn.Parameter], decay: float) -> None:
        from diffusers.training_utils import EMAModel  # diffusers: seconds; only with use_ema

        self.params = [p for p in params if p.requires_grad]
        self.decay = decay
        self.model = EMAModel(self.params, decay=decay)

    @property
    def shadow(self) -> list[torch.Tensor]:
        """The averaged values, in the order of ``params``."""
        return self.model.shadow_params

    def current_decay(self) -> float:
        """The decay the next update will use."""
        return self.model.get_decay(self.model.optimization_step + 1)

    def update(self) -> None:
        """Move the average towards the weights (call after each optimizer step)."""
        self.model.step(self.params)

    def reset(self) -> None:
        """Start the average again from the current weights."""
        for shadow, param in zip(self.shadow, self.params, strict=True):
            shadow.data.copy_(param.detach())
        self.model.optimization_step = 0

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Temporarily put the averaged values into the parameters (e.g. to save them)."""
        self.model.store(self.params)
        self.model.copy_to(self.params)
        try:
            yield
        finally:
            self.model.restore(self.params)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue a saved average; none saved (EMA newly on): start from the current weights."""
        if not state:
            self.reset()
            return
        self.model.load_state_dict(state)
        self.model.shadow_params = [
            shadow.to(param.device, param.dtype)
            for shadow, param in zip(self.model.shadow_params, self.params, strict=True)
        ]


def build_ema(train: TrainConfig, params: Iterable[nn.Parameter]) -> LoraEMA | None:
    """The run's EMA, or None when ``train.use_ema`` is off."""
    return LoraEMA(params, train.ema_decay) if train.use_ema else None


@contextlib.contextmanager
def ema_weights(ema: LoraEMA | None) -> Iterator[None]:
    """Within the block the model carries the averaged weights (no-op without EMA)."""
    if ema is None:
        yield
        return
    with ema.applied():
        yield
