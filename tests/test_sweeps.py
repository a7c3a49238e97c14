"""Sweeps (advisor/sweeps.py): the variants of a config along one or two settings, their names,
the values refused with their bounds, the suggested values, and the group id."""

from __future__ import annotations

from datetime import datetime

import pytest

from advisor.patch import config_diff
from advisor.sweeps import (
    MAX_VARIANTS,
    SweepError,
    format_values,
    make_variants,
    parse_values,
    suggest_values,
    sweep_group_id,
    sweepable_settings,
    value_text,
    variant_lora_name,
    variant_name,
)
from trainer.config.schema import TrainingConfig


def base(**sections) -> TrainingConfig:
    data = {
        "name": "my_lora",
        "datasets": [{"folder_path": "cats", "resolution": [512]}],
        "train": {"lr": 1e-4, "steps": 1000},
        "network": {"linear": 16, "linear_alpha": 16},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return TrainingConfig.model_validate(data)


def test_variants_are_the_product_first_setting_slowest() -> None:
    variants = make_variants(base(), {"train.lr": [5e-5, 1e-4, 2e-4], "network.linear": [8, 16]})
    assert len(variants) == 6
    assert [(v.config.train.lr, v.config.network.linear) for v in variants] == [
        (5e-5, 8),
        (5e-5, 16),
        (1e-4, 8),
        (1e-4, 16),
        (2e-4, 8),
        (2e-4, 16),
    ]
    assert [v.values for v in variants][1] == {"train.lr": 5e-5, "network.linear": 16}


def test_variant_names_are_the_base_name_and_the_values() -> None:
    variants = make_variants(base(), {"train.lr": [5e-5, 2e-4], "network.linear": [8]})
    assert [v.name for v in variants] == ["my_lora lr=5e-5 rank=8", "my_lora lr=2e-4 rank=8"]
    assert [v.config.logging.run_name for v in variants] == [v.name for v in variants]
    assert [v.config.name for v in variants] == ["my_lora_lr5e-5_rank8", "my_lora_lr2e-4_rank8"]
    assert variant_name("x", {"train.optimizer": "adamw", "datasets.0.resolution": [512]}) == (
        "x optimizer=adamw res=512"
    )
    assert variant_name("x", {"train.noise_offset": 0.05}) == "x noise_offset=0.05"


def test_each_variant_differs_from_the_base_only_in_the_varied_settings() -> None:
    cfg = base(datasets=[{"folder_path": "a"}, {"folder_path": "b", "resolution": [768]}])
    axes = {"train.lr": [5e-5, 3e-4], "datasets.0.resolution": [384, 640]}
    for variant in make_variants(cfg, axes):
        changed = set(config_diff(cfg, variant.config))
        assert changed == {
            "train.lr",
            "datasets.0.resolution",
            "datasets.1.resolution",  # a dataset setting is set on every dataset
            "logging.run_name",
            "name",  # the LoRA's own file name
        }
        assert variant.config.datasets[0].resolution == variant.config.datasets[1].resolution
        assert [variant.config.datasets[0].resolution[0]] == [
            variant.values["datasets.0.resolution"]
        ]


def test_the_base_may_be_a_dict_and_stays_unchanged() -> None:
    cfg = base()
    data = cfg.model_dump(mode="json")
    variants = make_variants(data, {"network.linear": [8, 32]})
    assert [v.config.network.linear for v in variants] == [8, 32]
    assert data["network"]["linear"] == 16 and data["logging"]["run_name"] is None


def test_a_value_out_of_bounds_is_refused_naming_setting_value_and_bound() -> None:
    with pytest.raises(SweepError) as err:
        make_variants(base(), {"train.lr": [1e-4, 20], "datasets.0.resolution": [32, 512]})
    lines = err.value.problems
    assert len(lines) == 2
    assert lines[0].startswith("Learning rate (train.lr) = 20: must be ≤ 10")
    assert "between 0.0 and 10.0" in lines[0] and "'auto'" not in lines[0]
    assert lines[1].startswith("Resolution (datasets.0.resolution) = 32: must be ≥ 64")
    with pytest.raises(SweepError, match=r"network.linear.*2000: must be ≤ 1024"):
        make_variants(base(), {"network.linear": [8, 2000]})
    with pytest.raises(SweepError, match=r"'sgd' is not one of: adamw"):
        make_variants(base(), {"train.optimizer": ["adamw", "sgd"]})


def test_shape_limits_are_refused() -> None:
    with pytest.raises(SweepError, match="at most 2 settings"):
        make_variants(base(), {"train.lr": [1e-4, 2e-4], "network.linear": [8], "train.steps": [5]})
    with pytest.raises(SweepError, match=f"13 variants is more than {MAX_VARIANTS}"):
        make_variants(base(), {"network.linear": list(range(1, 14))})
    with pytest.raises(SweepError, match="at least two variants"):
        make_variants(base(), {"train.lr": [1e-4]})
    with pytest.raises(SweepError, match="not a setting"):
        make_variants(base(), {"train.nope": [1, 2]})
    with pytest.raises(SweepError, match="names the run"):
        make_variants(base(), {"name": ["a", "b"]})
    with pytest.raises(SweepError, match="choose a setting"):
        make_variants(base(), {})


def test_a_decision_left_to_the_advisor_is_refused() -> None:
    with pytest.raises(SweepError, match=r"Steps \(train.steps\) is still 'auto'"):
        make_variants(base(train={"steps": "auto"}), {"train.lr": [1e-4, 2e-4]})
    # varying the setting that was 'auto' answers it
    assert len(make_variants(base(train={"lr": "auto"}), {"train.lr": [1e-4, 2e-4]})) == 2


def test_default_suggestions_for_the_common_settings() -> None:
    cfg = base(train={"optimizer": "lion"})
    assert suggest_values(cfg, "train.lr") == [5e-5, 1e-4, 2e-4]
    assert suggest_values(cfg, "network.linear") == [8, 16, 32]
    assert suggest_values(cfg, "network.linear_alpha") == [8.0, 16.0, 32.0]
    assert suggest_values(cfg, "train.steps") == [500, 1000, 2000]
    assert suggest_values(cfg, "train.optimizer") == ["lion", "adamw8bit", "adamw"]
    assert suggest_values(cfg, "datasets.0.resolution") == [384, 512, 640]
    assert suggest_values(base(network={"linear": 1}), "network.linear") == [1, 2]  # ≥ 1
    assert suggest_values(base(network={"linear": 1024}), "network.linear") == [512, 1024]
    assert suggest_values(base(train={"lr": "auto"}), "train.lr") == [5e-5, 1e-4, 2e-4]
    # every suggestion makes valid variants at once: the two-click sweep
    for path in ("train.lr", "network.linear", "train.steps", "datasets.0.resolution"):
        assert len(make_variants(cfg, {path: suggest_values(cfg, path)})) == 3


def test_values_typed_as_text() -> None:
    assert parse_values("5e-5, 1e-4 ,2E-4") == [5e-5, 1e-4, 2e-4]
    assert parse_values("8; 16\n32, 16") == [8, 16, 32]
    assert parse_values("adamw, [512, 768], true") == ["adamw", [512, 768], True]
    assert parse_values(" , ") == []
    with pytest.raises(SweepError):
        parse_values("{a: 1}")
    assert parse_values(format_values([5e-5, 1e-4, [512, 768], "adamw"])) == [
        5e-5,
        1e-4,
        [512, 768],
        "adamw",
    ]
    assert [value_text(v) for v in (5e-5, 0.0001, 0.5, 16.0, 1000.0, 1.5e-4, True)] == [
        "5e-5",
        "1e-4",
        "0.5",
        "16",
        "1000",
        "1.5e-4",
        "true",
    ]


def test_steps_typed_in_scientific_form_are_named_as_held() -> None:
    variants = make_variants(base(), {"train.steps": parse_values("1e3, 500")})
    assert [v.name for v in variants] == ["my_lora steps=1000", "my_lora steps=500"]
    assert variants[0].config.train.steps == 1000


def test_group_id_is_readable_and_unique() -> None:
    when = datetime(2025, 3, 4, 18, 5)
    assert sweep_group_id("my_lora", when) == "sweep-my_lora-20250304-1805"
    assert sweep_group_id("a b/c", when) == "sweep-a_b_c-20250304-1805"
    taken = {"sweep-x-20250304-1805", "sweep-x-20250304-1805-2"}
    assert sweep_group_id("x", when, taken) == "sweep-x-20250304-1805-3"


def test_sweepable_settings_start_with_the_common_ones_and_leave_names_out() -> None:
    found = sweepable_settings()
    assert found[:3] == ["train.lr", "network.linear", "network.linear_alpha"]
    assert "train.noise_offset" in found and "model.arch" in found
    assert not {"name", "logging.run_name", "sample.prompts"} & set(found)
    assert len(found) == len(set(found))


def test_each_variant_has_its_own_lora_file_name() -> None:
    # the walk: three variants and the base all saved my_lora_b.safetensors, and each ComfyUI
    # workflow loaded that name: downloads overwrote each other
    cfg = base(name="my_lora_b")
    variants = make_variants(cfg, {"train.lr": [5e-4, 1e-3, 2e-3]})
    names = [v.lora_name for v in variants]
    assert names == ["my_lora_b_lr5e-4", "my_lora_b_lr1e-3", "my_lora_b_lr2e-3"]
    # the trainer saves <name>.safetensors (and the workflow loads that file): four files now
    files = {f"{c.name}.safetensors" for c in (cfg, *(v.config for v in variants))}
    assert len(files) == 4
    for variant in variants:  # valid for the name field (it names the files)
        assert TrainingConfig.model_validate({**cfg.model_dump(), "name": variant.lora_name})
    two = make_variants(base(), {"train.lr": [5e-5, 1e-4], "network.linear": [8, 16]})
    assert [v.lora_name for v in two] == [
        "my_lora_lr5e-5_rank8",
        "my_lora_lr5e-5_rank16",
        "my_lora_lr1e-4_rank8",
        "my_lora_lr1e-4_rank16",
    ]


def test_lora_names_of_awkward_values_stay_valid_and_distinct() -> None:
    assert variant_lora_name("x", {"datasets.0.resolution": [512, 768]}) == "x_res512_768"
    assert variant_lora_name("x", {"train.optimizer": "adamw8bit"}) == "x_optimizeradamw8bit"
    assert variant_lora_name("x", {"train.noise_offset": 0.05}) == "x_noise_offset0.05"
    long = variant_lora_name("a" * 95, {"train.lr": 5e-5})
    assert len(long) == 100 and long != variant_lora_name("a" * 95, {"train.lr": 1e-4})
    cfg = base(name="n" * 100)
    variants = make_variants(cfg, {"train.lr": [5e-5, 1e-4]})
    assert len({v.lora_name for v in variants}) == 2
    assert all(len(v.lora_name) <= 100 for v in variants)
    rs = make_variants(base(), {"datasets.0.resolution": [[512, 768], 512]})
    assert [v.lora_name for v in rs] == ["my_lora_res512_768", "my_lora_res512"]
