"""Starting points per training type and architecture (docs/sources.md#intent-defaults).

Where the doc gives a band, the built-in presets' choice (``presets/<intent>_<arch>.yaml``,
which cite the same doc) is the centre; priority "quality" moves repeats to the top of the
band and "speed" to the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.models.components import BASE_MODEL_IDS

NOTES = "docs/sources.md#intent-defaults"


@dataclass(frozen=True)
class IntentPrior:
    repeats: tuple[int, int]  # repeats per image (low, high)
    rank: dict[str, int]
    alpha_share: dict[str, float]  # alpha = rank × share
    lr: dict[str, float]  # AdamW8bit learning rate at an effective batch of 1-2
    train_te: tuple[str, ...]  # architectures where the text encoder is trained
    flip_x: bool
    network: dict[str, str]  # adapter type per architecture (default lora)
    preservation: str  # dop | bpp | none
    class_word: str | None  # default class word for differential output preservation
    images: tuple[int, int]  # typical dataset size
    caption_tip: str
    shuffle_tags: bool = False


_SD_HALF = {"sd15": 0.5, "sdxl": 0.5, "flux": 1.0}

PRIORS: dict[str, IntentPrior] = {
    "person": IntentPrior(
        repeats=(80, 120),
        rank={"sd15": 16, "sdxl": 32, "flux": 16},
        alpha_share=_SD_HALF,
        lr={"sd15": 3e-4, "sdxl": 2e-4, "flux": 1e-4},
        train_te=("sd15",),
        flip_x=False,
        network={},
        preservation="dop",
        class_word="person",
        images=(15, 40),
        caption_tip="trigger + scene and pose; do not describe the face",
    ),
    "character": IntentPrior(
        repeats=(50, 100),
        rank={"sd15": 16, "sdxl": 8, "flux": 16},
        alpha_share=_SD_HALF,
        lr={"sd15": 5e-4, "sdxl": 3e-4, "flux": 1e-4},
        train_te=("sd15",),
        flip_x=False,
        network={},
        preservation="none",
        class_word=None,
        images=(20, 100),
        caption_tip="tags; remove the tags the trigger should absorb; keep the trigger first",
        shuffle_tags=True,
    ),
    "style": IntentPrior(
        repeats=(30, 60),
        rank={"sd15": 16, "sdxl": 16, "flux": 32},
        alpha_share=_SD_HALF,
        lr={"sd15": 3e-4, "sdxl": 1e-4, "flux": 1e-4},
        train_te=(),
        flip_x=True,
        network={"sd15": "locon", "sdxl": "locon"},
        preservation="none",
        class_word=None,
        images=(30, 200),
        caption_tip="describe the content, not the style",
    ),
    "object": IntentPrior(
        repeats=(60, 100),
        rank={"sd15": 16, "sdxl": 16, "flux": 16},
        alpha_share=_SD_HALF,
        lr={"sd15": 2e-4, "sdxl": 1e-4, "flux": 1e-4},
        train_te=(),
        flip_x=False,
        network={},
        preservation="dop",
        class_word=None,
        images=(10, 30),
        caption_tip="trigger + class word + context",
    ),
    "concept": IntentPrior(
        repeats=(40, 80),
        rank={"sd15": 32, "sdxl": 32, "flux": 32},
        alpha_share=_SD_HALF,
        lr={"sd15": 2e-4, "sdxl": 1e-4, "flux": 1e-4},
        train_te=(),
        flip_x=False,
        network={},
        preservation="bpp",
        class_word=None,
        images=(20, 100),
        caption_tip="describe everything except the concept",
    ),
    "other": IntentPrior(
        repeats=(40, 80),
        rank={"sd15": 16, "sdxl": 16, "flux": 16},
        alpha_share=_SD_HALF,
        lr={"sd15": 2e-4, "sdxl": 1e-4, "flux": 1e-4},
        train_te=(),
        flip_x=False,
        network={},
        preservation="none",
        class_word=None,
        images=(15, 100),
        caption_tip="describe what varies; leave out what the LoRA should learn",
    ),
}

# Top of the LR bands (docs/sources.md#intent-defaults): a bigger batch may raise the LR
# (√ scaling) up to here.
LR_MAX = {"sd15": 5e-4, "sdxl": 3e-4, "flux": 2e-4}
MIN_SNR = {"sd15": 5.0, "sdxl": 8.0}  # docs/sources.md#min-snr-gamma
FLUX_STEPS = (500, 4000)  # docs/sources.md#flux-prior: 500-4000 steps, 2000 typical
MAX_STEPS = 10_000  # more is almost always a mistake (docs/sources.md#total-steps)
MODEL_IDS = BASE_MODEL_IDS  # the usual base model per architecture (one home: the trainer's)
PROMPTS = {
    "person": [
        "photo of [trigger] {cls}, portrait, soft light",
        "[trigger] {cls} walking outdoors",
    ],
    "character": ["[trigger], standing, full body", "[trigger], sitting, upper body, smiling"],
    "style": ["a lighthouse on a cliff, [trigger] style", "a cat on a windowsill, [trigger] style"],
    "object": ["photo of [trigger] {cls} on a table", "[trigger] {cls} in a garden"],
    "concept": ["[trigger], a city street", "[trigger], a quiet forest"],
    "other": ["[trigger]", "[trigger], outdoors"],
}


def prior(training_type: str) -> IntentPrior:
    return PRIORS.get(training_type, PRIORS["other"])


def target_repeats(training_type: str, priority: str) -> int:
    low, high = prior(training_type).repeats
    if priority == "quality":
        return high
    if priority == "speed":
        return low
    return (low + high) // 2
