"""What the denoiser reads for a batch: its latents and text embeddings, cached or computed live.

``ModelInputs(arch, cfg, cache_dir, data)`` is the loop's one door to the VAE and the text
encoders during training:

- **One call per batch.** The rows of a batch that are not cached go through the VAE in one call,
  and its captions that are not cached through the text encoders in one call (each distinct
  caption once), as diffusers' training examples do; cached rows are looked up. Batched and
  one-at-a-time encodings differ only in float rounding (below 1e-5 relative here), so a cached
  run and a live run give the same losses within that.
- **Cached steps decode nothing.** Every item whose latent is cached is added to
  ``data.known_latents`` (trainer.data.batches), and the dataset then hands out that item without
  pixels: no file read, no resize. Latents a disk cache already holds from an earlier run are
  recognised before the first step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trainer.arch.base import Arch
from trainer.config.schema import TrainingConfig
from trainer.engine.ahead import Ahead
from trainer.engine.cache import LATENT_NAME, LatentCache, TextEmbeddingCache, latent_key, text_key


class ModelInputs:
    """Latents and text embeddings for a batch: cached (memory or disk) or computed live."""

    def __init__(self, arch: Arch, cfg: TrainingConfig, cache_dir: Path, data: Any = None) -> None:
        self.arch, self.cfg = arch, cfg
        self.fingerprint = arch.fingerprint()
        self.dtype_name = str(arch.dtype)
        to_disk = any(ds.cache_latents_to_disk for ds in cfg.datasets)
        self.latent_cache = LatentCache(cache_dir / "latents" if to_disk else None)
        self.cache_flags = [ds.cache_latents or ds.cache_latents_to_disk for ds in cfg.datasets]
        self.text_cache = (
            TextEmbeddingCache(cache_dir / "text" if to_disk else None)
            if cfg.train.cache_text_embeddings
            else None
        )
        self.data = data
        self.lock = threading.RLock()  # the encoders: one thread at a time (trainer.engine.ahead)
        self._current: tuple[list[str], dict[str, Tensor] | None] = ([], None)
        self._counted: dict[str, float] | None = None
        self.known: set[str] = data.known_latents if data is not None else set()
        if to_disk and data is not None:
            self._recognise_disk_cache(data)

    # ------------------------------------------------------------------------------ ahead
    def prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Encode a batch ahead of its step (trainer.engine.ahead): its latents, and its
        captions' embeddings unless the text encoder trains (those need the step's graph)."""
        with self.lock:
            batch["latents"] = self._encode_latents(batch)
            if not self.cfg.train.train_text_encoder:
                batch["text"] = self._encode_text(batch["captions"])
            batch["cache_counters"] = self._live_counters()
        return batch

    def ahead(self, batches: Iterator[dict], count: int) -> Ahead:
        """The next ``count`` batches, loaded and encoded in a thread while steps train."""
        return Ahead(batches, self.prepare, count)

    # ------------------------------------------------------------------------------ latents
    def latents(self, batch: dict[str, Any]) -> Tensor:
        """The batch's latents (encoded ahead, or now); its text embeddings become the current
        ones for ``text(batch["captions"])``."""
        self._current = (batch["captions"], batch.get("text"))
        if "latents" in batch:
            self._counted = batch.get("cache_counters")
            return batch["latents"]
        with self.lock:
            return self._encode_latents(batch)

    def _encode_latents(self, batch: dict[str, Any]) -> Tensor:
        """Cached rows looked up, the others encoded in one VAE call."""
        keys, rendered = batch["keys"], batch.get("rendered") or [True] * len(batch["keys"])
        pixel_row = {row: i for i, row in enumerate(r for r, has in enumerate(rendered) if has)}
        rows: list[Tensor | None] = [None] * len(keys)
        missing: list[int] = []
        for row, key in enumerate(keys):
            cache_id = self._cache_id(batch, row)
            cached = self.latent_cache.lookup(cache_id) if cache_id is not None else None
            if cached is not None:
                rows[row] = cached[LATENT_NAME]
                self.known.add(key)
            else:
                missing.append(row)
        if missing:
            pixels = torch.stack([self._pixels(batch, pixel_row, row) for row in missing])
            encoded = self.arch.encode_images(pixels)  # stays on the device for this step
            for row, latent in zip(missing, encoded, strict=True):
                cache_id = self._cache_id(batch, row)
                if cache_id is not None:  # the cache keeps a CPU copy
                    self.latent_cache.store(cache_id, {LATENT_NAME: latent})
                    self.known.add(keys[row])
                rows[row] = latent
        device, dtype = self.arch.device, self.arch.dtype
        return torch.stack([row.to(device, dtype) for row in rows])

    def _pixels(self, batch: dict[str, Any], pixel_row: dict[int, int], row: int) -> Tensor:
        if row in pixel_row:
            return batch["pixels"][pixel_row[row]]
        # Its cached latent was skipped as known but could not be read back (a disk cache file
        # damaged or deleted since): decode the image after all.
        self.known.discard(batch["keys"][row])
        return self.data[batch["sources"][row]]["pixels"]

    def _cache_id(self, batch: dict[str, Any], row: int) -> str | None:
        """The latent's cache key, or None when this item's latent is never cached."""
        if not (self.cache_flags[batch["dataset_indices"][row]] and batch["cacheable"][row]):
            return None
        return latent_key(batch["keys"][row], self.fingerprint, self.dtype_name)

    def _recognise_disk_cache(self, data: Any) -> None:
        """Items of the first epoch whose latents an earlier run left on disk: no decoding."""
        for keys in data.batches_for_epoch(0):
            for key in keys:
                item = data.describe(key)
                if not (self.cache_flags[item["dataset_index"]] and item["cacheable"]):
                    continue
                if latent_key(item["key"], self.fingerprint, self.dtype_name) in self.latent_cache:
                    self.known.add(item["key"])

    # ------------------------------------------------------------------------------ text
    def text(self, captions: list[str]) -> dict[str, Tensor]:
        """Embeddings for the captions (those of the current batch encoded ahead)."""
        prepared_for, prepared = self._current
        if prepared is not None and list(captions) == list(prepared_for):
            return prepared
        if self.cfg.train.train_text_encoder:  # the step's graph: on the training thread
            return self.arch.encode_prompts(captions, with_grad=True)
        with self.lock:
            return self._encode_text(captions)

    def _encode_text(self, captions: list[str]) -> dict[str, Tensor]:
        """Cached captions looked up, the rest in one encoder call."""
        if self.text_cache is None:
            return self.arch.encode_prompts(captions)
        found = {c: self.text_cache.lookup(self._text_id(c)) for c in dict.fromkeys(captions)}
        missing = [caption for caption, parts in found.items() if parts is None]
        if missing:
            encoded = self.arch.encode_prompts(missing)
            for i, caption in enumerate(missing):
                one = {name: value[i] for name, value in encoded.items()}
                found[caption] = self.text_cache.store(self._text_id(caption), one)
        return {
            name: torch.stack([found[c][name] for c in captions]).to(self.arch.device)
            for name in found[captions[0]]
        }

    def _text_id(self, caption: str) -> str:
        return text_key(caption, self.fingerprint, self.dtype_name)

    def one_text(self, caption: str) -> dict[str, Tensor]:
        """One caption's embeddings without a batch dimension (through the cache when on)."""
        return {name: value[0].cpu() for name, value in self.text([caption]).items()}

    # ------------------------------------------------------------------------------ counters
    def counters(self) -> dict[str, float]:
        """Cache hits and misses up to the batch the last step trained on."""
        return dict(self._counted) if self._counted is not None else self._live_counters()

    def _live_counters(self) -> dict[str, float]:
        found = {
            "cache/latent_hits": self.latent_cache.hits,
            "cache/latent_misses": self.latent_cache.misses,
        }
        if self.text_cache is not None:
            found["cache/text_hits"] = self.text_cache.hits
            found["cache/text_misses"] = self.text_cache.misses
        return {k: float(v) for k, v in found.items()}
