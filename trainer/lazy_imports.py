"""Modules a training run's libraries import at start-up but rarely use, loaded on first use.

diffusers' scheduler modules (imported with every U-Net and pipeline class) run ``import
scipy.stats`` for one function, ``scipy.stats.beta.ppf``, which only beta-sigma schedules call;
that import is ~300 modules and ~0.5-1 s of CPU before the first step (``benchmarks/first_step.py``).
``defer`` puts a stand-in module under such a name: ``import scipy.stats`` succeeds at once, and
the first attribute the stand-in lacks imports the real module, which then replaces it.

Why not the standard library's ``importlib.util.LazyLoader``: its module loads on *any*
attribute access, and torch's custom-op registration walks every module's ``__file__``
(``inspect.getmodule``), which loaded scipy.stats at once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

DEFERRED = ("scipy.stats",)
_loading = threading.RLock()  # two threads using a stand-in at once import the module once


class DeferredModule(types.ModuleType):
    """Stands in for a module not yet imported; the first missing attribute imports it."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self.__name__), attr)


def _load(name: str) -> types.ModuleType:
    with _loading:
        stand_in = sys.modules.get(name)
        if isinstance(stand_in, DeferredModule):
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent and getattr(sys.modules[parent], child, None) is stand_in:
                delattr(sys.modules[parent], child)  # the module's own import must not find it
        return importlib.import_module(name)  # sets the parent package's attribute again


def defer(names: tuple[str, ...] = DEFERRED) -> list[str]:
    """Stand in for each not yet imported module of ``names``; the names deferred."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)  # imports the parent package (scipy: light)
        except ImportError:
            continue
        if spec is None:
            continue
        stand_in = DeferredModule(name)
        stand_in.__file__, stand_in.__spec__ = spec.origin, spec  # module walkers read these
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stand_in)
        deferred.append(name)
    return deferred
