"""Layer offloading (``model.layer_offloading``) and ``low_vram``.

A share of the layers (Linear / Conv2d and their LoRA wrappers, evenly spread) keep their frozen
weights in offload storage — pinned host memory with CUDA, shared memory on a CPU-only machine —
and get a fresh copy on the training device for the duration of their forward (forward pre-hook /
post-hook with ``always_call``). Trainable LoRA weights stay on the training device. Autograd
keeps the copies a backward needs until that backward; with gradient checkpointing (the default)
they are re-made block by block during the recompute. ``low_vram`` offloads the VAE and the text
encoders the same way, every module of them, so they occupy the training device only while they
encode or decode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn


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
    # peft pulls in transformers (seconds); only with layer offloading or low_vram.
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
