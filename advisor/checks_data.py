"""Rules about the dataset, captions, augmentation, caching and the validation images."""

from __future__ import annotations

from collections.abc import Iterator

from advisor import intents
from advisor.dataset import COMMON_WORDS, bucket_counts, training_images, trigger_clash
from advisor.findings import Context, Finding, finding, rule, user_datasets
from advisor.memory import latent_bytes
from advisor.models import GIB
from advisor.workload import FLIPS, variants
from trainer.config.sections.datasets import DatasetConfig

ASYMMETRIC = ("person", "character")


def _random_transforms(ds: DatasetConfig) -> list[str]:
    found = [a.type for a in ds.augmentations if a.type not in FLIPS]
    return found + [n for n in ("random_crop", "random_scale") if getattr(ds, n)]


@rule(
    "cache_to_disk_without_cache",
    ("datasets.0.cache_latents_to_disk", "datasets.0.cache_latents"),
    "disk cache implies caching",
)
def cache_to_disk_without_cache(ctx: Context) -> Iterator[Finding]:
    for i, ds in enumerate(ctx.cfg.datasets):
        if ds.cache_latents_to_disk and not ds.cache_latents:
            yield finding(
                "cache_to_disk_without_cache",
                "warning",
                (f"datasets.{i}.cache_latents", f"datasets.{i}.cache_latents_to_disk"),
                "cache_latents_to_disk caches latents (on disk); say so with cache_latents too",
                {f"datasets.{i}.cache_latents": True},
            )


@rule(
    "cache_random_augmentation",
    ("datasets.0.cache_latents", "datasets.0.random_crop"),
    "cached latents cannot follow random pixel changes",
)
def cache_random_augmentation(ctx: Context) -> Iterator[Finding]:
    for i, ds in enumerate(ctx.cfg.datasets):
        random = _random_transforms(ds)
        if random and (ds.cache_latents or ds.cache_latents_to_disk):
            yield finding(
                "cache_random_augmentation",
                "warning",
                (f"datasets.{i}.cache_latents", f"datasets.{i}.random_crop"),
                f"{', '.join(random)} change the pixels every time, so the trainer turns latent "
                "caching off for this dataset and encodes live (slower). Turn one of them off",
                {
                    f"datasets.{i}.cache_latents": False,
                    f"datasets.{i}.cache_latents_to_disk": False,
                },
            )


@rule(
    "cache_flip_variants",
    ("datasets.0.flip_x", "datasets.0.cache_latents"),
    "flips are cached per variant",
)
def cache_flip_variants(ctx: Context) -> Iterator[Finding]:
    for i, ds in enumerate(ctx.cfg.datasets):
        if _random_transforms(ds) or not (ds.cache_latents or ds.cache_latents_to_disk):
            continue
        if variants(ds) > 1:
            yield finding(  # what caching flips costs: expected, nothing to change
                "cache_flip_variants",
                "info",
                (f"datasets.{i}.flip_x", f"datasets.{i}.cache_latents"),
                f"flips are cached per variant: up to {variants(ds)}x the latent cache (memory or "
                "disk), and each variant is encoded live the first time it is drawn",
            )


@rule(
    "text_cache_with_dropout",
    ("train.cache_text_embeddings", "datasets.0.caption_dropout_rate"),
    "caption dropout with cached text",
)
def text_cache_with_dropout(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not cfg.train.cache_text_embeddings:
        return
    for i, ds in enumerate(cfg.datasets):
        if ds.caption_dropout_rate > 0:
            yield finding(
                "text_cache_with_dropout",
                "info",
                (f"datasets.{i}.caption_dropout_rate", "train.cache_text_embeddings"),
                "caption dropout works with cached text embeddings: each caption is cached, the "
                "empty caption too",
            )
            return


@rule("text_cache_off", ("train.cache_text_embeddings",), "captions encoded every step")
def text_cache_off(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    train = cfg.train
    if train.cache_text_embeddings or train.train_text_encoder:
        return
    if any(ds.shuffle_tokens or ds.token_dropout_rate > 0 for ds in cfg.datasets):
        return
    fix = {"train.cache_text_embeddings": True}
    if cfg.model.arch != "sd15":
        fix["train.unload_text_encoder"] = True
    yield finding(
        "text_cache_off",
        "suggestion",
        ("train.cache_text_embeddings",),
        "captions do not change and the text encoder is not trained: cache the embeddings "
        "once" + (" and free the encoders' VRAM" if cfg.model.arch != "sd15" else ""),
        fix,
    )


@rule("flip_asymmetric", ("datasets.0.flip_x", "intent"), "mirroring an asymmetric subject")
def flip_asymmetric(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.intent not in ASYMMETRIC:
        return
    for i in user_datasets(cfg):
        if cfg.datasets[i].flip_x:
            yield finding(
                "flip_asymmetric",
                "warning",
                (f"datasets.{i}.flip_x",),
                f"a {cfg.intent} is asymmetric (parting, moles, text on clothes): mirrored copies "
                "teach both sides",
                {f"datasets.{i}.flip_x": False},
            )


@rule("flip_y", ("datasets.0.flip_y",), "upside-down training images")
def flip_y(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.intent == "style":
        return
    for i, ds in enumerate(cfg.datasets):
        if ds.flip_y:
            yield finding(
                "flip_y",
                "suggestion",
                (f"datasets.{i}.flip_y",),
                "vertical flips teach upside-down subjects; only textures and patterns want them",
                {f"datasets.{i}.flip_y": False},
            )


@rule("trigger_missing", ("datasets.0.trigger_word",), "a subject LoRA without a trigger")
def trigger_missing(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if cfg.intent in ("style", "other") or any(ds.trigger_word for ds in cfg.datasets):
        return
    yield finding(
        "trigger_missing",
        "warning",
        ("datasets.0.trigger_word",),
        f"a {cfg.intent} LoRA without a trigger word bleeds into every prompt; pick a rare "
        "token such as 'ohwx'",
    )


@rule("trigger_common_word", ("datasets.0.trigger_word",), "a common word as the trigger")
def trigger_common_word(ctx: Context) -> Iterator[Finding]:
    for i, ds in enumerate(ctx.cfg.datasets):
        if ds.trigger_word and ds.trigger_word.lower() in COMMON_WORDS:
            yield finding(
                "trigger_common_word",
                "suggestion",
                (f"datasets.{i}.trigger_word",),
                f"'{ds.trigger_word}' already means something to the model: your subject will "
                "be mixed with it. A rare token ('ohwx', 'sks') starts blank",
            )


@rule("trigger_not_in_captions", ("datasets.0.trigger_word",), "captions with another trigger")
def trigger_not_in_captions(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    classes = {cfg.train.diff_output_preservation_class, intents.prior(cfg.intent).class_word}
    for i in user_datasets(cfg) if ctx.has_data else ():
        trigger, folder = cfg.datasets[i].trigger_word, ctx.dataset.folder(i)
        clash = trigger_clash(folder.captions, trigger) if trigger and folder else None
        if clash and clash.shared not in classes:  # trigger + class word is the usual recipe
            yield finding(
                "trigger_not_in_captions",
                "warning",
                (f"datasets.{i}.trigger_word",),
                clash.message(trigger),
                {f"datasets.{i}.trigger_word": clash.shared},
            )


@rule(
    "dataset_smaller_than_batch",
    ("train.batch_size", "train.gradient_accumulation_steps"),
    "one step needs more images than there are",
)
def dataset_smaller_than_batch(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not ctx.has_data:
        return
    batch = cfg.train.max_batch_size if cfg.train.auto_scale_batch_size else cfg.train.batch_size
    if not isinstance(batch, int):
        return
    accum = cfg.train.gradient_accumulation_steps
    items = sum(
        f.images * ds.num_repeats * len(ds.resolution)
        for ds, f in zip(cfg.datasets, ctx.dataset.folders, strict=False)
    )
    if items >= batch * accum:
        return
    fix = {"train.gradient_accumulation_steps": 1, "train.batch_size": max(1, min(batch, items))}
    if cfg.train.auto_scale_batch_size:
        fix.update({"train.max_batch_size": max(1, min(batch, items)), "train.min_batch_size": 1})
    yield finding(
        "dataset_smaller_than_batch",
        "error",
        ("train.batch_size", "train.gradient_accumulation_steps"),
        f"one epoch holds {items} images (with repeats) but a step needs batch {batch} × "
        f"accumulation {accum} = {batch * accum}: the run stops with 'not enough images'",
        fix,
    )


@rule("dataset_missing", ("datasets.0.folder_path",), "a dataset folder that does not exist")
def dataset_missing(ctx: Context) -> Iterator[Finding]:
    if ctx.info is None:
        return
    for i, folder in enumerate(ctx.info.folders):
        if folder.refused:  # served to a network: said the same whether the folder exists
            yield finding(
                "dataset_missing",
                "error",
                (f"datasets.{i}.folder_path",),
                f"dataset {i + 1}: {folder.refused}",
            )
        elif folder.missing:
            yield finding(
                "dataset_missing",
                "error",
                (f"datasets.{i}.folder_path",),
                f"dataset {i + 1}: no folder at {folder.folder} on this machine. Fix: correct "
                "the path (an absolute one is safest), pick a folder on the Datasets page, or "
                "use the demo dataset",
            )


@rule("dataset_skipped_files", ("datasets.0.folder_path",), "files the trainer will skip")
def dataset_skipped_files(ctx: Context) -> Iterator[Finding]:
    if not ctx.has_data:
        return
    for i, folder in enumerate(ctx.dataset.folders):
        if folder.skipped:
            shown = "; ".join(f"{name}: {why}" for name, why in folder.skipped[:3])
            yield finding(
                "dataset_skipped_files",
                "error" if folder.images == 0 else "warning",
                (f"datasets.{i}.folder_path",),
                f"{len(folder.skipped)} file(s) will be skipped ({shown}"
                + (", ..." if len(folder.skipped) > 3 else "")
                + ")",
            )


@rule(
    "dataset_no_captions",
    ("datasets.0.default_caption", "datasets.0.caption_ext"),
    "images without captions",
)
def dataset_no_captions(ctx: Context) -> Iterator[Finding]:
    if not ctx.has_data:
        return
    for i, (ds, folder) in enumerate(zip(ctx.cfg.datasets, ctx.dataset.folders, strict=False)):
        if folder.images and folder.captioned == 0 and not ds.default_caption:
            yield finding(
                "dataset_no_captions",
                "warning",
                (f"datasets.{i}.caption_ext", f"datasets.{i}.default_caption"),
                f"no .{ds.caption_ext} caption files next to the images and no default caption: "
                "every image trains with only the trigger word. Check caption_ext or caption the "
                "images (Dataset page)",
            )


@rule("dataset_size_for_intent", ("datasets.0.folder_path", "intent"), "few images for the goal")
def dataset_size_for_intent(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    if not ctx.has_data or cfg.intent == "other" or ctx.demo:
        return
    folders = ctx.dataset.folders
    images = sum(folders[i].images for i in user_datasets(cfg) if i < len(folders))
    low, _high = intents.prior(cfg.intent).images
    if 0 < images < low:
        yield finding(
            "dataset_size_for_intent",
            "suggestion",
            ("datasets.0.folder_path",),
            f"{images} images; {cfg.intent} LoRAs usually use {low} or more varied ones "
            "(angles, light, backgrounds) to generalise",
        )


@rule(
    "bucket_fragmentation",
    ("train.batch_size", "datasets.0.enable_bucketing"),
    "many half-empty batches",
)
def bucket_fragmentation(ctx: Context) -> Iterator[Finding]:
    cfg = ctx.cfg
    batch = cfg.train.batch_size
    if not ctx.has_data or not isinstance(batch, int) or batch < 2:
        return
    counts: list[int] = []
    for ds, folder in zip(cfg.datasets, ctx.dataset.folders, strict=False):
        if folder.sizes:
            counts += list(bucket_counts(ds, folder, cfg.model.arch).values())
    if not counts:
        return
    batches = sum(-(-n // batch) for n in counts)
    filled = sum(counts) / (batches * batch)
    if filled < 0.7:
        yield finding(
            "bucket_fragmentation",
            "suggestion",
            ("train.batch_size",),
            f"images spread over {len(counts)} aspect-ratio buckets: batches are only "
            f"{filled:.0%} full on average at batch {batch}. Crop to fewer aspect ratios or "
            "use a smaller batch",
        )


@rule(
    "shuffle_without_keep",
    ("datasets.0.shuffle_tokens", "datasets.0.keep_tokens"),
    "the trigger can be shuffled away from the front",
)
def shuffle_without_keep(ctx: Context) -> Iterator[Finding]:
    for i, ds in enumerate(ctx.cfg.datasets):
        if ds.shuffle_tokens and ds.keep_tokens == 0 and ds.trigger_word:
            yield finding(
                "shuffle_without_keep",
                "suggestion",
                (f"datasets.{i}.keep_tokens",),
                "tags are shuffled with keep_tokens 0: a trigger written in a caption can move "
                "anywhere; keep_tokens 1 keeps it first",
                {f"datasets.{i}.keep_tokens": 1},
            )


@rule("caption_dropout_high", ("datasets.0.caption_dropout_rate",), "most captions dropped")
def caption_dropout_high(ctx: Context) -> Iterator[Finding]:
    for i, ds in enumerate(ctx.cfg.datasets):
        if ds.caption_dropout_rate > 0.3:
            yield finding(
                "caption_dropout_high",
                "warning",
                (f"datasets.{i}.caption_dropout_rate",),
                f"{ds.caption_dropout_rate:.0%} of steps train without a caption: the trigger "
                "word learns little. 0.05-0.1 is usual",
                {f"datasets.{i}.caption_dropout_rate": 0.05},
            )


@rule("slow_disk_without_cache", ("datasets.0.cache_latents",), "decoding images from an HDD")
def slow_disk_without_cache(ctx: Context) -> Iterator[Finding]:
    profile = ctx.profile
    if profile is None or profile.disk_type != "hdd":
        return
    for i, ds in enumerate(ctx.cfg.datasets):
        if not (ds.cache_latents or ds.cache_latents_to_disk) and not _random_transforms(ds):
            yield finding(
                "slow_disk_without_cache",
                "suggestion",
                (f"datasets.{i}.cache_latents",),
                "the studio home is on a spinning disk: cache the latents so images are read and "
                "encoded once",
                {f"datasets.{i}.cache_latents": True},
            )


@rule("ram_cache_too_big", ("datasets.0.cache_latents_to_disk",), "latent cache too big for RAM")
def ram_cache_too_big(ctx: Context) -> Iterator[Finding]:
    work, profile = ctx.work, ctx.profile
    if work is None or profile is None or work.latents_to_disk or not work.latent_items:
        return
    size = work.latent_items * latent_bytes(work) / GIB
    if size > 0.7 * max(0.0, profile.ram_available_gb - 8):
        fix = {
            f"datasets.{i}.cache_latents_to_disk": True
            for i, ds in enumerate(ctx.cfg.datasets)
            if ds.cache_latents
        }
        yield finding(
            "ram_cache_too_big",
            "warning",
            tuple(fix),
            f"the latent cache (~{size:.1f} GB) would take most of the free RAM; keep it on disk",
            fix,
        )


@rule("alpha_mask_without_alpha", ("datasets.0.alpha_mask",), "alpha masks on opaque images")
def alpha_mask_without_alpha(ctx: Context) -> Iterator[Finding]:
    if not ctx.has_data:
        return
    for i, (ds, folder) in enumerate(zip(ctx.cfg.datasets, ctx.dataset.folders, strict=False)):
        if ds.alpha_mask and not ds.mask_path and folder.sizes and folder.with_alpha == 0:
            yield finding(
                "alpha_mask_without_alpha",
                "warning",
                (f"datasets.{i}.alpha_mask",),
                "alpha_mask is on but no image has transparency: nothing is masked",
                {f"datasets.{i}.alpha_mask": False},
            )


# --------------------------------------------------------------------------- validation images
# A hold-out above this share of the images leaves too few to learn the subject from.
HOLDOUT_SHARE = 0.2


@rule(
    "validation_folder_missing",
    ("validation.folder_path",),
    "a validation folder that is missing or holds no images",
)
def validation_folder_missing(ctx: Context) -> Iterator[Finding]:
    folder = ctx.info.validation if ctx.info is not None else None
    if not ctx.cfg.validation.folder_path or folder is None:
        return  # not named, or not looked at (the trainer checks it when the run starts)
    if folder.refused:
        message = f"validation folder: {folder.refused}"
    elif folder.missing:
        message = (
            f"validation folder: nothing at {folder.folder} on this machine — correct "
            "validation.folder_path (an absolute path is safest) or leave it empty"
        )
    elif folder.images == 0:
        why = f" ({folder.skipped[0][1]})" if folder.skipped else ""
        message = (
            f"validation folder {folder.folder} holds no usable images{why}: the run would "
            "stop at its start — add images with captions, or leave validation.folder_path empty"
        )
    else:
        return
    yield finding("validation_folder_missing", "error", ("validation.folder_path",), message)


def _smaller_holdout(images: int) -> int:
    """A hold-out of about a tenth of the images, at least one; none for fewer than five."""
    return max(1, images // 10) if images >= 5 else 0


@rule(
    "validation_holdout_too_many",
    ("validation.holdout", "datasets.0.folder_path"),
    "every image held out for validation",
)
def validation_holdout_too_many(ctx: Context) -> Iterator[Finding]:
    holdout = ctx.cfg.validation.holdout
    images = training_images(ctx.cfg, ctx.dataset) if ctx.has_data else 0
    if not holdout or not ctx.has_data or holdout < images:
        return
    yield finding(
        "validation_holdout_too_many",
        "error",
        ("validation.holdout",),
        f"validation.holdout is {holdout}, but your datasets hold {images} images: none would be "
        f"left to train on and the run stops at its start. Hold out fewer than {images}",
        {"validation.holdout": _smaller_holdout(images)},
    )


@rule(
    "validation_holdout_large",
    ("validation.holdout", "datasets.0.folder_path"),
    "a large share of the images held out for validation",
)
def validation_holdout_large(ctx: Context) -> Iterator[Finding]:
    holdout = ctx.cfg.validation.holdout
    images = training_images(ctx.cfg, ctx.dataset) if ctx.has_data else 0
    if not holdout or holdout >= images or holdout <= HOLDOUT_SHARE * images:
        return
    yield finding(
        "validation_holdout_large",
        "warning",
        ("validation.holdout",),
        f"validation.holdout takes {holdout} of your {images} images ({holdout / images:.0%}): "
        f"only {images - holdout} are left to train on, too few to learn the subject well. "
        f"Hold out at most {HOLDOUT_SHARE:.0%} (a few images are enough to see overfitting)",
        {"validation.holdout": _smaller_holdout(images)},
    )
