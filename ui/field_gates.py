"""Settings that only matter while another setting allows them: the quantization type without
quantization, the offloaded share of layers without layer offloading, the number of cycles of a
schedule that does not restart. Shown as if in force, a value such as "float8" or "1 cycle"
reads as a choice already made; the wizard and Review grey such a field out and say which
setting brings it into play (it keeps its value for when it applies).

Every gate here is also in advisor.checks_unused.UNUSED, which reports a changed value that a
gate leaves without effect (and offers to reset it, as the greyed-out field cannot be edited).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.paths import generic_path
from ui import state
from ui.advice import label_of


@dataclass(frozen=True)
class Gate:
    """The setting a field depends on: an on/off switch, or one of some values of a choice."""

    switch: str
    values: tuple[str, ...] = ()  # empty: a switch that must be on


_DECAYING = ("linear", "cosine", "cosine_with_restarts", "polynomial", "rex")

# generic path of a setting -> what it only applies with. Only settings the trainer reads
# nowhere else (trainer.engine.optim's schedules, objective's loss, the adapters' LoKr config).
GATES: dict[str, Gate] = {
    "model.qtype": Gate("model.quantize"),
    "model.qtype_te": Gate("model.quantize_te"),
    "model.layer_offloading_transformer_percent": Gate("model.layer_offloading"),
    "model.layer_offloading_text_encoder_percent": Gate("model.layer_offloading"),
    "train.lr_scheduler_params.num_cycles": Gate("train.lr_scheduler", ("cosine_with_restarts",)),
    "train.lr_scheduler_params.power": Gate("train.lr_scheduler", ("polynomial",)),
    # constant schedules never fall, so they never reach a floor
    "train.lr_scheduler_params.min_lr_ratio": Gate("train.lr_scheduler", _DECAYING),
    "train.huber_delta": Gate("train.loss_type", ("huber",)),
    "train.timestep_shift": Gate("train.timestep_type", ("shift",)),
    "network.lokr_factor": Gate("network.type", ("lokr",)),
    "network.lokr_full_rank": Gate("network.type", ("lokr",)),
}


def _current(switch: str) -> object:
    """The switch's value, with 'auto' read as the architecture's own (Flux's timesteps shift)."""
    value = state.get_value(switch)
    if value == "auto":
        arch = state.get_value("model.arch", "sd15")
        return ARCH_DEFAULTS.get(arch, {}).get(switch.rsplit(".", 1)[-1], value)
    return value


def off_switch(path: str) -> Gate | None:
    """The gate that leaves ``path`` without effect now; None while it applies."""
    gate = GATES.get(generic_path(path))
    if gate is None:
        return None
    current = _current(gate.switch)
    applies = current in gate.values if gate.values else bool(current)
    return None if applies else gate


def gate_note(gate: Gate) -> str:
    """The line under a greyed-out field."""
    label = label_of(gate.switch)
    if not gate.values:
        return f":material/info: Applies only when **{label}** is on."
    *rest, last = gate.values
    names = f"{', '.join(rest)} or {last}" if rest else last
    return f":material/info: Applies only when **{label}** is {names}."
