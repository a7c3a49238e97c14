"""``model.split_model_over_gpus``: one transformer spread over several CUDA devices.

accelerate's ``dispatch_model`` places the transformer's blocks in contiguous, balanced runs, one
run per device; everything else stays on the first device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from accelerate import dispatch_model
from torch import nn


def split_plan(names: Sequence[str], devices: Sequence[Any]) -> dict[str, Any]:
    """Contiguous, balanced runs of blocks per device (block order kept)."""
    plan: dict[str, Any] = {}
    n, k = len(names), len(devices)
    for i, name in enumerate(names):
        plan[name] = devices[min(k - 1, i * k // max(n, 1))]
    return plan


def split_over_devices(transformer: nn.Module, devices: Sequence[Any]) -> dict[str, Any]:
    """Spread the transformer's blocks over ``devices`` with accelerate's ``dispatch_model``."""

    blocks = [
        name for name, child in transformer.named_children() if isinstance(child, nn.ModuleList)
    ]
    block_names = [f"{name}.{i}" for name in blocks for i in range(len(getattr(transformer, name)))]
    plan = split_plan(block_names, devices)
    device_map = {
        name: devices[0] for name, _ in transformer.named_children() if name not in blocks
    }
    device_map.update(plan)
    dispatch_model(transformer, device_map=device_map, main_device=devices[0])
    return device_map
