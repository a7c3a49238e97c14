"""A newcomer's walk over the Datasets page (walk 8): a person preset's trigger word 'ohwx' on the
demo dataset, whose captions all say 'sks'; the size check at the draft's resolution, said and
changeable; "Undo last removal" only when something was removed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from advisor.dataset import DatasetInfo, FolderInfo, shared_token, trigger_clash
from advisor.patch import apply_patch
from advisor.rules import validate
from trainer.config.schema import TrainingConfig
from trainer.data import library as dm
from trainer.demo.dataset import build_demo_dataset

ROOT = Path(__file__).resolve().parent.parent
DEMO_LIKE = tuple(
    f"a photo of sks {colour} {shape} on a {background} background"
    for colour, shape, background in [
        ("red", "circle", "blue"),
        ("green", "square", "white"),
        ("blue", "triangle", "red"),
        ("yellow", "star", "black"),
    ]
    * 3
)


def person_preset(folder: str = "data") -> TrainingConfig:
    raw = yaml.safe_load((ROOT / "presets" / "person_sd15.yaml").read_text(encoding="utf-8"))
    raw["datasets"][0]["folder_path"] = folder
    return TrainingConfig.model_validate(raw)


def captioned(captions: tuple[str, ...]) -> DatasetInfo:
    n = len(captions)
    return DatasetInfo((FolderInfo(n, ((64, 64),) * n, captioned=n, captions=captions),))


def clash_findings(cfg: TrainingConfig, info: DatasetInfo) -> list:
    return [f for f in validate(cfg, None, info) if f.rule == "trigger_not_in_captions"]


# ----------------------------------------------------------------- 1. the captions' own trigger
def test_a_person_preset_on_sks_captions_is_warned_with_the_counts_and_a_fix() -> None:
    cfg = person_preset()
    assert cfg.datasets[0].trigger_word == "ohwx"
    (found,) = clash_findings(cfg, captioned(DEMO_LIKE))
    assert found.severity == "warning"
    assert found.message.startswith(
        "none of the 12 captions contains 'ohwx'; 12 of 12 contain 'sks'. The trainer puts "
        "'ohwx' in front of each caption that lacks it, so the LoRA would learn 'ohwx' next to "
        "'sks' in every caption"
    )
    assert found.fix == {"datasets.0.trigger_word": "sks"}
    fixed = apply_patch(cfg, found.fix)
    assert fixed.datasets[0].trigger_word == "sks"
    assert clash_findings(fixed, captioned(DEMO_LIKE)) == []


def test_a_few_captions_with_the_trigger_are_counted_and_most_are_quiet() -> None:
    cfg = person_preset()
    two = tuple(f"ohwx, {c}" for c in DEMO_LIKE[:2]) + DEMO_LIKE[2:]
    (found,) = clash_findings(cfg, captioned(two))
    assert found.message.startswith("only 2 of the 12 captions contain 'ohwx'; 12 of 12 ")
    one = (f"ohwx, {DEMO_LIKE[0]}", *DEMO_LIKE[1:])
    assert clash_findings(cfg, captioned(one))[0].message.startswith(
        "only 1 of the 12 captions contains 'ohwx'"
    )
    three = tuple(f"ohwx, {c}" for c in DEMO_LIKE[:3]) + DEMO_LIKE[3:]  # 25%: written for it
    assert clash_findings(cfg, captioned(three)) == []


@pytest.mark.parametrize(
    "captions",
    [
        DEMO_LIKE[:2],  # too few captions to tell a shared token
        ("a dog on grass", "a dog in a car", "a dog asleep"),  # only a common word shared
        ("ohwx smiling", "ohwx outdoors", "OHWX, close up"),  # the trigger is in them
        ("[trigger] smiling", "[trigger] outdoors", "[trigger] sitting"),  # the placeholder
        ("sks zwx dog", "sks zwx cat", "sks zwx cow"),  # two candidates: no guess
    ],
)
def test_captions_that_agree_with_the_trigger_or_share_no_rare_token_are_quiet(
    captions: tuple[str, ...],
) -> None:
    assert clash_findings(person_preset(), captioned(captions)) == []


def test_the_class_word_beside_the_trigger_is_the_recipe_not_a_clash() -> None:
    corgis = captioned(("a corgi on grass", "a corgi asleep", "a corgi in a car"))
    cfg = person_preset()
    assert clash_findings(cfg, corgis)[0].fix == {"datasets.0.trigger_word": "corgi"}
    train = cfg.train.model_copy(update={"diff_output_preservation_class": "corgi"})
    assert clash_findings(cfg.model_copy(update={"train": train}), corgis) == []


def test_the_shared_token_is_a_rare_word_in_most_captions() -> None:
    assert shared_token(DEMO_LIKE) == ("sks", 12)
    four_of_five = ("sks a", "sks b", "sks c", "sks d", "e")
    assert shared_token(four_of_five) == ("sks", 4)  # 80%
    assert shared_token(("sks a", "sks b", "sks c", "d", "e")) is None  # 60%
    assert shared_token(("a photo", "a photo", "a photo")) is None
    assert trigger_clash(DEMO_LIKE, "ohwx man") is not None
    assert trigger_clash(tuple(c.replace("sks", "ohwx") for c in DEMO_LIKE), "ohwx man") is None
    assert trigger_clash((), "ohwx") is None


def test_the_advisor_reads_the_captions_of_the_dataset_the_studio_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Datasets -> demo -> "Train on this dataset" with a person preset loaded: the studio's
    count of the folder (``ui.dataset_facts``) carries the captions to the rule."""
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    from ui.dataset_facts import dataset_info

    folder = build_demo_dataset(tmp_path / "demo")
    cfg = person_preset(str(folder))
    info = dataset_info({}, cfg)
    assert info is not None and len(info.folders[0].captions) == 12
    (found,) = clash_findings(cfg, info)
    assert "none of the 12 captions contains 'ohwx'; 12 of 12 contain 'sks'" in found.message


def test_a_scanned_folder_carries_its_captions(tmp_path: Path) -> None:
    from advisor.dataset import scan_folders

    folder = build_demo_dataset(tmp_path / "demo", count=4)
    info = scan_folders(person_preset(str(folder)))
    assert info is not None
    assert [c.split(" on a ")[0][:14] for c in info.folders[0].captions] == ["a photo of sks"] * 4


# ------------------------------------------------------------ 2. and 3. the Datasets page
def png(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    drafts = tmp_path / "home" / "drafts"
    drafts.mkdir(parents=True)
    draft = {"model": {"arch": "sd15"}, "datasets": [{"resolution": [512]}]}
    (drafts / "current.yaml").write_text(json.dumps(draft), encoding="utf-8")  # JSON is YAML
    return tmp_path / "home"


def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    at.switch_page("pages/datasets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def flagged(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning if w.value.startswith("Flagged"))


def test_the_size_check_says_what_it_checks_against_and_can_be_changed(home: Path) -> None:
    dm.import_files(home / "datasets", "shapes", [(f"{i}.png", png(i, 64)) for i in range(3)])
    at = page()
    check = at.number_input(key="dsm:min")
    assert (check.label, check.value) == ("Check image sizes against (px)", 512)
    assert "the draft's 512 px" in check.help
    assert "Sizes checked against the draft's 512 px: its training resolution." in captions(at)
    assert "0.png: too small" in flagged(at)
    assert any("**too small**: short side under 512 px" in c for c in captions(at))
    at = check.set_value(64).run()
    assert not at.exception
    assert "too small" not in flagged(at)
    assert (
        "Sizes checked against 64 px, as set here; the draft's 512 px is the default."
        in captions(at)
    )
    assert any("At the draft's settings (512 px" in c for c in captions(at))  # counts unchanged


def test_undo_last_removal_waits_for_a_removal(home: Path) -> None:
    folder = dm.import_files(
        home / "datasets", "pets", [("a.png", png(0, 64)), ("b.png", png(0, 64))]
    ).folder
    at = page()
    undo = at.button(key="dsm:undo")
    assert undo.disabled and "Nothing removed yet" in undo.help
    at = at.button(key="dsm:rm:0:b").click().run()  # identical images: one pair
    assert not (folder / "b.png").exists()
    undo = at.button(key="dsm:undo")
    assert not undo.disabled and "b.png" in undo.help
    at = undo.click().run()
    assert (folder / "b.png").is_file()
    assert any("Restored b.png" in s.value for s in at.success)
    at = at.run()
    assert at.button(key="dsm:undo").disabled
