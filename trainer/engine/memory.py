"""Memory and speed options of the base model: quantized weights, layer offloading, ``low_vram``,
``torch.compile``, attention backends, the accuracy recovery adapter and unloading text encoders.

The training loop calls, in this order::

    check_environment(cfg, device)           # refuse what this machine cannot do, before loading
    arch = load_arch(cfg, home, device, dtype)
    prepare_base(arch, cfg)                  # before adapters: quantize, attention backend, ARA
    groups = arch.add_lora(...)
    prepare_training(arch, cfg)              # after adapters: ARA active, offloading, compile
    ...
    release_text_encoders(arch, prompts, encode)   # train.unload_text_encoder, before step 1

What each option does here (and where the ecosystem is used):

- **float8** (``model.quantize`` / ``quantize_te`` with qtype float8): every Linear / Conv2d weight
  (except diffusers' own skip list: embedders, norms, top-level proj_in/out) is stored as
  ``torch.float8_e4m3fn`` with one fp32 scale per output channel, and upcast to the compute dtype
  inside each forward. The backward re-upcasts from the float8 copy instead of keeping the
  upcast weight alive. diffusers' ``enable_layerwise_casting`` does the same storage for inference,
  but it casts the weights back to float8 after the forward, under the autograd graph, so a
  backward through it fails ("expected Float but found Float8_e4m3fn"); hence this small layer.
- **int8 / nf4 / fp4**: bitsandbytes' ``Linear8bitLt`` / ``Linear4bit`` replace the Linear layers
  (bitsandbytes 0.50 runs both on CPU and CUDA; convolutions stay in full precision). The device
  is probed with one tiny layer first; a device bitsandbytes cannot serve gets an error naming it.
- **layer offloading**: a share of the layers (Linear / Conv2d and their LoRA wrappers, evenly
  spread) keep their frozen weights in offload storage — pinned host memory with CUDA, shared
  memory on a CPU-only machine — and get a fresh copy on the training device for the duration of
  their forward (forward pre-hook / post-hook with ``always_call``). Trainable LoRA weights stay on
  the training device. Autograd keeps the copies a backward needs until that backward; with
  gradient checkpointing (the default) they are re-made block by block during the recompute.
- **low_vram**: the VAE and the text encoders are offloaded the same way, every module of them,
  so they occupy the training device only while they encode or decode.
- **attention backend**: diffusers' dispatcher (``set_attention_backend``). Flux's processors use
  it already; the SD U-Nets' ``AttnProcessor2_0`` calls SDPA directly, so they get
  ``DispatchAttnProcessor`` first (the same maths, routed through ``dispatch_attention_fn``).
- **compile**: ``nn.Module.compile`` on the denoiser, in place, so adapters, state dicts and
  saving see the same module.
- **accuracy recovery adapter**: a LoRA file loaded by diffusers (any layout it reads) as a second
  peft adapter named ``ara`` on the denoiser, active with the trained one, frozen, never saved,
  and left at full strength when previews scale the trained LoRA.
- **unload_text_encoder**: every caption the run will use, the empty prompt, the class prompts of
  differential output preservation and the sample prompts are encoded first; then the text
  encoders are removed from the pipeline and freed, and ``Arch.encode_prompts`` answers from the
  stored embeddings (an unknown prompt gets an error naming the option).
- **split_model_over_gpus**: accelerate's ``dispatch_model`` with the transformer's blocks spread
  over the CUDA devices in contiguous runs; fewer than two CUDA devices is refused.
"""

from __future__ import annotations

import contextlib
import gc
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config.schema import TrainingConfig

if TYPE_CHECKING:
    from trainer.arch.base import Arch

FLOAT8 = torch.float8_e4m3fn
ARA_NAME = "ara"  # the peft adapter name of the accuracy recovery adapter
# What torch.compile uses; the tests swap in a counting backend (inductor needs minutes here).
COMPILE_BACKEND: Any = "inductor"
# diffusers.hooks.layerwise_casting.DEFAULT_SKIP_MODULES_PATTERN: layers kept in full precision.
QUANT_SKIP_PATTERNS = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$")
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


class MemoryOptionError(ValueError):
    """A memory/speed option this machine or model cannot honour; the message says why and how."""


# =============================================================================== environment
def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_available(kind: str) -> bool:
    if kind == "cuda":
        return cuda_count() > 0
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    return True


def check_environment(cfg: TrainingConfig, device: torch.device, processes: int = 1) -> None:
    """Refuse, before anything loads, what this machine cannot do (devices, GPUs, processes).

    ``processes``: how many the launcher started (``trainer.engine.distributed``); it must be the
    config's ``runtime.num_processes``, which is what the studio launches with."""
    problems = []
    m = cfg.model
    for path, value in (("model.vae_device", m.vae_device), ("model.te_device", m.te_device)):
        if value not in ("auto", "cpu") and not device_available(value):
            problems.append(
                f"{path} is '{value}' but this machine has no {value.upper()} device — use "
                "'auto' or 'cpu'"
            )
    if m.split_model_over_gpus and cuda_count() < 2:
        problems.append(
            f"model.split_model_over_gpus needs at least 2 CUDA GPUs; this machine has "
            f"{cuda_count()} — turn it off (layer offloading or quantization save memory on one)"
        )
    if m.attention_backend in ATTENTION_NEEDS and device.type != "cuda":
        problems.append(
            f"model.attention_backend '{m.attention_backend}' needs "
            f"{ATTENTION_NEEDS[m.attention_backend]} and an NVIDIA GPU; training runs on "
            f"{device.type} — use 'auto' or 'native'"
        )
    wanted = cfg.runtime.num_processes
    if wanted != processes:
        how = (
            f"start it with `accelerate launch --multi_gpu --num_processes {wanted} -m trainer "
            "run ...` (the studio does this)"
            if processes == 1
            else f"launch {wanted} processes, or set runtime.num_processes to {processes}"
        )
        problems.append(
            f"runtime.num_processes is {wanted} but {processes} process(es) were started — {how}"
        )
    if processes > 1 and device.type == "cuda" and processes > cuda_count():
        problems.append(
            f"{processes} processes need one CUDA GPU each; this machine has {cuda_count()} — "
            "lower runtime.num_processes"
        )
    if processes > 1 and device.type == "mps":
        problems.append("Apple's MPS is one device: several processes cannot share it — use 1")
    if processes > 1 and m.split_model_over_gpus:
        problems.append(
            "model.split_model_over_gpus spreads one model over the GPUs; it cannot be combined "
            "with several training processes — use one or the other"
        )
    if problems:
        raise MemoryOptionError("; ".join(problems))


# ================================================================================ quantization
def parameter_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (float8 = 1, packed 4-bit = 0.5)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _skip_quant(name: str) -> bool:
    return any(re.search(pattern, name) for pattern in QUANT_SKIP_PATTERNS)


def quantizable_layers(module: nn.Module, kinds: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    return [
        (name, sub)
        for name, sub in module.named_modules()
        if type(sub) in kinds and name and not _skip_quant(name)
    ]


def _float8_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """float8 e4m3 weight and one fp32 scale per output channel (absmax maps to float8's max)."""
    w = weight.detach().float()
    dims = tuple(range(1, w.dim()))
    amax = w.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
    scale = amax / torch.finfo(FLOAT8).max
    return (w / scale).to(FLOAT8), scale


def _dequantize(w8: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    return w8.to(dtype) * scale.to(dtype)


class _Float8LinearFn(torch.autograd.Function):
    """y = x W^T + b with W upcast from float8 here and again in backward (nothing big is kept)."""

    @staticmethod
    def forward(ctx, x, w8, scale, bias):  # type: ignore[override]
        ctx.save_for_backward(w8, scale)
        weight = _dequantize(w8, scale, x.dtype)
        return F.linear(x, weight, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        w8, scale = ctx.saved_tensors
        return grad @ _dequantize(w8, scale, grad.dtype), None, None, None


class _Float8ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w8, scale, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(w8, scale)
        ctx.conv = (x.shape, stride, padding, dilation, groups)
        weight = _dequantize(w8, scale, x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        w8, scale = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.conv
        weight = _dequantize(w8, scale, grad.dtype)
        grad_x = torch.nn.grad.conv2d_input(shape, weight, grad, stride, padding, dilation, groups)
        return grad_x, None, None, None, None, None, None, None


class Float8Linear(nn.Linear):
    """A frozen Linear whose weight is stored in float8 (class-swapped in place by quantize)."""

    weight_scale: Tensor
    compute_dtype: torch.dtype  # peft reads it to create adapters in this dtype, as for bnb

    def forward(self, x: Tensor) -> Tensor:
        if "weight_scale" not in self._buffers:  # a plain layer made from this class (peft)
            return super().forward(x)
        return _Float8LinearFn.apply(x, self.weight, self.weight_scale, self.bias)


class Float8Conv2d(nn.Conv2d):
    weight_scale: Tensor
    compute_dtype: torch.dtype

    def forward(self, x: Tensor) -> Tensor:
        if "weight_scale" not in self._buffers:  # peft builds LoCon's down layer as type(base)
            return super().forward(x)
        return _Float8ConvFn.apply(x, self.weight, self.weight_scale, self.bias, *self._conv_args())

    def _conv_args(self) -> tuple:
        return self.stride, self.padding, self.dilation, self.groups


def _to_float8(layer: nn.Module, compute_dtype: torch.dtype) -> None:
    w8, scale = _float8_weight(layer.weight)
    layer.__class__ = Float8Linear if isinstance(layer, nn.Linear) else Float8Conv2d
    layer.weight = nn.Parameter(w8, requires_grad=False)
    layer.register_buffer("weight_scale", scale.to(w8.device))
    if layer.bias is not None:
        layer.bias.requires_grad_(False)
    layer.compute_dtype = compute_dtype


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _bnb_layer(layer: nn.Linear, qtype: str, compute_dtype: torch.dtype, device) -> nn.Module:
    import bitsandbytes as bnb

    bias = layer.bias is not None
    if qtype == "int8":
        new = bnb.nn.Linear8bitLt(
            layer.in_features, layer.out_features, bias=bias, has_fp16_weights=False
        )
    else:
        new = bnb.nn.Linear4bit(
            layer.in_features,
            layer.out_features,
            bias=bias,
            compute_dtype=compute_dtype,
            quant_type=qtype,
        )
    state = {k: v.detach().to("cpu", torch.float32) for k, v in layer.state_dict().items()}
    new.load_state_dict(state)
    new = new.to(device)  # bitsandbytes quantizes when the weight reaches its device
    new.requires_grad_(False)
    return new


def probe_bitsandbytes(qtype: str, device: torch.device, what: str) -> None:
    """Quantize and run one tiny layer on ``device``; a clear error if bitsandbytes cannot."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MemoryOptionError(
            f"{what}: qtype {qtype} needs the bitsandbytes package (pip install bitsandbytes) "
            "— or use qtype float8"
        ) from exc
    try:
        layer = _bnb_layer(nn.Linear(64, 64), qtype, torch.float32, device)
        layer(torch.randn(2, 64, device=device))
    except Exception as exc:  # bitsandbytes raises many kinds for unsupported devices
        raise MemoryOptionError(
            f"{what}: bitsandbytes cannot run {qtype} on the {device.type} device here "
            f"({type(exc).__name__}: {str(exc).strip()[:200]}) — use qtype float8, which "
            "works on every device"
        ) from exc


@dataclass
class QuantReport:
    component: str
    qtype: str
    layers: int
    bytes_before: int
    bytes_after: int


def quantize_module(
    module: nn.Module,
    qtype: str,
    *,
    device: torch.device,
    compute_dtype: torch.dtype,
    component: str = "denoiser",
    what: str = "model.qtype",
) -> QuantReport:
    """Store ``module``'s Linear (and, for float8, Conv2d) weights in ``qtype`` in place."""
    before = parameter_bytes(module)
    if qtype == "float8":
        layers = quantizable_layers(module, (nn.Linear, nn.Conv2d))
        layers = [(n, m) for n, m in layers if getattr(m, "padding_mode", "zeros") == "zeros"]
        for _, layer in layers:
            _to_float8(layer, compute_dtype)
    elif qtype in ("int8", "nf4", "fp4"):
        probe_bitsandbytes(qtype, device, what)
        layers = quantizable_layers(module, (nn.Linear,))
        for name, layer in layers:
            _set_child(module, name, _bnb_layer(layer, qtype, compute_dtype, device))
    else:
        raise MemoryOptionError(f"{what}: unknown qtype {qtype!r}")
    return QuantReport(component, qtype, len(layers), before, parameter_bytes(module))


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, Float8Linear | Float8Conv2d) or type(module).__module__.startswith(
        "bitsandbytes"
    )


# =============================================================================== offloading
class LayerOffloader:
    """Frozen weights of chosen modules live in offload storage between forwards.

    ``storage`` tensors sit on ``offload_device`` (pinned host memory when CUDA exists, else shared
    memory, so they are recognisable); a forward pre-hook gives each module a fresh copy on
    ``onload_device`` and a post-hook (``always_call``) points it back at the storage.
    """

    def __init__(
        self,
        onload_device: torch.device,
        offload_device: torch.device | str = "cpu",
        *,
        name: str = "",
    ) -> None:
        self.onload_device = torch.device(onload_device)
        self.offload_device = torch.device(offload_device)
        self.name = name
        self.units: list[nn.Module] = []
        self.storage: dict[tuple[int, str], Tensor] = {}  # (id(owner), name) -> storage
        self._slots: dict[int, list[tuple[nn.Module, str, bool]]] = {}
        self._handles: list[Any] = []
        self.onloads = 0

    # ------------------------------------------------------------------ set-up
    def attach(self, units: Iterable[nn.Module]) -> LayerOffloader:
        for unit in units:
            slots = list(_frozen_slots(unit))
            if not slots:
                continue
            for owner, attr, is_param in slots:
                tensor = getattr(owner, attr)
                stored = self._store(tensor.detach())
                self.storage[_slot_key(owner, attr)] = stored
                self._point(owner, attr, is_param, stored)
            self._slots[id(unit)] = slots
            self.units.append(unit)
            self._handles.append(unit.register_forward_pre_hook(self._onload))
            self._handles.append(unit.register_forward_hook(self._offload, always_call=True))
        return self

    def _store(self, tensor: Tensor) -> Tensor:
        stored = tensor.to(self.offload_device, copy=True)
        if self.offload_device.type == "cpu":
            if torch.cuda.is_available():
                stored = stored.pin_memory()
            else:
                stored.share_memory_()
        return stored

    def detach(self) -> None:
        """Remove the hooks; weights stay where they are (in storage)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.units.clear()
        self._slots.clear()
        self.storage.clear()

    # ------------------------------------------------------------------ hooks
    @staticmethod
    def _point(owner: nn.Module, attr: str, is_param: bool, tensor: Tensor) -> None:
        if is_param:
            owner._parameters[attr].data = tensor
        else:
            owner._buffers[attr] = tensor

    def _onload(self, unit: nn.Module, _args: Any) -> None:
        for owner, attr, is_param in self._slots.get(id(unit), ()):
            stored = self.storage[_slot_key(owner, attr)]
            copy = stored.to(self.onload_device, non_blocking=True, copy=True)
            self._point(owner, attr, is_param, copy)
        self.onloads += 1

    def _offload(self, unit: nn.Module, _args: Any, _output: Any) -> None:
        for owner, attr, is_param in self._slots.get(id(unit), ()):
            self._point(owner, attr, is_param, self.storage[_slot_key(owner, attr)])

    # ------------------------------------------------------------------ inspection
    def in_storage(self) -> bool:
        """True when every managed weight is its storage tensor right now (between forwards)."""
        return all(
            getattr(owner, attr).data_ptr() == self.storage[_slot_key(owner, attr)].data_ptr()
            for slots in self._slots.values()
            for owner, attr, _ in slots
        )

    def stored_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.storage.values())


def _slot_key(owner: nn.Module, attr: str) -> tuple[int, str]:
    return id(owner), attr


def _frozen_slots(unit: nn.Module) -> Iterator[tuple[nn.Module, str, bool]]:
    """(owner, name, is_parameter) of every frozen parameter and buffer in ``unit``'s subtree."""
    for owner in unit.modules():
        for attr, param in owner._parameters.items():
            if param is not None and not param.requires_grad:
                yield owner, attr, True
        for attr, buf in owner._buffers.items():
            if buf is not None:
                yield owner, attr, False


def offload_units(module: nn.Module, kind: str = "layers") -> list[nn.Module]:
    """Modules offloading hooks attach to, in forward order.

    ``layers``: each Linear / Conv2d, or its peft adapter wrapper (so DoRA and friends see the
    base weight on the device too). ``all``: every module that directly owns parameters or
    buffers, for whole components (``low_vram``).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    units: list[nn.Module] = []
    covered: set[int] = set()
    for sub in module.modules():
        if id(sub) in covered:
            continue
        if kind == "all":
            owns = any(p is not None for p in sub._parameters.values()) or any(
                b is not None for b in sub._buffers.values()
            )
            if isinstance(sub, BaseTunerLayer) or owns:
                units.append(sub)
                if isinstance(sub, BaseTunerLayer):
                    covered.update(id(m) for m in sub.modules())
            continue
        if isinstance(sub, BaseTunerLayer) and isinstance(
            sub.get_base_layer(), nn.Linear | nn.Conv2d
        ):
            units.append(sub)
            covered.update(id(m) for m in sub.modules())
        elif isinstance(sub, nn.Linear | nn.Conv2d):
            units.append(sub)
    return units


def pick_share(units: Sequence[nn.Module], share: float) -> list[nn.Module]:
    """round(share * n) units, spread evenly over the model's depth."""
    n = len(units)
    k = max(0, min(n, round(share * n)))
    if k == 0:
        return []
    return [units[(i * n) // k] for i in range(k)]


def offload_component(
    module: nn.Module,
    share: float,
    onload_device: torch.device,
    *,
    kind: str = "layers",
    name: str = "",
    offload_device: torch.device | str = "cpu",
) -> LayerOffloader:
    units = pick_share(offload_units(module, kind), share)
    return LayerOffloader(onload_device, offload_device, name=name).attach(units)


# ================================================================================ attention
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


# =========================================================================== adapters (ARA)
def load_accuracy_recovery_adapter(arch: Arch, ref: str) -> int:
    """Load the LoRA at ``ref`` as the frozen adapter ``ara`` on the denoiser; returns #layers."""
    from pathlib import Path

    from trainer.arch.base import tuner_layers

    path = Path(ref).expanduser()
    if not path.exists():
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' was not found — point it to a LoRA "
            ".safetensors file or a folder holding pytorch_lora_weights.safetensors"
        )
    try:
        arch.pipe.load_lora_weights(str(path), adapter_name=ARA_NAME)
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError) as exc:
        # diffusers' layout converters assert on shapes they do not recognise.
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' could not be loaded as a LoRA for "
            f"{arch.name}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    adapted = [name for name, te in arch.text_encoders.items() if getattr(te, "peft_config", None)]
    if adapted:
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' also adapts {', '.join(adapted)}; an "
            "accuracy recovery adapter corrects the quantized denoiser only — use one without "
            "text-encoder weights"
        )
    layers = [layer for _, layer in tuner_layers(arch.denoiser) if ARA_NAME in _adapters(layer)]
    if not layers:
        raise MemoryOptionError(
            f"model.accuracy_recovery_adapter '{ref}' matched no layer of the {arch.name} "
            f"{arch.denoiser_name}"
        )
    _freeze_adapter(arch.denoiser, ARA_NAME)
    arch.frozen_adapter = ARA_NAME
    return len(layers)


def _adapters(layer: Any) -> set[str]:
    names: set[str] = set()
    for attr in getattr(layer, "adapter_layer_names", ()):
        names.update(getattr(layer, attr, {}).keys())
    return names


def _freeze_adapter(module: nn.Module, adapter: str) -> None:
    for name, param in module.named_parameters():
        if f".{adapter}." in f".{name}.":
            param.requires_grad_(False)


def _set_active(layers: Iterable[Any], modules: Iterable[nn.Module], choose: Callable) -> None:
    """``layer.set_adapter(choose(layer))`` for each layer, keeping every requires_grad flag
    (peft's set_adapter makes active adapters trainable and inactive ones frozen)."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for layer in layers:
        layer.set_adapter(choose(layer))
    for param, flag in flags:
        param.requires_grad_(flag)


def activate_adapters(arch: Arch, names: Sequence[str]) -> None:
    """Make ``names`` the active adapters of the denoiser's adapter layers (the ARA stays frozen)."""
    from trainer.arch.base import tuner_layers

    layers = [layer for _, layer in tuner_layers(arch.denoiser)]
    _set_active(layers, [arch.denoiser], lambda layer: [n for n in names if n in _adapters(layer)])
    _freeze_adapter(arch.denoiser, ARA_NAME)


@contextlib.contextmanager
def scale_trained_adapter(arch: Arch, scale: float) -> Iterator[None]:
    """Scale only the trained adapter (the previews' LoRA strength); the ARA stays at 1.

    Scale 0 deactivates the trained adapter outright (as ``Arch.lora_scale`` disables adapters),
    which for DoRA is not the same as a zero scale.
    """
    from trainer.arch.base import ADAPTER_NAME, tuner_layers

    parts = list(arch.adapted_components().values())
    layers = [layer for part in parts for _, layer in tuner_layers(part)]
    if scale == 0:
        active = {id(layer): list(layer.active_adapters) for layer in layers}
        _set_active(
            layers, parts, lambda layer: [n for n in active[id(layer)] if n != ADAPTER_NAME]
        )
        try:
            yield
        finally:
            _set_active(layers, parts, lambda layer: active[id(layer)])
        return
    saved = [(layer, dict(layer.scaling)) for layer in layers if ADAPTER_NAME in layer.scaling]
    for layer, old in saved:
        layer.scaling[ADAPTER_NAME] = old[ADAPTER_NAME] * scale
    try:
        yield
    finally:
        for layer, old in saved:
            layer.scaling.update(old)


# ============================================================================ prompt store
class PromptStore:
    """Embeddings of every prompt a run needs, kept after the text encoders are freed."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Tensor]] = {}

    def add(self, prompt: str, embeds: dict[str, Tensor]) -> None:
        self.entries[prompt] = embeds

    def __contains__(self, prompt: str) -> bool:
        return prompt in self.entries

    def lookup(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> dict:
        missing = [p for p in prompts if p not in self.entries]
        if missing:
            raise MemoryOptionError(
                f"the text encoders were unloaded (train.unload_text_encoder), and the prompt "
                f"{missing[0]!r} was not encoded before — turn unload_text_encoder off for "
                "features that make new prompts during training"
            )
        out = {}
        for key, first in self.entries[prompts[0]].items():
            stacked = torch.stack([self.entries[p][key] for p in prompts])
            out[key] = (
                stacked.to(device, dtype) if first.is_floating_point() else stacked.to(device)
            )
        return out


def release_text_encoders(
    arch: Arch,
    prompts: Iterable[str],
    encode: Callable[[str], dict[str, Tensor]] | None = None,
) -> list[weakref.ref]:
    """Encode ``prompts`` (each once), then remove the text encoders and free them.

    ``encode(prompt)`` returns per-prompt embeddings without a batch dimension (the loop passes
    its text cache, so stored and cached tensors are shared); by default ``arch.encode_prompts``.
    Returns weak references to the freed encoders (dead once nothing else holds them).
    """
    store = PromptStore()
    for prompt in dict.fromkeys(prompts):
        if encode is not None:
            embeds = encode(prompt)
        else:
            embeds = {k: v[0].cpu() for k, v in arch.encode_prompts([prompt]).items()}
        store.add(prompt, embeds)
    refs = [weakref.ref(te) for te in arch.text_encoders.values()]
    offloaders = getattr(arch, "offloaders", {})
    for name in arch.text_encoder_names:
        if name in offloaders:
            offloaders.pop(name).detach()
    arch.pipe.register_modules(**dict.fromkeys(arch.text_encoder_names))
    arch.prompt_store = store
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return refs


def unload_for_run(
    arch: Arch, cfg: TrainingConfig, inputs: Any, data: Any, start: int, steps: int
) -> list[weakref.ref]:
    """``train.unload_text_encoder``: encode what the next ``steps`` steps and the previews need
    (through the loop's text cache, so each caption is encoded once), then free the encoders."""
    from trainer.engine.batching import planned_captions

    captions = planned_captions(data, cfg.train, start, steps)
    return release_text_encoders(arch, planned_prompts(cfg, captions), encode=inputs._one_text)


def planned_prompts(cfg: TrainingConfig, captions: Iterable[str]) -> list[str]:
    """The prompts the run will need: captions, the empty prompt, DOP class prompts, previews."""
    out = list(captions)
    out.append("")
    train = cfg.train
    if train.diff_output_preservation:
        from trainer.engine.objective import class_prompts

        captions = list(out)
        for trigger in {ds.trigger_word for ds in cfg.datasets if ds.trigger_word}:
            out += class_prompts(captions, [trigger] * len(captions), train)
    if cfg.sample.prompts and cfg.sample.sample_every:
        from trainer.engine.loop import sample_prompts

        for spec in sample_prompts(cfg):
            out.append(spec["prompt"])
            out.append(spec.get("neg") or "")
        out.append(cfg.sample.neg or "")
    return list(dict.fromkeys(out))


# ========================================================================= split over GPUs
def split_plan(names: Sequence[str], devices: Sequence[Any]) -> dict[str, Any]:
    """Contiguous, balanced runs of blocks per device (block order kept)."""
    plan: dict[str, Any] = {}
    n, k = len(names), len(devices)
    for i, name in enumerate(names):
        plan[name] = devices[min(k - 1, i * k // max(n, 1))]
    return plan


def split_over_devices(transformer: nn.Module, devices: Sequence[Any]) -> dict[str, Any]:
    """Spread the transformer's blocks over ``devices`` with accelerate's ``dispatch_model``."""
    from accelerate import dispatch_model

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


# ============================================================================ entry points
@dataclass
class MemoryReport:
    """What was applied, for the run log and the tests."""

    quantized: list[QuantReport] = field(default_factory=list)
    attention_backend: str | None = None
    ara_layers: int = 0
    offloaded: dict[str, int] = field(default_factory=dict)
    compiled: bool = False
    device_map: dict[str, Any] | None = None

    def lines(self) -> list[str]:
        """One line per option that acted, for the run log."""
        out = [
            f"quantized {q.component} to {q.qtype}: {q.layers} layers, "
            f"{q.bytes_before / 2**20:.1f} MB -> {q.bytes_after / 2**20:.1f} MB"
            for q in self.quantized
        ]
        if self.attention_backend:
            out.append(f"attention backend: {self.attention_backend}")
        if self.ara_layers:
            out.append(f"accuracy recovery adapter on {self.ara_layers} layers (frozen)")
        out += [f"offloaded {n} modules of {name}" for name, n in self.offloaded.items()]
        if self.device_map:
            out.append(f"split over {len(set(map(str, self.device_map.values())))} GPUs")
        if self.compiled:
            out.append("denoiser compiled with torch.compile")
        return out


def prepare_base(arch: Arch, cfg: TrainingConfig) -> MemoryReport:
    """Before adapters: quantize the denoiser / text encoders, attention backend, ARA."""
    m = cfg.model
    report = MemoryReport()
    arch.memory_report = report
    if m.quantize:
        report.quantized.append(
            quantize_module(
                arch.denoiser,
                m.qtype,
                device=arch.device,
                compute_dtype=arch.dtype,
                component=arch.denoiser_name,
                what="model.qtype",
            )
        )
    if m.quantize_te:
        for name, te in arch.text_encoders.items():
            report.quantized.append(
                quantize_module(
                    te,
                    m.qtype_te,
                    device=arch.te_device,
                    compute_dtype=arch.te_dtype,
                    component=name,
                    what="model.qtype_te",
                )
            )
    report.attention_backend = set_attention_backend(
        arch.denoiser, m.attention_backend, arch.device
    )
    if m.accuracy_recovery_adapter:
        report.ara_layers = load_accuracy_recovery_adapter(arch, m.accuracy_recovery_adapter)
    return report


def prepare_training(arch: Arch, cfg: TrainingConfig) -> MemoryReport:
    """After adapters: ARA active under the trained LoRA, offloading, split, compile."""
    from trainer.arch.base import ADAPTER_NAME

    m = cfg.model
    report = getattr(arch, "memory_report", None) or MemoryReport()
    arch.memory_report = report
    if getattr(arch, "frozen_adapter", None):
        activate_adapters(arch, [ARA_NAME, ADAPTER_NAME])
    offloaders: dict[str, LayerOffloader] = {}
    if m.layer_offloading:
        offloaders["denoiser"] = offload_component(
            arch.denoiser, m.layer_offloading_transformer_percent, arch.device, name="denoiser"
        )
        for name, te in arch.text_encoders.items():
            offloaders[name] = offload_component(
                te, m.layer_offloading_text_encoder_percent, arch.te_device, name=name
            )
    if m.low_vram:
        offloaders["vae"] = offload_component(
            arch.vae, 1.0, arch.vae_device, kind="all", name="vae"
        )
        for name, te in arch.text_encoders.items():
            if name in offloaders:
                offloaders[name].detach()
            offloaders[name] = offload_component(te, 1.0, arch.te_device, kind="all", name=name)
    arch.offloaders = offloaders
    report.offloaded = {name: len(o.units) for name, o in offloaders.items()}
    if offloaders:
        arch.pin_execution_device = True
    if m.split_model_over_gpus:
        devices = [torch.device("cuda", i) for i in range(cuda_count())]
        if len(devices) < 2:
            raise MemoryOptionError(
                f"model.split_model_over_gpus needs at least 2 CUDA GPUs; found {len(devices)}"
            )
        report.device_map = split_over_devices(arch.denoiser, devices)
    if m.compile:
        arch.denoiser.compile(backend=COMPILE_BACKEND)
        report.compiled = True
    for line in report.lines():
        print(f"memory: {line}", flush=True)
    return report
