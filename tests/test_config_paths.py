"""Dotted paths (trainer.config.paths) on configs and plain data, and the bounds of a field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainer.config.introspection import bounds_text, field_bounds, field_info
from trainer.config.paths import (
    PathError,
    concrete_paths,
    flatten,
    generic_path,
    get_path,
    leaves,
    pop_path,
    set_path,
    unflatten,
)
from trainer.config.schema import TrainingConfig


def _two_datasets() -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"datasets": [{"folder_path": "a"}, {"folder_path": "b", "resolution": [512, 768]}]}
    )


# ------------------------------------------------------------------------------------ get
def test_get_reads_a_model_and_its_dump_alike() -> None:
    cfg = _two_datasets()
    for data in (cfg, cfg.model_dump()):
        assert get_path(data, "train.lr") == pytest.approx(1e-4)
        assert get_path(data, "datasets.1.folder_path") == "b"
        assert get_path(data, "datasets.1.resolution.1") == 768
        assert get_path(data, "train.lr_scheduler_params.warmup_steps") == 0


@pytest.mark.parametrize(
    ("path", "on_model", "on_dict"),
    [
        ("train.lrr", "'lrr' is not a setting of train", "'lrr' is not in train"),
        ("datasets.2.folder_path", "has 2 item(s); index 2 is out of range — use 0..1", None),
        (
            "datasets.first",
            "is a list, so the next part must be an index, not 'first' — write datasets.0...",
            None,
        ),
        ("train.lr.x", "cannot go into train.lr, which is a value — shorten the key", None),
    ],
)
def test_a_bad_path_says_where_it_stops(path: str, on_model: str, on_dict: str | None) -> None:
    cfg = _two_datasets()
    for data, message in ((cfg, on_model), (cfg.model_dump(), on_dict or on_model)):
        with pytest.raises(PathError) as err:
            get_path(data, path)
        assert err.value.path == path
        assert str(err.value) == message
        assert isinstance(err.value, KeyError)  # callers that catch KeyError keep working
        assert get_path(data, path, None) is None  # a default instead of the error


# ------------------------------------------------------------------------------------ set
def test_set_on_nested_dicts_and_lists() -> None:
    data = {"datasets": [{"resolution": [512]}], "train": {"lr": 0.1}}
    set_path(data, "train.lr", 0.2)
    set_path(data, "datasets.0.resolution.0", 768)
    assert data == {"datasets": [{"resolution": [768]}], "train": {"lr": 0.2}}
    with pytest.raises(PathError, match="index 1 is out of range"):
        set_path(data, "datasets.1.folder_path", "b")  # parents must exist without create
    with pytest.raises(PathError, match="'sample' is not in the data"):
        set_path(data, "sample.seed", 1)


def test_set_with_create_builds_missing_parents_and_appends() -> None:
    data: dict = {"model": None}
    set_path(data, "model.arch", "sdxl", create=True)
    set_path(data, "datasets.0.resolution", [512], create=True)
    set_path(data, "datasets.1.folder_path", "b", create=True)  # one past the end appends
    assert data == {
        "model": {"arch": "sdxl"},
        "datasets": [{"resolution": [512]}, {"folder_path": "b"}],
    }
    with pytest.raises(
        PathError, match=r"index 5 is out of range — use 0..2 \(2 adds a new item\)"
    ):
        set_path(data, "datasets.5.folder_path", "c", create=True)
    with pytest.raises(PathError, match=r"cannot go into model\.arch, which is a value"):
        set_path(data, "model.arch.x", 1, create=True)


def test_set_on_a_model_validates() -> None:
    cfg = _two_datasets()
    set_path(cfg, "datasets.1.num_repeats", 3)
    assert cfg.datasets[1].num_repeats == 3
    with pytest.raises(ValidationError):
        set_path(cfg, "train.lr", -1.0)
    with pytest.raises(PathError, match="'nope' is not a setting of train"):
        set_path(cfg, "train.nope", 1)


def test_pop_removes_a_key() -> None:
    data = {"datasets": [{"folder_path": "a", "flip_x": True}]}
    assert pop_path(data, "datasets.0.flip_x") is True
    assert pop_path(data, "datasets.0.flip_x") is None
    assert pop_path(data, "datasets.3.flip_x", "gone") == "gone"
    assert data == {"datasets": [{"folder_path": "a"}]}


# -------------------------------------------------------------------------------- flatten
def test_flatten_a_model_and_a_dict_to_the_same_params() -> None:
    cfg = _two_datasets()
    flat = flatten(cfg)
    assert flat == flatten(cfg.model_dump(mode="json"))
    assert flat["datasets.1.resolution"] == "[512, 768]"
    assert flat["datasets.0.folder_path"] == "a"
    assert flat["train.lr_scheduler_params.warmup_steps"] == "0"
    assert flat["sample.prompts"] == "[]"  # an empty list is a leaf
    assert flat["model.vae_path"] == "null"


def test_flatten_walks_lists_of_dicts_by_index() -> None:
    data = {"a": {"b": [{"c": 1}, {"c": "x"}], "d": [1, 2], "e": {}}}
    assert flatten(data) == {"a.b.0.c": "1", "a.b.1.c": "x", "a.d": "[1, 2]", "a.e": "{}"}
    assert leaves(data) == {"a.b.0.c": 1, "a.b.1.c": "x", "a.d": [1, 2], "a.e": {}}


def test_unflatten_undoes_flatten() -> None:
    cfg = _two_datasets()
    values = {"datasets.1.folder_path": "b", "datasets.0.folder_path": "a", "train.lr": 0.5}
    assert unflatten(values) == {
        "datasets": [{"folder_path": "a"}, {"folder_path": "b"}],
        "train": {"lr": 0.5},
    }
    flat = cfg.model_dump(mode="json")
    assert TrainingConfig.model_validate(unflatten(leaves(flat))) == cfg
    with pytest.raises(PathError):
        unflatten({"train": 1, "train.lr": 2})


# -------------------------------------------------------------------------- generic paths
def test_generic_and_concrete_paths() -> None:
    assert generic_path("datasets.3.flip_x") == "datasets.0.flip_x"
    assert generic_path("sample.prompts.12.seed", "[]") == "sample.prompts[].seed"
    assert generic_path("datasets.3.resolution.1", "") == "datasets.resolution"
    assert generic_path("train.lr") == "train.lr"
    assert concrete_paths("datasets.0.flip_x", 2) == ["datasets.0.flip_x", "datasets.1.flip_x"]
    assert concrete_paths("train.lr", 2) == ["train.lr"]


# --------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize(
    ("path", "bounds", "text"),
    [
        ("train.weight_decay", (0.0, 1.0), "use a value between 0.0 and 1.0"),
        ("network.linear", (1, 1024), "use a value between 1 and 1024"),  # int | "auto"
        ("datasets.0.resolution", (64, 4096), "use a value between 64 and 4096"),  # list items
        ("train.lr_scheduler_params.warmup_ratio", (0.0, 1.0), "use a value between 0.0 and 1.0"),
        ("sample.seed", (0, 2**32 - 1), "use a value between 0 and 4294967295"),
        ("train.optimizer", (None, None), ""),
    ],
)
def test_field_bounds_and_their_text(path: str, bounds: tuple, text: str) -> None:
    info = field_info(path)
    assert field_bounds(info) == bounds
    assert bounds_text(info) == text


def test_no_field_no_bounds() -> None:
    assert field_bounds(None) == (None, None)
    assert bounds_text(None) == ""
