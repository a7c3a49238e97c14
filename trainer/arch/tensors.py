"""Small shared helpers of the Arch classes: dtype names, placing modules, drawing timesteps.

``draw_unit_timesteps`` draws noise levels in [0, 1) for every architecture (the Arch turns them
into its own timesteps); ``unit_sigma`` and ``expand_like`` are the tensor glue the noise
objectives of SD and Flux share.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


# ---------------------------------------------------------------------------------- placement
def resolve_device(value: str, default: torch.device) -> torch.device:
    return default if value == "auto" else torch.device(value)


def resolve_dtype(value: str, default: torch.dtype) -> torch.dtype:
    return default if value == "auto" else DTYPES[value]


def freeze(module: nn.Module | None) -> None:
    if module is not None:
        module.requires_grad_(False)


def place(module: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move a module only where it is not already (diffusers warns on no-op dtype casts)."""
    param = next(module.parameters(), None)
    if param is None:
        return
    if param.dtype != dtype:
        module.to(dtype=dtype)
    if param.device != device:
        module.to(device)


# ---------------------------------------------------------------------------------- timesteps
def draw_unit_timesteps(
    n: int,
    timestep_type: str,
    content_or_style: str,
    shift: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """n noise levels in [0, 1) (1 = pure noise), on the CPU, as float64.

    uniform: flat; sigmoid: logit-normal (more middle levels); shift: flat, then bent towards
    high noise by ``s*u / (1 + (s-1)*u)`` as flow-matching schedulers do. ``content`` bends
    the draws towards high noise (``1 - (1-u)^3``), ``style`` towards low noise (``u^3``), the
    cubic sampling of the T2I-Adapter paper (section 3.4).
    """
    if timestep_type == "sigmoid":
        u = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64))
    else:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
    if timestep_type == "shift":
        u = shift * u / (1 + (shift - 1) * u)
    if content_or_style == "content":
        u = 1 - (1 - u) ** 3
    elif content_or_style == "style":
        u = u**3
    return u.clamp(0.0, 1.0 - 1e-7)


def unit_sigma(t: Tensor, num_train_timesteps: int = 1000) -> Tensor:
    """Flow-matching noise level in [0, 1] from a timestep in [0, num_train_timesteps]."""
    return (t.float() / num_train_timesteps).clamp(0.0, 1.0)


def expand_like(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, ...) matching ``like``'s rank, device and dtype."""
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def own_dtype(device: torch.device) -> torch.autocast:
    """Autocast off: a frozen component (VAE, text encoder) computes in the dtype it was loaded
    in (model.vae_dtype / te_dtype) even inside the training step's mixed-precision autocast."""
    return torch.autocast(device.type, enabled=False)
