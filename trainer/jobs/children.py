"""Trainer processes this studio process started: each is waited for in a daemon thread, which
reaps it (no zombie) and records its exit code and what it means in ``exit.json``."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from trainer.files import write_json
from trainer.jobs.folder import EXIT_FILE
from trainer.tracking.progress import read_progress

EXIT_MEANINGS = {
    0: "finished",
    1: "failed (see the error and the log)",
    2: "refused the config (invalid or still 'auto'; see the log)",
    3: "stopped on request (resume continues from the last checkpoint)",
    -9: "was killed (SIGKILL: out of memory or killed by hand)",
    -15: "was terminated by SIGTERM before it could install its handler",
}


_children: dict[int, subprocess.Popen] = {}  # pid -> process, until it ended and was reaped


def child_process(pid: int) -> subprocess.Popen | None:
    """The trainer process ``pid`` if this process started it and it has not been reaped yet."""
    return _children.get(pid)


def watch_child(proc: subprocess.Popen, job_dir: Path) -> None:
    """Wait for the child in a daemon thread: reaps it (no zombie) and records its exit code."""

    def wait() -> None:
        code = _trainer_code(proc.wait(), proc.args, job_dir)
        _children.pop(proc.pid, None)
        meaning = EXIT_MEANINGS.get(code, f"ended with exit code {code}")
        with contextlib.suppress(OSError):
            write_json(
                job_dir / EXIT_FILE, {"code": code, "ended": time.time(), "meaning": meaning}
            )

    _children[proc.pid] = proc
    threading.Thread(target=wait, name=f"trainer-{proc.pid}", daemon=True).start()


def _trainer_code(code: int, cmd: Any, job_dir: Path) -> int:
    """The trainer's own exit code. accelerate's launcher ends 1 when any process ends non-zero,
    e.g. 3 after a stop; the main process's final phase says what happened."""
    if code != 1 or "accelerate.commands.launch" not in list(cmd or []):
        return code
    phase = (read_progress(job_dir) or {}).get("phase")
    return {"finished": 0, "killed": 3}.get(str(phase), code)
