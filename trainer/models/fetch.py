"""Downloading a ``ModelPlan`` into the Hugging Face cache, with progress people can read.

The download itself is huggingface_hub's ``snapshot_download`` (its cache layout, locking and
resume from ``.incomplete`` files); a watcher thread measures the cache every ``poll_s`` seconds
and reports bytes, speed and time left. A dropped connection is retried from where it stopped,
a few times, before the error reaches the caller. Files only become visible in the cache once
complete, so an interrupted or cancelled download never leaves a half file where a loader looks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx2
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from trainer.models.hub import (
    FOUND,
    NOT_FOUND,
    ModelPlan,
    cache_status,
    cached_snapshot,
    format_bytes,
    inspect_repo,
    remove_orphan_partials,
)

RETRIES = 3
SPEED_WINDOW_S = 5.0


class ModelNotAvailable(RuntimeError):
    """A Hub model could not be found, downloaded or read from the cache; says why and the fix."""


@dataclass
class DownloadProgress:
    """One reading of a download, as written to a download's progress file."""

    state: str  # "downloading", "done", "failed", "cancelled"
    repo_id: str
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    speed_bps: float = 0.0
    eta_s: float | None = None
    message: str = ""
    updated_at: float = 0.0

    @property
    def fraction(self) -> float:
        return min(1.0, self.bytes_done / self.bytes_total) if self.bytes_total else 1.0

    def as_dict(self) -> dict:
        return asdict(self)


class SpeedMeter:
    """Bytes per second over the last few seconds, and the time left at that speed."""

    def __init__(self, window_s: float = SPEED_WINDOW_S) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, when: float, done: int) -> None:
        self.samples.append((when, done))
        while len(self.samples) > 2 and when - self.samples[0][0] > self.window_s:
            self.samples.popleft()

    def speed(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return max(0.0, (b1 - b0) / (t1 - t0)) if t1 > t0 else 0.0

    def eta(self, remaining: int) -> float | None:
        speed = self.speed()
        return remaining / speed if speed > 0 else None


def measure(plan: ModelPlan, meter: SpeedMeter, state: str = "downloading") -> DownloadProgress:
    status = cache_status(plan)
    done = status.cached_bytes + status.partial_bytes
    now = time.time()
    meter.add(now, done)
    return DownloadProgress(
        state=state,
        repo_id=plan.repo_id,
        bytes_done=done,
        bytes_total=status.total_bytes,
        files_done=status.files_cached,
        files_total=status.files_total,
        speed_bps=meter.speed(),
        eta_s=meter.eta(status.total_bytes - done) if state == "downloading" else 0.0,
        updated_at=now,
    )


def _retryable(exc: BaseException) -> bool:
    """A dropped or timed-out connection, not an answer that will not change (404, 401...)."""
    if isinstance(exc, HfHubHTTPError):
        response = getattr(exc, "response", None)
        return response is not None and response.status_code >= 500
    return isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError)


def download_plan(
    plan: ModelPlan,
    *,
    on_progress: Callable[[DownloadProgress], None] | None = None,
    poll_s: float = 0.5,
    token: str | bool | None = None,
    max_workers: int = 4,
) -> Path:
    """Download the plan's files (what is cached is not fetched again) and return the snapshot
    folder. ``on_progress`` is called from a watcher thread while bytes arrive, then once at
    the end with state 'done'."""
    meter = SpeedMeter()
    report = on_progress or (lambda _progress: None)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll_s):
            report(measure(plan, meter))

    remove_orphan_partials(plan.repo_id)  # a killed download's leftovers: never reused
    watcher = threading.Thread(target=watch, name="download-progress", daemon=True)
    watcher.start()
    try:
        folder = _download_with_retries(plan, token, max_workers)
    finally:
        stop.set()
        watcher.join()
    report(measure(plan, meter, state="done"))
    return folder


def _download_with_retries(plan: ModelPlan, token: str | bool | None, max_workers: int) -> Path:
    for attempt in range(1, RETRIES + 1):
        try:
            return Path(
                snapshot_download(
                    plan.repo_id,  # the main revision, so the cache's refs/main names it offline
                    allow_patterns=plan.paths,
                    token=token,
                    max_workers=max_workers,
                )
            )
        except Exception as exc:
            if attempt == RETRIES or not _retryable(exc):
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def download_error_message(repo_id: str, exc: BaseException) -> str:
    """Why a download failed, and the fix, in words (never the token)."""
    page = f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"
    if isinstance(exc, GatedRepoError):
        return (
            f"{repo_id} is gated: its licence must be accepted before it can be downloaded. "
            f"Fix: sign in with a Hugging Face token (Model step or `hf auth login`), then "
            f"accept the licence at {page} and download again."
        )
    if isinstance(exc, RepositoryNotFoundError):
        return f"{repo_id} was not found on the Hub (or is private). Fix: check the id at {page}."
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return (
            f"The disk is full while downloading {repo_id}. Fix: free space, then download again."
        )
    return (
        f"Downloading {repo_id} failed ({type(exc).__name__}: {str(exc)[:300]}). What arrived is "
        f"kept; download again to resume."
    )


def ensure_snapshot(
    repo_id: str,
    arch: str,
    log: Callable[[str], None] = print,
    config_only: tuple[str, ...] = (),
) -> tuple[Path, str | None]:
    """A local folder with what a run on ``arch`` needs from ``repo_id``, and the weight variant
    to load: downloaded first when online (progress lines through ``log``), the cached copy
    when offline or when the Hub does not answer. Raises ModelNotAvailable with the reason."""
    check = inspect_repo(repo_id, arch, config_only=config_only)
    if check.state == FOUND and check.plan is not None:
        plan = check.plan
        if plan.missing_components:
            raise ModelNotAvailable(
                f"{repo_id} lacks what a {arch} run loads: {', '.join(plan.missing_components)} "
                f"(is it a {check.detected_arch or 'different'} model, or not in diffusers format?)"
            )
        status = cache_status(plan)
        if not status.complete:
            log(
                f"Downloading {repo_id}: {format_bytes(status.missing_bytes)} of "
                f"{format_bytes(plan.total_bytes)} to {constants.HF_HUB_CACHE}"
            )
            steps = [0]

            def every_tenth(progress: DownloadProgress) -> None:
                tenth = int(progress.fraction * 10)
                if tenth > steps[0]:
                    steps[0] = tenth
                    log(f"  {tenth * 10}% of {format_bytes(progress.bytes_total)}")

            try:
                return download_plan(plan, on_progress=every_tenth), plan.variant
            except Exception as exc:
                raise ModelNotAvailable(download_error_message(repo_id, exc)) from exc
        return download_plan(plan), plan.variant  # complete: links the snapshot, no bytes
    if check.state == NOT_FOUND:
        raise ModelNotAvailable(f"{repo_id}: {check.message}")
    cached = cached_snapshot(repo_id, arch)
    if cached is None:
        raise ModelNotAvailable(
            f"{repo_id} is not in the local Hugging Face cache and {check.message}. Fix: connect "
            f"to the internet (or unset STUDIO_OFFLINE), or download it on a connected machine "
            f"with `python -m trainer model download {repo_id}` and copy the cache here."
        )
    return cached, None
