"""A training process starts without the cyclic garbage collector (trainer.startup_gc): held from
the command line's first line, frozen and turned back on once the model is loaded."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import startup_gc
from trainer.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _fresh(code: str) -> list[str]:
    """What ``code`` prints in a fresh interpreter (the collector state is per process)."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_held_the_collector_is_off_and_release_freezes_what_exists_then_turns_it_on() -> None:
    printed = _fresh(
        "import gc; from trainer import startup_gc as s\n"
        "s.hold(); off = not gc.isenabled() and s.is_held()\n"
        "kept = [[i] for i in range(50_000)]\n"
        "s.release()\n"
        "print(off, gc.isenabled(), s.is_held(), gc.get_freeze_count() >= 50_000,"
        " s.frozen_objects == gc.get_freeze_count())"
    )
    assert printed == ["True", "True", "False", "True", "True"]


def test_a_collector_someone_else_turned_off_stays_off() -> None:
    printed = _fresh(
        "import gc; from trainer import startup_gc as s\n"
        "gc.disable(); s.hold(); s.release()\n"
        "print(gc.isenabled(), gc.get_freeze_count(), s.frozen_objects)"
    )
    assert printed == ["False", "0", "0"]


def test_thawed_a_start_up_cycle_is_collected_as_usual_again() -> None:
    """A start-up object in a reference cycle whose finalizer ends something (a DataLoader's
    persistent workers): frozen, no collection finds it; thawed, the next one does."""
    printed = _fresh(
        "import gc; from trainer import startup_gc as s\n"
        "s.hold()\n"
        "class Owner:\n"
        "    def __del__(self): print('finalized')\n"
        "owner = Owner(); owner.me = owner\n"
        "s.release(); del owner; gc.collect()\n"
        "print('frozen-still-there')\n"
        "s.thaw(); print(gc.get_freeze_count()); gc.collect()\n"
        "print(gc.isenabled())"
    )
    assert printed == ["frozen-still-there", "0", "finalized", "True"]


def test_after_new_imports_garbage_is_collected_and_the_living_frozen() -> None:
    printed = _fresh(
        "import gc; from trainer import startup_gc as s\n"
        "class Owner:\n"
        "    def __del__(self): print('finalized')\n"
        "owner = Owner(); owner.me = owner; del owner\n"
        "kept = [[i] for i in range(20_000)]\n"
        "print(s.freeze_new_imports(), gc.get_freeze_count() > 20_000)\n"
        "print(s.freeze_new_imports())\n"  # nothing imported since: nothing to do
        "import colorsys\n"
        "print(s.freeze_new_imports())"
    )
    assert printed == ["finalized", "True", "True", "False", "True"]


def test_the_command_line_holds_it_before_its_imports() -> None:
    """``python -m trainer``'s first line holds the collector: the imports of the command line
    itself (pydantic, the config schema) run without collections."""
    printed = _fresh(
        "import gc, runpy, sys\n"
        "sys.argv = ['trainer', 'schema']\n"
        "import trainer.cli as cli\n"
        "seen = {}\n"
        "def spy(argv=None):\n"
        "    seen['held'] = not gc.isenabled()\n"
        "    return 0\n"
        "cli.main = spy\n"
        "try:\n"
        "    runpy.run_module('trainer', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(seen['held'])"
    )
    assert printed == ["True"]


def test_a_command_other_than_run_turns_it_back_on_at_once(capsys) -> None:
    if not gc.isenabled():
        pytest.skip("this process's collector is off")
    startup_gc.hold()
    try:
        assert main(["schema"]) == 0
        assert gc.isenabled() and not startup_gc.is_held()
    finally:
        gc.enable()
        gc.unfreeze()
    assert '"properties"' in capsys.readouterr().out  # the schema was printed
