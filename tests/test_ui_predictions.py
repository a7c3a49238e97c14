"""Predictions as the studio shows them: the memory headline on a machine without a GPU (RAM,
never "0.0 GB" of VRAM) and the past runs that corrected the numbers, on the wizard and Review."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import go_to_step, open_page, texts

from advisor.profile import synthetic_profile
from trainer.config.io import apply_overrides
from trainer.config.paths import flatten
from trainer.config.schema import TrainingConfig
from ui import advice
from ui.summary import memory_text

CPU = synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd")
GPU = synthetic_profile("NVIDIA GeForce RTX 4090", 24.0, ram_gb=64.0)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def machine(monkeypatch: pytest.MonkeyPatch, profile) -> None:
    monkeypatch.setattr(advice, "detect_profile", lambda home=None: profile)


def history(monkeypatch: pytest.MonkeyPatch, runs: list[dict]) -> None:
    from ui import context

    monkeypatch.setattr(context, "prediction_history", lambda: runs)


def demo_at_64(*overrides: str) -> TrainingConfig:
    """The studio's default draft (the demo SD1.5) at 64 px, as the demo trains."""
    data = TrainingConfig().model_dump(mode="json")
    return TrainingConfig.model_validate(
        apply_overrides(data, ["datasets.0.resolution=[64]", *overrides])
    )


def run(name: str, s_per_step: float, peak_mb: float, real: bool = False) -> dict:
    cfg = demo_at_64(*(["model.name_or_path=a/real-sd15"] if real else []))
    metrics = {"s_per_step": s_per_step, "peak_memory_mb": peak_mb}
    return {"run_id": f"id-{name}", "name": name, "params": flatten(cfg), "metrics": metrics,
            "device": CPU.label}  # fmt: skip


def open_at_64(page: str):
    at = open_page("pages/wizard.py")
    go_to_step(at, "resolution")
    at.text_input(key="cfg:datasets.0.resolution").set_value("64").run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_cpu_headline_shows_ram_needed_and_available(monkeypatch, tmp_path) -> None:
    machine(monkeypatch, CPU)
    hw = advice.detect_hardware(tmp_path)
    pred = advice.predict(demo_at_64(), hw)
    assert pred is not None and pred.vram_gb < 0.05  # the tiny demo: "0.0 GB" of VRAM before
    label, value, note = memory_text(pred, hw)
    assert (label, value) == ("Predicted RAM", f"≈ {pred.ram_gb:.1f} GB")
    assert note == "of 16 GB, 13 GB free · :material/check_circle: fits · CPU: no VRAM"
    assert "0.0 GB" not in value + note
    too_big = type(pred)(**{**vars(pred), "ram_gb": 20.0})
    assert ":material/error: does not fit" in memory_text(too_big, hw)[2]


def test_a_gpu_headline_still_shows_vram(monkeypatch, tmp_path) -> None:
    machine(monkeypatch, GPU)
    hw = advice.detect_hardware(tmp_path)
    pred = advice.predict(TrainingConfig(), hw)
    label, value, note = memory_text(pred, hw)
    assert label == "Predicted VRAM" and value == f"≈ {pred.vram_gb:.1f} GB"
    assert note.startswith("of 24 GB · ") and "RAM" not in note


def test_review_on_a_cpu_shows_ram_and_which_runs_corrected_the_numbers(monkeypatch) -> None:
    machine(monkeypatch, CPU)
    history(
        monkeypatch,
        [
            run("my_lora", 0.41, 1400),
            run("my_lora-2", 0.44, 1500),
            run("real-one", 40.0, 9000, real=True),
        ],
    )
    at = open_at_64("pages/review.py")
    shown = texts(at)
    assert "Predicted RAM" in shown and "CPU: no VRAM" in shown
    assert "0.0 GB" not in shown
    assert "VRAM" not in [m.label for m in at.metric]
    captions = [c.value for c in at.caption]
    evidence = [c for c in captions if "past runs like this one" in c]
    assert len(evidence) == 1, captions
    assert (
        "from 2 past runs like this one (my_lora, my_lora-2: 0.41 and 0.44 s/step" in (evidence[0])
    )
    assert "Speed corrected ×" in evidence[0] and "RAM ×" in evidence[0]
    assert any(
        "1 past run was on Stable Diffusion 1.5: not used for this model" in c for c in captions
    )
    assert not at.exception


def test_the_wizard_column_says_when_past_runs_were_on_another_model(monkeypatch) -> None:
    machine(monkeypatch, CPU)
    history(monkeypatch, [run("real-a", 40.0, 9000, real=True), run("real-b", 41.0, 9000, True)])
    at = open_at_64("pages/wizard.py")
    captions = [c.value for c in at.caption]
    assert any(
        "2 past runs were on Stable Diffusion 1.5: not used for this model" in c for c in captions
    ), captions
    assert not any("past runs like this one" in c for c in captions)
    assert "0.0 GB" not in texts(at)


def _in_all(at) -> str:
    """The summary header's whole-run time: '≈ 13 s in all'."""
    [found] = [m.value for m in at.markdown if " in all" in m.value]
    return found.split("≈ ", 1)[1]


def test_the_wizard_reads_a_run_that_finished_without_an_edit_of_the_draft(monkeypatch) -> None:
    """Back in the wizard after a run, its predictions are corrected by what the run measured
    at once (they were cached on the draft alone: only an edit brought the correction)."""
    machine(monkeypatch, CPU)
    runs: list[dict] = []
    history(monkeypatch, runs)  # the store as the studio reads it now
    at = open_at_64("pages/wizard.py")
    before = _in_all(at)
    assert not any("like this one" in c.value for c in at.caption)
    runs.append(run("my_lora", 4.09, 1400))  # the first run has finished: 4.09 s/step measured
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    evidence = [c.value for c in at.caption if "like this one" in c.value]
    assert evidence and "Speed corrected ×" in evidence[0]
    assert "from 1 past run like this one (my_lora: 4.09 s/step" in evidence[0]
    assert _in_all(at) != before  # the header's total follows, with no field edited
    at.run()  # nothing changed since: the same numbers
    assert [c.value for c in at.caption if "like this one" in c.value] == evidence


BUSY_CPU = synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd", load=11.0)


def test_predictions_split_the_total_and_say_when_the_cpu_is_busy(monkeypatch) -> None:
    machine(monkeypatch, BUSY_CPU)
    at = open_at_64("pages/wizard.py")
    column = next(
        m.value for m in at.markdown if m.value.startswith("VRAM") or "Total time" in m.value
    )
    [total] = [line for line in column.split("  \n") if line.startswith("Total time")]
    assert "(training " in total and "starting and loading " in total  # not "caching, …"
    busy = "The CPU is busy (load 5.5 per core when checked): expect several times longer"
    assert busy in column  # next to the times, not only in the assumptions
    at.switch_page("pages/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    split = [c.value for c in at.caption if c.value.startswith("Total ≈ ")]
    assert len(split) == 1 and "starting and loading" in split[0] and "training" in split[0]
    assert any(busy in m.value for m in at.markdown)
    total_metric = next(m for m in at.metric if m.label == "Total time")
    assert "training" in (total_metric.help or "")
    shown = texts(at)
    assert "in all, but the CPU is busy (load 5.5 per core" in shown  # the warning finding


def test_a_quiet_cpu_shows_no_busy_warning(monkeypatch) -> None:
    machine(monkeypatch, synthetic_profile(None, ram_gb=16.0, cores=2, disk="ssd", load=0.3))
    at = open_at_64("pages/review.py")
    shown = texts(at)
    assert "CPU is busy" not in shown and "Total ≈ " in shown
