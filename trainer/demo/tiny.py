"""Tiny random-initialised pipelines and a generated dataset, so the studio runs with no downloads.

No machine here can fetch weights from a model hub, yet the whole flow (wizard, trainer, sampling,
LoRA save/load) should run on a CPU in about a minute. So this module builds, from configs alone,
tiny pipelines with the *real* diffusers/transformers classes (saved with ``save_pretrained``,
loaded with ``from_pretrained(folder, dtype=torch.float32)``), plus a small procedurally drawn
dataset captioned with the trigger word ``sks`` (``trainer.demo.dataset``).

Shapes mirror the real models where code could depend on them (VAE scale factor 8, SDXL's two
text encoders and "text_time" conditioning, a FLUX.1-dev style guidance-distilled transformer with
a 16-channel VAE), and the dimensions that must agree with each other are deliberately *different*
numbers (e.g. SDXL text encoders of width 32 and 48), so code that mixes them up fails loudly.

    demo:sd15    -> <home>/models/demo/sd15       (StableDiffusionPipeline)
    demo:sdxl    -> <home>/models/demo/sdxl       (StableDiffusionXLPipeline)
    demo:flux    -> <home>/models/demo/flux       (FluxPipeline)
    demo:dataset -> <home>/datasets/demo          (PNG + .txt captions, two+ aspect ratios)

Building is deterministic (bit-identical weights for the same seed) and ``ensure_demo`` builds
each folder once, atomically, and safely when several processes ask at the same time. torch,
diffusers and transformers are imported inside the builders ("heavy: building only"): the studio
imports this module on every page to ask whether the demo is built.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from trainer.demo.dataset import CAPTION_WORDS, build_demo_dataset

try:  # POSIX only; elsewhere the build-to-temp-then-rename step alone keeps folders whole.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEMO_ARCHS = ("sd15", "sdxl", "flux")
DEMO_DATASET = "dataset"
DEMO_PREFIX = "demo:"

# Bump to make every existing demo folder count as stale and be rebuilt on next use.
DEMO_VERSION = "tiny-v1"
MARKER_NAME = ".complete"

CLIP_MAX_LENGTH = 77  # what SD/SDXL/Flux pipelines pad CLIP prompts to
T5_MAX_LENGTH = 512  # FluxPipeline refuses longer; trainers may pass a smaller one


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocab: every byte bare and word-final, plus merges for caption words.

    Any text tokenizes (nothing is ever unknown); the merges only make caption words shorter.
    The special tokens take the highest ids, as in the real CLIP vocab.
    """
    byte_chars = _bytes_to_unicode()
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    for word in CAPTION_WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            rule = (merged, piece)
            merged += piece
            if rule not in merges:
                merges.append(rule)
                tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def _clip_tokenizer():
    from transformers import CLIPTokenizer  # heavy: building only

    vocab, merges = _clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def _t5_vocab() -> list[tuple[str, float]]:
    """A unigram vocab: T5's fixed specials, single characters, then whole caption words.

    Whole words score higher than their spelling, so captions become one piece per word, while
    letters, digits and punctuation still cover anything else a user types.
    """
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"-()"
    chars = [(c, -5.0) for c in alphabet] + [("▁" + c, -5.5) for c in alphabet]
    words = [("▁" + w, -3.0) for w in CAPTION_WORDS]
    return specials + chars + words


def _t5_tokenizer():
    from transformers import T5Tokenizer  # heavy: building only

    # extra_ids=0: the 100 <extra_id_*> sentinels are for span corruption, useless to an encoder.
    return T5Tokenizer(vocab=_t5_vocab(), extra_ids=0, model_max_length=T5_MAX_LENGTH)


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


def _seed_for(seed: int, component: str) -> None:
    """Seed torch per component: changing one component's shape never shifts another's weights."""
    import torch  # heavy: building only

    torch.manual_seed(zlib.crc32(f"{seed}:{component}".encode()))


def _clip_config(hidden: int, projection_dim: int | None = None):
    from transformers import CLIPTextConfig  # heavy: building only

    vocab, _ = _clip_vocab_and_merges()
    # bos/eos/pad must match the tokenizer: CLIP pools the hidden state at the first eos token.
    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        projection_dim=projection_dim or hidden,
        num_hidden_layers=3,  # SDXL reads hidden_states[-2]; clip_skip=2 needs one more
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )


def _clip_text_model(seed: int, name: str, hidden: int):
    from transformers import CLIPTextModel  # heavy: building only

    _seed_for(seed, name)
    return CLIPTextModel(_clip_config(hidden)).eval()


def _clip_text_model_with_projection(seed: int, name: str, hidden: int, projection_dim: int):
    from transformers import CLIPTextModelWithProjection  # heavy: building only

    _seed_for(seed, name)
    return CLIPTextModelWithProjection(_clip_config(hidden, projection_dim)).eval()


def _t5_encoder(seed: int, d_model: int):
    from transformers import T5Config, T5EncoderModel  # heavy: building only

    _seed_for(seed, "text_encoder_2")
    config = T5Config(
        vocab_size=len(_t5_vocab()),
        d_model=d_model,
        d_kv=d_model // 4,
        d_ff=d_model * 2,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",  # T5 v1.1, the family Flux's encoder comes from
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def _vae(seed: int, latent_channels: int, scaling_factor: float, shift_factor: float | None):
    from diffusers import AutoencoderKL  # heavy: building only

    _seed_for(seed, "vae")
    # Four levels give the real models' 8x downscale, so bucket and latent-size maths is the same.
    flux_style = shift_factor is not None
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=not flux_style,
        use_post_quant_conv=not flux_style,
    ).eval()


def _sd15_unet(seed: int, cross_attention_dim: int):
    from diffusers import UNet2DConditionModel  # heavy: building only

    _seed_for(seed, "unet")
    # Same layout as SD1.5 in miniature: attention in the high-resolution blocks, a plain block
    # at the bottom; resnet convs give LoCon something to target.
    return UNet2DConditionModel(
        sample_size=8,  # x VAE factor 8 = 64 px default
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=cross_attention_dim,
    ).eval()


def _sdxl_unet(seed: int, cross_attention_dim: int, pooled_dim: int):
    from diffusers import UNet2DConditionModel  # heavy: building only

    _seed_for(seed, "unet")
    addition_time_embed_dim = 8
    # SDXL adds six micro-conditioning numbers (original size, crop, target size), each
    # embedded to addition_time_embed_dim, to the pooled text embedding of text_encoder_2.
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 1),
        use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + pooled_dim,
    ).eval()


def _flux_transformer(seed: int, latent_channels: int, t5_dim: int, clip_dim: int):
    from diffusers import FluxTransformer2DModel  # heavy: building only

    _seed_for(seed, "transformer")
    head_dim = 16
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,  # latents are packed 2x2 into tokens
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=head_dim,
        num_attention_heads=2,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=clip_dim,
        guidance_embeds=True,  # like FLUX.1-dev, the usual LoRA base
        axes_dims_rope=(4, 6, 6),  # must sum to head_dim
    ).eval()


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def _sd15_pipeline(seed: int):
    from diffusers import PNDMScheduler, StableDiffusionPipeline  # heavy: building only

    hidden = 32
    # The scheduler config of runwayml/stable-diffusion-v1-5.
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=_vae(seed, latent_channels=4, scaling_factor=0.18215, shift_factor=None),
        text_encoder=_clip_text_model(seed, "text_encoder", hidden),
        tokenizer=_clip_tokenizer(),
        unet=_sd15_unet(seed, cross_attention_dim=hidden),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl_pipeline(seed: int):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline  # heavy: building only

    te1_hidden, te2_hidden, te2_projection = 32, 48, 40
    # The scheduler config of stabilityai/stable-diffusion-xl-base-1.0.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        vae=_vae(seed, latent_channels=4, scaling_factor=0.13025, shift_factor=None),
        text_encoder=_clip_text_model(seed, "text_encoder", te1_hidden),
        text_encoder_2=_clip_text_model_with_projection(
            seed, "text_encoder_2", te2_hidden, te2_projection
        ),
        tokenizer=_clip_tokenizer(),
        tokenizer_2=_clip_tokenizer(),
        unet=_sdxl_unet(
            seed, cross_attention_dim=te1_hidden + te2_hidden, pooled_dim=te2_projection
        ),
        scheduler=scheduler,
        add_watermarker=False,  # would need the invisible-watermark package
    )


def _flux_pipeline(seed: int):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline  # heavy: building only

    latent_channels, clip_hidden, t5_dim = 16, 32, 48
    # The scheduler config of black-forest-labs/FLUX.1-dev (resolution-dependent shift).
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=_vae(seed, latent_channels, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=_clip_text_model(seed, "text_encoder", clip_hidden),
        tokenizer=_clip_tokenizer(),
        text_encoder_2=_t5_encoder(seed, t5_dim),
        tokenizer_2=_t5_tokenizer(),
        transformer=_flux_transformer(seed, latent_channels, t5_dim, clip_hidden),
    )


_PIPELINE_BUILDERS: dict[str, Callable[[int], object]] = {
    "sd15": _sd15_pipeline,
    "sdxl": _sdxl_pipeline,
    "flux": _flux_pipeline,
}


def build_tiny_pipeline(arch: str, out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random-initialised diffusers pipeline folder for ``arch`` to ``out_dir``."""
    if arch not in _PIPELINE_BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(DEMO_ARCHS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline = _PIPELINE_BUILDERS[arch](seed)
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


# --------------------------------------------------------------------------------------------
# Demo folders in the studio home
# --------------------------------------------------------------------------------------------


def demo_root(home: Path) -> Path:
    """Where the demo models live: ``<home>/models/demo``."""
    return Path(home) / "models" / "demo"


def _demo_dataset_dir(home: Path) -> Path:
    return Path(home) / "datasets" / "demo"


def _demo_target(home: Path, what: str) -> Path:
    if what in DEMO_ARCHS:
        return demo_root(home) / what
    if what == DEMO_DATASET:
        return _demo_dataset_dir(home)
    raise ValueError(f"unknown demo {what!r}; valid: {', '.join(_valid_demo_names())}")


def _valid_demo_names() -> tuple[str, ...]:
    return (*DEMO_ARCHS, DEMO_DATASET)


def _is_complete(folder: Path) -> bool:
    marker = folder / MARKER_NAME
    try:
        return marker.read_text(encoding="utf-8").strip() == DEMO_VERSION
    except OSError:
        return False


def demo_is_built(home: Path, what: str) -> bool:
    """Whether the demo ``what`` is already complete in ``home`` (nothing is built)."""
    return _is_complete(_demo_target(home, what))


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock so only one process builds a given demo at a time."""
    if fcntl is None:  # pragma: no cover - Windows: rely on the atomic rename alone
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(what: str, folder: Path) -> None:
    if what == DEMO_DATASET:
        build_demo_dataset(folder)
    else:
        build_tiny_pipeline(what, folder)
    # Written last: a folder without it was interrupted mid-build and is never trusted.
    (folder / MARKER_NAME).write_text(DEMO_VERSION + "\n", encoding="utf-8")


def _install(built: Path, target: Path) -> None:
    """Swap a finished build into place; the target is never half-written at any moment."""
    if _is_complete(target):  # another process won a lock-free race: keep theirs
        shutil.rmtree(built, ignore_errors=True)
        return
    if target.exists():  # stale version or interrupted build: move aside, then delete
        stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale-", dir=target.parent))
        os.replace(target, stale / target.name)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(built, target)


def _remove_leftovers(target: Path) -> None:
    # Temp folders of builds that crashed; only safe to delete while holding the lock.
    for pattern in (f".{target.name}.partial-*", f".{target.name}.stale-*"):
        for leftover in target.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_demo(home: Path, what: str) -> Path:
    """Return the demo folder for ``what`` (an arch or ``"dataset"``), building it on first use."""
    target = _demo_target(home, what)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # built by whoever held the lock before us
            return target
        if fcntl is not None:
            _remove_leftovers(target)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            _build_into(what, partial)
            _install(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # no-op once installed
    return target


def resolve_demo_ref(ref: str, home: Path) -> str:
    """Turn ``"demo:<name>"`` into the built folder's path; any other string passes through."""
    if not ref.startswith(DEMO_PREFIX):
        return ref
    name = ref.removeprefix(DEMO_PREFIX)
    if name not in _valid_demo_names():
        valid = ", ".join(DEMO_PREFIX + n for n in _valid_demo_names())
        raise ValueError(f"unknown demo reference {ref!r}; valid choices: {valid}")
    return str(ensure_demo(home, name))


def build_all(home: Path) -> dict[str, Path]:
    """Ensure every demo model and the demo dataset exist; map each name to its folder."""
    return {name: ensure_demo(home, name) for name in _valid_demo_names()}
