"""Secrets kept out of what the studio records and shows: secret-named keys dropped; Hugging Face
tokens, the ``user:password@`` of any URI and secret-named ``name=value`` pairs (``?token=``,
``&password=``, ``access_token=``) blanked out of any text (MLflow params, tags and notes, job
files, imported configs, messages, log records); so are the secrets this process was told of
(``register_secret``: a notification URL, whose tokens sit in its path).

Here, below ``trainer.config`` and ``trainer.tracking``, because both use it."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

REDACTED = "***REDACTED***"
HIDDEN = "***"  # what stands in for a URI's credentials or a secret parameter's value
_HF_TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")
_SECRET_WORDS = ("secret", "password", "passwd", "apikey", "api_key", "credential")
# scheme://userinfo@ : greedy up to the authority's last "@" (a password may hold one)
_URI_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@]*(?:@[^\s/?#@]*)*@")
# name=value, in a URL query (after ? & ;) or standing alone in a message
_ASSIGNMENT = re.compile(
    r"(?P<lead>[?&;]|\b)(?P<name>[A-Za-z_][\w.\-]*)=(?P<value>[^\s&#'\"<>)\]]+)"
)
_SECRET_PARAM_WORDS = frozenset(
    {"pwd", "sig", "signature", "auth", "authorization", "credentials", "secret", "session"}
)
_SECRET_QUERY_WORDS = frozenset({"key", "code"})  # only in a URL's query: ?key=..., ?code=...
# Secrets with no telltale shape (a webhook token in a URL's path), longest first; see
# register_secret; a tuple, replaced whole, so a thread redacting meanwhile reads one version.
_KNOWN_SECRETS: tuple[str, ...] = ()
MIN_SECRET_LENGTH = 6


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


def _secret_parameter(name: str, in_query: bool) -> bool:
    if is_secret_key(name):
        return True
    words = [w for w in re.split(r"[_\-.\s]+", name.lower()) if w]
    last = words[-1] if words else ""
    return last in _SECRET_PARAM_WORDS or (in_query and last in _SECRET_QUERY_WORDS)


def _hide_assignment(match: re.Match[str]) -> str:
    lead, name = match.group("lead"), match.group("name")
    if not _secret_parameter(name, in_query=bool(lead)):
        return match.group(0)
    return f"{lead}{name}={HIDDEN}"


def redact_text(text: str) -> str:
    """The text with its secrets replaced: Hugging Face tokens, any URI's ``user:password@``
    (``postgresql://***@host:5432/db``) and the values of secret-named parameters
    (``?token=***``, ``password=***``, ``access_token=***``). Idempotent; cheap on text without
    any ``hf_``, ``://`` or ``=``."""
    for secret in _KNOWN_SECRETS:
        if secret in text:
            text = text.replace(secret, HIDDEN)
    if "hf_" in text:
        text = _HF_TOKEN.sub("hf_" + REDACTED, text)
    if "://" in text:
        text = _URI_USERINFO.sub(rf"\1{HIDDEN}@", text)
    if "=" in text:
        text = _ASSIGNMENT.sub(_hide_assignment, text)
    return text


def register_secret(*values: str) -> None:
    """From now on ``redact_text`` (so every redacted log record, note and message of this
    process) hides each of ``values`` wherever it appears; values shorter than
    ``MIN_SECRET_LENGTH`` characters are ignored (they would blank ordinary words)."""
    global _KNOWN_SECRETS
    fresh = {v for v in values if len(v) >= MIN_SECRET_LENGTH and v not in _KNOWN_SECRETS}
    if fresh:  # longest first: a secret that contains another is hidden whole
        _KNOWN_SECRETS = tuple(sorted({*_KNOWN_SECRETS, *fresh}, key=len, reverse=True))


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without secret-named keys and with token-shaped text replaced (values kept typed)."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if is_secret_key(str(key)):
            continue
        clean[str(key)] = redact_text(value) if isinstance(value, str) else value
    return clean


def describe_error(err: BaseException, limit: int = 300) -> str:
    """One redacted line saying what went wrong: the innermost cause's type and first line
    (MLflow wraps ``sqlite3.OperationalError: attempt to write a readonly database`` in a
    SQLAlchemy error whose first line is about autoflush)."""
    seen: set[int] = set()
    inner = err
    while id(inner) not in seen:
        seen.add(id(inner))
        cause = inner.__cause__ or inner.__context__
        if cause is None or not str(cause).strip():
            break
        inner = cause
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    text = f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
    return redact_text(text)[:limit]


def install_log_redaction() -> None:
    """From now on every log record of this process is redacted (``redact_text``): its message
    with arguments, and its traceback, whichever handler writes it (MLflow and SQLAlchemy put a
    store's URI, with its password, in their exceptions). Idempotent."""
    current = logging.getLogRecordFactory()
    if getattr(current, "redacting", False):
        return

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redact_log_record(record)
        return record

    redacting_factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting_factory)


def redact_log_record(record: logging.LogRecord) -> None:
    """Redact a record in place: message and arguments merged, the traceback formatted now (a
    ``Formatter`` uses ``exc_text`` when it is set) and both run through ``redact_text``."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: the handler reports it as it would have
        return
    clean = redact_text(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redact_text(text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)
