"""What a training step pays for its inputs (trainer.engine.inputs): one VAE and one text-encoder
call per batch, no image decoded once its latent is cached, and the same losses either way."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from options_support import run
from test_trainer import tiny_config

import trainer.data.batches as batches_module
from trainer.arch.sd15 import SD15Arch
from trainer.data.scanning import DatasetError
from trainer.engine.ahead import Ahead

CACHED = {"cache_latents": True}
STEPS = 12  # 12 demo images, batch 2: two epochs, the second one all cache hits


def cached_config(**dataset: Any):
    ds = {"folder_path": "demo:dataset", "trigger_word": "sks", "resolution": [64], **dataset}
    return tiny_config(datasets=[ds], train={"steps": STEPS, "cache_text_embeddings": True})


@pytest.fixture()
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The image files decoded (trainer.data.transforms.render) while the test runs."""
    seen: list[str] = []
    real = batches_module.render

    def counting(info, *args, **kwargs):
        seen.append(info.path.name)
        return real(info, *args, **kwargs)

    monkeypatch.setattr(batches_module, "render", counting)
    return seen


@pytest.fixture()
def encoder_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Batch sizes of every VAE and text-encoder call."""
    calls: dict[str, list[int]] = {"vae": [], "text": []}
    vae, text = SD15Arch.encode_images, SD15Arch.encode_prompts

    def counting_vae(self, pixels, *args, **kwargs):
        calls["vae"].append(pixels.shape[0])
        return vae(self, pixels, *args, **kwargs)

    def counting_text(self, prompts, *args, **kwargs):
        calls["text"].append(len(prompts))
        return text(self, prompts, *args, **kwargs)

    monkeypatch.setattr(SD15Arch, "encode_images", counting_vae)
    monkeypatch.setattr(SD15Arch, "encode_prompts", counting_text)
    return calls


def test_live_steps_encode_each_batch_in_one_call(
    demo_home: Path, tmp_path: Path, encoder_calls: dict[str, list[int]]
) -> None:
    run(tiny_config(train={"steps": STEPS}), demo_home, tmp_path / "live")
    # One call per step for each encoder, each with the whole batch (the old code: two each).
    assert encoder_calls["vae"] == [2] * STEPS
    assert encoder_calls["text"] == [2] * STEPS


def test_cached_steps_decode_no_image(
    demo_home: Path, tmp_path: Path, renders: list[str], encoder_calls: dict[str, list[int]]
) -> None:
    _, rec = run(cached_config(**CACHED), demo_home, tmp_path / "cached")
    # The first epoch decodes and encodes each of the 12 images once; the second epoch's six
    # steps are cache hits and read no file at all.
    assert sorted(renders) == sorted(set(renders)) and len(renders) == 12
    assert sum(encoder_calls["vae"]) == 12
    assert rec.metrics[STEPS]["cache/latent_hits"] == 12
    assert rec.metrics[STEPS]["cache/latent_misses"] == 12


def test_uncached_steps_decode_every_image_every_time(
    demo_home: Path, tmp_path: Path, renders: list[str]
) -> None:
    run(tiny_config(train={"steps": STEPS}), demo_home, tmp_path / "live")
    assert len(renders) == 2 * STEPS


def test_masked_datasets_still_read_their_images(
    demo_home: Path, tmp_path: Path, renders: list[str]
) -> None:
    # A step needs the mask even when the latent is cached: those images are always read.
    run(cached_config(alpha_mask=True, **CACHED), demo_home, tmp_path / "masked")
    assert len(renders) == 2 * STEPS


def home_sharing_demo(demo_home: Path, home: Path) -> Path:
    """A studio home of its own (its own cache folder) using the built demo model and data."""
    for part in ("models", "datasets"):
        (home / part).mkdir(parents=True)
        (home / part / "demo").symlink_to(demo_home / part / "demo")
    return home


def test_a_disk_cache_from_an_earlier_run_decodes_nothing(
    demo_home: Path, tmp_path: Path, renders: list[str]
) -> None:
    home = home_sharing_demo(demo_home, tmp_path / "home")
    cfg = cached_config(cache_latents_to_disk=True)
    _, first = run(cfg, home, tmp_path / "a")
    assert len(renders) == 12
    renders.clear()
    _, second = run(cfg, home, tmp_path / "b")
    assert renders == []  # every latent was on disk before the first step
    assert second.losses() == first.losses()


def test_a_damaged_cache_file_is_decoded_again(
    demo_home: Path, tmp_path: Path, renders: list[str]
) -> None:
    home = home_sharing_demo(demo_home, tmp_path / "home")
    cfg = cached_config(cache_latents_to_disk=True)
    _, first = run(cfg, home, tmp_path / "a")
    files = sorted((home / "cache" / "latents").rglob("*.safetensors"))
    files[0].write_bytes(b"garbage")  # known as cached when the run starts, unreadable later
    renders.clear()
    _, second = run(cfg, home, tmp_path / "b")
    assert len(renders) == 1
    # re-encoded alone rather than with its batch: float rounding apart (1e-7 here), no more
    assert second.losses() == pytest.approx(first.losses(), rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------ ahead
def test_batches_are_encoded_off_the_training_thread(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    vae = SD15Arch.encode_images

    def noting_thread(self, pixels, *args, **kwargs):
        threads.append(threading.current_thread().name)
        return vae(self, pixels, *args, **kwargs)

    monkeypatch.setattr(SD15Arch, "encode_images", noting_thread)
    run(tiny_config(train={"steps": STEPS}), demo_home, tmp_path / "live")
    assert threads == ["batches-ahead"] * STEPS
    assert not [t for t in threading.enumerate() if t.name == "batches-ahead"]  # none left


def test_ahead_keeps_order_and_stays_within_its_depth() -> None:
    made: list[int] = []

    def numbers():
        for i in range(100):
            made.append(i)
            yield {"i": i}

    with Ahead(numbers(), lambda b: {**b, "ready": True}, count=10, depth=2) as ahead:
        first = next(ahead)
        time.sleep(0.3)
        # one handed out, two ready, one more made and waiting for room: never the whole plan
        assert len(made) <= 4
        rest = list(ahead)
    assert [first["i"]] + [b["i"] for b in rest] == list(range(10))
    assert all(b["ready"] for b in rest)
    assert len(made) == 10  # exactly the batches the steps need


def test_ahead_raises_the_threads_error_in_the_training_thread() -> None:
    def failing():
        yield {"i": 0}
        raise DatasetError("img_003.png could not be read during training")

    with Ahead(failing(), lambda b: b, count=5) as ahead:
        assert next(ahead)["i"] == 0
        with pytest.raises(DatasetError, match=r"img_003\.png"):
            next(ahead)


def test_closing_ahead_stops_its_thread() -> None:
    def endless():
        while True:
            yield {}

    ahead = Ahead(endless(), lambda b: b, count=10**9, depth=1)
    next(ahead)
    ahead.close()
    assert not ahead._thread.is_alive()


def test_closing_ahead_closes_its_batches_so_a_loader_ends_its_workers_at_once() -> None:
    """The batches' generator is closed (its ``finally`` runs) when the loop ends, not at a
    later garbage collection: a persistent loader's workers end with the run."""
    ended: list[str] = []

    def endless():
        try:
            while True:
                yield {}
        finally:
            ended.append("loader closed")

    batches = endless()  # still referenced, as the training loop's stream is
    ahead = Ahead(batches, lambda b: b, count=10**9, depth=1)
    next(ahead)
    assert ended == []
    ahead.close()
    assert ended == ["loader closed"]


def test_plain_runs_clip_with_torch_and_get_accelerates_result(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import accelerate

    from trainer.engine import distributed

    calls: list[str] = []
    real = accelerate.Accelerator.clip_grad_norm_

    def noting(self, *args, **kwargs):
        calls.append("accelerate")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "clip_grad_norm_", noting)
    cfg = tiny_config(train={"steps": 4, "max_grad_norm": 0.01})  # clipping bites every step
    _, plain = run(cfg, demo_home, tmp_path / "plain")
    assert calls == []  # torch's clip_grad_norm_ directly: no per-call package checks
    monkeypatch.setattr(distributed, "PLAIN_CLIPPING", ())
    _, through_accelerate = run(cfg, demo_home, tmp_path / "accelerate")
    assert calls == ["accelerate"] * 4
    assert plain.losses() == through_accelerate.losses()
