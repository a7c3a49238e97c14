"""Latent and text-embedding caches: hits, reuse across runs, invalidation, corrupt files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.config.sections.datasets import DatasetConfig
from trainer.data.batches import BucketBatches
from trainer.data.scanning import scan_dataset
from trainer.engine.cache import (
    LatentCache,
    TextEmbeddingCache,
    cache_key,
    fingerprint,
    latent_key,
    text_key,
)

MODEL = fingerprint("sd15", "/models/demo", '{"latent_channels": 4}')


class Counting:
    """A compute function that counts its calls and returns a fixed tensor."""

    def __init__(self, value: torch.Tensor | None = None) -> None:
        self.calls = 0
        self.value = value if value is not None else torch.arange(24.0).reshape(1, 4, 2, 3)

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        return self.value.clone()


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.safetensors"))


def item_keys(tmp_path: Path, resolution: int) -> list[str]:
    """Item keys of a real two-image dataset at one resolution."""
    folder = tmp_path / "ds"
    if not folder.exists():
        folder.mkdir()
        for i in range(2):
            pixels = np.random.default_rng(i).integers(0, 256, (64, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"img{i}.png")
    ds = DatasetConfig(folder_path=str(folder), resolution=[resolution])
    data = BucketBatches([scan_dataset(ds, folder)], batch_size=1)
    return [data.describe(i)["key"] for i in range(len(data))]


# ----------------------------------------------------------------------------------- in memory
def test_memory_cache_counts_hits_and_misses():
    cache, compute = LatentCache(None), Counting()
    first = cache.get_or_compute(latent_key("a", MODEL, torch.float32), compute)
    second = cache.get_or_compute(latent_key("a", MODEL, torch.float32), compute)
    cache.get_or_compute(latent_key("b", MODEL, torch.float32), compute)
    assert compute.calls == 2
    assert (cache.hits, cache.misses) == (1, 2)
    assert torch.equal(first, compute.value) and torch.equal(second, compute.value)
    assert len(cache) == 2


def test_memory_cache_holds_detached_cpu_copies():
    cache = LatentCache(None)
    source = torch.ones(1, 4, 2, 2, requires_grad=True)
    for _ in range(2):  # a miss, then a hit
        got = cache.get_or_compute("k", lambda: source * 2)
        assert got.device.type == "cpu" and not got.requires_grad
        got.mul_(100)  # a caller scaling latents in place must not change the cache
    assert torch.equal(cache.get_or_compute("k", Counting()), torch.full((1, 4, 2, 2), 2.0))
    assert (cache.hits, cache.misses) == (2, 1)


def test_non_finite_results_are_not_cached():
    cache = LatentCache(None)
    compute = Counting(torch.tensor([1.0, float("nan")]))
    for _ in range(2):
        cache.get_or_compute("nan", compute)
    assert compute.calls == 2 and cache.not_stored == 2 and len(cache) == 0


# ------------------------------------------------------------------------------------- on disk
def test_disk_cache_is_reused_by_a_later_run(tmp_path):
    key = latent_key("img|64x64", MODEL, torch.float32)
    first_run, compute = LatentCache(tmp_path / "latents"), Counting()
    written = first_run.get_or_compute(key, compute)
    assert (first_run.hits, first_run.misses, compute.calls) == (0, 1, 1)
    assert len(cache_files(tmp_path / "latents")) == 1
    assert not list((tmp_path / "latents").rglob("*.tmp"))  # the temp file was moved into place

    later_run = LatentCache(tmp_path / "latents")
    never = Counting()
    read = later_run.get_or_compute(key, never)
    assert never.calls == 0 and (later_run.hits, later_run.misses) == (1, 0)
    assert torch.equal(read, written) and read.dtype == written.dtype
    assert key in later_run


def test_arbitrary_text_keys_become_safe_file_names(tmp_path):
    cache = LatentCache(tmp_path / "c")
    cache.get_or_compute("../../etc/passwd with spaces", Counting())
    (path,) = cache_files(tmp_path / "c")
    assert path.is_relative_to(tmp_path / "c") and len(path.stem) == 64


@pytest.mark.parametrize(
    "changed",
    [
        lambda keys64, keys96: latent_key(keys96[0], MODEL, torch.float32),  # resolution
        lambda keys64, keys96: latent_key(keys64[0], fingerprint("sd15", "other"), torch.float32),
        lambda keys64, keys96: latent_key(keys64[0], MODEL, torch.bfloat16),  # dtype
        lambda keys64, keys96: latent_key(keys64[1], MODEL, torch.float32),  # other content
    ],
    ids=["resolution", "model", "dtype", "content"],
)
def test_a_changed_key_misses(tmp_path, changed: Callable[[list[str], list[str]], str]):
    keys64, keys96 = item_keys(tmp_path, 64), item_keys(tmp_path, 96)
    original = latent_key(keys64[0], MODEL, torch.float32)
    LatentCache(tmp_path / "latents").get_or_compute(original, Counting())

    cache, compute = LatentCache(tmp_path / "latents"), Counting()
    assert changed(keys64, keys96) != original
    cache.get_or_compute(changed(keys64, keys96), compute)
    cache.get_or_compute(original, compute)
    assert compute.calls == 1 and (cache.hits, cache.misses) == (1, 1)


def corrupt_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"\x07" * 200)


def corrupt_flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the tensor data: the header still parses
    path.write_bytes(bytes(data))


def corrupt_empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "damage", [corrupt_truncate, corrupt_garbage, corrupt_flip_last_byte, corrupt_empty]
)
def test_a_corrupt_file_is_deleted_and_rebuilt(tmp_path, damage):
    key = latent_key("img|64x64", MODEL, torch.float32)
    LatentCache(tmp_path / "c").get_or_compute(key, Counting())
    (path,) = cache_files(tmp_path / "c")
    damage(path)

    cache, compute = LatentCache(tmp_path / "c"), Counting()
    got = cache.get_or_compute(key, compute)
    assert compute.calls == 1 and torch.equal(got, compute.value)  # never the damaged data
    assert (cache.hits, cache.misses, cache.rebuilt) == (0, 1, 1)
    check = LatentCache(tmp_path / "c")
    assert torch.equal(check.get_or_compute(key, Counting()), compute.value)
    assert check.hits == 1  # the rebuilt file is whole again


def test_a_file_under_the_wrong_name_is_not_trusted(tmp_path):
    cache = LatentCache(tmp_path / "c")
    key_a, key_b = cache_key("a"), cache_key("b")
    cache.get_or_compute(key_a, Counting(torch.zeros(2)))
    cache.path_for(key_b).parent.mkdir(parents=True, exist_ok=True)
    cache.path_for(key_a).replace(cache.path_for(key_b))  # e.g. a bad manual copy
    compute = Counting(torch.ones(2))
    assert torch.equal(cache.get_or_compute(key_b, compute), torch.ones(2))
    assert compute.calls == 1 and cache.rebuilt == 1


# ---------------------------------------------------------------------------- text embeddings
def embeddings() -> dict[str, torch.Tensor]:
    return {
        "prompt_embeds": torch.randn(1, 77, 32).to(torch.bfloat16),
        "pooled_prompt_embeds": torch.randn(1, 32),
        "attention_mask": torch.ones(1, 77, dtype=torch.int64),
    }


def test_text_embeddings_round_trip_through_disk(tmp_path):
    key = text_key("sks, a red circle", "clip-l:demo", torch.bfloat16)
    stored = embeddings()
    TextEmbeddingCache(tmp_path / "te").get_or_compute(key, lambda: stored)
    later = TextEmbeddingCache(tmp_path / "te")
    got = later.get_or_compute(key, lambda: pytest.fail("should have been cached"))
    assert later.hits == 1 and set(got) == set(stored)
    for name, tensor in stored.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor)


def test_text_keys_depend_on_caption_encoder_and_dtype():
    base = text_key("sks, a dog", "te-1", torch.float32)
    assert base == text_key("sks, a dog", "te-1", "float32")
    assert text_key("sks, a cat", "te-1", torch.float32) != base
    assert text_key("sks, a dog", "te-2", torch.float32) != base
    assert text_key("sks, a dog", "te-1", torch.float16) != base
    assert text_key("", "te-1", torch.float32) != base  # dropped captions are their own entry


def test_memory_text_cache_counts():
    cache, calls = TextEmbeddingCache(None), []
    for caption in ["a", "b", "a", "a"]:
        cache.get_or_compute(
            text_key(caption, "te", "fp32"), lambda: calls.append(1) or embeddings()
        )
    assert (cache.hits, cache.misses, len(calls)) == (2, 2, 2)


def test_key_parts_cannot_run_together():
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert len(cache_key("x")) == 64 and cache_key("x") == cache_key("x")
