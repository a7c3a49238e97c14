"""Caches for VAE latents and text embeddings: compute once, reuse in this run and later ones.

``LatentCache(None)`` keeps CPU tensors in memory for this run; ``LatentCache(folder)`` writes one
``.safetensors`` file per key, which later runs reuse (and RAM stays free: nothing is held in
memory). ``TextEmbeddingCache`` does the same for a dict of tensors per caption.

Keys are sha256 digests of everything that changes the result, built by ``latent_key`` /
``text_key``: the item key from ``trainer.data.batches`` (file content hash, bucket, crop/flip
variant), a model fingerprint the caller passes (e.g. ``fingerprint(arch, model path, vae
config)``) and the dtype. Any change there is a different key, hence a miss; stale files are
simply never read.

Files are written to a temp file and moved into place (``trainer.files``), so readers never see
half a file. Each file carries its key and a checksum of its tensors; a file that is truncated,
garbage or does not match is deleted and recomputed, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from trainer.files import atomic_path

log = logging.getLogger(__name__)

CACHE_FORMAT = "lora-studio-cache/1"
LATENT_NAME = "latent"
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")

Tensors = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------ keys
def cache_key(*parts: object) -> str:
    """sha256 of the parts; each is length-prefixed so ("ab", "c") != ("a", "bc")."""
    digest = hashlib.sha256()
    for part in parts:
        data = str(part).encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def fingerprint(*parts: object) -> str:
    """A short id of a model setup (e.g. arch, model path, VAE config) for use in keys."""
    return cache_key("fingerprint", *parts)[:16]


def latent_key(item_key: str, model_fingerprint: str, dtype: torch.dtype | str) -> str:
    """Key of one image variant's latent.

    ``item_key`` is ``trainer.data.batches.item_key(...)``: content hash, bucket, crop/flip variant.
    """
    return cache_key("latent", item_key, model_fingerprint, _dtype_name(dtype))


def text_key(caption: str, te_fingerprint: str, dtype: torch.dtype | str) -> str:
    """Key of one caption's text-encoder outputs."""
    return cache_key("text", caption, te_fingerprint, _dtype_name(dtype))


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------- cache
class TensorCache:
    """Dict-of-tensors cache: in memory (``folder=None``) or as ``.safetensors`` files."""

    def __init__(self, folder: Path | str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._memory: dict[str, Tensors] = {}
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0  # corrupt or mismatching files deleted and recomputed
        self.not_stored = 0  # results left out: non-finite values or a failed write

    def get_or_compute_tensors(self, key: str, compute: Callable[[], Tensors]) -> Tensors:
        """The cached tensors for ``key`` (CPU copies), computing and storing them on a miss."""
        key = _normal_key(key)
        cached = self._load(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        tensors = _to_cpu(compute())
        self._store(key, tensors)
        return _copy(tensors)

    def lookup(self, key: str) -> Tensors | None:
        """The cached tensors for ``key`` (a hit), or None; a miss is counted by ``store``."""
        found = self._load(_normal_key(key))
        if found is not None:
            self.hits += 1
        return found

    def store(self, key: str, tensors: Tensors) -> Tensors:
        """Keep CPU copies of ``tensors`` under ``key`` (counted as a miss) and return them."""
        self.misses += 1
        tensors = _to_cpu(tensors)
        self._store(_normal_key(key), tensors)
        return _copy(tensors)

    def __contains__(self, key: str) -> bool:
        key = _normal_key(key)
        if self.folder is None:
            return key in self._memory
        return self.path_for(key).exists()

    def __len__(self) -> int:
        if self.folder is None:
            return len(self._memory)
        return sum(1 for _ in self.folder.glob("*/*.safetensors"))

    def path_for(self, key: str) -> Path:
        """Where a key's file lives: two-character sub-folders keep folders small."""
        if self.folder is None:
            raise ValueError("an in-memory cache has no files")
        key = _normal_key(key)
        return self.folder / key[:2] / f"{key}.safetensors"

    def clear(self) -> None:
        """Forget everything (in memory) or delete every cache file (on disk)."""
        self._memory.clear()
        if self.folder is not None:
            for path in self.folder.glob("*/*.safetensors"):
                path.unlink(missing_ok=True)

    # -- storage --------------------------------------------------------------------------------
    def _load(self, key: str) -> Tensors | None:
        if self.folder is None:
            found = self._memory.get(key)
            # A copy: a caller scaling latents in place must not change the cached value.
            return _copy(found) if found is not None else None
        path = self.path_for(key)
        if not path.exists():
            return None
        tensors = _read_verified(path, key)
        if tensors is None:
            log.warning("cache file %s is corrupt or stale: deleting and recomputing", path)
            path.unlink(missing_ok=True)
            self.rebuilt += 1
        return tensors

    def _store(self, key: str, tensors: Tensors) -> None:
        if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
            # NaN/inf (e.g. an fp16 VAE overflow) must not become a permanent cached input.
            self.not_stored += 1
            log.warning("not caching %s: it contains NaN or infinite values", key[:12])
            return
        if self.folder is None:
            self._memory[key] = tensors
            return
        try:
            _write_atomic(self.path_for(key), tensors, key)
        except OSError as err:  # a full disk slows training down but must not stop it
            self.not_stored += 1
            log.warning("could not write cache file for %s: %s", key[:12], err)


class LatentCache(TensorCache):
    """VAE latents, one tensor per image variant."""

    def get_or_compute(self, key: str, compute_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        tensors = self.get_or_compute_tensors(key, lambda: {LATENT_NAME: compute_fn()})
        return tensors[LATENT_NAME]


class TextEmbeddingCache(TensorCache):
    """Text-encoder outputs, a dict of tensors per caption (e.g. hidden states and pooled)."""

    def get_or_compute(self, key: str, compute_fn: Callable[[], Tensors]) -> Tensors:
        return self.get_or_compute_tensors(key, compute_fn)


# ----------------------------------------------------------------------------------------- files
def _normal_key(key: str) -> str:
    # Keys become file names: anything but a sha256 hex digest is hashed first.
    return key if _HEX_KEY.match(key) else cache_key(key)


def _to_cpu(tensors: Tensors) -> Tensors:
    if not isinstance(tensors, dict) or not tensors:
        raise TypeError("a cache entry must be a non-empty dict of tensors")
    # clone + contiguous: safetensors refuses shared or strided storage.
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}


def _copy(tensors: Tensors) -> Tensors:
    return {name: t.clone() for name, t in tensors.items()}


def _checksum(tensors: Tensors) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _write_atomic(path: Path, tensors: Tensors, key: str) -> None:
    metadata = {"format": CACHE_FORMAT, "key": key, "checksum": _checksum(tensors)}
    with atomic_path(path) as temp:  # readers see the old state or the whole new file
        save_file(tensors, str(temp), metadata=metadata)


def _read_verified(path: Path, key: str) -> Tensors | None:
    """The file's tensors if it is whole, belongs to ``key`` and matches its checksum."""
    try:
        data = path.read_bytes()
        metadata = _header_metadata(data)
        tensors = load_safetensors(data)
    except Exception:  # truncated or garbage files fail in many ways; all mean "rebuild"
        return None
    if metadata.get("format") != CACHE_FORMAT or metadata.get("key") != key or not tensors:
        return None
    if metadata.get("checksum") != _checksum(tensors):
        return None  # the bytes changed after writing (bit rot, partial copy)
    return tensors


def _header_metadata(data: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header size, then a JSON header.
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size <= 0 or 8 + size > len(data):
        raise ValueError("truncated safetensors header")
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("bad safetensors metadata")
    return metadata
