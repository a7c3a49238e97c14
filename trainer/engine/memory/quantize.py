"""Quantized base-model weights (``model.quantize`` / ``quantize_te``, ``qtype``).

- **float8**: every Linear / Conv2d weight (except diffusers' own skip list: embedders, norms,
  top-level proj_in/out) is stored as ``torch.float8_e4m3fn`` with one fp32 scale per output
  channel, and upcast to the compute dtype inside each forward. The backward re-upcasts from the
  float8 copy instead of keeping the upcast weight alive. diffusers' ``enable_layerwise_casting``
  does the same storage for inference, but it casts the weights back to float8 after the
  forward, under the autograd graph, so a backward through it fails ("expected Float but found
  Float8_e4m3fn"); hence this small layer.
- **int8 / nf4 / fp4**: bitsandbytes' ``Linear8bitLt`` / ``Linear4bit`` replace the Linear layers
  (bitsandbytes 0.50 runs both on CPU and CUDA; convolutions stay in full precision). The device
  is probed with one tiny layer first; a device bitsandbytes cannot serve gets an error naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.engine.failures import MemoryOptionError

FLOAT8 = torch.float8_e4m3fn
# diffusers.hooks.layerwise_casting.DEFAULT_SKIP_MODULES_PATTERN: layers kept in full precision.
QUANT_SKIP_PATTERNS = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$")


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
    def forward(  # type: ignore[override]
        ctx, x, w8, scale, bias, stride, padding, dilation, groups
    ):
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
    import bitsandbytes as bnb  # optional package, only for qtype int8 / nf4 / fp4

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
        import bitsandbytes  # noqa: F401  # optional package: is it installed?
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
