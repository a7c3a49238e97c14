"""Hub models with the real huggingface_hub client against the local fake Hub: what a run
needs and what it skips, cache status before and after, progress, a dropped connection that
resumes, cancel and resume of a background download, gated repos and the token store."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["hub_server"]  # the fixtures: hub_server, hub_env

from hub_server import (  # noqa: E402
    EXTRA_FILES,
    FLUX_REPO,
    GATED_REPO,
    PUBLIC_REPO,
    TOKEN_WITH_ACCESS,
    TOKEN_WITHOUT_ACCESS,
    HubEnv,
)

from trainer.models.fetch import (  # noqa: E402
    ModelNotAvailable,
    download_error_message,
    download_plan,
    ensure_snapshot,
)
from trainer.models.hub import (  # noqa: E402
    FOUND,
    NOT_FOUND,
    OFFLINE,
    cache_status,
    inspect_repo,
)
from trainer.models.token import SignInError, repo_access, sign_in, signed_in_user  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UNET = "unet/diffusion_pytorch_model.safetensors"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source(hub: HubEnv, repo: str, path: str) -> Path:
    return hub.server.repos[repo].files[path].source


def test_plan_names_only_what_a_run_loads(hub_env: HubEnv) -> None:
    check = inspect_repo(PUBLIC_REPO, "sd15")
    assert check.state == FOUND and check.detected_arch == "sd15"
    assert check.license == "openrail" and not check.gated
    plan = check.plan
    assert plan is not None and plan.missing_components == () and plan.variant is None
    assert "model_index.json" in plan.paths and UNET in plan.paths
    assert not set(EXTRA_FILES) & set(plan.paths)
    assert set(EXTRA_FILES) <= {f.path for f in plan.skipped}
    for folder in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert any(p.startswith(folder + "/") for p in plan.paths), folder
    sizes = {p: _source(hub_env, PUBLIC_REPO, p).stat().st_size for p in plan.paths}
    assert plan.total_bytes == sum(sizes.values())


def test_unknown_repo_and_wrong_arch_are_said(hub_env: HubEnv) -> None:
    assert inspect_repo("studio-test/no-such-model", "sd15").state == NOT_FOUND
    flux_as_sd15 = inspect_repo(FLUX_REPO, "sd15")
    assert flux_as_sd15.detected_arch == "flux"
    assert flux_as_sd15.plan is not None and "unet" in flux_as_sd15.plan.missing_components


def test_offline_asks_nothing(hub_env: HubEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    assert inspect_repo(PUBLIC_REPO, "sd15").state == OFFLINE
    assert hub_env.server.requests == []


def test_download_reports_progress_and_fills_the_cache(hub_env: HubEnv) -> None:
    plan = inspect_repo(PUBLIC_REPO, "sd15").plan
    before = cache_status(plan)
    assert before.cached_bytes == 0 and not before.complete
    hub_env.server.throttle(plan.total_bytes / 1.5)  # about 1.5 s in all
    readings = []
    folder = download_plan(plan, on_progress=readings.append, poll_s=0.1)
    after = cache_status(plan)
    assert after.complete and after.cached_bytes == plan.total_bytes
    assert readings[-1].state == "done" and readings[-1].bytes_done == plan.total_bytes
    moving = [r.bytes_done for r in readings if r.state == "downloading"]
    assert len(moving) >= 3 and moving == sorted(moving) and moving[0] < plan.total_bytes
    assert any(r.speed_bps > 0 and r.eta_s is not None for r in readings[:-1])
    for path in plan.paths:
        assert _sha(folder / path) == _sha(_source(hub_env, PUBLIC_REPO, path))
    fetched = set(hub_env.server.downloaded(PUBLIC_REPO))
    assert fetched == set(plan.paths)  # nothing skipped was fetched


def test_a_dropped_connection_resumes_to_identical_files(hub_env: HubEnv) -> None:
    plan = inspect_repo(PUBLIC_REPO, "sd15").plan
    size = next(f.size for f in plan.files if f.path == UNET)
    hub_env.server.drop_after(UNET, size // 2)
    folder = download_plan(plan)
    assert _sha(folder / UNET) == _sha(_source(hub_env, PUBLIC_REPO, UNET))
    unet_gets = [r for r in hub_env.server.file_requests(PUBLIC_REPO) if r.path.endswith(UNET)]
    assert len(unet_gets) == 2 and unet_gets[1].headers.get("range", "").startswith("bytes=")
    assert cache_status(plan).complete


def test_gated_repo_needs_a_token_with_access(hub_env: HubEnv) -> None:
    check = inspect_repo(GATED_REPO, "sd15")
    assert check.gated and check.page_url.endswith(GATED_REPO)
    with pytest.raises(Exception) as refused:
        download_plan(check.plan)
    message = download_error_message(GATED_REPO, refused.value)
    assert "gated" in message and "licence" in message and check.page_url in message
    assert repo_access(GATED_REPO).allowed is False

    assert sign_in(TOKEN_WITHOUT_ACCESS) == "bob"
    access = repo_access(GATED_REPO)
    assert access.allowed is False and "accepted the licence" in access.message

    assert sign_in(TOKEN_WITH_ACCESS) == "alice"
    assert signed_in_user() == "alice" and repo_access(GATED_REPO).allowed is True
    assert stat.S_IMODE(hub_env.token_path.stat().st_mode) == 0o600
    assert hub_env.token_path.read_text().strip() == TOKEN_WITH_ACCESS
    folder = download_plan(check.plan)
    assert _sha(folder / UNET) == _sha(_source(hub_env, GATED_REPO, UNET))


def test_a_refused_token_is_not_stored_or_echoed(hub_env: HubEnv) -> None:
    with pytest.raises(SignInError) as refused:
        sign_in("hf_not_a_real_token")
    assert "401" in str(refused.value) and "hf_not_a_real_token" not in str(refused.value)
    assert not hub_env.token_path.exists()


def test_ensure_snapshot_downloads_then_works_offline(
    hub_env: HubEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    folder, variant = ensure_snapshot(PUBLIC_REPO, "sd15", log=lines.append)
    assert variant is None and (folder / UNET).is_file()
    assert lines and lines[0].startswith(f"Downloading {PUBLIC_REPO}")
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    offline_folder, _ = ensure_snapshot(PUBLIC_REPO, "sd15", log=lines.append)
    assert (offline_folder / UNET).read_bytes() == (folder / UNET).read_bytes()
    with pytest.raises(ModelNotAvailable, match="not in the local Hugging Face cache"):
        ensure_snapshot(FLUX_REPO, "flux")


def test_cli_info_and_download(hub_env: HubEnv) -> None:
    env = hub_env.subprocess_env()

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "trainer", "model", *args]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    info = cli("info", PUBLIC_REPO)
    assert info.returncode == 0, info.stderr
    assert "architecture: sd15" in info.stdout and "cached: 0 B of" in info.stdout
    assert f"not downloaded: {len(EXTRA_FILES)} other files" in info.stdout
    got = cli("download", PUBLIC_REPO)
    assert got.returncode == 0, got.stderr
    assert "download" in got.stderr and "100%" in got.stderr  # tqdm's bar on stderr
    assert "(complete)" in cli("info", PUBLIC_REPO).stdout
    missing = cli("info", "studio-test/nothing-here")
    assert missing.returncode == 1 and "not_found" in missing.stdout


def test_background_download_cancels_cleanly_and_resumes(
    hub_env: HubEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.jobs.downloads import (
        cancel_download,
        download_state,
        start_download,
        wait_for_download,
    )
    from trainer.settings import load_settings

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    settings = load_settings()
    plan = inspect_repo(PUBLIC_REPO, "sd15").plan
    hub_env.server.throttle(60_000, UNET)  # the UNet takes seconds: time to cancel mid-file
    start_download(settings, PUBLIC_REPO, "sd15", env=hub_env.subprocess_env())
    deadline = time.time() + 60
    while time.time() < deadline:
        state = download_state(settings, PUBLIC_REPO) or {}
        if state.get("state") == "downloading" and state.get("bytes_done", 0) > 0:
            break
        time.sleep(0.2)
    assert state.get("state") == "downloading", state
    assert cancel_download(settings, PUBLIC_REPO)
    assert wait_for_download(PUBLIC_REPO, 30) is not None
    cancelled = download_state(settings, PUBLIC_REPO)
    assert cancelled["state"] == "cancelled" and "complete are kept" in cancelled["message"]
    halfway = cache_status(plan)
    assert 0 < halfway.files_cached < halfway.files_total
    snapshot = hub_env.cache_dir / f"models--{PUBLIC_REPO.replace('/', '--')}" / "snapshots"
    assert not list(snapshot.glob(f"*/{UNET}"))  # no half file where a loader looks
    blobs = hub_env.cache_dir / f"models--{PUBLIC_REPO.replace('/', '--')}" / "blobs"
    kept = {f.path for f in plan.files if (blobs / f.etag).is_file()}

    hub_env.server.reset()
    start_download(settings, PUBLIC_REPO, "sd15", env=hub_env.subprocess_env())
    assert wait_for_download(PUBLIC_REPO, 60) == 0
    done = download_state(settings, PUBLIC_REPO)
    assert done["state"] == "done" and done["bytes_done"] == plan.total_bytes
    assert cache_status(plan).complete
    files = list(snapshot.glob(f"*/{UNET}"))
    assert files and _sha(files[0]) == _sha(_source(hub_env, PUBLIC_REPO, UNET))
    refetched = set(hub_env.server.downloaded(PUBLIC_REPO))
    assert UNET in refetched and not refetched & kept  # complete files were not fetched again
    assert not list(blobs.glob("*.incomplete"))  # the cancelled file's leftovers are gone


def test_a_hub_id_trains_from_only_the_files_it_needs(
    hub_env: HubEnv, demo_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer loads a Hub id through the plan (extras never fetched), names it by id and
    commit, and trains; offline it trains from the cache without a request."""
    import torch
    from options_support import run, tiny_config

    from trainer.arch.registry import load_arch

    cfg = tiny_config(model={"arch": "sd15", "name_or_path": PUBLIC_REPO})
    outcome, record = run(cfg, demo_home, hub_env.hf_home.parent / "job")
    assert outcome.step == 2 and all(0 < loss < 10 for loss in record.losses())
    assert set(hub_env.server.downloaded(PUBLIC_REPO)) == set(
        inspect_repo(PUBLIC_REPO, "sd15").plan.paths
    )
    hub_env.server.reset()
    monkeypatch.setenv("STUDIO_OFFLINE", "1")
    arch = load_arch(cfg, demo_home, torch.device("cpu"), torch.float32)
    assert arch.model_path.startswith(f"{PUBLIC_REPO}@") and hub_env.server.requests == []


def test_a_flux_file_takes_only_configs_and_the_rest_from_a_hub_id(
    hub_env: HubEnv, demo_home: Path, tmp_path: Path
) -> None:
    """components_from as a Hub id: the transformer's weights come from the file, so only its
    config is downloaded; the VAE and text encoders come whole."""
    import torch
    from single_file_support import write_flux_transformer

    from trainer.arch.registry import load_arch
    from trainer.config.schema import TrainingConfig
    from trainer.demo.tiny import ensure_demo

    file = write_flux_transformer(ensure_demo(demo_home, "flux"), tmp_path / "flux1.safetensors")
    cfg = TrainingConfig.model_validate(
        {
            "model": {"arch": "flux", "name_or_path": str(file), "components_from": FLUX_REPO},
            "network": {"linear": 4, "linear_alpha": 4},
        }
    )
    arch = load_arch(cfg, demo_home, torch.device("cpu"), torch.float32)
    fetched = hub_env.server.downloaded(FLUX_REPO)
    assert "transformer/config.json" in fetched and "vae/config.json" in fetched
    assert not [p for p in fetched if p.startswith("transformer/") and "safetensors" in p]
    assert any(p.startswith("vae/") and p.endswith(".safetensors") for p in fetched)
    assert arch.denoiser is not None
