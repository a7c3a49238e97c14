"""Seeds are bounded where the config is checked (issue 16, item 8), not at the first preview:
``sample.seed``, per-prompt seeds and ``train.seed`` take 0 .. 2**32 - 1."""

from __future__ import annotations

import pytest
import torch
from options_support import tiny_config

from trainer.config.io import ConfigError, loads_config
from trainer.config.sections.outputs import MAX_SEED


@pytest.mark.parametrize(
    ("path", "section"),
    [
        ("sample.seed", lambda v: {"sample": {"seed": v}}),
        ("sample.prompts.0.seed", lambda v: {"sample": {"prompts": [{"prompt": "x", "seed": v}]}}),
        ("train.seed", lambda v: {"train": {"seed": v}}),
    ],
)
@pytest.mark.parametrize("value", [MAX_SEED + 1, 2**63, 2**64, 10**30, -1])
def test_a_seed_out_of_range_is_refused_with_its_path(path, section, value) -> None:
    with pytest.raises(ValueError) as info:
        tiny_config(**section(value))
    text = str(info.value)
    assert path in text and ("4294967295" in text or "greater than or equal to 0" in text)


def test_the_largest_seeds_are_accepted_and_seed_a_generator() -> None:
    cfg = tiny_config(
        sample={"seed": MAX_SEED, "walk_seed": True, "prompts": [{"prompt": "x", "seed": 0}]},
        train={"seed": MAX_SEED},
    )
    assert cfg.sample.seed == cfg.train.seed == MAX_SEED == 2**32 - 1
    # walk_seed adds the prompt's index (at most 63): still a seed torch takes.
    assert torch.Generator().manual_seed(cfg.sample.seed + 63).initial_seed() == MAX_SEED + 63


def test_a_yaml_with_a_huge_preview_seed_is_a_config_error_not_a_run_time_overflow() -> None:
    text = (
        "name: t\nmodel: {arch: sd15, name_or_path: 'demo:sd15'}\n"
        "datasets: [{folder_path: 'demo:dataset'}]\n"
        "sample: {seed: 99999999999999999999999}\n"
    )
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    assert any(p.path == "sample.seed" for p in info.value.problems)
