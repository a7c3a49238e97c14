"""Telling the user a run has ended, wherever they are: one message through apprise (ntfy, Slack,
Discord, e-mail, a JSON webhook and 100 more) when a run finishes, fails or is stopped.

The trainer sends it as it ends its run (``trainer.engine.run``), so it goes out with no browser
open; the studio sends it for a run whose trainer vanished without a word (SIGKILL, out of memory,
a refused config) when it closes that run (``trainer.jobs.control.reconcile``). A claim file in
the job folder makes that one message per ended run, whoever sends it.

The URL is a secret (tokens sit in it): it reaches a trainer in its environment
(STUDIO_NOTIFY_URL, ``trainer.jobs.launch.trainer_env``), never in its config (configs go to
MLflow); every part of it that may be a token is registered with ``trainer.redaction``, so no log
line shows it. The message holds no secret: its text is redacted, and no value of a secret-named
environment variable (HF_TOKEN, ...) survives in it. A message that cannot be sent is a warning in
the log, never a failed run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from trainer.durations import format_duration
from trainer.files import atomic_write_text
from trainer.redaction import (
    HIDDEN,
    MIN_SECRET_LENGTH,
    install_log_redaction,
    is_secret_key,
    redact_text,
    register_secret,
)
from trainer.settings import StudioSettings
from trainer.tracking.job_file import read_job
from trainer.tracking.progress import read_progress

log = logging.getLogger(__name__)

APP_NAME = "LoRA Studio"
NOTIFY_ENV = "STUDIO_NOTIFY_URL"
# In a job folder: this launch's run-ended message went out (or is going out).
NOTICE_CLAIM_FILE = "run_end_notice.json"
# status -> (mark, word); the browser tab title and the toast use the same words
STATUS_WORDS = {
    "FINISHED": ("✓", "finished"),
    "FAILED": ("✗", "failed"),
    "KILLED": ("■", "stopped"),
}
PHASE_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_SPLIT_URLS = re.compile(r"[\s,]+")  # apprise takes several URLs in one string
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}$")
SERVICE_EXAMPLES = (
    "ntfy://topic, json://host/path, discord://id/token or mailto://user:pass@example.com (e-mail)"
)
APPRISE_LIST = "https://github.com/caronc/apprise/wiki"
EVERY_SERVICE = f"Every service apprise knows is listed at {APPRISE_LIST}"  # no "." after a URL
# In apprise's log: the socket's reason ("[Errno 111] Connection refused"), a timeout, and its
# lines that repeat a URL it could not load (the reason is in the line before).
_SOCKET_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\"()\]\[]+)")
_TIMED_OUT = re.compile(r"(?:read|connect|connection) timed out", re.IGNORECASE)
_ECHOES_URL = re.compile(r"^(Unsupported URL|Unparseable URL|Could not load .* URL)")
_APPRISE_LOG_LOCK = threading.RLock()  # url_problem runs inside send's block


# ----------------------------------------------------------------------------- the message
def run_end_title(run_name: str, status: str) -> str:
    """'✓ my_lora finished — LoRA Studio' (the message's title and the browser tab's), without
    secrets."""
    mark, word = STATUS_WORDS.get(status, ("•", status.lower()))
    return without_secrets(f"{mark} {run_name} {word} — {APP_NAME}")


def run_end_body(run_name: str, status: str, summary: Mapping[str, Any]) -> str:
    """The message: the run, its status, steps done, final loss, duration and, for a failure,
    the first line of the failure note, without secrets. ``summary`` keys (each optional): step,
    total_steps, loss, duration_s, note."""
    _mark, word = STATUS_WORDS.get(status, ("", status.lower()))
    lines = [f"Run: {run_name}", f"Status: {word} ({status})"]
    step, total = summary.get("step"), summary.get("total_steps")
    if step is not None:
        lines.append(f"Steps: {step} of {total}" if total else f"Steps: {step}")
    if isinstance(summary.get("loss"), int | float):
        lines.append(f"Final loss: {summary['loss']:.4g}")
    if isinstance(summary.get("duration_s"), int | float):
        lines.append(f"Duration: {format_duration(summary['duration_s'])}")
    note = next(
        (ln.strip() for ln in str(summary.get("note") or "").splitlines() if ln.strip()), ""
    )
    if status == "FAILED" and note:
        lines.append(f"Why: {note[:300]}")
    return without_secrets("\n".join(lines))


def without_secrets(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` redacted (tokens, passwords, registered secrets) and without the value of any
    secret-named environment variable (HF_TOKEN, MLFLOW_TRACKING_PASSWORD, ...), whatever its
    shape."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if is_secret_key(name) and len(value) >= MIN_SECRET_LENGTH and value in text:
            text = text.replace(value, HIDDEN)
    return redact_text(text)


# ------------------------------------------------------------------------------ the URL
def url_secrets(url: str) -> list[str]:
    """The URL and each part of it that may be a secret: its password, and what looks like a
    token (a digit or both cases in it, or 12 characters and more) among its user, a host that is
    no host name (``discord://<webhook id>/…``, ``ntfy://<topic>``), its path segments and query
    values. Plain short words ("notify", "hooks") are left: hidden, they would blank every log
    line's ordinary words."""
    found = [url.strip()]
    for one in filter(None, _SPLIT_URLS.split(url)):
        found.append(one)
        try:
            parts = urlsplit(one)
            found.append(parts.password or "")
        except ValueError:  # not a URL at all: the whole text is the secret
            continue
        host = parts.netloc.rpartition("@")[2]  # as typed (``hostname`` is lowercased)
        host = host if host.startswith("[") else host.partition(":")[0]
        is_host_name = "." in host or host == "localhost" or host.startswith("[")
        pieces = [
            parts.username or "",
            "" if is_host_name else host,
            *parts.path.split("/"),
            *(value for _name, value in parse_qsl(parts.query)),
        ]
        found += [piece for piece in pieces if _token_like(piece)]
    return [part for part in dict.fromkeys(found) if len(part) >= MIN_SECRET_LENGTH]


def _token_like(text: str) -> bool:
    mixed_case = text.lower() != text and text.upper() != text
    return len(text) >= 12 or mixed_case or any(c.isdigit() for c in text)


def protect_url(url: str) -> None:
    """Keep ``url`` out of every log record of this process from now on (apprise logs the URLs
    it cannot parse; urllib3 the paths it posts to)."""
    install_log_redaction()
    register_secret(*url_secrets(url))


def mask_url(url: str) -> str:
    """The URL as the studio shows it: whole, with each part that may be a secret as ``***`` (its
    password, and what looks like a token in its user, host, path and query: ``url_secrets``):
    ``json://127.0.0.1:9/x``, ``discord://***/***``; '' for none."""
    return ", ".join(_masked(one) for one in filter(None, _SPLIT_URLS.split(url.strip())))


def _masked(one: str) -> str:
    scheme, sep, rest = one.partition("://")
    if not sep:
        return HIDDEN
    rest, fragment, _ = rest.partition("#")
    where, _, query = rest.partition("?")
    netloc, slash, path = where.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if userinfo:
        user, colon, _password = userinfo.partition(":")
        userinfo = _hide_token(user) + (f":{HIDDEN}" if colon else "")
    if hostport.startswith("["):  # [::1]:8080
        host, _, port = hostport[1:].partition("]")
        host, port = f"[{host}]", port
    else:
        host, port_sep, port = hostport.partition(":")
        port = port_sep + port
    is_host_name = "." in host or host == "localhost" or host.startswith("[")
    shown = f"{scheme}://{userinfo}{at}{host if is_host_name else _hide_token(host)}{port}"
    shown += slash + "/".join(_hide_token(segment) for segment in path.split("/"))
    if query:
        pairs = (pair.partition("=") for pair in query.split("&"))
        shown += "?" + "&".join(f"{name}{eq}{_hide_token(value)}" for name, eq, value in pairs)
    if fragment:
        shown += f"#{HIDDEN}"
    return shown


def _hide_token(text: str) -> str:
    return HIDDEN if text and _token_like(text) else text


def url_problem(url: str) -> str | None:
    """Why apprise cannot send to ``url``, in words a user can act on (no service prefix, a
    service apprise does not know, the parts a known service is missing: apprise's own reason);
    None when it can. No secret of the URL is part of the answer."""
    import apprise  # why: 0.2 s to import and 0.3 s to load its plugins; only where a URL is used

    if not url.strip():
        return "No URL given."
    protect_url(url)
    for one in filter(None, _SPLIT_URLS.split(url)):
        with apprise_log() as records:
            usable = apprise.Apprise().add(one)
        if usable:
            continue
        scheme, sep, _rest = one.partition("://")
        if not sep:
            shown = "what was typed" if _token_like(one) else repr(one)
            return (
                f"Not a notification URL: {shown} has no service prefix; use one of "
                f"{SERVICE_EXAMPLES}. {EVERY_SERVICE}"
            )
        if scheme.lower() not in _known_schemes():
            shown = repr(f"{scheme}://") if _SCHEME.match(scheme) else "its prefix"
            return (
                f"Not a notification URL: apprise has no service called {shown}; use one of "
                f"{SERVICE_EXAMPLES}. {EVERY_SERVICE}"
            )
        reason = apprise_reason(records, one)
        return without_secrets(
            f"apprise knows {scheme}:// but cannot use this URL"
            + (f": {reason.rstrip('. :')}" if reason else "")
            + f". The parts each service needs are listed at {APPRISE_LIST}"
        )
    return None


def _known_schemes() -> set[str]:
    try:
        from apprise.manager_plugins import NotificationManager  # why: with apprise, see above

        return {str(scheme).lower() for scheme in NotificationManager().schemas()}
    except Exception:  # another apprise: say "no service called", the likelier cause
        return set()


# --------------------------------------------------------------- what apprise said
class _KeepRecords(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def apprise_log() -> Iterator[list[logging.LogRecord]]:
    """apprise's log records while the block runs (logger ``apprise``, debug lines included: the
    refused connection is only there). They are kept, not passed on: its debug lines hold the
    message and the URL; ``send`` logs the reason in its own warning. One block at a time."""
    records: list[logging.LogRecord] = []
    handler = _KeepRecords(records)
    logger = logging.getLogger("apprise")
    with _APPRISE_LOG_LOCK:
        level, propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            yield records
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def apprise_reason(records: Iterable[logging.LogRecord], url: str) -> str:
    """Why apprise did not send or take ``url``, in a line, from its log records: "could not
    connect to 127.0.0.1:9: connection refused", else its warnings ("An invalid Discord Webhook
    Token (None) was specified."); '' when it said nothing. Without secrets."""
    records = list(records)
    for record in records:
        text = record.getMessage()
        found = _SOCKET_ERROR.search(text) or _TIMED_OUT.search(text)
        if found:
            why = (found.group(1) if found.re is _SOCKET_ERROR else found.group(0)).strip()
            return without_secrets(f"could not connect to {_address(url)}: {why.lower()}")
    said = [
        record.getMessage().strip()
        for record in records
        if record.levelno >= logging.WARNING and not _ECHOES_URL.match(record.getMessage())
    ]
    return without_secrets(" ".join(dict.fromkeys(said)))[:300]


def _address(url: str) -> str:
    """``127.0.0.1:9`` (a URL's host and port), else "the <scheme> service"."""
    for one in filter(None, _SPLIT_URLS.split(url)):
        try:
            parts = urlsplit(one)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            continue
        if "." in host or host == "localhost":
            return f"{host}:{port}" if port else host
    return f"the {url.partition('://')[0] or 'notification'} service"


def save_notify_url(settings: StudioSettings, url: str) -> None:
    """Save the URL the studio's runs report to (``settings.notify_file``, mode 0600: readable
    by this user only); "" removes it."""
    url = url.strip()
    if not url:
        settings.notify_file.unlink(missing_ok=True)
        return
    protect_url(url)
    settings.notify_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(settings.notify_file, json.dumps({"url": url}))
    os.chmod(settings.notify_file, 0o600)  # atomic writes use mkstemp's 0600; say so anyway


# ----------------------------------------------------------------------------- sending
def send(url: str, title: str, body: str, status: str = "") -> str | None:
    """Send one message; None when it went out, else why not (a warning is logged; nothing is
    raised, whatever fails)."""
    if not url.strip():
        return "No notification URL is set."
    protect_url(url)
    try:
        import apprise  # why: 0.2 s to import and 0.3 s to load its plugins; only when sending

        notifier = apprise.Apprise()
        with apprise_log() as records:
            usable = notifier.add(url)
        if not usable:
            problem = url_problem(url) or "apprise cannot use the notification URL."
        else:
            kind = {
                "FINISHED": apprise.NotifyType.SUCCESS,
                "FAILED": apprise.NotifyType.FAILURE,
                "KILLED": apprise.NotifyType.WARNING,
            }.get(status, apprise.NotifyType.INFO)
            with apprise_log() as records:
                sent = notifier.notify(
                    body=body, title=title, notify_type=kind, body_format=apprise.NotifyFormat.TEXT
                )
            reason = apprise_reason(records, url) if not sent else ""
            problem = None if sent else reason or "the service did not accept it (no reason given)"
    except Exception as err:  # a notification never breaks what sends it
        problem = f"{type(err).__name__}: {redact_text(str(err))[:200]}"
    if problem:
        log.warning("Could not send the notification %r to %s: %s", title, _address(url), problem)
    return problem


def notify_run_ended(
    url: str, run_name: str, status: str, summary: Mapping[str, Any]
) -> str | None:
    """Tell ``url`` that run ``run_name`` ended with ``status`` (FINISHED, FAILED or KILLED):
    the message names the run, the status, steps done, the final loss, the duration and, for a
    failure, the first line of the note (``summary``: step, total_steps, loss, duration_s,
    note). Without secrets. None when it went out, else why not (logged as a warning)."""
    return send(
        url, run_end_title(run_name, status), run_end_body(run_name, status, summary), status
    )


def send_test_notification(url: str) -> str | None:
    """A test message from the studio's settings form; None when it went out, else why not."""
    body = "A test message: LoRA Studio will tell you here when a run finishes, fails or stops."
    return send(url, f"Test — {APP_NAME}", body)


# ----------------------------------------------------------- one message per ended run
def claim_notice(job_dir: Path) -> bool:
    """True for the first caller since the job's launch (it sends the message), False for any
    later one. A folder that cannot be written says True: better two messages than none."""
    try:
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY  # exclusive: one of two callers wins
        handle = os.open(job_dir / NOTICE_CLAIM_FILE, flags, 0o644)
    except FileExistsError:
        return False
    except OSError:
        return True
    try:
        os.write(handle, f'{{"pid": {os.getpid()}, "at": {time.time()}}}'.encode())
    except OSError:
        pass  # a full disk: the empty file claims all the same
    finally:
        os.close(handle)
    return True


def release_claim(job_dir: Path) -> None:
    """A trainer starting on the job (a resume) ends the run again: one more message then."""
    with contextlib.suppress(OSError):
        (job_dir / NOTICE_CLAIM_FILE).unlink(missing_ok=True)


def notify_job_ended(
    url: str, job_dir: Path, run_name: str, status: str, summary: Mapping[str, Any]
) -> str | None:
    """``notify_run_ended`` once per launch of the job (``claim_notice``); nothing without a
    URL. None when it went out (or had not to), else why not."""
    if not url.strip() or not claim_notice(job_dir):
        return None
    return notify_run_ended(url, run_name, status, summary)


def progress_summary(progress: Mapping[str, Any], started: float | None) -> dict[str, Any]:
    """The message's numbers from a progress dict (``progress.json`` or the trainer's last
    state) and when the run started (epoch seconds)."""
    ended = progress.get("updated") or time.time()
    return {
        "step": progress.get("step"),
        "total_steps": progress.get("total_steps"),
        "loss": progress.get("loss"),
        "duration_s": ended - started if started else None,
        "note": progress.get("last_error"),
    }


def notify_closed_runs(settings: StudioSettings, run_ids: Iterable[str]) -> None:
    """The message for runs the studio closed because their trainer was gone (it could not
    send its own); a job whose message went out already is skipped."""
    url = settings.notify_url_in_use()
    if not url:
        return
    for run_id in run_ids:
        folder = settings.jobs_dir / run_id
        progress = read_progress(folder)
        job = read_job(folder)
        status = PHASE_STATUS.get(str((progress or {}).get("phase")))
        if progress is None or job is None or status is None:
            continue
        name = str(job.extra.get("name") or run_id[:8])
        notify_job_ended(url, folder, name, status, progress_summary(progress, job.started))
