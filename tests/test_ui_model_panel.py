"""The Hub model panel, sign-in, model card and download in AppTest, against the local fake Hub
(tests/hub_server.py): what a run downloads, the cache, gated access, progress, Review."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from ui_support import all_nodes, draft, go_to_step, keys, open_page, texts, widget

pytest.register_assert_rewrite("hub_server")  # before the import: no "already imported"
pytest_plugins = ["hub_server"]  # the fixtures: hub_server, hub_env

from hub_server import (  # noqa: E402
    EXTRA_FILES,
    GATED_REPO,
    PUBLIC_REPO,
    TOKEN_WITH_ACCESS,
    TOKEN_WITHOUT_ACCESS,
    HubEnv,
)

from trainer.jobs import downloads  # noqa: E402
from trainer.models.hub import CacheStatus, format_bytes  # noqa: E402
from ui.model_panel import cache_text, progress_text, vram_class  # noqa: E402
from ui.summary import gb_text  # noqa: E402

SD15_NEEDS = ("model_index.json", "unet/", "vae/", "text_encoder/", "tokenizer/", "scheduler/")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    st.cache_data.clear()  # the Hub answers and the account are cached across AppTests
    return tmp_path / "home"


def hub_model(at, repo_id: str):
    go_to_step(at, "model")
    widget(at, "wiz:model_source").set_value("hub").run()
    at.text_input(key="cfg:model.name_or_path").set_value(repo_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def progress_texts(at) -> list[str]:
    """The download progress bars' texts (the wizard's step bar left out)."""
    bars = [n.proto.text for n in all_nodes(at) if getattr(n, "type", "") == "progress"]
    return [text for text in bars if not text.startswith("Step ")]


def repo_sizes(hub_env: HubEnv, repo_id: str) -> tuple[int, int, int]:
    """(files a sd15 run needs, their bytes, bytes of the files it skips), from the server."""
    files = hub_env.server.repos[repo_id].files
    needed = [f for p, f in files.items() if p.startswith(SD15_NEEDS) and p not in EXTRA_FILES]
    skipped = sum(files[p].size for p in EXTRA_FILES)
    return len(needed), sum(f.size for f in needed), skipped


def wait_until_stopped(repo_id: str, timeout: float = 60) -> dict[str, Any]:
    from trainer.settings import load_settings

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = downloads.download_state(load_settings(), repo_id) or {}
        if state.get("state") not in downloads.RUNNING_STATES:
            return state
        time.sleep(0.1)
    raise AssertionError(f"the download of {repo_id} did not stop in {timeout} s")


# ----------------------------------------------------------------------------- words (pure)
def test_cache_words_say_how_much_is_cached() -> None:
    assert cache_text(CacheStatus(0, 0, 4_300_000_000, 0, 9)) == "not cached"
    partly = CacheStatus(3_200_000_000, 10_000, 4_300_000_000, 5, 9)
    assert cache_text(partly) == "3.2 GB of 4.3 GB cached"
    assert cache_text(CacheStatus(4_300_000_000, 0, 4_300_000_000, 9, 9)) == "cached (all 9 files)"


def test_progress_words_have_bytes_speed_eta_and_files() -> None:
    running = {
        "state": "downloading",
        "bytes_done": 1_200_000_000,
        "bytes_total": 4_300_000_000,
        "files_done": 3,
        "files_total": 9,
        "speed_bps": 25_000_000,
        "eta_s": 124,
    }
    assert progress_text(running) == "1.2 GB of 4.3 GB · 25.0 MB/s · about 2 min left · files 3/9"
    assert progress_text({"state": "starting"}) == "Starting the download..."


def test_vram_class_names_the_smallest_card_with_room() -> None:
    assert vram_class(9.0) == "fits a 10 GB card"
    assert vram_class(10.1) == "fits a 12 GB card"
    assert vram_class(23.0) == "fits a 24 GB card"
    assert vram_class(0.2) == "fits any GPU, or runs on a CPU"
    assert vram_class(500) == "more than any single card: use offloading or quantization"


# ------------------------------------------------------------------------------- model step
def test_the_panel_says_what_a_run_downloads_and_what_is_cached(hub_env: HubEnv) -> None:
    at = hub_model(open_page("pages/wizard.py"), PUBLIC_REPO)
    count, needed, skipped = repo_sizes(hub_env, PUBLIC_REPO)
    shown = texts(at)
    assert "**Found** on the Hugging Face Hub" in shown
    assert f"A run needs {count} files, {format_bytes(needed)}" in shown
    assert f"{len(EXTRA_FILES)} other files of the repository ({format_bytes(skipped)})" in shown
    assert "**In the local cache:** not cached" in shown
    assert "**Not gated:**" in shown and "**Licence:** openrail" in shown
    assert f"`{hub_env.cache_dir}`" in shown and "GB free" in shown
    assert f"{format_bytes(needed)} to download** (of {format_bytes(needed)})" in shown
    # every file the run downloads is listed, and the skipped ones apart
    assert "`unet/diffusion_pytorch_model.safetensors`" in shown
    assert "`v1-5-pruned.safetensors`" in shown  # under "Not downloaded"
    assert at.button(key="wiz:download").label == f"Download {format_bytes(needed)}"
    # the model card and the advisor column's disk line carry the download too
    assert "- **Native resolution:** 512 px" in shown
    assert (
        f"- **Download:** {format_bytes(needed)} left to download (of {format_bytes(needed)})"
        in shown
    )
    assert "- **Licence:** openrail" in shown and "- **Gated:** no" in shown
    assert f"+ {format_bytes(needed)} model download to `{hub_env.cache_dir}`" in shown
    assert "is not downloaded yet" in shown  # the advisor's blocking finding


def test_the_model_card_uses_the_advisors_vram_prediction() -> None:
    at = open_page("pages/wizard.py")
    go_to_step(at, "model")
    widget(at, "cfg:model.arch").set_value("sdxl").run()
    rows = dict(  # the card's "- **what:** value" lines
        line.removeprefix("- **").split(":** ", 1)
        for line in texts(at).splitlines()
        if line.startswith("- **") and ":** " in line
    )
    tiny = "64 px: the tiny demo's size (the real SDXL trains at 1024 px)"
    assert rows["Native resolution"] == tiny  # the demo SDXL: tiny, no download
    assert rows["Download"] == "none: built on this machine"
    prediction = at.session_state["_studio_context"][1].prediction
    if prediction.vram_available_gb is None:  # this machine has no GPU: the RAM, not "0.0 GB"
        ram = rows[next(k for k in rows if k.startswith("LoRA training memory"))]
        assert ram.endswith(" RAM") and "0.0 GB" not in ram
        assert not [k for k in rows if k.startswith("LoRA training VRAM")]
    else:
        vram = prediction.vram_gb
        assert rows[next(k for k in rows if k.startswith("LoRA training VRAM"))] == (
            f"needs about {gb_text(vram)}: {vram_class(vram)}"
        )
    at.text_input(key="cfg:model.name_or_path").set_value("owner/model").run()  # offline: real
    shown = texts(at)
    assert "- **Native resolution:** 1024 px" in shown
    assert "2.57 B denoiser + 0.82 B in 2 text encoders" in shown


def test_offline_with_a_cached_copy_uses_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--owner--cached" / "snapshots" / "abc123"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (snapshot / part).mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (tmp_path / "hub" / "models--owner--cached" / "refs").mkdir()
    (tmp_path / "hub" / "models--owner--cached" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    at = hub_model(open_page("pages/wizard.py"), "owner/cached")
    shown = texts(at)
    assert "**Offline:**" in shown and f"**A cached copy is used:** `{snapshot}`" in shown
    assert "The Hub was not asked (offline); the cached copy is used." in shown
    assert "- **Licence:** unknown (the Hub was not asked)" in shown
    assert "wiz:download" not in keys(at)
    at.text_input(key="cfg:model.name_or_path").set_value("owner/elsewhere").run()
    assert "**No cached copy on this machine:**" in texts(at)
    assert "- **Download:** — (no loadable model yet)" in texts(at)


def test_progress_cancel_and_resume_read_the_download_state(
    hub_env: HubEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = hub_model(open_page("pages/wizard.py"), PUBLIC_REPO)
    progress = {
        "state": "downloading",
        "bytes_done": 1_500_000,
        "bytes_total": 3_000_000,
        "files_done": 4,
        "files_total": 11,
        "speed_bps": 2_000_000,
        "eta_s": 1,
    }
    cancelled: list[str] = []
    monkeypatch.setattr(downloads, "download_state", lambda settings, repo_id: dict(progress))
    monkeypatch.setattr(downloads, "cancel_download", lambda s, r: cancelled.append(r) or True)
    at.run()
    assert progress_texts(at) == [
        "Downloading: 1.5 MB of 3.0 MB · 2.0 MB/s · about 1 s left · files 4/11"
    ]
    assert "wiz:download" not in keys(at)
    at.button(key="wiz:cancel").click().run()
    assert cancelled == [PUBLIC_REPO]
    progress.update(state="cancelled", message="cancelled by the user")
    at.run()
    assert progress_texts(at) == [] and "wiz:cancel" not in keys(at)  # no polling any more
    assert "**Download cancelled.** Files already complete are kept" in texts(at)
    assert at.button(key="wiz:download").label == "Resume download"


def test_a_reloaded_studio_shows_the_running_download(hub_env: HubEnv, home: Path) -> None:
    from trainer.files import write_json
    from trainer.settings import load_settings

    folder = downloads.download_dir(load_settings(), PUBLIC_REPO)
    folder.mkdir(parents=True)
    running = {"state": "downloading", "repo_id": PUBLIC_REPO, "bytes_done": 2_000_000}
    write_json(folder / "progress.json", running | {"bytes_total": 8_000_000, "eta_s": 30})
    (folder / "pid").write_text(str(os.getpid()))  # a live process stands in for the download
    at = hub_model(open_page("pages/wizard.py"), PUBLIC_REPO)  # a new session: a reload
    assert progress_texts(at) == ["Downloading: 2.0 MB of 8.0 MB · about 30 s left"]
    assert "wiz:cancel" in keys(at) and "wiz:download" not in keys(at)
    (folder / "pid").write_text("999999999")  # the process is gone: interrupted, resumable
    at.run()
    assert progress_texts(at) == []
    assert "**Download interrupted:**" in texts(at)
    assert at.button(key="wiz:download").label == "Resume download"


def test_download_button_fetches_the_model_and_unblocks_it(hub_env: HubEnv) -> None:
    at = hub_model(open_page("pages/wizard.py"), PUBLIC_REPO)
    _, needed, _ = repo_sizes(hub_env, PUBLIC_REPO)
    at.button(key="wiz:download").click().run()
    assert wait_until_stopped(PUBLIC_REPO)["state"] == "done"
    assert downloads.wait_for_download(PUBLIC_REPO, 10) == 0
    at.run()
    shown = texts(at)
    assert "**In the local cache:** cached (all" in shown
    assert "**Cached:** ready to train, nothing to download." in shown
    assert f"On the Hugging Face Hub and cached ({format_bytes(needed)}): ready." in shown
    assert f"- **Download:** none: cached ({format_bytes(needed)})" in shown
    assert "is not downloaded yet" not in shown and "model download to" not in shown
    assert "wiz:download" not in keys(at)


# ------------------------------------------------------------------------------------ sign-in
def test_gated_model_sign_in_keeps_no_token_in_the_session(hub_env: HubEnv) -> None:
    at = hub_model(open_page("pages/wizard.py"), GATED_REPO)
    shown = texts(at)
    assert "**Gated:**" in shown and "this account **has no access yet**" in shown
    assert f"[the model page]({hub_env.endpoint}/{GATED_REPO})" in shown
    assert at.button(key="wiz:download").disabled
    assert f"{hub_env.endpoint}/settings/tokens" in shown
    at.text_input(key="wiz:hub:token").set_value("hf_not_a_real_token")
    at.button(key="wiz:hub:sign_in").click().run()
    assert "**Not signed in:** The Hub refused this token (HTTP 401)" in texts(at)
    assert at.session_state["wiz:hub:token"] == ""
    at.text_input(key="wiz:hub:token").set_value(TOKEN_WITHOUT_ACCESS)
    at.button(key="wiz:hub:sign_in").click().run()
    assert "signed in as **bob**, who **has no access yet**" in texts(at)
    assert "bob (signed in) has no access yet" in texts(at)  # the blocking finding agrees
    at.button(key="wiz:hub:sign_out").click().run()
    at.text_input(key="wiz:hub:token").set_value(TOKEN_WITH_ACCESS)
    at.button(key="wiz:hub:sign_in").click().run()
    shown = texts(at)
    assert "**Signed in to Hugging Face as alice**" in shown
    assert "**alice** has access" in shown
    assert not at.button(key="wiz:download").disabled
    assert "wiz:hub:token" not in keys(at)
    assert TOKEN_WITH_ACCESS not in repr(at.session_state.to_dict())
    assert hub_env.token_path.read_text().strip() == TOKEN_WITH_ACCESS
    assert os.stat(hub_env.token_path).st_mode & 0o777 == 0o600
    at.button(key="wiz:hub:sign_out").click().run()
    assert not hub_env.token_path.exists()
    assert "this account **has no access yet**" in texts(at)
    assert "wiz:hub:token" in keys(at)


def test_preflight_offers_the_sign_in_beside_the_hub_status(hub_env: HubEnv) -> None:
    at = open_page("pages/preflight.py")
    assert "Reachable" in texts(at)
    at.text_input(key="pf:hub:token").set_value(TOKEN_WITH_ACCESS)
    at.button(key="pf:hub:sign_in").click().run()
    assert "**Signed in to Hugging Face as alice**" in texts(at)
    assert "pf:hub:token" not in keys(at) and "pf:hub:sign_out" in keys(at)
    assert TOKEN_WITH_ACCESS not in repr(at.session_state.to_dict())


# ------------------------------------------------------------------------------------- review
def test_review_offers_the_download_beside_the_blocking_finding(hub_env: HubEnv) -> None:
    at = hub_model(open_page("pages/wizard.py"), PUBLIC_REPO)
    assert draft(at)["model"]["name_or_path"] == PUBLIC_REPO
    _, needed, _ = repo_sizes(hub_env, PUBLIC_REPO)
    at.switch_page("pages/review.py").run()
    shown = texts(at)
    assert "is not downloaded yet" in shown and at.button(key="rv:launch").disabled
    assert f"for the run + {format_bytes(needed)} model download to `{hub_env.cache_dir}`" in shown
    at.button(key="rv:model:download").click().run()
    assert wait_until_stopped(PUBLIC_REPO)["state"] == "done"
    at.run()
    assert "is not downloaded yet" not in texts(at)
    assert "rv:model:download" not in keys(at)
    assert not at.button(key="rv:launch").disabled
