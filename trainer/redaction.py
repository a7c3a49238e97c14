"""Secrets kept out of what the studio records: secret-named keys dropped, Hugging Face tokens
blanked out of any text (MLflow params, tags and notes, job files, imported configs, messages).

Here, below ``trainer.config`` and ``trainer.tracking``, because both use it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")
_SECRET_WORDS = ("secret", "password", "passwd", "apikey", "api_key", "credential")


def is_secret_key(key: str) -> bool:
    """A param/tag key that names a secret: ``hf_token``, ``auth.token``, ``api_key``, ``password``.

    Only whole words count for "token", so config fields about caption *tokens*
    (``keep_tokens``, ``shuffle_tokens``, ``token_dropout_rate``) are kept.
    """
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_WORDS):
        return True
    last = re.split(r"[./:]", lowered)[-1]
    words = [w for w in re.split(r"[_\-\s]+", last) if w]
    return bool(words) and words[-1] in ("token", "tok", "pat")


def redact_text(text: str) -> str:
    """The text with anything shaped like a Hugging Face token replaced."""
    return _HF_TOKEN.sub("hf_" + REDACTED, text) if "hf_" in text else text


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without secret-named keys and with token-shaped text replaced (values kept typed)."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if is_secret_key(str(key)):
            continue
        clean[str(key)] = redact_text(value) if isinstance(value, str) else value
    return clean
