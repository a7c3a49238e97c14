"""Library messages that are noise in a run's log, silenced before the libraries load.

Each one is harmless here and reads as a failure to someone reading the Monitor's log:
bitsandbytes says "Failed to load CPU gemm_4bit_forward" wherever its optional CPU kernels are
not installed (every run imports it through peft, quantized or not), transformers says an image
processor "requires torchvision (not installed)" (the studio uses the PIL one), diffusers calls
the attention backends "experimental" whenever one is set, and transformers deprecates the
``gradient_checkpointing_enable`` name that diffusers' text-encoder path still calls. Only these
exact messages go: everything else those libraries log still shows.
"""

from __future__ import annotations

import logging
import warnings

# (the logger, i.e. the module that logs it; a part of the message)
HARMLESS_LOG_LINES = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    ("transformers.utils.import_utils", "requires torchvision (not installed)"),
    ("diffusers.models.modeling_utils", "Attention backends are an experimental feature"),
)
HARMLESS_WARNINGS = (r"`gradient_checkpointing_enable` is deprecated",)


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_libraries() -> None:
    """Silence ``HARMLESS_LOG_LINES`` and ``HARMLESS_WARNINGS`` in this process (idempotent)."""
    for name, text in HARMLESS_LOG_LINES:
        logger = logging.getLogger(name)  # made now if its module is not imported yet
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
