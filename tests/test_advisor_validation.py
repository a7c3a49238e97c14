"""The advisor and validation images: the step arithmetic counts the images the trainer trains on
(the hold-out taken out, an estimate), and the checks before launch say when the validation
folder is missing or empty, or the hold-out leaves too few images to train on."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from test_advisor_cases import make, sized

from advisor.dataset import (
    DatasetInfo,
    FolderInfo,
    held_out_counts,
    repeats_per_image,
    run_epoch_steps,
    run_steps,
    scan_folders,
    training_info,
)
from advisor.rules import validate


def cfg_of(*overrides: str):
    base = ("train.batch_size=1", "train.gradient_accumulation_steps=1")
    return make(*base, *overrides, arch="sd15")


def rules(cfg, info) -> dict[str, list]:
    found: dict[str, list] = {}
    for item in validate(cfg, None, info):
        if item.rule.startswith("validation_"):
            found.setdefault(item.rule, []).append(item)
    return found


def test_steps_and_epochs_leave_the_held_out_images_out() -> None:
    info = DatasetInfo.counts(10)
    plain = cfg_of("train.epochs=2")
    held = cfg_of("train.epochs=2", "validation.holdout=2")
    assert (run_epoch_steps(plain, info), run_steps(plain, info)) == (10, 20)
    assert (run_epoch_steps(held, info), run_steps(held, info)) == (8, 16)  # 10 - 2 images
    bucketed = sized(10)  # with sizes: bucket-aware, the same count here (one size)
    assert run_steps(held, bucketed) == 16
    assert len(training_info(held, bucketed).folders[0].sizes) == 8
    # Steps set directly stay as set; each training image is then seen more often.
    steps = cfg_of("train.steps=40", "validation.holdout=2")
    assert run_steps(steps, info) == 40
    assert repeats_per_image(steps, info) == 5.0  # 40 steps over 8 images, not 10


def test_the_hold_out_is_shared_in_proportion_and_never_taken_from_regularisation() -> None:
    cfg = make(
        "validation.holdout=4",
        "datasets.1.folder_path=more",
        "datasets.1.resolution=[512]",
        "datasets.2.folder_path=reg",
        "datasets.2.resolution=[512]",
        "datasets.2.is_reg=true",
        arch="sd15",
    )
    info = DatasetInfo.counts(30, 10, 50)
    assert held_out_counts(cfg, info) == {0: 3, 1: 1}
    assert [f.images for f in training_info(cfg, info).folders] == [27, 9, 50]
    odd = make("validation.holdout=1", "datasets.1.folder_path=b", "datasets.1.resolution=[512]")
    assert held_out_counts(odd, DatasetInfo.counts(5, 5)) == {0: 1}  # a tie: the first


def test_a_missing_or_empty_validation_folder_is_an_error_naming_it() -> None:
    cfg = cfg_of("validation.folder_path=/srv/val")
    missing = DatasetInfo(
        (FolderInfo(10),), validation=FolderInfo(0, folder="/srv/val", missing=True)
    )
    (error,) = rules(cfg, missing)["validation_folder_missing"]
    assert error.severity == "error" and "nothing at /srv/val" in error.message
    empty = DatasetInfo(
        (FolderInfo(10),),
        validation=FolderInfo(0, folder="/srv/val", skipped=(("/srv/val", "no images"),)),
    )
    (error,) = rules(cfg, empty)["validation_folder_missing"]
    assert "/srv/val holds no usable images (no images)" in error.message
    refused = DatasetInfo((FolderInfo(10),), validation=FolderInfo(0, missing=True, refused="no"))
    assert rules(cfg, refused)["validation_folder_missing"][0].message == "validation folder: no"
    fine = DatasetInfo((FolderInfo(10),), validation=FolderInfo(3, folder="/srv/val"))
    assert rules(cfg, fine) == {}
    assert rules(cfg, DatasetInfo((FolderInfo(10),))) == {}  # not looked at: nothing said


def test_a_hold_out_of_every_image_is_an_error_and_over_a_fifth_a_warning() -> None:
    info = DatasetInfo.counts(10)
    (error,) = rules(cfg_of("validation.holdout=10"), info)["validation_holdout_too_many"]
    assert error.severity == "error" and "hold 10 images: none would be left" in error.message
    assert error.fix == {"validation.holdout": 1}
    assert rules(cfg_of("validation.holdout=2"), info) == {}  # 20%: fine
    (warning,) = rules(cfg_of("validation.holdout=3"), info)["validation_holdout_large"]
    assert warning.severity == "warning" and "3 of your 10 images (30%)" in warning.message
    assert "only 7 are left" in warning.message
    assert rules(cfg_of("validation.holdout=3"), None) == {}  # images not counted


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (len(path.name) * 20 % 255, 30, 90)).save(path)


def test_the_advisors_scan_looks_at_the_validation_folder(tmp_path: Path) -> None:
    for name in ("a", "bb", "ccc"):
        png(tmp_path / "data" / f"{name}.png")
    cfg = make(
        "datasets.0.folder_path=data",
        f"validation.folder_path={tmp_path / 'val'}",
        arch="sd15",
    )
    info = scan_folders(cfg, tmp_path)
    assert info is not None and info.validation is not None and info.validation.missing
    (error,) = rules(cfg, info)["validation_folder_missing"]
    assert str(tmp_path / "val") in error.message
    png(tmp_path / "val" / "v.png")
    info = scan_folders(cfg, tmp_path)
    assert info is not None and info.validation is not None and info.validation.images == 1
    assert rules(cfg, info) == {}


def test_the_studios_advisor_column_looks_at_the_validation_folder(tmp_path: Path) -> None:
    from ui.dataset_facts import dataset_info  # the studio's own scan, not the advisor CLI's

    for name in ("a", "bb", "ccc"):
        png(tmp_path / "data" / f"{name}.png")
    cfg = make(
        f"datasets.0.folder_path={tmp_path / 'data'}",
        f"validation.folder_path={tmp_path / 'val'}",
        arch="sd15",
    )
    info = dataset_info({}, cfg)
    assert info is not None and info.folders[0].images == 3
    assert info.validation is not None and info.validation.missing
    assert "validation_folder_missing" in rules(cfg, info)
    png(tmp_path / "val" / "v.png")
    info = dataset_info({}, cfg)
    assert info is not None and info.validation is not None and info.validation.images == 1
    assert rules(cfg, info) == {}
