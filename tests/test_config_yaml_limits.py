"""YAML the studio refuses with a message (issue 16, item 8): duplicate keys, deep nesting,
alias tricks given with --set, non-finite optimizer params — in every place YAML is read."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from trainer.config.importers import import_text
from trainer.config.io import ConfigError, apply_overrides, config_from_dict, parse_yaml
from trainer.config.safe_yaml import MAX_YAML_DEPTH, load_yaml


def test_a_repeated_key_is_refused_with_both_lines() -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml("train:\n  lr: 0.0001\n  steps: 10\n  lr: 0.01\n")
    text = str(err.value)
    assert "'lr' appears twice (first at line 2)" in text
    assert "line 4" in text


def test_merge_keys_may_override_what_they_bring() -> None:
    data = parse_yaml("base: &b {lr: 1, steps: 2}\ntrain:\n  <<: *b\n  lr: 3\n")
    assert data["train"] == {"lr": 3, "steps": 2}


def test_nesting_deeper_than_the_limit_is_a_message_not_a_recursion_error() -> None:
    deep = "[" * 600 + "]" * 600
    with pytest.raises(ConfigError) as err:
        parse_yaml(deep)
    assert f"nested more than {MAX_YAML_DEPTH} levels deep" in str(err.value)
    shallow = "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1)
    assert isinstance(load_yaml(shallow), list)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lr=&a [*a]", "refers to itself"),
        ("train.lr=" + "[" * 300 + "]" * 300, "nested more than"),
        ("train.lr={a: 1, a: 2}", "'a' appears twice"),
    ],
)
def test_set_values_pass_the_same_limits_as_files(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, [override])
    assert expected in str(err.value)


def test_an_alias_bomb_in_set_stops_at_the_node_limit() -> None:
    bomb = (
        "["
        + ",".join(
            ["&a0 [1,1,1,1,1,1,1,1,1,1]"]
            + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
        )
        + "]"
    )
    with pytest.raises(ConfigError) as err:
        apply_overrides({}, [f"train.optimizer_params.x={bomb}"])
    assert "too many values" in str(err.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_optimizer_params_must_be_finite(bad: float) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"train": {"optimizer_params": {"eps": bad}}})
    assert "train.optimizer_params.eps" in str(err.value)
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"optimizer_params": {"betas": [0.9, bad]}}})
    fine = config_from_dict({"train": {"optimizer_params": {"eps": 1e-8, "betas": [0.9, 0.99]}}})
    assert fine.train.optimizer_params == {"eps": 1e-8, "betas": [0.9, 0.99]}


@pytest.mark.parametrize(
    ("text", "name"),
    [("[" * 3000 + "]" * 3000, "deep.json"), ("a = " + "[" * 3000 + "]" * 3000, "deep.toml")],
)
def test_imports_of_deep_json_or_toml_say_so(text: str, name: str) -> None:
    with pytest.raises(ValueError, match="nested far too deep"):
        import_text(text, name)


def test_the_cli_exits_2_with_the_line_for_a_repeated_key(tmp_path) -> None:
    config = tmp_path / "twice.yaml"
    config.write_text("train:\n  steps: 5\n  steps: 6\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "trainer", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "'steps' appears twice (first at line 2)" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_an_imported_job_with_a_repeated_key_says_where() -> None:
    job = "job: extension\nconfig:\n  name: x\n  name: y\n"
    with pytest.raises(ValueError, match=r"'name' appears twice \(first at line 3\) at line 4"):
        import_text(job, "job.yaml")
    with pytest.raises(ValueError, match="nested more than"):
        import_text("config: " + "[" * 600 + "]" * 600, "job.yaml")
