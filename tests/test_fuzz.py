"""Bad input never crashes the studio (issue 9, item 4).

Generated configs and YAML documents go through load → validate → advisor report: each ends as a
valid config (whose report renders) or as a ConfigError whose lines read ``path: message``.
Malformed images and captions are skipped with a reason, never trained on and never fatal.
"""

from __future__ import annotations

import copy
import io
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_advisor_cases import CHOICES

from advisor.dataset import DatasetInfo
from advisor.profile import synthetic_profile
from advisor.report import build_report
from trainer.config.introspection import iter_fields
from trainer.config.io import ConfigError, apply_overrides, config_from_dict, loads_config
from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import DatasetConfig
from trainer.data.scanning import scan_dataset

ROOT = Path(__file__).resolve().parent.parent
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
PROFILE = synthetic_profile("NVIDIA GeForce RTX 3060", 12.0, ram_gb=32.0, disk="ssd")
INFO = DatasetInfo.counts(20)
FIELDS = [path for path, _ in iter_fields()]
# "path: message" — the path is a dotted config path (or the source name); never a traceback.
LINE = re.compile(r"^.+?: \S")
FUZZ = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
SEEN: dict[str, int] = {}  # generator → documents checked
VALID: dict[str, int] = {}  # generator → documents that were valid configs

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "sd15", "sdxl", "flux", "lora", "adamw", "-1", "1e-4", "demo:sd15"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def check(text: str | bytes, who: str) -> TrainingConfig | None:
    """load → validate → report; a clean ConfigError is fine, anything else fails the test."""
    SEEN[who] = SEEN.get(who, 0) + 1
    try:
        cfg = loads_config(text)
    except ConfigError as err:
        lines = str(err).split("\n")
        assert lines and err.problems, "a ConfigError must say what is wrong"
        assert len(lines) == len(err.problems), f"one line per problem: {lines!r}"
        for line, problem in zip(lines, err.problems, strict=True):
            assert LINE.match(line) and problem.message, f"not 'path: message': {line!r}"
        assert "Traceback" not in str(err)
        return None
    assert isinstance(cfg, TrainingConfig)
    VALID[who] = VALID.get(who, 0) + 1
    assert build_report(cfg, PROFILE, INFO).text()
    return cfg


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append({})
            node = node[index]
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                return
    if isinstance(node, dict):
        node[parts[-1]] = value


PRESET_DATA = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in PRESETS]


@FUZZ
@given(
    st.sampled_from(range(len(PRESET_DATA))),
    st.lists(st.tuples(st.sampled_from(FIELDS), values), min_size=1, max_size=4),
)
def test_presets_with_random_field_values(index: int, changes) -> None:
    data = copy.deepcopy(PRESET_DATA[index])
    for path, value in changes:
        _set(data, path, value)
    check(yaml.safe_dump(data, allow_unicode=True), "presets")


@FUZZ
@given(
    st.sampled_from(range(len(PRESET_DATA))),
    st.lists(
        st.sampled_from(sorted(CHOICES)).flatmap(
            lambda path: st.tuples(st.just(path), st.sampled_from(CHOICES[path]))
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_presets_with_plausible_choices(index: int, changes) -> None:
    # Values a user could pick in the wizard: mostly valid configs, so the report is exercised.
    data = copy.deepcopy(PRESET_DATA[index])
    for path, value in changes:
        _set(data, path, value)
    check(yaml.safe_dump(data, allow_unicode=True), "choices")


@FUZZ
@given(st.dictionaries(st.sampled_from([*{f.split(".")[0] for f in FIELDS}, "x"]), values))
def test_random_documents_shaped_like_configs(data) -> None:
    check(yaml.safe_dump(data, allow_unicode=True), "documents")


# "Billion laughs": nine levels of nine aliases, 9**9 values once expanded.
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
yaml_noise = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.sampled_from(
        [
            "",
            "---\n...\n",
            "!!python/object/apply:os.system ['echo pwned']",
            "model: !!python/name:os.system\n",
            "a: &a [*a]",
            "model: {arch: sd15\n",
            "\t- x",
            "datasets: [{folder_path: 1}]\n" * 3,
            "%YAML 9.9\n---\nx: 1",
            "model:\n  arch: sd15\n  arch: sdxl\n",
            "- 1\n- 2\n",
            "\ufeffmodel: {arch: sd15}\n",
            LAUGHS,
        ]
    ),
)


@FUZZ
@given(yaml_noise)
def test_random_text_and_bytes(text) -> None:
    check(text, "text")  # a few texts are valid configs (all defaults)


def test_alias_tricks_are_clear_errors() -> None:
    for text, words in (("a: &a [*a]", "refers to itself"), (LAUGHS, "too many values")):
        try:
            loads_config(text)
        except ConfigError as err:
            assert words in str(err) and str(err).startswith("config: ")
        else:
            raise AssertionError(f"{text!r} was accepted")


set_values = st.one_of(
    yaml_noise.filter(lambda v: isinstance(v, str)),
    values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    st.sampled_from(["&a [*a]", "[" * 300 + "]" * 300, "{a: 1, a: 2}", "1e999", ".nan", "-.inf"]),
)


@FUZZ
@given(
    st.sampled_from(range(len(PRESET_DATA))),
    st.lists(
        st.tuples(st.sampled_from([*FIELDS, "train.x", "datasets.0.y", "a.b.c"]), set_values),
        min_size=1,
        max_size=3,
    ),
)
def test_set_overrides_on_presets(index: int, changes) -> None:
    # `python -m trainer run CONFIG --set k=v`: the values are YAML too, with the same limits.
    SEEN["set"] = SEEN.get("set", 0) + 1
    items = [f"{path}={value}" for path, value in changes]
    try:
        cfg = config_from_dict(apply_overrides(PRESET_DATA[index], items))
    except ConfigError as err:
        assert err.problems and "Traceback" not in str(err)
        for line in str(err).split("\n"):
            assert LINE.match(line), f"not 'path: message': {line!r}"
        return
    VALID["set"] = VALID.get("set", 0) + 1
    assert build_report(cfg, PROFILE, INFO).text()


@settings(max_examples=1, deadline=None)
@given(st.just(0))
def test_at_least_two_thousand_configs_were_fuzzed(_) -> None:
    # Runs last in this file (pytest keeps definition order): the five generators above ran.
    if len(SEEN) < 5:
        pytest.skip("counts the five generators above: run the whole file")
    print(
        f"\n{sum(SEEN.values())} generated configs and YAML documents fuzzed: {SEEN}; valid configs: {VALID}"
    )
    assert sum(SEEN.values()) >= 2000, SEEN


# ------------------------------------------------------------------------ malformed datasets
def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size (a decompression bomb) with tiny pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_malformed_images_and_captions_are_skipped_with_a_report(tmp_path: Path) -> None:
    good = _png(64, 64)
    (tmp_path / "good.png").write_bytes(good)
    (tmp_path / "good.txt").write_text("a red square", encoding="utf-8")
    (tmp_path / "good2.png").write_bytes(good)
    (tmp_path / "good2.txt").write_bytes(b"caf\xe9 \xff\xfe not utf-8")  # Latin-1 bytes
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(_png(256, 256)[:300])
    (tmp_path / "bomb.png").write_bytes(_bomb_png(60000, 60000))
    (tmp_path / "wide.png").write_bytes(_bomb_png(20000, 10000))
    (tmp_path / "text.jpg").write_bytes(b"this is not a jpeg at all\n" * 10)
    (tmp_path / "noise.webp").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "orphan.txt").write_text("no image", encoding="utf-8")

    scan = scan_dataset(DatasetConfig(folder_path=str(tmp_path)), tmp_path)

    assert sorted(i.path.name for i in scan.images) == ["good.png", "good2.png"]
    reasons = dict(scan.skipped)
    assert set(reasons) >= {
        "empty.png",
        "truncated.png",
        "bomb.png",
        "wide.png",
        "text.jpg",
        "noise.webp",
        "orphan.txt",
    }, reasons
    assert "0 bytes" in reasons["empty.png"]
    assert "truncated" in reasons["truncated.png"] or "corrupt" in reasons["truncated.png"]
    assert "large" in reasons["bomb.png"] and "large" in reasons["wide.png"]
    assert "not an image" in reasons["text.jpg"]
    assert all(reason.strip() for reason in reasons.values())
    # The non-UTF-8 caption falls back to the default caption, with a note saying why.
    [bad_caption] = [i for i in scan.images if i.path.name == "good2.png"]
    assert not bad_caption.caption_from_file
    assert any(name == "good2.txt" and "UTF-8" in note for name, note in scan.notes)


def test_a_folder_of_only_broken_images_is_a_clear_error(tmp_path: Path) -> None:
    from trainer.data.scanning import DatasetError

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(_png(64, 64)[:100])
    with pytest.raises(DatasetError) as err:
        scan_dataset(DatasetConfig(folder_path=str(tmp_path)), tmp_path)
    assert "a.png" in str(err.value) or "no usable" in str(err.value).lower()


def test_the_dataset_manager_reads_non_utf8_captions_without_crashing(tmp_path: Path) -> None:
    from trainer.data import library as dm

    folder = dm.import_files(tmp_path, "set", [("a.png", _png(16, 16))]).folder
    (folder / "a.txt").write_bytes(b"caf\xe9 \xff")
    captions = dm.read_captions(folder)
    assert captions["a.png"].startswith("caf")  # shown (with a replacement mark), not a crash
