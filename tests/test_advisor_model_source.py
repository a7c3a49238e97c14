"""The base model's source in the advisor: a model that cannot load, one not downloaded yet, a
gated one without access and a download that does not fit are findings with the fix; an
available model raises none of them."""

from __future__ import annotations

import pytest
from test_advisor_cases import PROFILES, make

from advisor.model_facts import GB, ModelSource
from advisor.model_source import MODEL_RULES
from advisor.predict import predict
from advisor.rules import RULES, validate

HUB = dict(ref="owner/model", kind="hub", cache_dir="/cache", page_url="https://hub/owner/model")


def _model_findings(facts: ModelSource | None, arch: str = "sd15"):
    cfg = make(arch=arch)
    found = validate(cfg, PROFILES["rtx3060"], None, (), model=facts)
    return {f.rule: f for f in found if f.rule in MODEL_RULES}


def test_every_model_rule_is_registered() -> None:
    assert set(MODEL_RULES) <= set(RULES)


def test_no_facts_and_an_available_model_give_no_model_findings() -> None:
    assert _model_findings(None) == {}
    cached = ModelSource(**HUB, total_bytes=4 * 10**9, download_bytes=0, cache_free_bytes=10**12)
    assert _model_findings(cached) == {}


@pytest.mark.parametrize(
    "facts, rule, severity, words",
    [
        (
            ModelSource("/nope", "missing", problem="no folder at /nope: check the path"),
            "model_unavailable",
            "error",
            "no folder at /nope",
        ),
        (
            ModelSource("x.safetensors", "file", warning="the file holds an sdxl model"),
            "model_warning",
            "warning",
            "sdxl",
        ),
        (
            ModelSource(**HUB, total_bytes=5 * 10**9, download_bytes=3 * 10**9),
            "model_not_downloaded",
            "error",
            "3.0 GB still to fetch",
        ),
        (
            ModelSource(**HUB, download_bytes=10**9, gated=True, access=False),
            "model_gated",
            "error",
            "https://hub/owner/model",
        ),
        (
            ModelSource(**HUB, download_bytes=20 * 10**9, cache_free_bytes=5 * 10**9),
            "download_over",
            "error",
            "needs 20.0 GB",
        ),
        (
            ModelSource(**HUB, download_bytes=int(9.8 * GB), cache_free_bytes=10 * 10**9),
            "download_over",
            "warning",
            "10.0 GB free",
        ),
    ],
)
def test_model_rule_fires_with_its_message(facts, rule, severity, words) -> None:
    found = _model_findings(facts)
    assert rule in found, f"{rule} did not fire; found {sorted(found)}"
    assert found[rule].severity == severity
    assert words in found[rule].message


def test_a_signed_in_account_without_access_is_named() -> None:
    facts = ModelSource(**HUB, download_bytes=10**9, gated=True, access=False, account="bob")
    message = _model_findings(facts)["model_gated"].message
    assert "bob (signed in) has no access yet" in message and "sign in with" not in message


def test_a_problem_hides_the_download_and_gated_findings() -> None:
    facts = ModelSource(**HUB, problem="not found", download_bytes=10**9, gated=True, access=False)
    assert set(_model_findings(facts)) == {"model_unavailable"}


def test_a_gated_model_already_cached_trains_without_access() -> None:
    facts = ModelSource(**HUB, download_bytes=0, gated=True, access=False)
    assert _model_findings(facts) == {}


def test_download_on_the_home_disk_counts_the_runs_files_too() -> None:
    cfg = make("save.max_step_saves_to_keep=50", "save.save_every=10")
    run_bytes = int(predict(cfg, PROFILES["rtx3060"]).disk.value * GB)
    assert run_bytes > 10**6
    download = 10**9
    free = download + run_bytes // 2  # the download alone fits; with the run's files it does not
    for shared, fires in ((False, False), (True, True)):
        facts = ModelSource(
            **HUB, download_bytes=download, cache_free_bytes=free, cache_on_home_disk=shared
        )
        found = validate(cfg, PROFILES["rtx3060"], None, (), model=facts)
        assert any(f.rule == "download_over" for f in found) == fires
