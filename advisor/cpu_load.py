"""How busy the CPU is when the profile is detected, and what that means for predicted times.

Detection reads the 1-minute load average (psutil's, which is ``os.getloadavg`` where the system
has one) and, only on a busy machine, watches the processes' CPU use for a fifth of a second to
name the busiest. ``busy_cpu_caveat`` words it beside the predictions, whose numbers assume a
quiet machine and are not scaled by a guessed factor.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time

import psutil

# From one runnable thread per core on average the cores are shared: a run that wants every core
# gets 1 / (load per core + 1) of them (the scheduler's fair share), so its steps take longer.
BUSY_LOAD_PER_CORE = 1.0
BUSY_SAMPLE_S = 0.2  # how long the processes' CPU use is watched, only on a busy machine
BUSY_SHOWN = 3  # processes named in the profile
BUSY_MIN_PERCENT = 10.0  # a process below this share of one core is not named
HISTORY_SLOWER = 1.5  # past runs this much slower than the formulas: they may have shared the CPU
# Web browsers are not named as busy programs to close: one of them shows the studio itself. Names
# as the systems report them (Linux cuts them to 15 characters: "chromium-browse"; Firefox's tabs
# run as "Web Content" and "Isolated Web Co"; macOS: "Google Chrome Helper (Renderer)").
BROWSERS = (
    "chrome",
    "chromium",
    "google chrome",
    "firefox",
    "msedge",
    "microsoft edge",
    "safari",
    "brave",
    "opera",
    "vivaldi",
    "web content",
    "isolated web co",
)


def load_average() -> float | None:
    """The 1-minute load average (runnable and waiting threads); None where there is none."""
    try:
        one, five, fifteen = psutil.getloadavg()
    except (OSError, AttributeError):
        return None
    if platform.system() == "Windows" and not (one or five or fifteen):
        return None  # psutil's Windows emulation answers zeros until it has sampled
    return float(one)


def is_browser(name: str) -> bool:
    """A web browser's process, by its name ("chromium", "firefox.exe", "Safari", or a busy
    list's "chrome (58%)")."""
    return name.strip().lower().startswith(BROWSERS)


def busy_processes() -> tuple[str, ...]:
    """The processes using the most CPU over a short look, as 'name (85%)' (% of one core).

    Left out: web browsers (``BROWSERS``) and the studio's own process, which the advice would
    otherwise tell the person to close."""
    watched = []
    for proc in psutil.process_iter(["name"]):
        if proc.pid == os.getpid() or is_browser(proc.info.get("name") or ""):
            continue
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)  # the first call starts the count
            watched.append(proc)
    time.sleep(BUSY_SAMPLE_S)
    used = []
    for proc in watched:
        with contextlib.suppress(psutil.Error):
            used.append((proc.cpu_percent(None), proc.info.get("name") or str(proc.pid)))
    busiest = sorted((u for u in used if u[0] >= BUSY_MIN_PERCENT), reverse=True)[:BUSY_SHOWN]
    return tuple(f"{name} ({percent:.0f}%)" for percent, name in busiest)


def busy_cpu_caveat(
    load_per_core: float | None,
    busiest: tuple[str, ...],
    device_kind: str,
    history_factor: float | None = None,
) -> str:
    """Why the predicted times may be too short on a CPU that was already busy; "" if it was not.

    The numbers are not scaled by a guessed factor: the slow-down depends on what the other
    processes do. What can be said: sharing the cores fairly gives a run that wants all of them
    1 / (load per core + 1) of each, and torch's threads waiting on each other at every parallel
    step make it worse (10-100x slower steps have been seen on a 2-core machine at load 11).
    ``history_factor``: the correction past runs on this machine already made to the speed; runs
    measured on a busy machine carry its slow-down in it, so the two are not to be stacked."""
    if load_per_core is None or load_per_core < BUSY_LOAD_PER_CORE:
        return ""
    # A profile saved before browsers were left out may still name one.
    named = [p for p in busiest if not is_browser(p)]
    who = f"; busiest: {', '.join(named)}" if named else ""
    busy = f"the CPU is busy (load {load_per_core:.1f} per core when checked{who})"
    if device_kind != "cpu":
        return f"{busy}: starting, loading the model and preparing batches may take longer than predicted"
    share = load_per_core + 1
    if history_factor is not None and history_factor >= HISTORY_SLOWER:
        return (
            f"{busy}: the times may be longer still. They already include a ×{history_factor:.1f} "
            "correction from past runs here, which count any load those runs had: do not "
            "multiply the two"
        )
    longer = "several times longer" if share >= 3 else "longer"
    return (
        f"{busy}: expect {longer} than predicted. Sharing the cores alone makes training about "
        f"{share:.1f}x slower, and torch's threads waiting on each other make it slower still"
    )
