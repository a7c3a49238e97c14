"""How many threads torch uses when a run trains on the CPU.

torch starts one intra-op thread per core. When other programs already keep cores busy (the
studio, a browser, another run), those threads wait on each other at every operation: on a
2-core machine at a load of 1.7, the demo U-Net's step took 3.9x as long with 2 threads as with 1
(``benchmarks/cpu_threads.py``). So a CPU run uses the cores that are free when it starts, at
least one; ``OMP_NUM_THREADS`` set by the user wins.
"""

from __future__ import annotations

import math
import os

import torch

USER_SETTING = "OMP_NUM_THREADS"


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not kept busy by other programs (1-minute load average), at least 1."""
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this system: assume the cores are free
            load = 0.0
    return max(1, min(cores, cores - math.floor(load)))


def use_free_cores(device: torch.device) -> int | None:
    """Set torch's thread count for a CPU run; the count set, or None when left alone."""
    if device.type != "cpu" or os.environ.get(USER_SETTING):
        return None
    threads = free_cores()
    torch.set_num_threads(threads)
    return threads
