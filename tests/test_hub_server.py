"""The fake Hub (tests/fake_hub.py, fixtures in tests/hub_server.py) against the real
``huggingface_hub`` client: model info, snapshots, errors, gated repos, tokens, faults."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

pytest.register_assert_rewrite("hub_server")  # before the import: no "already imported"
pytest_plugins = ["hub_server"]  # the fixtures: hub_server, hub_env

from hub_server import (  # noqa: E402
    BIN_TWIN,
    EXTRA_FILES,
    FLUX_REPO,
    FP16_VARIANT,
    GATED_REPO,
    PUBLIC_REPO,
    SINGLE_FILE,
    TOKEN_WITH_ACCESS,
    TOKEN_WITHOUT_ACCESS,
    HubEnv,
)

UNET = "unet/diffusion_pytorch_model.safetensors"


def source_of(hub_env: HubEnv, repo_id: str, path: str) -> Path:
    return hub_env.server.repos[repo_id].files[path].source


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_hub_env_points_the_client_at_the_server(hub_env: HubEnv) -> None:
    assert hub_env.endpoint == constants.ENDPOINT and not constants.is_offline_mode()
    assert Path(constants.HF_HUB_CACHE) == hub_env.cache_dir
    assert Path(constants.HF_TOKEN_PATH) == hub_env.token_path
    env = hub_env.subprocess_env({"STUDIO_OFFLINE": "1", "HF_TOKEN": "x", "PATH": "/bin"})
    assert "STUDIO_OFFLINE" not in env and "HF_TOKEN" not in env and env["PATH"] == "/bin"
    assert env["HF_ENDPOINT"] == hub_env.endpoint and env["HF_HUB_OFFLINE"] == "0"
    code = f"from huggingface_hub import model_info; print(model_info({FLUX_REPO!r}).sha)"
    done = subprocess.run(
        [sys.executable, "-c", code], env=hub_env.subprocess_env(), capture_output=True, text=True
    )
    assert done.stdout.strip() == hub_env.server.repos[FLUX_REPO].sha, done.stderr


def test_model_info_lists_siblings_with_sizes_and_lfs_hashes(hub_env: HubEnv) -> None:
    repo = hub_env.server.repos[PUBLIC_REPO]
    info = HfApi().model_info(PUBLIC_REPO, files_metadata=True)
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha) and info.sha == repo.sha
    assert info.gated is False and info.private is False
    assert info.card_data.license == "openrail"
    assert "diffusers:StableDiffusionPipeline" in info.tags
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(repo.files)
    assert {UNET, "model_index.json", *EXTRA_FILES} <= set(siblings)
    for name, sibling in siblings.items():
        assert sibling.size == source_of(hub_env, PUBLIC_REPO, name).stat().st_size, name
    assert siblings[UNET].lfs.sha256 == sha256_of(source_of(hub_env, PUBLIC_REPO, UNET))
    assert siblings[UNET].lfs.size == siblings[UNET].size
    index = source_of(hub_env, PUBLIC_REPO, "model_index.json").read_bytes()
    assert siblings["model_index.json"].lfs is None
    assert (
        siblings["model_index.json"].blob_id
        == hashlib.sha1(b"blob %d\0" % len(index) + index).hexdigest()
    )
    # The module-level helpers (a HfApi made at import) reach the server too; no sizes unasked.
    plain = huggingface_hub.model_info(PUBLIC_REPO)
    assert plain.sha == repo.sha and all(s.size is None for s in plain.siblings)
    assert huggingface_hub.model_info(GATED_REPO).gated == "manual"
    assert "diffusers:FluxPipeline" in huggingface_hub.model_info(FLUX_REPO).tags


def test_snapshot_download_fetches_exactly_the_allowed_files(hub_env: HubEnv) -> None:
    allow = ["model_index.json", "scheduler/*", "unet/config.json", UNET]
    folder = Path(snapshot_download(PUBLIC_REPO, allow_patterns=allow))
    assert folder.is_relative_to(hub_env.cache_dir)
    repo_files = hub_env.server.repos[PUBLIC_REPO].files
    expected = {p for p in repo_files if any(fnmatch.fnmatch(p, pattern) for pattern in allow)}
    local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert local == expected == {"model_index.json", "scheduler/scheduler_config.json",
                                 "unet/config.json", UNET}  # fmt: skip
    for name in expected:
        assert (folder / name).read_bytes() == source_of(hub_env, PUBLIC_REPO, name).read_bytes()
    fetched = hub_env.server.downloaded(PUBLIC_REPO)
    assert sorted(fetched) == sorted(expected)  # each once, nothing else
    assert not {FP16_VARIANT, BIN_TWIN, SINGLE_FILE} & set(fetched)
    assert not [r for r in hub_env.server.requests if "xet" in r.path.lower()]


def test_unknown_repo_revision_and_file_raise_the_clients_errors(hub_env: HubEnv) -> None:
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("studio-test/no-such-model")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("studio-test/no-such-model", "model_index.json")
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(PUBLIC_REPO, revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(PUBLIC_REPO, "unet/missing.safetensors")
    folder = source_of(hub_env, FLUX_REPO, "model_index.json").parent
    hub_env.server.add_repo("studio-test/private", folder, private=True)
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("studio-test/private", token=TOKEN_WITH_ACCESS)
    hub_env.server.add_token("hf_test_carol", "carol", ["studio-test/private"])
    assert HfApi().model_info("studio-test/private", token="hf_test_carol").private is True


def test_gated_repo_needs_a_token_that_accepted_the_licence(hub_env: HubEnv) -> None:
    with pytest.raises(GatedRepoError) as no_token:
        hf_hub_download(GATED_REPO, "model_index.json")
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as pending:
        hf_hub_download(GATED_REPO, "model_index.json", token=TOKEN_WITHOUT_ACCESS)
    assert pending.value.response.status_code == 403
    with pytest.raises(GatedRepoError):
        snapshot_download(GATED_REPO, allow_patterns=["model_index.json"])
    with pytest.raises(GatedRepoError):
        HfApi().auth_check(GATED_REPO, token=TOKEN_WITHOUT_ACCESS)
    HfApi().auth_check(GATED_REPO, token=TOKEN_WITH_ACCESS)
    HfApi().auth_check(PUBLIC_REPO)

    path = hf_hub_download(GATED_REPO, "model_index.json", token=TOKEN_WITH_ACCESS)
    assert (
        Path(path).read_bytes() == source_of(hub_env, GATED_REPO, "model_index.json").read_bytes()
    )
    hub_env.server.grant_access(TOKEN_WITHOUT_ACCESS, GATED_REPO)  # bob's request is approved
    hf_hub_download(GATED_REPO, "unet/config.json", token=TOKEN_WITHOUT_ACCESS)
    assert all("authorization" not in r.headers for r in hub_env.server.requests)


def test_whoami_and_login_store_the_token_in_hf_home(hub_env: HubEnv) -> None:
    me = huggingface_hub.whoami(token=TOKEN_WITH_ACCESS)
    assert me["name"] == "alice" and me["type"] == "user"
    assert me["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as bogus:
        huggingface_hub.whoami(token="hf_not_a_token")
    assert bogus.value.response.status_code == 401

    huggingface_hub.login(token=TOKEN_WITH_ACCESS)
    assert hub_env.token_path.read_text().strip() == TOKEN_WITH_ACCESS
    assert (hub_env.hf_home / "stored_tokens").is_file()
    assert huggingface_hub.get_token() == TOKEN_WITH_ACCESS
    assert huggingface_hub.whoami()["name"] == "alice"
    hf_hub_download(GATED_REPO, "model_index.json")  # the stored token is sent by default


def test_dropped_connection_resumes_with_a_range_request(hub_env: HubEnv) -> None:
    hub_env.server.drop_after(UNET, 1_000_000)
    path = hf_hub_download(PUBLIC_REPO, UNET)
    assert sha256_of(path) == sha256_of(source_of(hub_env, PUBLIC_REPO, UNET))
    gets = hub_env.server.file_requests(PUBLIC_REPO)
    assert len(gets) == 2 and "range" not in gets[0].headers
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1].headers["range"]).group(1))
    assert 0 < resumed_at <= 1_000_000
    size = source_of(hub_env, PUBLIC_REPO, UNET).stat().st_size
    served = [(r.status, r.body_bytes) for r in hub_env.server.responses if r.method == "GET"]
    assert served == [(200, 1_000_000), (206, size - resumed_at)]  # only the rest, once


def test_failed_download_leaves_no_partial_file_and_a_new_call_completes(
    hub_env: HubEnv,
) -> None:
    hub_env.server.drop_after(UNET, 500_000)
    hub_env.server.fail(UNET, status=503)  # the client's own resume attempt fails too
    with pytest.raises(HfHubHTTPError) as failed:
        hf_hub_download(PUBLIC_REPO, UNET)
    assert failed.value.response.status_code == 503
    assert not [p for p in hub_env.cache_dir.rglob("*") if p.name.endswith(".incomplete")]

    path = hf_hub_download(PUBLIC_REPO, UNET)
    assert sha256_of(path) == sha256_of(source_of(hub_env, PUBLIC_REPO, UNET))
    gets = hub_env.server.file_requests(PUBLIC_REPO)
    assert [("range" in g.headers) for g in gets] == [False, True, False]  # 2.4 restarts


def test_layout_extras_are_real_weight_files(hub_env: HubEnv) -> None:
    import torch  # why: only this test reads the weights
    from safetensors import safe_open  # why: as above
    from safetensors.torch import load_file  # why: as above

    unet = load_file(source_of(hub_env, PUBLIC_REPO, UNET))
    fp16 = load_file(source_of(hub_env, PUBLIC_REPO, FP16_VARIANT))
    pickled = torch.load(source_of(hub_env, PUBLIC_REPO, BIN_TWIN), weights_only=True)
    assert set(fp16) == set(pickled) == set(unet)
    assert {t.dtype for t in fp16.values()} == {torch.float16}
    assert all(torch.equal(pickled[k], unet[k]) for k in unet)
    with safe_open(source_of(hub_env, PUBLIC_REPO, SINGLE_FILE), "np") as single:
        assert single.get_slice("weight").get_shape() == [2 * 1024 * 1024]
    flux_files = hub_env.server.repos[FLUX_REPO].files
    assert not set(EXTRA_FILES) & set(flux_files) and "transformer/config.json" in flux_files
    assert not [p for p in flux_files if p.startswith(".")]  # the demo's .complete stays behind


def test_throttle_slows_a_download_down(hub_env: HubEnv) -> None:
    name = "safety_checker/model.safetensors"
    size = source_of(hub_env, PUBLIC_REPO, name).stat().st_size
    hub_env.server.throttle(size / 0.4, path_suffix=name)  # about 0.4 s for the whole file
    started = time.monotonic()
    path = hf_hub_download(PUBLIC_REPO, name)
    assert time.monotonic() - started >= 0.3
    assert sha256_of(path) == sha256_of(source_of(hub_env, PUBLIC_REPO, name))
