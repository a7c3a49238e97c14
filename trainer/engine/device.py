"""The device and precision a run trains on: ``runtime.device`` and ``train.dtype`` answered.

``pick_device`` turns "auto" into CUDA, then Apple's MPS, then the CPU, and refuses a named
device this machine lacks (``DeviceUnavailable``); ``pick_dtype`` turns "auto" into bf16 (or fp16)
on CUDA and fp32 elsewhere.
"""

from __future__ import annotations

import torch


class DeviceUnavailable(RuntimeError):
    """runtime.device names a device this machine does not have."""


def pick_device(value: str) -> torch.device:
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if value != "auto":
        if not available.get(value, False):
            found = ", ".join(name for name, ok in available.items() if ok)
            raise DeviceUnavailable(
                f"runtime.device is {value}, but this machine has no {value} device "
                f"(available: {found}) — set runtime.device to auto or cpu"
            )
        return torch.device(value)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(value: str, device: torch.device) -> torch.dtype:
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if value != "auto":
        return table[value]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # fastest on CPU; fp16 on CPU crashes some paths
