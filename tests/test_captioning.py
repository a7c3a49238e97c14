"""Auto-captioning: a tiny local BLIP folder captions a dataset; clear messages otherwise."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.data import captioning
from trainer.data import library as dm


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    files = [(f"{i}.png", png(i)) for i in range(3)] + [("0.txt", b"kept caption")]
    return dm.import_files(tmp_path / "datasets", "d", files).folder


def tiny_blip(folder: Path) -> Path:
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "dog", "cat"]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    processor = BlipProcessor(
        BlipImageProcessor(size={"height": 32, "width": 32}),
        BertTokenizer(str(folder / "vocab.txt")),
    )
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(vocab), encoder_hidden_size=32, bos_token_id=2, sep_token_id=3, **small
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=32,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_blip_folder_captions_images_without_captions(dataset: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = tiny_blip(home / "models" / "captioners" / "blip")
    assert captioning.captioner_folders(home) == [folder]
    captioner = captioning.load_captioner(folder)
    written = captioning.auto_caption(dataset, captioner, prefix="sks", batch_size=2)
    assert sorted(written) == ["1.png", "2.png"]
    captions = dm.read_captions(dataset)
    assert captions["0.png"] == "kept caption"
    vocab = {"a", "photo", "of", "dog", "cat", "sks,"}
    for name in ("1.png", "2.png"):
        words = captions[name].split()
        assert words[0] == "sks," and len(words) > 1 and set(words) <= vocab, captions[name]
    again = captioning.auto_caption(dataset, captioner, overwrite=True)
    assert sorted(again) == ["0.png", "1.png", "2.png"]


def test_plugins_and_clear_messages(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(captioning.CaptionerUnavailable, match="No captioner model folder"):
        captioning.load_captioner(None)
    with pytest.raises(captioning.CaptionerUnavailable, match="No captioner model at"):
        captioning.load_captioner(tmp_path / "missing")
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    with pytest.raises(captioning.CaptionerUnavailable, match="not a captioner"):
        captioning.load_captioner(unknown)
    wd14 = tmp_path / "wd14"
    wd14.mkdir()
    (wd14 / "model.onnx").write_bytes(b"")
    (wd14 / "selected_tags.csv").write_text("tag_id,name\n0,dog\n")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        with pytest.raises(captioning.CaptionerUnavailable, match="onnxruntime"):
            captioning.load_captioner(wd14)

    class Echo:
        def __init__(self, folder: Path) -> None:
            self.word = (folder / "word").read_text()

        def caption(self, images):
            return [f"{self.word} {img.size[0]}" for img in images]

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "word").write_text("thing")
    captioning.register_captioner("echo", lambda f: (f / "word").is_file(), Echo)
    try:
        written = captioning.auto_caption(dataset, captioning.load_captioner(plugin))
    finally:
        captioning._REGISTRY.pop(0)
    assert written == {"1.png": "thing 64", "2.png": "thing 64"}
