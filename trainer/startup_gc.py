"""A training process starts without the cyclic garbage collector.

In its first seconds a ``python -m trainer run`` process makes a few million objects that live as
long as it does: the modules of torch, diffusers and transformers, the model's layers. CPython's
collector walks all of them again at each full collection while they are being made (the demo:
eight full collections, 1.2 CPU-s of its ~11 before the first step) and finds next to no
garbage. So the command line holds the collector off from its first line (``hold``); the run
lets it go once the model is loaded (``release``: what exists then is frozen, skipped by the
collections of the next seconds, and the collector is on again) and thaws it after the first
step (``thaw``: from then on every object is collected as usual, by one full collection some
time later instead of several during the start-up).

Thawed, not kept frozen: a frozen object is never collected, and a reference cycle through one
keeps alive whatever hangs off it. (A stopped run once waited forever at exit for the workers of
a DataLoader that only a full collection would have freed; the loader is now closed when the
loop ends, trainer.engine.ahead.)
"""

from __future__ import annotations

import gc
import sys

_held = False
frozen_objects = 0  # what release froze (0: the collector was not held)


def hold() -> None:
    """No cyclic collection until ``release`` (only if the collector is on: tests may own it)."""
    global _held
    if gc.isenabled() and not _held:
        gc.disable()
        _held = True


def release() -> None:
    """Freeze what exists and turn the collector back on, if ``hold`` turned it off."""
    global _held, frozen_objects
    if not _held:
        return
    _held = False
    gc.freeze()
    frozen_objects = gc.get_freeze_count()
    gc.enable()


def thaw() -> None:
    """Start-up is over: what ``release`` froze is collected as usual again (at once: no
    collection runs here; the next full one walks it)."""
    if frozen_objects and gc.get_freeze_count():
        gc.unfreeze()


_modules_frozen = 0  # len(sys.modules) at the last freeze_new_imports that froze


def freeze_new_imports() -> bool:
    """For a long-lived process that imports as it goes (the studio's server: each page imports
    what it shows on its first visit). After a run that imported modules, collect once and
    freeze what is left, so the collections that follow walk only what the pages make, not the
    modules of torch, pandas, MLflow and Streamlit again. Measured in the studio's server while a
    run trained: 44 of its 55 CPU-s went to full collections, 125 of them, each walking the whole
    heap. Whether it froze (modules were imported since the last freeze)."""
    global _modules_frozen
    count = len(sys.modules)
    if count <= _modules_frozen:
        return False
    _modules_frozen = count
    gc.collect()  # garbage is not frozen: only what is still alive
    gc.freeze()
    return True


def is_held() -> bool:
    return _held
