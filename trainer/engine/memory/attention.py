"""Attention backends (``model.attention_backend``) through diffusers' dispatcher.

Flux's processors use ``dispatch_attention_fn`` already; the SD U-Nets' ``AttnProcessor2_0``
calls SDPA directly, so they get ``DispatchAttnProcessor`` first (the same maths, routed through
the dispatcher), then ``set_attention_backend`` picks the backend for this model only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from trainer.engine.failures import MemoryOptionError

ATTENTION_BACKENDS = {
    "native": "native",
    "math": "_native_math",
    "flash": "flash",
    "xformers": "xformers",
    "sage": "sage",
}
ATTENTION_NEEDS = {
    "flash": "the flash-attn package",
    "xformers": "the xformers package",
    "sage": "the sageattention package",
}


class DispatchAttnProcessor:
    """diffusers' ``AttnProcessor2_0`` with its SDPA call routed through ``dispatch_attention_fn``,
    so ``set_attention_backend`` applies to the SD U-Nets as it does to Flux."""

    _attention_backend: Any = None
    _parallel_config: Any = None

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        # diffusers: seconds to import; only with model.attention_backend set.
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, sequence_length, _ = context.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        # The dispatcher takes (batch, sequence, heads, head_dim).
        query = query.view(batch_size, -1, attn.heads, head_dim)
        key = key.view(batch_size, -1, attn.heads, head_dim)
        value = value.view(batch_size, -1, attn.heads, head_dim)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=0.0,
            is_causal=False,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(
                batch_size, channel, height, width
            )
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def set_attention_backend(module: nn.Module, choice: str, device: torch.device) -> str | None:
    """Route ``module``'s attention through diffusers' backend for ``choice``; None for 'auto'."""
    if choice == "auto":
        return None
    # diffusers: seconds to import; only with model.attention_backend set.
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    from diffusers.models.attention_processor import AttnProcessor2_0

    backend = ATTENTION_BACKENDS[choice]
    if choice in ATTENTION_NEEDS and device.type != "cuda":
        raise MemoryOptionError(
            f"model.attention_backend '{choice}' needs {ATTENTION_NEEDS[choice]} and an NVIDIA "
            f"GPU; training runs on {device.type} — use 'auto' or 'native'"
        )
    processors = dict(getattr(module, "attn_processors", {}))
    if any(type(p) is AttnProcessor2_0 for p in processors.values()):
        module.set_attn_processor(
            {
                name: DispatchAttnProcessor() if type(p) is AttnProcessor2_0 else p
                for name, p in processors.items()
            }
        )
    previous = _AttentionBackendRegistry._active_backend
    try:
        module.set_attention_backend(backend)
    except (RuntimeError, ImportError, ValueError) as exc:
        raise MemoryOptionError(
            f"model.attention_backend '{choice}' cannot run here: {exc} — use 'auto' or 'native'"
        ) from exc
    finally:
        # diffusers also makes it the process-wide default; keep it to this model.
        _AttentionBackendRegistry.set_active_backend(previous)
    routed = [
        p
        for p in getattr(module, "attn_processors", {}).values()
        if getattr(getattr(p, "_attention_backend", None), "value", None) == backend
    ]
    if not routed:
        raise MemoryOptionError(
            f"model.attention_backend '{choice}': no attention layer of this model can use "
            "diffusers' attention backends — use 'auto'"
        )
    return backend
