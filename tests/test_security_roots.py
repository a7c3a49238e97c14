"""The server's files are not browsable from a studio served to a network (issue 16, item 7).

Served beyond loopback (Streamlit's ``server.address`` 0.0.0.0 here, not STUDIO_HOST), a dataset
folder, the utilities' path box and the "Local folder" import read only under the allowed roots
(the studio home and STUDIO_ALLOWED_FOLDERS): ``/etc`` is refused with a message naming them,
and the refusal is the same for a path that exists and one that does not. On 127.0.0.1 every
folder reads as before. The check itself: ``trainer.files.readable_path``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit import config
from streamlit.testing.v1 import AppTest
from ui_support import draft, go_to_step, new_app, open_page

from trainer.files import ReadRefused, readable_path
from trainer.settings import is_loopback, load_settings


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


# -------------------------------------------------------------------------- the check itself
def test_loopback_addresses() -> None:
    for address in ("127.0.0.1", "127.4.5.6", "::1", "[::1]", "localhost", " LOCALHOST "):
        assert is_loopback(address), address
    for address in ("", None, "0.0.0.0", "::", "192.168.1.20", "myhost", "unix:///tmp/s.sock"):
        assert not is_loopback(address), address


def test_readable_path_keeps_reads_under_the_roots(tmp_path: Path) -> None:
    home, other = tmp_path / "home", tmp_path / "shared"
    (home / "datasets" / "cats").mkdir(parents=True)
    other.mkdir()
    (home / "escape").symlink_to("/etc")
    roots = [home, other]
    assert readable_path(home / "datasets" / "cats", roots=roots) == home / "datasets" / "cats"
    assert readable_path(str(other), roots=roots) == other  # a root itself may be read
    assert readable_path(other / "not_yet", roots=roots) == other / "not_yet"
    refused = []
    for path in ("/etc", "/etc/passwd", "/no/such/folder", home / "escape", f"{home}/../../etc"):
        with pytest.raises(ReadRefused) as err:
            readable_path(path, roots=roots)
        refused.append(str(err.value))
        assert str(home) in str(err.value) and str(other) in str(err.value)
        assert "STUDIO_ALLOWED_FOLDERS" in str(err.value)
    # the same words whether the path exists or not: nothing is learnt about the server
    assert refused[0].replace("/etc", "X") == refused[2].replace("/no/such/folder", "X")
    assert readable_path("/etc", roots=None) == Path("/etc")  # loopback: as before
    assert readable_path("~/x", roots=None) == Path.home() / "x"
    with pytest.raises(ReadRefused):
        readable_path("  ", roots=None)


def test_allowed_folders_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_ALLOWED_FOLDERS", os.pathsep.join([str(tmp_path / "a"), " ", "~/b"]))
    settings = load_settings(home=tmp_path / "home")
    assert settings.read_roots == [tmp_path / "home", tmp_path / "a", Path.home() / "b"]
    monkeypatch.delenv("STUDIO_ALLOWED_FOLDERS")
    assert load_settings(home=tmp_path / "home").read_roots == [tmp_path / "home"]


# ------------------------------------------------------------------------------ the pages
@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("STUDIO_ALLOWED_FOLDERS", raising=False)
    monkeypatch.delenv("STUDIO_HOST", raising=False)
    return tmp_path / "home"


def run(target) -> AppTest:
    at = target.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def shown(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "text", "code"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def refuses(at: AppTest, path: str, home: Path) -> bool:
    text = errors(at)
    return f"{path} is outside the folders" in text and str(home) in text


def test_dataset_folder_outside_the_roots_is_refused(home: Path, served_publicly: None) -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    run(at.text_input(key="cfg:datasets.0.folder_path").set_value("/etc"))
    assert refuses(at, "/etc", home), errors(at)
    assert "passwd" not in shown(at) and "Folder not found" not in shown(at)
    assert not [m for m in at.metric if m.label == "Images"]  # nothing was analysed
    run(at.text_input(key="cfg:datasets.0.folder_path").set_value("/no/such/folder"))
    assert refuses(at, "/no/such/folder", home) and "Folder not found" not in shown(at)


def test_dataset_folder_under_an_allowed_folder_is_analysed(
    home: Path, tmp_path: Path, served_publicly: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    for i in range(2):
        (shared / f"img{i}.png").write_bytes(png(i))
    monkeypatch.setenv("STUDIO_ALLOWED_FOLDERS", str(shared))
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    run(at.text_input(key="cfg:datasets.0.folder_path").set_value(str(shared)))
    if "wiz:analyse:0" in {b.key for b in at.button}:  # the advisor has not scanned yet
        run(at.button(key="wiz:analyse:0").click())
    assert not errors(at)
    assert {m.label: m.value for m in at.metric}["Images"] == "2"


def test_on_loopback_any_folder_is_read_as_before(home: Path, tmp_path: Path) -> None:
    assert config.get_option("server.address") == "127.0.0.1"  # .streamlit/config.toml
    at = open_page("pages/wizard.py")
    go_to_step(at, "dataset")
    run(at.text_input(key="cfg:datasets.0.folder_path").set_value(str(tmp_path / "nothing")))
    assert "Folder not found" in shown(at) and "outside the folders" not in errors(at)
    assert draft(at)["datasets"][0]["folder_path"] == str(tmp_path / "nothing")


def _import_folder(folder: str) -> AppTest:
    at = new_app()
    run(at.switch_page("pages/datasets.py"))
    at.text_input(key="dsm:name").set_value("copied")
    run(at.radio(key="dsm:source").set_value("Local folder"))
    at.text_input(key="dsm:folder").set_value(folder)
    return run(at.button(key="dsm:create").click())


def test_local_folder_import_outside_the_roots_is_refused(
    home: Path, served_publicly: None
) -> None:
    at = _import_folder("/etc")
    assert refuses(at, "/etc", home), errors(at)
    assert not (home / "datasets" / "copied").exists() and not at.success


def test_local_folder_import_reads_as_before_on_loopback(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.png").write_bytes(png(0))
    at = _import_folder(str(source))
    assert "Created copied: 1 images, 0 captions." in [s.value for s in at.success]
    assert (home / "datasets" / "copied" / "a.png").is_file()


def test_utilities_path_box_tells_nothing_outside_the_roots(
    home: Path, served_publicly: None
) -> None:
    at = new_app()
    run(at.switch_page("pages/utilities.py"))
    run(at.text_input(key="lu:main:path").set_value("/etc/passwd"))
    exists = errors(at)
    run(at.text_input(key="lu:main:path").set_value("/etc/no_such_file"))
    missing = errors(at)
    assert refuses(at, "/etc/no_such_file", home)
    assert exists.replace("passwd", "X") == missing.replace("no_such_file", "X")
    assert "does not exist" not in missing and "not a LoRA" not in exists
    assert not at.metric  # nothing inspected


def test_utilities_path_box_on_loopback_as_before(home: Path) -> None:
    at = new_app()
    run(at.switch_page("pages/utilities.py"))
    run(at.text_input(key="lu:main:path").set_value("/etc/no_such_file"))
    assert "does not exist" in errors(at)


def test_home_names_the_real_address_and_the_roots(home: Path, served_publicly: None) -> None:
    at = open_page("pages/home.py")
    warning = " ".join(w.value for w in at.warning)
    assert "0.0.0.0" in warning and str(home) in warning and "STUDIO_ALLOWED_FOLDERS" in warning
