"""History: recommendations from rated runs, predicted vs actual, what changed between runs."""

from __future__ import annotations

import pytest
from test_advisor_cases import PROFILES, make

from advisor.history import diff_runs, predicted_vs_actual, recommend_from_history, similar_runs
from advisor.predict import predict
from advisor.runs import as_run
from trainer.config.paths import flatten
from trainer.tracking.records import RunRecord


def record(
    cfg,
    rating: int | None,
    run_id: str,
    status: str = "FINISHED",
    device: str = PROFILES["rtx4090"].label,
    **metrics: float,
):
    tags = {"studio.device": device} | (
        {"studio.rating": str(rating)} if rating is not None else {}
    )
    return RunRecord(
        run_id=run_id,
        name=f"run {run_id}",
        experiment_id="1",
        status=status,
        start_time=None,
        end_time=None,
        duration_s=100.0,
        params=flatten(cfg),
        tags=tags,
        metrics=dict(metrics),
        arch=cfg.model.arch,
        intent=cfg.intent,
        preset=None,
        dataset_fingerprint=None,
        rating=rating,
        note="",
    )


def person(rank: int, lr: float) -> object:
    alpha = f"network.linear_alpha={rank}"
    return make("intent=person", f"network.linear={rank}", alpha, f"train.lr={lr}", arch="sdxl")


RUNS = [
    record(person(16, 1e-4), 5, "a"),
    record(person(16, 1e-4), 4, "b"),
    record(person(32, 3e-4), 2, "c"),
    record(person(32, 3e-4), 3, "d"),
    record(person(8, 1e-4), None, "e"),
    record(person(16, 1e-4), 5, "f", status="FAILED"),  # not finished: ignored
    record(make("intent=style", arch="sdxl"), 5, "g"),  # another intent: ignored
    record(make("intent=person", arch="sd15"), 5, "h"),  # another arch: ignored
]


def test_similar_runs_match_arch_and_intent_and_finished() -> None:
    cfg = person(64, 5e-5)
    assert {r.run_id for r in similar_runs(cfg, RUNS)} == {"a", "b", "c", "d", "e"}


def test_recommendations_name_the_best_rated_run_and_better_values() -> None:
    cfg = person(64, 5e-5)
    insights = recommend_from_history(cfg, RUNS)
    best = insights[0]
    assert best.message.startswith(
        "5 similar runs: the best rated (5★ ('run a')) used rank 16 at 0.0001"
    )
    assert best.patch["network.linear"] == 16 and best.patch["train.lr"] == 1e-4
    ranks = next(i for i in insights if i.message.startswith("linear "))
    assert ranks.message == "linear 16 averaged 4.5★ over 2 runs, linear 32 2.5★ over 2"
    assert ranks.patch == {"network.linear": 16}


def test_history_without_ratings_says_so() -> None:
    cfg = person(16, 1e-4)
    unrated = [record(person(16, 1e-4), None, "x")]
    assert "none rated yet" in recommend_from_history(cfg, unrated)[0].message
    assert recommend_from_history(cfg, []) == []


def test_predicted_vs_actual_per_run() -> None:
    cfg = person(16, 1e-4)
    prior = predict(cfg, PROFILES["rtx4090"])
    runs = [record(cfg, 4, "m", s_per_step=prior.step_time.value * 1.1, peak_memory_mb=10240.0)]
    checks = predicted_vs_actual(runs, PROFILES["rtx4090"])
    speed = next(c for c in checks if c.metric == "s_per_step")
    assert speed.error == pytest.approx(1 / 1.1 - 1)
    assert speed.within_range
    peak = next(c for c in checks if c.metric == "peak_gb")
    assert peak.actual == pytest.approx(10.0) and peak.predicted == prior.vram.value


def test_predicted_vs_actual_checks_only_runs_on_this_device() -> None:
    cfg = person(16, 1e-4)
    here = record(cfg, None, "here", s_per_step=1.0)
    there = record(cfg, None, "there", device="NVIDIA GeForce RTX 3060", s_per_step=9.0)
    checks = predicted_vs_actual([here, there], PROFILES["rtx4090"])
    assert [c.run_id for c in checks] == ["here"]


def test_on_a_cpu_the_measured_peak_is_checked_against_ram() -> None:
    # On a CPU the trainer logs the process's RSS as its peak: RAM, not the training tensors.
    cfg = make("model.name_or_path=demo:sd15", "datasets.0.resolution=[64]", arch="sd15")
    cpu = PROFILES["cpu"]
    run = record(cfg, None, "cpu", device=cpu.label, peak_memory_mb=1536.0)
    (peak,) = predicted_vs_actual([run], cpu)
    pred = predict(cfg, cpu)
    assert peak.predicted == pred.ram.value > 0.5  # the process's RAM, libraries included...
    assert pred.ram.value > 10 * pred.vram.value  # ...not the demo's few MB of tensors


def test_demo_runs_are_not_similar_to_a_real_model() -> None:
    demo = make("intent=person", "model.name_or_path=demo:sdxl", arch="sdxl")
    runs = [*RUNS, record(demo, 5, "demo")]
    assert "demo" not in {r.run_id for r in similar_runs(person(16, 1e-4), runs)}
    assert [r.run_id for r in similar_runs(demo, runs)] == ["demo"]


def test_diff_groups_changes_by_wizard_step_with_explanations() -> None:
    a = record(person(16, 1e-4), 3, "a", loss_smoothed=0.12)
    b_cfg = make(
        "intent=person",
        "network.linear=32",
        "network.linear_alpha=16",
        "train.lr=3e-4",
        "datasets.0.flip_x=true",
        "train.gradient_checkpointing=false",
        arch="sdxl",
    )
    b = record(b_cfg, 5, "b", loss_smoothed=0.10)
    diff = diff_runs(a, b)
    assert list(diff.by_step) == ["network", "resolution", "memory", "optimizer"]  # wizard order
    network = {c.path: (c.before, c.after) for c in diff.by_step["network"]}
    assert network == {"network.linear": (16, 32)}  # alpha stayed 16
    assert diff.by_step["optimizer"][0].after == 3e-4
    assert all(c.explanation for c in diff.changes)
    assert diff.metrics["loss_smoothed"] == (0.12, 0.10) and diff.ratings == (3, 5)
    assert "Target network:\n  network.linear: 16 → 32" in diff.text()


def test_diff_of_configs_and_dicts() -> None:
    a, b = person(16, 1e-4), person(16, 2e-4)
    assert [c.path for c in diff_runs(a, b).changes] == ["train.lr"]
    as_dict = {"run_id": "z", "params": flatten(a), "metrics": {}}
    assert diff_runs(as_dict, a).changes == []
    assert as_run({"run_id": "q", "config": a.model_dump(mode="json")}).config == a
