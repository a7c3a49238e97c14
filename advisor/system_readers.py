"""The questions hardware detection asks the outside world, each behind one ``Readers`` field.

NVML, sysfs files, ``sysctl``, psutil, the disk and the CPU load are asked through these
functions; ``advisor.profile`` reasons about their answers, and tests give it a ``Readers`` of
recorded answers for each platform. Apart from the profile so the real readers, the part tests
replace, sit in one place.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from advisor.cpu_load import busy_processes, load_average


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _list_dir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _sysctl(name: str) -> str | None:
    try:
        done = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _memory() -> tuple[float, float]:
    mem = psutil.virtual_memory()
    return float(mem.total), float(mem.available)


def _disk_free(path: str) -> float:
    return float(shutil.disk_usage(path).free)


def _device_of(path: str) -> tuple[int, int] | None:
    try:
        st_dev = os.stat(path).st_dev
    except OSError:
        return None
    return os.major(st_dev), os.minor(st_dev)


def _cpu_counts() -> tuple[int, int]:
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return logical, physical


def _load_nvml() -> Any | None:
    try:
        import pynvml  # optional: the NVIDIA driver's library binding, absent on many machines
    except ImportError:
        return None
    return pynvml


@dataclass
class Readers:
    """Every question detection asks the outside world; tests replace them with recordings."""

    nvml: Callable[[], Any | None] = _load_nvml
    read_text: Callable[[str], str | None] = _read_text
    list_dir: Callable[[str], list[str]] = _list_dir
    realpath: Callable[[str], str] = os.path.realpath
    sysctl: Callable[[str], str | None] = _sysctl
    system: Callable[[], str] = platform.system
    machine: Callable[[], str] = platform.machine
    memory: Callable[[], tuple[float, float]] = _memory
    disk_free: Callable[[str], float] = _disk_free
    device_of: Callable[[str], tuple[int, int] | None] = _device_of
    cpu_counts: Callable[[], tuple[int, int]] = _cpu_counts
    processor: Callable[[], str] = platform.processor
    load_average: Callable[[], float | None] = load_average
    busy_processes: Callable[[], tuple[str, ...]] = busy_processes
    extra_notes: list[str] = field(default_factory=list)
