"""The base model's source as the advisor sees it (``advisor.model_facts.ModelSource``).

One function, ``model_facts(ref, arch)``, looks at a demo ref, a folder, a file or a Hugging
Face id. The Hub is asked at most once a minute per id (model info with file sizes, and the
access check of a gated repo); the cache is measured on every call, so a running download shows
up at once. A local folder or file is read again only when its ``disk_stamp`` changes (every page
run asks, so a rerun costs a few ``stat`` calls, not a walk of the folder or a checkpoint read).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import streamlit as st
from huggingface_hub import constants, get_token

from advisor.model_facts import DEMO, FILE, FOLDER, HUB, MISSING, ModelSource
from trainer.arch.hub_status import free_gb
from trainer.arch.single_file import (
    CheckpointError,
    CheckpointInfo,
    arch_mismatch,
    detect_checkpoint,
)
from trainer.arch.sources import SINGLE_FILE_SUFFIXES, classify_source
from trainer.models.components import (
    BASE_MODEL_IDS,
    NotAPipelineFolder,
    component_problems,
    describe_problems,
)
from trainer.models.hub import (
    FOUND,
    NOT_FOUND,
    RepoCheck,
    cache_status,
    cached_snapshot,
    inspect_repo,
)
from trainer.models.token import Access, repo_access, signed_in_user
from trainer.settings import load_settings
from ui.access import hub_id_only, model_ref_refusal

HUB_TTL_S = 60
DISK_CACHE_ENTRIES = 64  # model folders and files looked at, per server process


def token_key() -> str:
    """Changes when the user signs in or out (the token itself never becomes a cache key)."""
    token = get_token() or ""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


@st.cache_data(ttl=HUB_TTL_S, show_spinner=False)
def inspect(
    repo_id: str, arch: str, endpoint: str, token_key: str, config_only: tuple[str, ...] = ()
) -> RepoCheck:
    """``inspect_repo``, asked again after a minute, another endpoint or another login."""
    return inspect_repo(repo_id, arch, config_only=config_only)


@st.cache_data(ttl=HUB_TTL_S, show_spinner=False)
def access(repo_id: str, endpoint: str, token_key: str) -> Access:
    return repo_access(repo_id)


@st.cache_data(ttl=HUB_TTL_S, show_spinner=False)
def account(endpoint: str, token_key: str) -> str | None:
    """The signed-in account's name (one request to the Hub, asked again after a minute or when
    the stored token changes)."""
    return signed_in_user()


def current_account() -> str | None:
    return account(constants.ENDPOINT, token_key())


def model_facts(
    ref: str,
    arch: str,
    skip: tuple[str, ...] = (),
    components_from: str | None = None,
    expect: str | None = None,
) -> ModelSource:
    """What the advisor needs to know about ``ref`` as the base model of an ``arch`` run
    (``skip``: components the config loads from elsewhere, e.g. a different VAE;
    ``components_from``: where a single file's configs and missing parts come from;
    ``expect``: the source the user picked, "folder" or "file" turning a relative path that
    looks like a Hub id into the path it is meant to be)."""
    ref = ref.strip()
    if not ref:
        return ModelSource(
            ref, MISSING, problem="No base model is chosen. Fix: pick one on the Model step."
        )
    if ref.startswith("demo:"):
        return ModelSource(ref, DEMO)
    # served to a network: a path outside the allowed roots is refused before it is looked at
    # (the same words whether it exists), and an "owner/name" there is a Hub id, never a folder
    if hub_id_only(ref, expect):
        return hub_facts(ref, arch)
    refused = model_ref_refusal(ref, expect) or model_ref_refusal(components_from or "")
    if refused:
        return ModelSource(ref, MISSING, problem=f"Base model: {refused}")
    source = classify_source(ref)
    if source == "hub" and expect in ("folder", "file"):
        source = "missing"
    if source == "dir":
        return folder_facts(ref, arch, skip)
    if source == "file":
        return file_facts(ref, arch, components_from)
    if source == "hub":
        return hub_facts(ref, arch)
    what = "file" if expect == "file" or ref.lower().endswith(SINGLE_FILE_SUFFIXES) else "folder"
    where = Path(ref).expanduser().absolute()
    return ModelSource(
        ref,
        MISSING,
        problem=(
            f"Base model: no {what} at {where} on this machine. Fix: correct the path (an "
            f"absolute one is safest), or pick a Hub model or the demo model on the Model step."
        ),
    )


def disk_stamp(path: Path) -> tuple[Any, ...]:
    """What changes when a model file or folder changes, read with ``stat`` alone: a file's
    modification time and size; a folder's, with those of its entries and of the files in its
    subfolders (the components: a weight file copied over in place changes only its own time).
    Hidden subfolders (.git, .cache) count by their own entry: they can hold thousands of files."""
    info = path.stat()
    if not path.is_dir():
        return (info.st_mtime_ns, info.st_size)
    return (info.st_mtime_ns, *_entry_stamps(path, descend=True))


def _entry_stamps(folder: Path, descend: bool) -> list[tuple[str, int, int]]:
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            try:  # follows links: a Hub snapshot's files link to its blobs
                stat = entry.stat()
            except OSError:  # a broken link
                found.append((entry.name, 0, 0))
                continue
            found.append((entry.name, stat.st_mtime_ns, stat.st_size))
            if descend and entry.is_dir() and not entry.name.startswith("."):
                inside = _entry_stamps(Path(entry.path), descend=False)
                found += [(f"{entry.name}/{name}", *rest) for name, *rest in inside]
    return sorted(found)


def folder_facts(ref: str, arch: str, skip: tuple[str, ...] = ()) -> ModelSource:
    """A diffusers folder: every component ``arch`` loads must be there (listed if not)."""
    return _folder_facts(ref, arch, tuple(skip), disk_stamp(Path(ref).expanduser()))


@st.cache_data(max_entries=DISK_CACHE_ENTRIES, show_spinner=False)
def _folder_facts(
    ref: str, arch: str, skip: tuple[str, ...], stamp: tuple[Any, ...]
) -> ModelSource:
    """``folder_facts`` for one state of the folder (``stamp`` is the cache key only)."""
    folder = Path(ref).expanduser()
    try:
        problems = component_problems(folder, arch, skip)
    except NotAPipelineFolder:
        return ModelSource(
            ref,
            FOLDER,
            problem=(
                f"Base model: {ref} has no model_index.json, so it is not a diffusers model "
                f"folder. Fix: point to the folder that contains model_index.json, or to a "
                f"single .safetensors checkpoint."
            ),
        )
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if problems:
        return ModelSource(
            ref,
            FOLDER,
            problem=(
                f"Base model folder {ref} lacks what a {arch} run loads: "
                f"{describe_problems(problems)}. Fix: complete the folder (copy the missing "
                f"subfolders from the original model), or pick another model."
            ),
            total_bytes=size,
        )
    note = f"a diffusers folder with every part a {arch} run loads"
    return ModelSource(ref, FOLDER, total_bytes=size, note=note)


def file_facts(ref: str, arch: str, components_from: str | None = None) -> ModelSource:
    """A single checkpoint: its architecture is read from its tensor names (header only)."""
    path = Path(ref).expanduser()
    size = path.stat().st_size
    try:
        info = checkpoint_info(path)
    except CheckpointError as exc:
        return ModelSource(ref, FILE, problem=f"Base model file {ref}: {exc}", total_bytes=size)
    if info.layout == "lora":
        return ModelSource(
            ref,
            FILE,
            problem=(
                f"Base model file {ref} is {info.describe()}. Fix: put it in model.lora_path "
                f"(Model step, 'Start from an existing LoRA') and pick its base model here."
            ),
            total_bytes=size,
        )
    mismatch = arch_mismatch(info, arch)
    if mismatch:  # the trainer refuses it: diffusers could load it into the wrong model
        return ModelSource(ref, FILE, problem=f"Base model file: {mismatch}", total_bytes=size)
    from_file = ("transformer",) if arch == "flux" else info.contains
    components = components_from or BASE_MODEL_IDS[arch]
    found = _with_components(ref, arch, size, components, from_file)
    return replace(found, note=f"{info.describe()}; the rest from {components}")


def checkpoint_info(path: Path) -> CheckpointInfo:
    """``detect_checkpoint``, read again only when the file's ``disk_stamp`` changes (a .ckpt is
    unpickled to read it). Raises CheckpointError as it does."""
    info, error = _checkpoint_info(str(path), disk_stamp(path))
    if info is None:
        raise CheckpointError(error)
    return info


@st.cache_data(max_entries=DISK_CACHE_ENTRIES, show_spinner=False)
def _checkpoint_info(path: str, stamp: tuple[Any, ...]) -> tuple[CheckpointInfo | None, str]:
    """(the file's info, "") or (None, why it cannot be read): the error is cached too."""
    try:
        return detect_checkpoint(path), ""
    except CheckpointError as exc:
        return None, str(exc)


def _with_components(
    ref: str, arch: str, size: int, components: str, from_file: tuple[str, ...]
) -> ModelSource:
    """A single file plus where its configs and missing parts come from: a demo model, a
    diffusers folder or a Hub id (whose download the run makes first)."""
    what = f"{components} (model.components_from: the configs and parts the file lacks)"
    if components.startswith("demo:"):
        return ModelSource(ref, FILE, total_bytes=size)
    source = classify_source(components)
    if source == "dir":
        try:
            problems = component_problems(components, arch, config_only=from_file)
        except NotAPipelineFolder:
            problems = {"model_index.json": "missing: not a diffusers folder"}
        if problems:
            return ModelSource(
                ref, FILE, problem=f"{what} lacks {describe_problems(problems)}.", total_bytes=size
            )
        return ModelSource(ref, FILE, total_bytes=size)
    if source != "hub":
        return ModelSource(
            ref,
            FILE,
            problem=f"{what}: no such folder, and not a Hugging Face id.",
            total_bytes=size,
        )
    hub = hub_facts(components, arch, from_file)
    warning = ""
    if hub.download_bytes:
        warning = (
            f"Launch first downloads {hub.download_bytes / 1e9:.2f} GB from {what} into the "
            f"Hugging Face cache."
        )
    return replace(
        hub,
        ref=ref,
        kind=FILE,
        problem=f"{what}: {hub.problem}" if hub.problem else "",
        warning=warning,
        total_bytes=size + hub.total_bytes,
    )


def hub_facts(repo_id: str, arch: str, config_only: tuple[str, ...] = ()) -> ModelSource:
    cache_dir = Path(constants.HF_HUB_CACHE)
    free = free_gb(cache_dir)
    common = {
        "cache_dir": str(cache_dir),
        "cache_free_bytes": int(free * 1e9) if free is not None else None,
        "cache_on_home_disk": _same_disk(cache_dir, load_settings().home),
        "page_url": f"{constants.ENDPOINT.rstrip('/')}/{repo_id}",
    }
    check = inspect(repo_id, arch, constants.ENDPOINT, token_key(), config_only)
    if check.state == NOT_FOUND:
        return ModelSource(
            repo_id,
            HUB,
            problem=f"Base model {repo_id}: {check.message}.",
            **common,
        )
    if check.state != FOUND or check.plan is None:
        return _unchecked_hub_facts(repo_id, arch, check, common)
    plan, status = check.plan, cache_status(check.plan)
    problem = warning = ""
    if plan.missing_components:
        problem = (
            f"Base model {repo_id} lacks what a {arch} run loads: "
            f"{', '.join(plan.missing_components)}. Fix: pick a diffusers-format {arch} model "
            f"(it has model_index.json and one folder per component)"
            + (f", or set the architecture to {check.detected_arch}" if check.detected_arch else "")
            + "."
        )
    elif check.detected_arch and check.detected_arch != arch:
        warning = f"{repo_id} looks like a {check.detected_arch} model, not {arch}."
    gated_access, user = None, None
    if check.gated and not status.complete:
        gated_access = access(repo_id, constants.ENDPOINT, token_key()).allowed
        user = current_account()
    return ModelSource(
        repo_id,
        HUB,
        problem=problem,
        warning=warning,
        total_bytes=plan.total_bytes,
        download_bytes=plan.total_bytes - status.cached_bytes,
        gated=check.gated,
        access=gated_access,
        account=user,
        license=check.license,
        **common,
    )


def _unchecked_hub_facts(repo_id: str, arch: str, check: RepoCheck, common: dict) -> ModelSource:
    """Offline or no answer from the Hub: fine when the cache has a copy, else say why."""
    if cached_snapshot(repo_id, arch) is not None:
        return ModelSource(repo_id, HUB, checked=False, **common)
    return ModelSource(
        repo_id,
        HUB,
        problem=(
            f"Base model {repo_id} is not in the local Hugging Face cache and {check.message}. "
            f"Fix: connect to the internet (or unset STUDIO_OFFLINE) and download it, or copy "
            f"a downloaded cache here."
        ),
        checked=False,
        **common,
    )


def _same_disk(a: Path, b: Path) -> bool:
    def device(path: Path) -> int | None:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        return existing.stat().st_dev if existing is not None else None

    return device(a) == device(b)
