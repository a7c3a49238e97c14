"""Settings that only matter while a switch is on: the quantization type without quantization,
the offloaded share of layers without layer offloading. Shown as if in force, a value such as
"float8" reads as a choice already made; the wizard and Review grey such a field out and say
which switch brings it into play (it keeps its value for when the switch is turned on).
"""

from __future__ import annotations

from trainer.config.paths import generic_path
from ui import state
from ui.advice import label_of

# generic path of a setting -> the on/off setting it only applies with
GATES: dict[str, str] = {
    "model.qtype": "model.quantize",
    "model.qtype_te": "model.quantize_te",
    "model.layer_offloading_transformer_percent": "model.layer_offloading",
    "model.layer_offloading_text_encoder_percent": "model.layer_offloading",
}


def off_switch(path: str) -> str | None:
    """The switch that is off and so leaves ``path`` without effect; None while it applies."""
    switch = GATES.get(generic_path(path))
    if switch is None or state.get_value(switch):
        return None
    return switch


def gate_note(switch: str) -> str:
    """The line under a greyed-out field."""
    return f":material/info: Applies only when **{label_of(switch)}** is on."
