"""Model downloads the studio runs in the background, one subprocess per Hub repository.

Each download is ``python -m trainer model download REF --progress-file F`` in its own session
(so Cancel can stop it and everything it started), with its folder under
``STUDIO_HOME/downloads/<repo>``: ``progress.json`` (rewritten with every reading), ``pid`` and
``log.txt``. The studio can be reloaded, or the user can carry on through the wizard, while it
runs; ``download_state`` reads where it is, and says 'interrupted' when the process died without
a last word. The token is never passed: the subprocess finds huggingface_hub's own login.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from trainer.files import read_json, write_json
from trainer.settings import StudioSettings

RUNNING_STATES = ("starting", "downloading")
_processes: dict[str, subprocess.Popen] = {}  # repo id -> download this process started
_exit_codes: dict[str, int] = {}  # repo id -> exit code of its last download, once reaped


def download_dir(settings: StudioSettings, repo_id: str) -> Path:
    return settings.home / "downloads" / repo_id.replace("/", "--")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is not alive
    return True


def download_state(settings: StudioSettings, repo_id: str) -> dict[str, Any] | None:
    """The latest progress of the studio's download of ``repo_id`` (None if never started)."""
    folder = download_dir(settings, repo_id)
    progress = read_json(folder / "progress.json")
    if progress is None:
        return None
    if progress.get("state") in RUNNING_STATES:
        pid_text = (folder / "pid").read_text().strip() if (folder / "pid").is_file() else ""
        starting = progress.get("state") == "starting" and not pid_text
        if not starting and not (pid_text.isdigit() and _alive(int(pid_text))):
            progress |= {
                "state": "interrupted",
                "message": "the download stopped without finishing; download again to resume",
            }
    return progress


def start_download(
    settings: StudioSettings, repo_id: str, arch: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Start downloading what a run on ``arch`` needs from ``repo_id``, unless it is running."""
    current = download_state(settings, repo_id)
    if current is not None and current.get("state") in RUNNING_STATES:
        return current
    folder = download_dir(settings, repo_id)
    folder.mkdir(parents=True, exist_ok=True)
    progress_file = folder / "progress.json"
    (folder / "pid").unlink(missing_ok=True)
    first = {"state": "starting", "repo_id": repo_id, "bytes_done": 0, "bytes_total": 0}
    write_json(progress_file, first)
    cmd = [sys.executable, "-m", "trainer", "model", "download", repo_id, "--arch", arch]
    cmd += ["--progress-file", str(progress_file), "--quiet"]
    with open(folder / "log.txt", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parents[2],
        )
    (folder / "pid").write_text(str(proc.pid))
    _processes[repo_id] = proc
    _exit_codes.pop(repo_id, None)
    threading.Thread(target=_reap, args=(repo_id, proc), daemon=True).start()
    return first


def _reap(repo_id: str, proc: subprocess.Popen) -> None:
    code = proc.wait()
    if _processes.get(repo_id) is proc:
        _exit_codes[repo_id] = code
        _processes.pop(repo_id, None)


def cancel_download(settings: StudioSettings, repo_id: str) -> bool:
    """Stop the download of ``repo_id`` (it writes 'cancelled'); False if none was running."""
    state = download_state(settings, repo_id)
    pid_file = download_dir(settings, repo_id) / "pid"
    if state is None or state.get("state") not in RUNNING_STATES or not pid_file.is_file():
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(int(pid_file.read_text().strip()), signal.SIGTERM)
        return True
    return False


def wait_for_download(repo_id: str, timeout: float) -> int | None:
    """The exit code of a download this process started, once it ends (None on timeout)."""
    proc = _processes.get(repo_id)
    if proc is None:
        return _exit_codes.get(repo_id)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
