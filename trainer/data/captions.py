"""The caption one training step sees: trigger word, tag shuffle and caption / tag dropout.

Applied every time an item is drawn (``build_caption``), to the raw caption the scan read
(``trainer.data.scanning``). Auto-captioning models live in ``trainer.data.captioning``.
"""

from __future__ import annotations

import random
import re

from trainer.config.sections.datasets import DatasetConfig

TRIGGER_PLACEHOLDER = "[trigger]"


def build_caption(raw: str, ds: DatasetConfig, rng: random.Random, *, trigger: str | None) -> str:
    """The caption one training step sees.

    In order: caption dropout (whole caption -> ""), ``[trigger]`` replaced, the trigger put in
    front when the caption lacks it, then the comma-separated tags after the first
    ``keep_tokens`` shuffled and/or dropped. ``keep_tokens`` counts the caption's own tags; a
    prepended trigger is kept in front of them. Tags that contain the trigger are never dropped
    by token dropout (it would teach the LoRA without its trigger).
    """
    if rng.random() < ds.caption_dropout_rate:
        return ""
    text = _fill_trigger(raw, trigger)
    tags = _split_tags(text)
    head, tail = tags[: ds.keep_tokens], tags[ds.keep_tokens :]
    if trigger and not _mentions(text, trigger):
        head = [trigger, *head]
    if ds.shuffle_tokens:
        rng.shuffle(tail)
    if ds.token_dropout_rate > 0:
        tail = [tag for tag in tail if _keep_tag(tag, trigger, ds.token_dropout_rate, rng)]
    return ", ".join(head + tail)


def _fill_trigger(text: str, trigger: str | None) -> str:
    pattern = re.compile(re.escape(TRIGGER_PLACEHOLDER), re.IGNORECASE)
    return pattern.sub(lambda _: trigger or "", text)


def _split_tags(text: str) -> list[str]:
    tags = (" ".join(tag.split()) for tag in text.split(","))
    return [tag for tag in tags if tag]


def _mentions(text: str, trigger: str) -> bool:
    # As a whole word, so a trigger "sks" is not "found" inside "tasks".
    return re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", text, re.IGNORECASE) is not None


def _keep_tag(tag: str, trigger: str | None, rate: float, rng: random.Random) -> bool:
    return bool(trigger and _mentions(tag, trigger)) or rng.random() >= rate
