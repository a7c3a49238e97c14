"""trainer.files: atomic writes keep the old file on failure and leave no temporary files."""

import pytest

from trainer.files import atomic_path, atomic_write_text, read_json, write_json


def test_write_json_replaces_and_reads_back(tmp_path):
    target = tmp_path / "sub" / "progress.json"
    write_json(target, {"step": 1})
    write_json(target, {"step": 2, "when": tmp_path})  # a Path is written as text
    assert read_json(target) == {"step": 2, "when": str(tmp_path)}
    assert [p.name for p in target.parent.iterdir()] == ["progress.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", "\xff"])
def test_read_json_is_none_for_anything_but_an_object(tmp_path, content):
    target = tmp_path / "x.json"
    target.write_text(content, encoding="latin-1")
    assert read_json(target) is None
    assert read_json(tmp_path / "missing.json") is None
