"""The ``model info`` and ``model download`` commands (parsing lives in ``trainer.models.cli``).

``download --progress-file F`` is also how the studio runs a download in the background: the
file is rewritten (atomically) with each progress reading, and a SIGTERM (Cancel) ends it with
state 'cancelled', leaving the cache consistent for a later resume.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from trainer.files import write_json
from trainer.models.fetch import DownloadProgress, download_error_message, download_plan
from trainer.models.hub import FOUND, RepoCheck, cache_status, format_bytes, inspect_repo

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3


def describe(check: RepoCheck) -> list[str]:
    """Lines for people about a checked repository."""
    if check.state != FOUND or check.plan is None:
        return [f"{check.repo_id}: {check.state} — {check.message}"]
    plan, status = check.plan, cache_status(check.plan)
    lines = [
        f"{check.repo_id} (revision {plan.revision[:12]})",
        f"  architecture: {plan.arch}"
        + (
            f" (the repository looks like {check.detected_arch})"
            if check.detected_arch and check.detected_arch != plan.arch
            else ""
        ),
        f"  licence: {check.license or 'not stated'}; "
        + ("gated: accept the licence at " + check.page_url if check.gated else "not gated")
        + ("; private" if check.private else ""),
        f"  a run needs {len(plan.files)} files, {format_bytes(plan.total_bytes)}"
        + (f" ({plan.variant} weights)" if plan.variant else ""),
        f"  cached: {format_bytes(status.cached_bytes)} of {format_bytes(status.total_bytes)}"
        + (" (complete)" if status.complete else ""),
        f"  not downloaded: {len(plan.skipped)} other files, {format_bytes(plan.skipped_bytes)}",
    ]
    if plan.missing_components:
        lines.append(f"  MISSING for {plan.arch}: {', '.join(plan.missing_components)}")
    return lines


def _arch_for(check: RepoCheck, wanted: str | None) -> str:
    return wanted or check.detected_arch or "sd15"


def _checked(ref: str, arch: str | None) -> RepoCheck:
    first = inspect_repo(ref, arch or "sd15")
    if first.state == FOUND and arch is None and first.detected_arch not in (None, "sd15"):
        return inspect_repo(ref, _arch_for(first, None))
    return first


def run_model_command(args: argparse.Namespace) -> int:
    check = _checked(args.ref, args.arch)
    if args.model_command == "info":
        print("\n".join(describe(check)))
        return EXIT_OK if check.state == FOUND else EXIT_FAILED
    return _download(check, args)


def _download(check: RepoCheck, args: argparse.Namespace) -> int:
    progress_file = Path(args.progress_file) if args.progress_file else None

    last_word = threading.Lock()  # after 'cancelled' is written, no reading may follow it
    closed = []

    def write(progress: DownloadProgress, final: bool = False) -> None:
        with last_word:
            if progress_file is not None and not closed:
                write_json(progress_file, progress.as_dict())
            if final:
                closed.append(True)

    if check.state != FOUND or check.plan is None or check.plan.missing_components:
        message = describe(check)[-1].strip()
        write(DownloadProgress("failed", check.repo_id, 0, 0, 0, 0, message=message))
        print(message, file=sys.stderr)
        return EXIT_FAILED
    bar = None if args.quiet else _bar(check.plan.total_bytes)

    def report(progress: DownloadProgress) -> None:
        write(progress)
        if bar is not None:
            bar.update(progress.bytes_done - bar.n)

    def cancel(_signum, _frame) -> None:
        # The download threads cannot be interrupted; leave at once. Files already complete
        # stay in the cache, the one arriving is removed by the next download.
        status = cache_status(plan)
        words = "cancelled; files already complete are kept, a new download fetches the rest"
        write(
            DownloadProgress(
                "cancelled",
                plan.repo_id,
                status.cached_bytes,
                status.total_bytes,
                status.files_cached,
                status.files_total,
                message=words,
            ),
            final=True,
        )
        os._exit(EXIT_CANCELLED)

    plan = check.plan
    signal.signal(signal.SIGTERM, cancel)
    try:
        folder = download_plan(plan, on_progress=report)
    except Exception as exc:
        message = download_error_message(plan.repo_id, exc)
        write(
            DownloadProgress(
                "failed", plan.repo_id, 0, plan.total_bytes, 0, len(plan.files), message=message
            )
        )
        print(message, file=sys.stderr)
        return EXIT_FAILED
    finally:
        if bar is not None:
            bar.close()
    print(f"{plan.repo_id}: {len(plan.files)} files in {folder}")
    return EXIT_OK


def _bar(total: int):
    from tqdm import tqdm  # only for a terminal download

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="download")
