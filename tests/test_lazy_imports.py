"""trainer.lazy_imports: a deferred module is not imported by diffusers' model imports (nor by
torch walking every module's ``__file__``), and loads, whole and correct, when first used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
if sys.argv[1] == "defer":
    from trainer.lazy_imports import defer
    defer()
from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
loaded_by_models = "scipy.stats._stats_py" in sys.modules
scheduler = EulerDiscreteScheduler(use_beta_sigmas=True)
scheduler.set_timesteps(6)
import scipy.stats
print(json.dumps({
    "loaded_by_models": loaded_by_models,
    "sigmas": [round(float(s), 6) for s in scheduler.sigmas],
    "ppf": float(scipy.stats.beta.ppf(0.25, 0.6, 0.6)),
    "real_module": type(sys.modules["scipy.stats"]).__name__,
}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh interpreters importing diffusers
def test_scipy_stats_waits_for_its_first_use_and_then_gives_the_same_numbers() -> None:
    deferred, eager = _probe("defer"), _probe("eager")
    assert eager["loaded_by_models"] is True  # diffusers imports it with the U-Net
    assert deferred["loaded_by_models"] is False  # the stand-in held it off
    assert deferred["sigmas"] == eager["sigmas"]  # beta sigmas call scipy.stats.beta.ppf
    assert deferred["ppf"] == eager["ppf"]
    assert deferred["real_module"] == "module"  # the real module replaced the stand-in


def test_defer_skips_modules_already_imported_or_missing() -> None:
    import json as already

    from trainer.lazy_imports import defer

    assert defer(("json", "no_such_module_for_studio_tests")) == []
    assert sys.modules["json"] is already
