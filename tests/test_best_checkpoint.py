"""The best checkpoint by validation loss: tagged as the argmin of the logged ``val_loss`` among
saved LoRAs, made the final LoRA on request (the old final kept), the advisor's overfitting
warning, and the Monitor's part of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from options_support import RecordingTracker, run, tiny_config
from streamlit.testing.v1 import AppTest
from validation_support import val_losses

from advisor.overfitting import best_checkpoint, overfitting, rising_streak
from trainer.engine.context import RunContext
from trainer.engine.validation import Validation
from trainer.lora.final import MakeFinalError, make_final
from trainer.settings import load_settings
from trainer.tracking.layout import TAG_BEST_STEP, TAG_BEST_VAL_LOSS, TAG_FINAL_FROM_STEP

ROOT = Path(__file__).resolve().parent.parent


def test_the_best_checkpoint_is_the_argmin_of_the_logged_val_loss_among_saved_loras(
    demo_home: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(
        validation={"holdout": 2, "every": 1},
        train={"steps": 6, "lr": 3e-2},
        save={"save_every": 2},
    )
    _, tracker = run(cfg, demo_home, tmp_path / "job")
    logged = val_losses(tracker)
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    saved = {2: logged[2], 4: logged[4], 6: logged[6]}  # the LoRAs the run saved
    best = min(saved, key=saved.__getitem__)
    assert tracker.tags[TAG_BEST_STEP] == str(best)
    assert float(tracker.tags[TAG_BEST_VAL_LOSS]) == logged[best]
    assert best_checkpoint(logged.items(), saved) == (best, logged[best])


def test_only_saved_loras_can_be_best_and_a_tie_keeps_the_earlier(tmp_path: Path) -> None:
    tracker = RecordingTracker()
    validation = Validation(tiny_config(), RunContext(tmp_path, tmp_path / "job", tracker))
    validation.history = {1: 0.2, 2: 0.5, 3: 0.1, 4: 0.4, 5: 0.4}
    for step in (2, 4, 5):  # 1 and 3 were scored between saves: no file to keep
        validation.mark_saved(step)
    assert validation.best == (4, 0.4)
    assert tracker.tags[TAG_BEST_STEP] == "4" and float(tracker.tags[TAG_BEST_VAL_LOSS]) == 0.4


@pytest.fixture()
def tracked_run(studio_env: Path, tmp_path: Path) -> str:
    """A finished 4-step run in MLflow with checkpoints at steps 2 and 4 (its job folder in the
    studio home): its run id."""
    from trainer.engine.run import EXIT_OK, run_job

    path = tmp_path / "c.yaml"
    path.write_text(
        "name: best\nmodel: {name_or_path: 'demo:sd15'}\n"
        "network: {linear: 4, linear_alpha: 4}\n"
        "datasets: [{folder_path: 'demo:dataset', resolution: [64]}]\n"
        "train: {steps: 4, batch_size: 2, lr: 1e-2, optimizer: adamw, "
        "gradient_checkpointing: false}\n"
        "sample: {sample_every: 0}\nvalidation: {holdout: 2}\n"
        "save: {save_every: 2, save_format: webui, dtype: fp32}\n"
        "logging: {log_system_metrics: false}\n"
    )
    result = run_job(path)
    assert result.exit_code == EXIT_OK, result.message
    return str(result.run_id)


def artifact(uri: str, run_id: str, path: str) -> bytes:
    local = Path(MlflowClient(uri).get_run(run_id).info.artifact_uri.removeprefix("file://"))
    return (local / path).read_bytes()


def test_make_final_copies_the_checkpoint_and_keeps_the_old_final(tracked_run: str) -> None:
    settings = load_settings()
    uri, run_id = settings.tracking_uri, tracked_run
    job = settings.jobs_dir / run_id
    logged = {m.step: m.value for m in MlflowClient(uri).get_metric_history(run_id, "val_loss")}
    best = min((2, 4), key=logged.__getitem__)  # both saved LoRAs were scored
    assert MlflowClient(uri).get_run(run_id).data.tags[TAG_BEST_STEP] == str(best)
    assert MlflowClient(uri).get_run(run_id).data.tags[TAG_FINAL_FROM_STEP] == "4"  # the end
    step2 = artifact(uri, run_id, "checkpoints/step_00000002/best.safetensors")
    trained_final = artifact(uri, run_id, "lora/best.safetensors")
    assert step2 != trained_final

    swap = make_final(settings, run_id, 2)
    assert swap.changed and swap.kept == "outputs/best_final_step4.safetensors"
    assert artifact(uri, run_id, "lora/best.safetensors") == step2
    assert artifact(uri, run_id, swap.kept) == trained_final  # never lost
    assert (job / "lora" / "best.safetensors").read_bytes() == step2
    assert (job / "outputs" / "best_final_step4.safetensors").read_bytes() == trained_final
    assert MlflowClient(uri).get_run(run_id).data.tags[TAG_FINAL_FROM_STEP] == "2"

    back = make_final(settings, run_id, 4)  # and back: the step-2 final is kept in its turn
    assert back.kept == "outputs/best_final_step2.safetensors"
    step4 = artifact(uri, run_id, "checkpoints/step_00000004/best.safetensors")
    assert artifact(uri, run_id, "lora/best.safetensors") == step4
    assert artifact(uri, run_id, back.kept) == step2
    with pytest.raises(MakeFinalError, match="no LoRA saved at step 3"):
        make_final(settings, run_id, 3)


def test_the_overfitting_warning_fires_after_three_rises_and_not_after_two() -> None:
    history = [(2, 0.50), (4, 0.40), (6, 0.45), (8, 0.47)]  # two rises after step 4
    assert rising_streak(history) == 2 and overfitting(history) is None
    history.append((10, 0.49))  # the third
    finding = overfitting(history, saved_steps={2, 4, 6, 8, 10})
    assert finding is not None and finding.severity == "warning"
    assert "risen 3 evaluations in a row" in finding.message
    assert "keep the checkpoint of step 4" in finding.message
    assert finding.fix == {"train.steps": 4}
    history.append((12, 0.30))  # it fell again: no warning
    assert overfitting(history) is None
    flat = [(1, 0.4), (2, 0.4), (3, 0.41), (4, 0.42)]  # a step without a rise breaks the streak
    assert rising_streak(flat) == 2 and overfitting(flat) is None


def test_the_monitor_marks_the_best_checkpoint_and_makes_it_final(tracked_run: str) -> None:
    settings = load_settings()
    client = MlflowClient(settings.tracking_uri)
    client.set_tag(tracked_run, TAG_BEST_STEP, "2")  # whichever step the tiny run found
    client.set_tag(tracked_run, TAG_BEST_VAL_LOSS, "0.5")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.session_state["monitor_run_id"] = tracked_run
    at.switch_page("pages/monitor.py").run()
    assert not at.exception
    shown = "\n".join(m.value for m in at.markdown)
    assert "**Best checkpoint:** step 2 · validation loss 0.5000" in shown
    at.button(key=f"make_final_{tracked_run}_2").click().run()
    assert not at.exception
    assert any("The final LoRA is now the checkpoint of step 2" in s.value for s in at.success)
    job = settings.jobs_dir / tracked_run
    step2 = job / "checkpoints" / "step_00000002" / "lora" / "best.safetensors"
    assert (job / "lora" / "best.safetensors").read_bytes() == step2.read_bytes()


def test_make_final_writes_the_card_and_script_for_the_chosen_step(tracked_run: str) -> None:
    settings = load_settings()
    uri, run_id = settings.tracking_uri, tracked_run
    job = settings.jobs_dir / run_id
    card, script = job / "lora" / "README.md", job / "lora" / "diffusers_usage.py"
    assert "| steps | 4 |" in card.read_text()  # as the run wrote it: the final of step 4
    assert "saved at step 4 of the run" in script.read_text()

    swap = make_final(settings, run_id, 2)
    assert set(swap.usage) == {"README.md", "diffusers_usage.py", "comfyui_workflow_api.json"}
    for text in (card.read_text(), artifact(uri, run_id, "lora/README.md").decode()):
        assert "| steps | 2 of 4 |" in text and "| steps | 4 |" not in text
    for text in (script.read_text(), artifact(uri, run_id, "lora/diffusers_usage.py").decode()):
        assert "saved at step 2 of the run" in text and "step 4" not in text
        assert "LORA_WEIGHTS = 'best.safetensors'" in text
    workflow = artifact(uri, run_id, "lora/comfyui_workflow_api.json").decode()
    assert '"lora_name": "best.safetensors"' in workflow

    make_final(settings, run_id, 4)  # and back: the card follows
    assert "| steps | 4 |" in artifact(uri, run_id, "lora/README.md").decode()
    assert "saved at step 4 of the run" in script.read_text()


def test_compare_shows_the_best_checkpoint_and_makes_it_final(tracked_run: str) -> None:
    settings = load_settings()
    client = MlflowClient(settings.tracking_uri)
    client.set_tag(tracked_run, TAG_BEST_STEP, "2")
    client.set_tag(tracked_run, TAG_BEST_VAL_LOSS, "0.25")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp:picked").set_value([tracked_run]).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = "\n".join(m.value for m in at.markdown)
    assert "**Best checkpoint:** step 2 · validation loss 0.2500" in shown
    key = f"cmp:make_final:{tracked_run[:12]}:2"
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("The final LoRA is now the checkpoint of step 2" in s.value for s in at.success)
    assert client.get_run(tracked_run).data.tags[TAG_FINAL_FROM_STEP] == "2"
    job = settings.jobs_dir / tracked_run
    step2 = job / "checkpoints" / "step_00000002" / "lora" / "best.safetensors"
    assert (job / "lora" / "best.safetensors").read_bytes() == step2.read_bytes()
    at.run()  # the store re-read: the final LoRA is that checkpoint now, no button
    assert not any(b.key == key for b in at.button)
    assert any("The final LoRA is this checkpoint." in c.value for c in at.caption)


def test_compare_offers_nothing_for_a_run_without_a_best_checkpoint(tracked_run: str) -> None:
    settings = load_settings()
    client = MlflowClient(settings.tracking_uri)
    client.delete_tag(tracked_run, TAG_BEST_STEP)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.multiselect(key="cmp:picked").set_value([tracked_run]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("Best checkpoint" in m.value for m in at.markdown)
    assert not any((b.key or "").startswith("cmp:make_final") for b in at.button)
