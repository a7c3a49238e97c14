"""The optimizer follows the device (8-bit state only on a GPU that runs it), and facts about
images and captions come only from dataset folders that exist."""

from __future__ import annotations

import pytest
from test_advisor_cases import PROFILES, make

from advisor.dataset import DatasetInfo, FolderInfo
from advisor.defaults import UserIntent, recommend
from advisor.rules import validate


# ------------------------------------------------------------------------------- the optimizer
@pytest.mark.parametrize(
    ("profile", "optimizer", "reason"),
    [
        ("rtx4090", "adamw8bit", "8-bit state"),
        ("rtx3060", "adamw8bit", "8-bit state"),
        ("rx7900", "adamw8bit", "8-bit state"),
        ("m2max", "adamw", "no Apple (MPS) kernels for 8-bit optimizers"),
        ("cpu", "adamw", "8-bit optimizers pay off on a GPU"),
    ],
)
def test_the_optimizer_follows_the_device(profile: str, optimizer: str, reason: str) -> None:
    for demo in (False, True):
        base = make("model.name_or_path=demo:sd15") if demo else None
        result = recommend(UserIntent("person"), "sd15", PROFILES[profile], base=base)
        rec = result.get("train.optimizer")
        assert (rec.value, result.config.train.optimizer) == (optimizer, optimizer), profile
        assert reason in rec.reason
        rules = {f.rule for f in validate(result.config, PROFILES[profile])}
        assert "optimizer_8bit_off_gpu" not in rules  # never a warning about its own choice


@pytest.mark.parametrize(
    ("profile", "overrides", "warned"),
    [
        ("cpu", (), True),
        ("m2max", (), True),
        ("rtx4090", ("runtime.device=cpu",), True),  # a GPU machine told to train on the CPU
        ("rtx4090", (), False),
        ("rx7900", (), False),
    ],
)
def test_adamw8bit_without_a_gpu_for_it_is_a_warning_with_a_fix(
    profile: str, overrides: tuple[str, ...], warned: bool
) -> None:
    cfg = make("train.optimizer=adamw8bit", *overrides, arch="sd15")
    found = [f for f in validate(cfg, PROFILES[profile]) if f.rule == "optimizer_8bit_off_gpu"]
    assert bool(found) is warned
    if warned:
        assert found[0].severity == "warning"
        assert found[0].fix == {"train.optimizer": "adamw"}
    plain = make("train.optimizer=adamw", *overrides, arch="sd15")
    assert not [f for f in validate(plain, PROFILES[profile]) if f.rule == "optimizer_8bit_off_gpu"]


# ------------------------------------------------------------------- a missing dataset folder
def missing(caption_trigger: str | None = None) -> FolderInfo:
    return FolderInfo(0, folder="/nowhere", missing=True, caption_trigger=caption_trigger)


def reasons(result) -> str:
    return "\n".join(f"{r.path}: {r.reason}" for r in result.recommendations)


@pytest.mark.parametrize("kind", ["person", "style", "object"])
def test_a_missing_folder_gives_no_facts_about_images_or_captions(kind: str) -> None:
    base = make("datasets.0.folder_path=/nowhere", arch="sdxl")
    # even a stale trigger remembered for the folder is not used once it is gone
    info = DatasetInfo((missing(caption_trigger="sks"),))
    result = recommend(UserIntent(kind), "sdxl", PROFILES["rtx4090"], info, base)
    text = reasons(result)
    assert "already contains" not in text
    assert result.config.datasets[0].trigger_word == "ohwx"
    assert " 0 images" not in text  # no "0 images would be memorised", no "over 0 images"
    assert "your images are not counted yet" in result.get("train.steps").reason
    # the same as knowing nothing about the images at all
    unknown = recommend(UserIntent(kind), "sdxl", PROFILES["rtx4090"], None, base)
    assert result.patch() == unknown.patch()


def test_one_missing_folder_of_two_means_nothing_is_counted() -> None:
    base = make("datasets.0.folder_path=/here", arch="sd15")
    base.datasets.append(base.datasets[0].model_copy(update={"folder_path": "/nowhere"}))
    here = FolderInfo(3, sizes=((512, 512),) * 3, captioned=3, caption_trigger="sks")
    result = recommend(
        UserIntent("person"), "sd15", PROFILES["rtx4090"], DatasetInfo((here, missing())), base
    )
    assert "already contains" not in reasons(result)
    counted = recommend(
        UserIntent("person"), "sd15", PROFILES["rtx4090"], DatasetInfo((here, here)), base
    )
    assert "already contains 'sks'" in counted.get("datasets.0.trigger_word").reason
