"""Explanations: every field and every wizard step at three levels, never empty."""

from __future__ import annotations

import pytest

from advisor.explain import LEVELS, explain_field, explain_step, field_paths, field_step
from advisor.explain_table import FIELDS, STEPS
from trainer.config.fields import WIZARD_STEPS
from trainer.config.introspection import iter_fields

PATHS = [path for path, _ in iter_fields()]


def test_every_schema_field_is_explained() -> None:
    assert field_paths() == PATHS and len(PATHS) > 100


@pytest.mark.parametrize("path", PATHS)
def test_field_has_all_three_parts_at_all_three_levels(path: str) -> None:
    texts = [explain_field(path, level) for level in LEVELS]
    for explanation in texts:
        assert explanation.what.strip()
        assert explanation.interactions.strip()
        assert explanation.watch_for.strip()
    # More detail as the level rises: the advanced text names the setting.
    assert path in texts[2].what
    assert len(texts[0].what) <= len(texts[2].what)


@pytest.mark.parametrize("step", list(WIZARD_STEPS))
def test_step_has_all_three_parts_at_all_three_levels(step: str) -> None:
    for level in LEVELS:
        explanation = explain_step(step, level)
        assert explanation.what.strip() and WIZARD_STEPS[step][0] in explanation.what
        assert explanation.interactions.strip() and explanation.watch_for.strip()


def test_curated_table_covers_real_fields_and_every_step() -> None:
    assert set(FIELDS) <= set(PATHS)
    assert set(STEPS) == set(WIZARD_STEPS)


def test_curated_text_is_used_and_differs_by_level() -> None:
    beginner = explain_field("train.lr", "beginner")
    advanced = explain_field("train.lr", "advanced")
    assert "burns" in beginner.watch_for
    assert beginner.interactions != advanced.interactions
    assert "lr_high" in advanced.interactions  # the rules that read the field are named


def test_generated_interactions_come_from_the_rules() -> None:
    found = explain_field("datasets.0.random_crop", "intermediate").interactions
    assert "datasets.0.cache_latents" in found


def test_list_items_and_prompt_rows_map_to_their_field() -> None:
    assert explain_field("datasets.3.flip_x", "beginner") == explain_field("datasets.0.flip_x")
    assert explain_field("sample.prompts.2.seed").what == explain_field("sample.prompts").what
    assert field_step("datasets.2.cache_latents_to_disk") == "memory"


def test_unknown_field_step_or_level_is_refused() -> None:
    with pytest.raises(KeyError):
        explain_field("train.nonsense")
    with pytest.raises(KeyError):
        explain_step("nonsense")
    with pytest.raises(ValueError):
        explain_field("train.lr", "expert")
