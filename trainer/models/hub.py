"""What a Hugging Face Hub model costs before it is downloaded, and how much of it is cached.

``inspect_repo`` asks the Hub once (model info with file sizes) and returns a ``RepoCheck``:
whether the repository exists, is gated or private, its licence, and a ``ModelPlan`` naming only
the files this architecture's trainer loads (``plan_files``: the pipeline's own components, one
weight format per folder, safetensors before .bin, no precision variants when the plain weights
exist). ``cache_status`` measures the plan against the local Hugging Face cache without any
network call; ``cached_snapshot`` finds a complete cached copy when the studio is offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx2
from filelock import FileLock, Timeout
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name

from trainer.models.components import ARCH_COMPONENTS, arch_from_components
from trainer.settings import hub_offline

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
FOREIGN_WEIGHTS = (".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".ot", ".gguf", ".tflite")
INFO_TIMEOUT_S = 10.0
# Repository states in RepoCheck.state
FOUND, NOT_FOUND, UNREACHABLE, OFFLINE = "found", "not_found", "unreachable", "offline"


@dataclass(frozen=True)
class HubFile:
    path: str  # inside the repository
    size: int
    etag: str  # the cache's blob name: the LFS sha256, else the git blob id


@dataclass(frozen=True)
class ModelPlan:
    """The files of ``repo_id`` at ``revision`` that a LoRA run on ``arch`` needs."""

    repo_id: str
    revision: str
    arch: str
    files: tuple[HubFile, ...]
    skipped: tuple[HubFile, ...] = ()
    missing_components: tuple[str, ...] = ()
    variant: str | None = None  # e.g. "fp16" when a repo ships only variant weights

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def skipped_bytes(self) -> int:
        return sum(f.size for f in self.skipped)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass(frozen=True)
class RepoCheck:
    """What the Hub says about a model reference (one request), for people and for code."""

    repo_id: str
    state: str  # FOUND, NOT_FOUND, UNREACHABLE or OFFLINE
    message: str = ""
    gated: bool = False
    private: bool = False
    license: str | None = None
    detected_arch: str | None = None
    plan: ModelPlan | None = None
    extra: dict = field(default_factory=dict)

    @property
    def page_url(self) -> str:
        """The model's page, where a gated model's licence is accepted."""
        return f"{constants.ENDPOINT.rstrip('/')}/{self.repo_id}"


@dataclass(frozen=True)
class CacheStatus:
    cached_bytes: int  # complete files already in the cache
    partial_bytes: int  # bytes of files arriving right now (an interrupted file starts again)
    total_bytes: int
    files_cached: int
    files_total: int

    @property
    def complete(self) -> bool:
        return self.files_cached == self.files_total

    @property
    def missing_bytes(self) -> int:
        return max(0, self.total_bytes - self.cached_bytes)


def is_hub_id(ref: str) -> bool:
    return bool(HUB_ID.match(ref)) and not Path(ref).expanduser().exists()


def _variant_of(name: str) -> str | None:
    """'fp16' for 'model.fp16.safetensors', 'x.safetensors.index.fp16.json' or sharded
    'model.fp16-00001-of-00002.safetensors'; None for plain weights."""
    parts = name.split(".")
    if name.endswith(".index.json") or ".index." in name:
        return parts[-2] if len(parts) > 4 else None
    if len(parts) > 2:
        return re.sub(r"-\d{5}-of-\d{5}$", "", parts[-2])
    return None


def _is_weight(name: str) -> bool:
    bare = name.replace(".index", "").removesuffix(".json")
    return bare.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json")


def _weight_format(name: str) -> str:
    return ".safetensors" if ".safetensors" in name else ".bin"


def _pick_folder_files(files: list[HubFile]) -> tuple[list[HubFile], str | None]:
    """One folder's files the loader reads: every config and tokenizer file, and one weight
    format (safetensors before .bin), plain weights before a precision variant."""
    keep = [f for f in files if not _is_weight(PurePosixPath(f.path).name)]
    keep = [f for f in keep if not f.path.endswith(FOREIGN_WEIGHTS)]
    weights = [f for f in files if _is_weight(PurePosixPath(f.path).name)]
    variant = None
    for wanted_variant in (None, "fp16", "bf16"):
        for fmt in (".safetensors", ".bin"):
            chosen = [
                f
                for f in weights
                if _variant_of(PurePosixPath(f.path).name) == wanted_variant
                and _weight_format(f.path) == fmt
            ]
            if chosen:
                return keep + chosen, wanted_variant
    return keep, variant


def plan_files(
    repo_id: str,
    revision: str,
    arch: str,
    files: list[HubFile],
    config_only: tuple[str, ...] = (),
) -> ModelPlan:
    """The files of a diffusers repository that a LoRA run on ``arch`` loads; of the
    components in ``config_only`` (those a single-file checkpoint brings) only the configs."""
    needed = ARCH_COMPONENTS[arch]
    by_folder: dict[str, list[HubFile]] = {}
    for f in files:
        top = f.path.split("/", 1)[0] if "/" in f.path else ""
        by_folder.setdefault(top, []).append(f)
    chosen = [f for f in by_folder.get("", []) if f.path == "model_index.json"]
    missing, variants = [], set()
    for component in needed:
        picked, variant = _pick_folder_files(by_folder.get(component, []))
        if component in config_only:
            picked = [f for f in picked if not _is_weight(PurePosixPath(f.path).name)]
            variant = None
        if not picked:
            missing.append(component)
        chosen += picked
        if variant:
            variants.add(variant)
    chosen_paths = {f.path for f in chosen}
    skipped = tuple(f for f in files if f.path not in chosen_paths)
    return ModelPlan(
        repo_id=repo_id,
        revision=revision,
        arch=arch,
        files=tuple(sorted(chosen, key=lambda f: f.path)),
        skipped=skipped,
        missing_components=tuple(missing),
        variant=sorted(variants)[0] if variants else None,
    )


def _hub_files(info) -> list[HubFile]:
    out = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        etag = lfs.sha256 if lfs is not None else (sibling.blob_id or "")
        size = lfs.size if lfs is not None else (sibling.size or 0)
        out.append(HubFile(sibling.rfilename, int(size or 0), etag))
    return out


def _license(info) -> str | None:
    card = getattr(info, "card_data", None)
    found = card.get("license") if card is not None else None
    if found:
        return str(found)
    tags = [t for t in (info.tags or []) if t.startswith("license:")]
    return tags[0].split(":", 1)[1] if tags else None


def inspect_repo(
    repo_id: str,
    arch: str,
    *,
    config_only: tuple[str, ...] = (),
    token: str | bool | None = None,
    timeout: float = INFO_TIMEOUT_S,
) -> RepoCheck:
    """Ask the Hub about ``repo_id`` (one request) and plan what ``arch`` needs from it
    (``config_only``: components whose weights come from elsewhere, see ``plan_files``)."""
    if hub_offline():
        return RepoCheck(
            repo_id, OFFLINE, "the studio is offline (STUDIO_OFFLINE / HF_HUB_OFFLINE)"
        )
    try:
        info = HfApi().model_info(repo_id, files_metadata=True, token=token, timeout=timeout)
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        gated_private = isinstance(exc, GatedRepoError)
        message = (
            "no such model on the Hugging Face Hub (or it is private and this account cannot "
            "see it): check the spelling, or sign in with a token that has access"
        )
        return RepoCheck(repo_id, NOT_FOUND, message, gated=gated_private)
    except OfflineModeIsEnabled:
        return RepoCheck(repo_id, OFFLINE, "huggingface_hub is in offline mode (HF_HUB_OFFLINE)")
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:  # refused, DNS, timeouts, 5xx
        return RepoCheck(repo_id, UNREACHABLE, f"the Hub did not answer ({type(exc).__name__})")
    files = _hub_files(info)
    folders = {f.path.split("/", 1)[0] for f in files if "/" in f.path}
    plan = plan_files(repo_id, info.sha or "main", arch, files, config_only)
    return RepoCheck(
        repo_id,
        FOUND,
        gated=bool(info.gated),
        private=bool(info.private),
        license=_license(info),
        detected_arch=arch_from_components(folders),
        plan=plan,
    )


def repo_cache_dir(repo_id: str) -> Path:
    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")


def cache_status(plan: ModelPlan) -> CacheStatus:
    """How much of ``plan`` the local cache holds (no network). A file counts as cached when
    its blob is complete; an interrupted download's ``.incomplete`` bytes count as partial."""
    blobs = repo_cache_dir(plan.repo_id) / "blobs"
    cached = partial = files_cached = 0
    for f in plan.files:
        blob = blobs / f.etag
        if f.etag and blob.is_file():
            cached += f.size
            files_cached += 1
            continue
        if f.etag:
            partial += min(f.size, _partial_size(blobs, f.etag))
    return CacheStatus(cached, partial, plan.total_bytes, files_cached, len(plan.files))


def cached_snapshot(repo_id: str, arch: str) -> Path | None:
    """The cached snapshot of ``repo_id``'s main revision when it holds every component a run
    on ``arch`` loads (no network), else None."""
    storage = repo_cache_dir(repo_id)
    try:
        commit = (storage / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = storage / "snapshots" / commit
    if not (snapshot / "model_index.json").is_file():
        return None
    if any(not (snapshot / part).is_dir() for part in ARCH_COMPONENTS[arch]):
        return None
    return snapshot


def _partial_size(blobs: Path, etag: str) -> int:
    """Bytes of an unfinished download of blob ``etag`` (huggingface_hub writes
    ``<etag>.<id>.incomplete`` files while a download runs)."""
    sizes = [p.stat().st_size for p in blobs.glob(f"{etag}*.incomplete") if p.is_file()]
    return max(sizes, default=0)


def remove_orphan_partials(repo_id: str) -> int:
    """Delete the unfinished files a killed download left in ``repo_id``'s cache (no download
    holds their lock any more; huggingface_hub never reuses them) and return the bytes freed."""
    blobs = repo_cache_dir(repo_id) / "blobs"
    locks = Path(constants.HF_HUB_CACHE) / ".locks" / repo_cache_dir(repo_id).name
    freed = 0
    for partial in list(blobs.glob("*.incomplete")):
        etag = partial.name.split(".", 1)[0]
        try:
            with FileLock(locks / f"{etag}.lock", timeout=0):
                freed += partial.stat().st_size
                partial.unlink()
        except (Timeout, OSError):  # a download is writing it now
            continue
    return freed


def format_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
