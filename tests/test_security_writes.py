"""Security (issue 16, item 1): what the LoRA utilities write stays under the studio home, has the
right extension, and never replaces an existing file without an explicit confirm; the command
line writes where its user says, but replaces only with ``--force``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_ui_utilities import kohya_file, studio_job
from ui_support import run_ok as run

from trainer.cli import main
from trainer.files import WouldReplace, WriteRefused, writable_target
from trainer.lora import tools as lora_tools

ROOT = Path(__file__).resolve().parent.parent
LORA = ".safetensors"


# ------------------------------------------------------------------------ the one check
def test_a_place_inside_the_root_with_the_right_extension_is_writable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    target = writable_target(home / "outputs" / "x.safetensors", suffix=LORA, roots=[home])
    assert target == (home / "outputs" / "x.safetensors").resolve()
    # A relative path is taken under the studio home, not the server's working folder.
    assert writable_target("a/b.safetensors", suffix=LORA, roots=[home]) == home / "a/b.safetensors"
    assert writable_target(home / "pipe", suffix="", roots=[home]) == home / "pipe"


@pytest.mark.parametrize(
    "where",
    ["/etc/evil.safetensors", "{tmp}/elsewhere.safetensors", "{home}/../x.safetensors",
     "{home}/a/../../x.safetensors", "{home}/link/x.safetensors", "~/x.safetensors"],
)  # fmt: skip
def test_writes_outside_the_allowed_roots_are_refused(tmp_path: Path, where: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (home / "link").symlink_to(outside)  # a link in the home must not lead out of it
    path = where.format(tmp=tmp_path, home=home)
    with pytest.raises(WriteRefused, match="outside the folders the studio saves to"):
        writable_target(path, suffix=LORA, roots=[home])
    assert list(outside.iterdir()) == []


def test_the_root_itself_and_unusable_paths_are_not_targets(tmp_path: Path) -> None:
    with pytest.raises(WriteRefused, match="outside"):
        writable_target(tmp_path, suffix="", roots=[tmp_path])
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for bad in ("x\x00.safetensors", "loop/x.safetensors", "  ", "~nosuchuser/x.safetensors"):
        with pytest.raises(WriteRefused):
            writable_target(bad, suffix=LORA, roots=[tmp_path])


@pytest.mark.parametrize(
    "name", ["x.txt", "x.py", "x", "x.safetensors.bak", ".bashrc", "mlflow.db", "x.ckpt"]
)
def test_a_lora_must_be_a_safetensors_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(WriteRefused, match=r"does not end in \.safetensors"):
        writable_target(tmp_path / name, suffix=LORA, roots=[tmp_path])


def test_a_folder_target_is_not_a_file_name_nor_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(WriteRefused, match="is a file name"):
        writable_target(tmp_path / "pipe.safetensors", suffix="", roots=[tmp_path])
    (tmp_path / "afile").write_text("keep")
    with pytest.raises(WriteRefused, match="is a file: give a folder name"):
        writable_target(tmp_path / "afile", suffix="", roots=[tmp_path], replace=True)
    (tmp_path / "adir.safetensors").mkdir()
    with pytest.raises(WriteRefused, match="is a folder"):
        writable_target(tmp_path / "adir.safetensors", suffix=LORA, roots=[tmp_path], replace=True)
    assert (tmp_path / "afile").read_text() == "keep"


def test_an_existing_target_needs_the_confirm(tmp_path: Path) -> None:
    existing = tmp_path / "x.safetensors"
    existing.write_bytes(b"old")
    with pytest.raises(WouldReplace) as err:
        writable_target(existing, suffix=LORA, roots=[tmp_path])
    assert err.value.path == existing and err.value.kind == "file"
    assert writable_target(existing, suffix=LORA, roots=[tmp_path], replace=True) == existing
    # A folder: an empty one is no loss, one with files is.
    (tmp_path / "empty").mkdir()
    assert writable_target(tmp_path / "empty", suffix="", roots=[tmp_path]) == tmp_path / "empty"
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    with pytest.raises(WouldReplace, match="replace this folder"):
        writable_target(tmp_path / "pipe", suffix="", roots=[tmp_path])
    assert existing.read_bytes() == b"old"


# ------------------------------------------------------------------------ the utilities page
@pytest.fixture()
def home(home_with_store: Path) -> Path:
    return home_with_store


def utilities_on(lora: Path) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60)
    run(at.switch_page("pages/utilities.py"))
    return run(at.text_input(key="lu:main:path").set_value(str(lora)))


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_resize_over_an_existing_file_is_refused_until_replace_is_ticked(home: Path) -> None:
    job = studio_job(home / "jobs", "1111aaaa2222bbbb", "mine", 8, 0)
    source = job / "lora" / "mine.safetensors"
    victim = job / "outputs" / "precious.safetensors"  # a run's outputs/: the utilities' own
    victim.parent.mkdir()
    kohya_file(victim, 4, 9)
    (home / "outputs").mkdir()
    another = kohya_file(home / "outputs" / "another.safetensors", 4, 3)
    before = victim.read_bytes()
    at = utilities_on(source)
    run(at.text_input(key="lu:rout").set_value(str(victim)))
    replace_key = f"lu:rout:replace:{victim}"
    assert at.checkbox(key=replace_key).value is False  # shown only because the file exists
    run(at.button(key="lu:resize").click())
    assert any(f"Not saved: {victim} exists" in e and "Replace the existing file" in e for e in
               errors(at)), errors(at)  # fmt: skip
    assert not at.success
    assert victim.read_bytes() == before  # byte-identical
    run(at.checkbox(key=replace_key).check())
    run(at.button(key="lu:resize").click())
    assert any(f"Saved {victim}" in s.value for s in at.success), errors(at)
    assert lora_tools.inspect(victim)["ranks"] == {4: 2}  # now the resized source
    # Another path that exists does not inherit the tick.
    run(at.text_input(key="lu:rout").set_value(str(another)))
    assert at.checkbox(key=f"lu:rout:replace:{another}").value is False


def test_no_checkbox_where_nothing_would_be_replaced(home: Path) -> None:
    job = studio_job(home / "jobs", "1111aaaa2222bbbb", "mine", 8, 0)
    at = utilities_on(job / "lora" / "mine.safetensors")
    assert not [c for c in at.checkbox if (c.key or "").startswith("lu:rout:replace")]


@pytest.mark.parametrize("where", ["{tmp}/elsewhere.safetensors", "{home}/../up.safetensors"])
def test_save_as_outside_the_studio_home_is_refused(home: Path, tmp_path: Path, where: str) -> None:
    job = studio_job(home / "jobs", "1111aaaa2222bbbb", "mine", 8, 0)
    target = Path(where.format(tmp=tmp_path, home=home))
    at = utilities_on(job / "lora" / "mine.safetensors")
    run(at.text_input(key="lu:rout").set_value(str(target)))
    assert any("outside the folders the studio saves to" in w.value for w in at.warning)
    run(at.button(key="lu:resize").click())
    assert any(e.startswith("Not saved:") for e in errors(at)), errors(at)
    assert not target.exists() and not target.resolve().exists()


@pytest.mark.parametrize("name", ["notes.txt", "evil.py", "noextension"])
def test_save_as_with_another_extension_is_refused(home: Path, name: str) -> None:
    job = studio_job(home / "jobs", "1111aaaa2222bbbb", "mine", 8, 0)
    target = home / name
    at = utilities_on(job / "lora" / "mine.safetensors")
    run(at.text_input(key="lu:out2").set_value(str(target)))  # merge's "Save as"
    run(at.text_input(key="lu:other:path").set_value(str(job / "lora" / "mine.safetensors")))
    run(at.button(key="lu:merge").click())
    assert any("does not end in .safetensors" in e for e in errors(at)), errors(at)
    assert not target.exists()


def test_merge_into_base_writes_no_pipeline_outside_the_home(home: Path, tmp_path: Path) -> None:
    job = studio_job(home / "jobs", "1111aaaa2222bbbb", "mine", 8, 0)
    at = utilities_on(job / "lora" / "mine.safetensors")
    run(at.toggle(key="lu:intobase").set_value(True))
    assert at.text_input(key="lu:mout").value == str(job / "outputs" / "mine_merged_base")
    run(at.text_input(key="lu:mout").set_value(str(tmp_path / "pipeline")))
    run(at.button(key="lu:merge_base").click())  # refused before any base model is loaded
    assert any("outside the folders the studio saves to" in e for e in errors(at)), errors(at)
    assert not (tmp_path / "pipeline").exists()
    # Inside the home, an existing pipeline folder needs the confirm too.
    existing = home / "pipe"
    existing.mkdir()
    (existing / "model_index.json").write_text("{}")
    run(at.text_input(key="lu:mout").set_value(str(existing)))
    run(at.button(key="lu:merge_base").click())
    assert any("Replace the existing folder" in e for e in errors(at)), errors(at)
    assert [p.name for p in existing.iterdir()] == ["model_index.json"]


def test_a_lora_outside_the_home_gets_its_outputs_in_the_home(home: Path, tmp_path: Path) -> None:
    lora = kohya_file(tmp_path / "downloaded.safetensors", 4, 0)
    at = utilities_on(lora)
    assert at.text_input(key="lu:rout").value == str(
        home / "outputs" / "downloaded_resized.safetensors"
    )


# ------------------------------------------------------------------ a run's own files stay its own
def run_home(tmp_path: Path) -> tuple[Path, Path]:
    home = tmp_path / "home"
    job = home / "jobs" / "1111aaaa2222bbbb"
    for sub in ("lora", "checkpoints/step_00000010/lora", "outputs"):
        (job / sub).mkdir(parents=True)
    (home / "mlartifacts" / "1" / "abc" / "artifacts").mkdir(parents=True)
    return home, job


@pytest.mark.parametrize(
    "where",
    ["{job}/lora/my_lora.safetensors", "{job}/checkpoints/step_00000010/lora/my_lora.safetensors",
     "{job}/x.safetensors", "{job}/outputs/../lora/x.safetensors", "{home}/jobs/x.safetensors",
     "{home}/jobs/new/outputs.safetensors", "{home}/mlartifacts/1/abc/artifacts/x.safetensors",
     "{home}/mlruns/0/x.safetensors", "{home}/models/demo/unet/model.safetensors",
     "{home}/cache/x.safetensors", "{home}/datasets/cats/x.safetensors"],
)  # fmt: skip
def test_a_runs_folder_and_mlflows_store_are_refused_even_with_replace(
    tmp_path: Path, where: str
) -> None:
    home, job = run_home(tmp_path)
    target = Path(where.format(home=home, job=job))
    with pytest.raises(WriteRefused) as err:
        writable_target(
            target, suffix=LORA, roots=[home], replace=True, keep_out=lora_tools.kept_out(home)
        )
    message = str(err.value)
    assert "is inside" in message and "never write there" in message, message
    assert f"Save under {home / 'outputs'}" in message  # where it may save instead
    # Folders too: a pipeline saved over a run's folder or its outputs/ folder itself.
    for folder in (job, job / "outputs", home / "mlartifacts" / "1"):
        with pytest.raises(WriteRefused, match="never write there"):
            writable_target(folder, suffix="", roots=[home], keep_out=lora_tools.kept_out(home))


def test_a_runs_outputs_folder_and_the_homes_stay_writable(tmp_path: Path) -> None:
    home, job = run_home(tmp_path)
    keep_out = lora_tools.kept_out(home)
    for target in (job / "outputs" / "x.safetensors", home / "outputs" / "x.safetensors",
                   home / "x.safetensors", job / "outputs" / "pipe" / "y.safetensors"):  # fmt: skip
        assert writable_target(target, suffix=LORA, roots=[home], keep_out=keep_out) == target
    # A link in a run's outputs/ that leads into its lora/ folder does not open it.
    (job / "outputs" / "link").symlink_to(job / "lora")
    with pytest.raises(WriteRefused, match="a run's folder"):
        writable_target(job / "outputs/link/x.safetensors", suffix=LORA, roots=[home],
                        replace=True, keep_out=keep_out)  # fmt: skip


def test_resize_over_the_runs_final_lora_is_refused_whatever_is_ticked(home: Path) -> None:
    """The walk: "Save as" the run's own final LoRA, Resize: the rank-8 file must survive."""
    job = studio_job(home / "jobs", "1111aaaa2222bbbb", "my_lora", 8, 0)
    final = job / "lora" / "my_lora.safetensors"
    checkpoint = job / "checkpoints" / "step_00000010" / "lora" / "my_lora.safetensors"
    before = {final: final.read_bytes(), checkpoint: checkpoint.read_bytes()}
    at = utilities_on(final)
    for victim in (final, checkpoint):
        run(at.text_input(key="lu:rout").set_value(str(victim)))
        warnings = [w.value for w in at.warning]
        assert any("inside a run's folder" in w and "never write there" in w for w in warnings)
        assert any(f"Save under {home / 'outputs'}" in w for w in warnings), warnings
        # No "Replace the existing file" box to tick: no tick could let this through.
        assert not [c for c in at.checkbox if (c.key or "").startswith("lu:rout:replace")]
        run(at.button(key="lu:resize").click())
        assert any(e.startswith("Not saved:") and "a run's folder" in e for e in errors(at))
        assert not at.success
    assert {path: path.read_bytes() for path in before} == before  # byte-identical
    assert lora_tools.inspect(final)["ranks"] == {8: 2}


def test_a_lora_in_mlflows_store_gets_its_outputs_in_the_home(home: Path) -> None:
    logged = home / "mlartifacts" / "1" / "abc" / "artifacts" / "lora" / "logged.safetensors"
    logged.parent.mkdir(parents=True)
    kohya_file(logged, 4, 0)
    at = utilities_on(logged)
    proposal = home / "outputs" / "logged_resized.safetensors"
    assert at.text_input(key="lu:rout").value == str(proposal)
    run(at.button(key="lu:resize").click())
    assert any(f"Saved {proposal}" in s.value for s in at.success), errors(at)
    assert sorted(p.name for p in logged.parent.parent.rglob("*") if p.is_file()) == [
        "logged.safetensors"
    ]


def test_a_text_file_in_the_path_box_is_named_plainly(home: Path, tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    at = utilities_on(passwd)
    assert errors(at) == ["Not a LoRA file: passwd is not a .safetensors LoRA (it holds text)"]
    assert not at.button  # nothing to resize, convert or merge


# ------------------------------------------------------------------------ the command line
def test_the_cli_refuses_to_overwrite_without_force(tmp_path: Path, capsys) -> None:
    source = kohya_file(tmp_path / "a.safetensors", 8, 0)
    victim = tmp_path / "elsewhere" / "victim.safetensors"
    victim.parent.mkdir()
    victim.write_bytes(b"precious bytes")
    args = ["lora", "resize", str(source), "-o", str(victim), "--param", "2"]
    assert main(args) == 2
    out = capsys.readouterr().out
    assert f"{victim} exists" in out and "pass --force to replace it" in out, out
    assert victim.read_bytes() == b"precious bytes"
    assert main([*args, "--force"]) == 0  # anywhere the user says, with --force
    assert lora_tools.inspect(victim)["ranks"] == {2: 2}


def test_the_cli_refuses_a_wrong_extension_and_an_existing_pipeline(tmp_path: Path, capsys) -> None:
    source = kohya_file(tmp_path / "a.safetensors", 8, 0)
    text = tmp_path / "notes.txt"
    assert main(["lora", "convert", str(source), "--to", "webui", "-o", str(text)]) == 2
    assert "does not end in .safetensors" in capsys.readouterr().out
    assert not text.exists()
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    args = ["lora", "merge", str(source), "--into-base", "demo:sd15", "-o", str(pipeline)]
    assert main([*args, "--home", str(tmp_path / "no_home")]) == 2  # before any model loads
    out = capsys.readouterr().out
    assert "exists" in out and "--force" in out, out
    assert os.listdir(pipeline) == ["model_index.json"]
