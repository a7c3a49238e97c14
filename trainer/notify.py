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
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
        lines.append(f"Duration: {duration_text(summary['duration_s'])}")
    note = next(
        (ln.strip() for ln in str(summary.get("note") or "").splitlines() if ln.strip()), ""
    )
    if status == "FAILED" and note:
        lines.append(f"Why: {note[:300]}")
    return without_secrets("\n".join(lines))


def duration_text(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 10 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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
    """The URL as the studio shows it: its scheme and host name only (``json://127.0.0.1/…``,
    ``discord://…``); '' for none."""
    shown = []
    for one in filter(None, _SPLIT_URLS.split(url.strip())):
        scheme, sep, _rest = one.partition("://")
        if not sep:
            shown.append("…")
            continue
        try:
            parts = urlsplit(one)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            host, port = "", None
        looks_like_host = "." in host or host == "localhost"
        where = f"{host}:{port}" if looks_like_host and port else host if looks_like_host else ""
        shown.append(f"{scheme}://{where}…")
    return ", ".join(shown)


def url_problem(url: str) -> str | None:
    """Why apprise cannot send to ``url`` (its scheme unknown, its parts wrong); None when it
    can. The URL itself is never part of the answer."""
    import apprise  # why: 0.2 s to import and 0.3 s to load its plugins; only where a URL is used

    if not url.strip():
        return "No URL given."
    protect_url(url)
    for one in filter(None, _SPLIT_URLS.split(url)):
        if not apprise.Apprise().add(one):
            scheme = one.partition("://")[0] if "://" in one else "?"
            return (
                f"apprise cannot use this {scheme}:// URL: check the service's scheme and the "
                "parts it needs; https://github.com/caronc/apprise/wiki describes each service."
            )
    return None


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
        if not notifier.add(url):
            problem = url_problem(url) or "apprise cannot use the notification URL."
        else:
            kind = {
                "FINISHED": apprise.NotifyType.SUCCESS,
                "FAILED": apprise.NotifyType.FAILURE,
                "KILLED": apprise.NotifyType.WARNING,
            }.get(status, apprise.NotifyType.INFO)
            sent = notifier.notify(
                body=body, title=title, notify_type=kind, body_format=apprise.NotifyFormat.TEXT
            )
            problem = None if sent else "the service did not accept it (see apprise's warning)"
    except Exception as err:  # a notification never breaks what sends it
        problem = f"{type(err).__name__}: {redact_text(str(err))[:200]}"
    if problem:
        log.warning("Could not send the notification %r to %s: %s", title, mask_url(url), problem)
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
