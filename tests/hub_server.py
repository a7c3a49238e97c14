"""Fixtures that run the real ``huggingface_hub`` client against a local fake Hub (no internet).

Use from a test module (``tests/`` is on ``sys.path`` like ``ui_support``)::

    pytest_plugins = ["hub_server"]  # registers the fixtures below
    from hub_server import GATED_REPO, PUBLIC_REPO, TOKEN_WITH_ACCESS, HubEnv  # names, types

- ``hub_server`` (session): a started ``FakeHub`` (see ``tests/fake_hub.py``) serving
  ``PUBLIC_REPO`` (the tiny SD 1.5 demo pipeline plus the extras a careful downloader skips),
  ``GATED_REPO`` (the same files behind a manual licence gate) and ``FLUX_REPO`` (the tiny FLUX
  pipeline), with two tokens: ``TOKEN_WITH_ACCESS`` (alice, accepted the gate) and
  ``TOKEN_WITHOUT_ACCESS`` (bob, did not). Built once from the session's ``demo_home``.
- ``hub_env`` (function): points the in-process client at the server with a fresh HF home and
  cache (env vars *and* the ``huggingface_hub.constants`` copied at import), resets the server's
  request log, faults and tokens, and yields a ``HubEnv``; ``subprocess_env()`` gives the same
  setup to a child process.
- ``layout_tiny_repo(src, dest)``: a tiny diffusers pipeline folder laid out as a Hub repo.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fake_hub import FakeHub, HubRequest, HubResponse

from trainer.demo.tiny import ensure_demo

__all__ = [
    "FakeHub",
    "HubEnv",
    "HubRequest",
    "HubResponse",
    "hub_env",
    "hub_server",
    "layout_tiny_repo",
]

PUBLIC_REPO = "studio-test/tiny-sd15"
GATED_REPO = "studio-test/tiny-sd15-gated"
FLUX_REPO = "studio-test/tiny-flux"
TOKEN_WITH_ACCESS = "hf_test_alice_accepted"  # alice accepted GATED_REPO's licence
TOKEN_WITHOUT_ACCESS = "hf_test_bob_pending"  # bob asked and is still waiting

# Extras of layout_tiny_repo(..., extras=True): files a diffusers download should not need.
SAFETY_CHECKER_FILES = ("safety_checker/config.json", "safety_checker/model.safetensors")
BIN_TWIN = "unet/diffusion_pytorch_model.bin"
FP16_VARIANT = "unet/diffusion_pytorch_model.fp16.safetensors"
SINGLE_FILE = "v1-5-pruned.safetensors"
EXTRA_FILES = (*SAFETY_CHECKER_FILES, BIN_TWIN, FP16_VARIANT, SINGLE_FILE, "README.md")

# huggingface_hub writes only what arrives in whole chunks of this size before a dropped
# connection; the real 10 MiB would make every tiny test file restart from zero instead of resume.
TEST_DOWNLOAD_CHUNK = 64 * 1024


def write_safetensors(path: Path, data: bytes, name: str = "weight") -> Path:
    """A valid safetensors file holding ``data`` as one uint8 tensor (no torch needed)."""
    entry = {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}
    header = json.dumps({"__metadata__": {"format": "pt"}, name: entry}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def layout_tiny_repo(
    src_pipeline_folder: Path,
    dest: Path,
    *,
    extras: bool = True,
    single_file_bytes: int = 2 * 1024 * 1024,
    license: str = "openrail",
) -> Path:
    """Copy a tiny pipeline folder (``trainer.demo.tiny.build_tiny_pipeline``) to ``dest`` as a
    Hub repo; dot-files (the demo's ``.complete`` marker) stay behind.

    With ``extras``, add ``EXTRA_FILES``: a safety checker, a pickled ``.bin`` twin and an fp16
    variant of the UNet weights, a root single-file checkpoint of ``single_file_bytes`` (a valid
    safetensors file, not a loadable model) and a README with a model card header.
    """
    src, dest = Path(src_pipeline_folder), Path(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True)
    if not extras:
        return dest
    import torch  # why: only the extras need real tensors
    from safetensors.torch import load_file, save_file  # why: as above

    unet_weights = load_file(dest / "unet" / "diffusion_pytorch_model.safetensors")
    torch.save(unet_weights, dest / BIN_TWIN)
    save_file({k: v.half() for k, v in unet_weights.items()}, dest / FP16_VARIANT)
    checker = {"_class_name": "StableDiffusionSafetyChecker", "architectures": ["SafetyChecker"]}
    (dest / "safety_checker").mkdir(exist_ok=True)
    (dest / SAFETY_CHECKER_FILES[0]).write_text(json.dumps(checker, indent=2))
    write_safetensors(dest / SAFETY_CHECKER_FILES[1], random.Random(1).randbytes(200_000))
    write_safetensors(dest / SINGLE_FILE, random.Random(2).randbytes(single_file_bytes))
    card = f"---\nlicense: {license}\nlibrary_name: diffusers\ntags:\n- text-to-image\n---\n"
    (dest / "README.md").write_text(card + "\n# Tiny test pipeline\n\nRandom weights.\n")
    return dest


@pytest.fixture(scope="session")
def hub_server(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    """The session's fake Hub with the tiny repos and tokens (see the module docstring)."""
    root = tmp_path_factory.mktemp("hub_repos")
    sd15 = layout_tiny_repo(ensure_demo(demo_home, "sd15"), root / "tiny-sd15")
    flux = layout_tiny_repo(ensure_demo(demo_home, "flux"), root / "tiny-flux", extras=False)
    with FakeHub() as hub:
        hub.add_repo(PUBLIC_REPO, sd15)
        hub.add_repo(GATED_REPO, sd15, gated=True, license="other")
        hub.add_repo(FLUX_REPO, flux, license="other")
        hub.add_token(TOKEN_WITH_ACCESS, "alice", [GATED_REPO])
        hub.add_token(TOKEN_WITHOUT_ACCESS, "bob")
        hub.save_baseline()
        yield hub


@dataclass
class HubEnv:
    """Where the in-process client now points; ``env`` is what a subprocess needs on top."""

    server: FakeHub
    endpoint: str
    hf_home: Path
    cache_dir: Path  # HF_HUB_CACHE
    token_path: Path  # where login() stores the active token
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()  # variables a subprocess must not inherit

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with ``env`` applied and ``unset`` removed."""
        merged = {k: v for k, v in (os.environ if base is None else base).items()}
        for name in self.unset:
            merged.pop(name, None)
        merged.update(self.env)
        return merged


UNSET_VARS = (
    "STUDIO_OFFLINE",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_OIDC_RESOURCE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HUGGINGFACE_CO_STAGING",
    *("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"),
)


def _patch_client(monkeypatch: pytest.MonkeyPatch, endpoint: str, hf_home: Path) -> None:
    """Patch every copy huggingface_hub (and diffusers) made of its settings at import time."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _cache_assets, _cache_manager
    from huggingface_hub.utils import _http as hf_http

    cache, assets = str(hf_home / "hub"), str(hf_home / "assets")
    token_path = str(hf_home / "token")
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": cache,
        "HUGGINGFACE_HUB_CACHE": cache,
        "HF_ASSETS_CACHE": assets,
        "HUGGINGFACE_ASSETS_CACHE": assets,
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": token_path,
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(hf_home / ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "DOWNLOAD_CHUNK_SIZE": TEST_DOWNLOAD_CHUNK,
    }.items():
        monkeypatch.setattr(constants, name, value)
    # The module-level HfApi behind huggingface_hub.model_info/whoami/login kept the old endpoint.
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(_cache_assets, "HF_ASSETS_CACHE", assets)
    origin = ("http", "127.0.0.1", urlsplit(endpoint).port)
    monkeypatch.setattr(hf_http, "_HUB_ORIGINS", hf_http._HUB_ORIGINS | {origin})
    for module in ("diffusers.utils.hub_utils", "diffusers.loaders.lora_base"):
        if module in sys.modules:  # diffusers copied HF_HUB_OFFLINE when it was imported
            monkeypatch.setattr(sys.modules[module], "HF_HUB_OFFLINE", False)
    if "diffusers.models.attention_dispatch" in sys.modules:
        monkeypatch.setattr(
            sys.modules["diffusers.models.attention_dispatch"], "HF_HUB_OFFLINE", False
        )


@pytest.fixture
def hub_env(
    hub_server: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubEnv]:
    """The real client online against ``hub_server``, with an empty HF home (see module doc)."""
    from huggingface_hub import close_session

    hf_home = tmp_path / "hf_home"
    hf_home.mkdir()
    endpoint = hub_server.endpoint
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for name in UNSET_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _patch_client(monkeypatch, endpoint, hf_home)
    hub_server.reset()
    close_session()  # a fresh HTTP client: no pooled connection or proxy from an earlier test
    yield HubEnv(hub_server, endpoint, hf_home, hf_home / "hub", hf_home / "token", env, UNSET_VARS)
    close_session()
    hub_server.reset()
