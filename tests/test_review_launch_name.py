"""Review says the name a launch will give the run before Launch is clicked: a store that has a
run called ``my_lora`` already makes the draft's ``my_lora`` into ``my_lora_2`` ("Will be saved
as my_lora_2 (my_lora exists)"), and the launch then gives the run exactly that name. Runs are
made by the tracking module (``create_run`` + ``MlflowTracker``); no trainer process starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_support import open_page, texts

from trainer.config.schema import TrainingConfig
from trainer.settings import load_settings
from trainer.tracking.mlflow_tracker import MlflowTracker
from trainer.tracking.new_run import create_run
from trainer.tracking.records import get_run_record
from ui.launch_name import LaunchName


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def _finished_run(home: Path, name: str) -> None:
    settings = load_settings(home=home, tracking_uri_override=None)
    cfg = TrainingConfig.model_validate(
        {"name": name, "model": {"arch": "sd15", "name_or_path": "demo:sd15"}}
    )
    run_id = create_run(settings, cfg)
    tracker = MlflowTracker(settings.tracking_uri, background=False)
    tracker.start(cfg, run_id=run_id)
    tracker.end("FINISHED")


def _saved_as(at) -> list[str]:
    return [m.value for m in at.markdown if "Will be saved as" in m.value]


def _basics_label(at) -> str:
    return next(e.label for e in at.expander if "LoRA name:" in e.label)


def test_a_free_name_is_shown_as_it_is(home: Path) -> None:
    at = open_page("pages/review.py")
    shown = ":material/save: Will be saved as `my_lora.safetensors` · Run name: `my_lora`"
    assert _saved_as(at) == [shown] * 2  # top and bottom
    assert "LoRA name: my_lora ·" in _basics_label(at)


def test_a_taken_name_shows_the_number_the_launch_gives(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ui.review as review
    from trainer.jobs import launch as launching

    _finished_run(home, "my_lora")
    at = open_page("pages/review.py")
    shown = (
        ":material/save: Will be saved as `my_lora_2.safetensors` · Run name: `my_lora_2` "
        "(`my_lora` exists)"
    )
    assert _saved_as(at) == [shown, shown]
    assert "LoRA name: my_lora → my_lora_2" in _basics_label(at)
    assert at.session_state["draft"]["name"] == "my_lora"  # only said: the draft keeps its name

    def no_process(settings, run_id, folder, cmd, *, name, **_):
        return launching.LaunchedJob(run_id, folder, 0, cmd, folder, folder, "cpu", 0.0, name=name)

    monkeypatch.setattr(launching, "_spawn", no_process)
    monkeypatch.setattr(review, "open_monitor", lambda run_id=None: None)  # stay on Review
    at.button(key="rv:launch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = at.session_state["monitor_run_id"]
    uri = load_settings(home=home, tracking_uri_override=None).tracking_uri
    assert get_run_record(uri, run_id).name == "my_lora_2"  # the name Review announced
    assert "**Launched** `my_lora_2`" in texts(at)
    at.run()  # back on Review (a real launch opens the monitor): the new run is counted at once
    shown = (
        ":material/save: Will be saved as `my_lora_3.safetensors` · Run name: `my_lora_3` "
        "(`my_lora` exists)"
    )
    assert _saved_as(at) == [shown, shown]


def test_a_run_name_set_in_the_config_is_the_one_numbered(home: Path) -> None:
    from ui.launch_name import launch_name

    _finished_run(home, "team")
    uri = load_settings(home=home, tracking_uri_override=None).tracking_uri
    cfg = TrainingConfig.model_validate(
        {"name": "files", "logging": {"run_name": "team"}, "model": {"name_or_path": "demo:sd15"}}
    )
    assert launch_name(cfg, uri) == LaunchName("team", "team_2", "files.safetensors")
    assert launch_name(cfg.model_copy(update={"name": "team"}), uri).wanted == "team"
    assert LaunchName("a", "a", "a.safetensors").text() == (
        "Will be saved as `a.safetensors` · Run name: `a`"
    )
    assert not LaunchName("a", "a").renamed and LaunchName("a", "a_2").renamed


def test_the_file_and_the_run_name_are_said_apart(home: Path) -> None:
    """A run name set apart from the LoRA name (here a markdown image) is the run's name, not the
    file's: Review names the file the LoRA is saved in and the run name each on their own."""
    from ui.launch_name import launch_name

    uri = load_settings(home=home, tracking_uri_override=None).tracking_uri
    cfg = TrainingConfig.model_validate(
        {
            "name": "my_lora",
            "logging": {"run_name": "![x](http://127.0.0.1:9/b.png)"},
            "model": {"name_or_path": "demo:sd15"},
        }
    )
    said = launch_name(cfg, uri)
    assert said.file == "my_lora.safetensors"
    assert said.text() == (
        "Will be saved as `my_lora.safetensors` · Run name: `![x](http://127.0.0.1:9/b.png)`"
    )
    only_diffusers = cfg.model_copy(
        update={"save": cfg.save.model_copy(update={"save_format": "diffusers"})}
    )
    assert launch_name(only_diffusers, uri).file == "my_lora/pytorch_lora_weights.safetensors"
