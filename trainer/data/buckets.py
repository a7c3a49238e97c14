"""Bucket sizes and epoch arithmetic: which training size each image gets, and batches per epoch.

Buckets are (width, height) in pixels, with area about resolution² and sides multiples of the
model's size multiple. A batch never mixes buckets, so an epoch holds Σ_buckets ceil(n / batch)
batches. Plain Python (no torch, no PIL): the advisor imports it directly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Bucket = tuple[int, int]  # (width, height) in pixels


def make_buckets(
    resolution: int, multiple: int, max_ratio: float = 2.0, *, step: int | None = None
) -> list[Bucket]:
    """Bucket sizes (width, height) with area ≈ resolution², sides multiples of ``multiple``.

    Widths grow from the square in ``step`` pixels (default: resolution/16 rounded to the
    multiple, e.g. 32 at 512 px) until the aspect ratio passes ``max_ratio``; each wide bucket
    has its tall mirror. A coarser step than ``multiple`` keeps buckets few, so batches fill.
    Sorted from tallest to widest.
    """
    side = floor_to(resolution, multiple)
    step = step or max(multiple, floor_to(side // 16, multiple))
    area = side * side
    found = {(side, side)}
    width = side + step
    while True:
        height = max(multiple, round(area / width / multiple) * multiple)
        if width / height > max_ratio + 1e-9:
            break
        found |= {(width, height), (height, width)}
        width += step
    return sorted(found, key=lambda bucket: bucket[0] / bucket[1])


def assign_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to the image's (compared as log ratios)."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - ratio))


def bucket_for(
    width: int,
    height: int,
    resolution: int,
    multiple: int,
    *,
    enable_bucketing: bool = True,
    no_upscale: bool = False,
    buckets: Sequence[Bucket] | None = None,
) -> Bucket:
    """The training size of one image at one resolution.

    Without bucketing everything is a ``resolution`` square (with ``no_upscale``, a smaller
    square when the image's short side is smaller). With ``no_upscale``, an image that would have
    to be enlarged to cover its bucket trains at its own size instead (same aspect ratio, area
    at most resolution², sides rounded down to the multiple).
    """
    side = floor_to(resolution, multiple)
    if not enable_bucketing:
        if no_upscale:
            side = min(side, floor_to(min(width, height), multiple))
        return (side, side)
    bucket = assign_bucket(width, height, buckets or make_buckets(side, multiple))
    if no_upscale and (bucket[0] > width or bucket[1] > height):
        return _own_size(width, height, side * side, multiple)
    return bucket


def epoch_bucket_counts(
    sizes: Iterable[tuple[int, int]],
    resolutions: Iterable[int],
    multiple: int,
    *,
    enable_bucketing: bool = True,
    no_upscale: bool = False,
    repeats: int = 1,
) -> dict[Bucket, int]:
    """Items per bucket in one epoch of one dataset: every image (``sizes``: width, height) at
    every resolution, ``repeats`` times. What the trainer's ``BucketBatches`` counts for one
    dataset, and what the advisor, the wizard and the Datasets page show; sorted like it, from
    the tallest bucket to the widest."""
    sizes = list(sizes)
    counts: Counter[Bucket] = Counter()
    for resolution in resolutions:
        side = floor_to(resolution, multiple)
        buckets = make_buckets(side, multiple)
        for width, height in sizes:
            bucket = bucket_for(
                width,
                height,
                side,
                multiple,
                enable_bucketing=enable_bucketing,
                no_upscale=no_upscale,
                buckets=buckets,
            )
            counts[bucket] += repeats
    return dict(sorted(counts.items(), key=lambda kv: (kv[0][0] / kv[0][1], kv[0])))


def bucket_label(bucket: Bucket) -> str:
    """The "WxH" name of a bucket, as the run's log and the studio write it."""
    return f"{bucket[0]}x{bucket[1]}"


def _own_size(width: int, height: int, max_area: int, multiple: int) -> Bucket:
    scale = min(1.0, math.sqrt(max_area / (width * height)))
    return (floor_to(width * scale, multiple), floor_to(height * scale, multiple))


def floor_to(value: float, multiple: int) -> int:
    return max(multiple, int(value) // multiple * multiple)


def batches_per_epoch(bucket_counts: Mapping[Any, int] | Iterable[int], batch_size: int) -> int:
    """Σ over buckets of ceil(items in bucket / batch): a batch never mixes buckets."""
    counts = bucket_counts.values() if isinstance(bucket_counts, Mapping) else bucket_counts
    return sum(math.ceil(count / batch_size) for count in counts if count > 0)


def steps_per_epoch(
    bucket_counts: Mapping[Any, int] | Iterable[int],
    batch_size: int,
    grad_accum: int = 1,
    repeats: int = 1,
) -> int:
    """Optimizer steps per epoch: Σ_buckets ceil(n × repeats / batch), then ceil(/ grad_accum).

    ``bucket_counts`` are images per bucket; pass ``repeats`` when they do not include repeats
    (BucketBatches' counts already do). The last step of an epoch may accumulate fewer batches.
    """
    counts = bucket_counts.values() if isinstance(bucket_counts, Mapping) else bucket_counts
    batches = batches_per_epoch([count * repeats for count in counts], batch_size)
    return math.ceil(batches / grad_accum)
