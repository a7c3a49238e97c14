"""What each architecture loads from a diffusers folder, and what a given folder lacks of it.

``ARCH_COMPONENTS`` lists the pipeline components the trainer loads per ``model.arch`` (what the
Arch classes in sd15.py, sdxl.py and flux.py read from the pipeline). Anything else a repository
ships is never loaded: the SD1.5 safety checker and feature extractor are passed as None, and no
architecture here uses an image encoder. ``missing_components`` checks a local folder against
that list without loading anything: model_index.json names each component, and its subfolder has
a config and weights (tokenizers: their vocabulary files). ``BASE_MODEL_IDS`` are the usual base
models per architecture, where a single-file checkpoint's configs and missing parts come from
when ``model.components_from`` is empty.

Pure pathlib/json: the studio's pages import this without torch or diffusers.
"""

from __future__ import annotations

import json
from pathlib import Path

ARCH_COMPONENTS: dict[str, tuple[str, ...]] = {
    "sd15": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sdxl": (
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ),
    "flux": (
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ),
}

# The networks among them (the rest are tokenizers and the scheduler, which hold no weights).
MODEL_PARTS = ("unet", "transformer", "vae", "text_encoder", "text_encoder_2")

BASE_MODEL_IDS: dict[str, str] = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "flux": "black-forest-labs/FLUX.1-dev",
}

# Weight files diffusers / transformers load without a ``variant``: whole, or sharded behind an
# index that maps each tensor to its shard.
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "model.safetensors",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
)
# A tokenizer folder needs its settings and one vocabulary format: the fast tokenizer's
# tokenizer.json, BPE vocab.json (+ merges.txt), or a SentencePiece model (T5's spiece.model).
TOKENIZER_VOCABS = ("tokenizer.json", "vocab.json", "spiece.model")


class NotAPipelineFolder(ValueError):
    """A folder without model_index.json: not a diffusers pipeline folder at all."""


def _weights_problem(sub: Path) -> str | None:
    for name in WEIGHT_FILES:
        if (sub / name).is_file():
            return None
        index = sub / f"{name}.index.json"
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, AttributeError):
                return f"its weight index {index.name} is unreadable"
            absent = sorted(shard for shard in shards if not (sub / shard).is_file())
            if absent:
                return f"weight shard(s) missing: {', '.join(absent)}"
            return None
    variants = sorted(p.name for p in sub.glob("*.safetensors")) + sorted(
        p.name for p in sub.glob("*.bin")
    )
    if variants:
        return (
            f"only weight files the trainer does not load ({', '.join(variants[:3])}); it "
            f"reads {WEIGHT_FILES[0]} or {WEIGHT_FILES[1]}"
        )
    return "no weights (.safetensors or .bin)"


def _component_problem(
    folder: Path, name: str, entry: object, config_only: bool = False
) -> str | None:
    """Why component ``name`` cannot be loaded from ``folder``, or None when it looks whole
    (``config_only``: only its config is needed, the weights come from elsewhere)."""
    if not (isinstance(entry, list) and len(entry) == 2 and all(entry)):
        return "not listed in model_index.json"
    sub = folder / name
    if not sub.is_dir():
        return f"no '{name}' subfolder"
    if name.startswith("tokenizer"):
        if not (sub / "tokenizer_config.json").is_file():
            return "no tokenizer_config.json"
        if not any((sub / vocab).is_file() for vocab in TOKENIZER_VOCABS) and not any(
            sub.glob("*.model")
        ):
            return f"no vocabulary ({', '.join(TOKENIZER_VOCABS)})"
        return None
    if name == "scheduler":
        return None if (sub / "scheduler_config.json").is_file() else "no scheduler_config.json"
    if not (sub / "config.json").is_file():
        return "no config.json"
    return None if config_only else _weights_problem(sub)


def component_problems(
    folder: str | Path,
    arch: str,
    skip: tuple[str, ...] = (),
    config_only: tuple[str, ...] = (),
) -> dict[str, str]:
    """Each component ``arch`` needs that ``folder`` lacks, with what is wrong with it.

    ``skip``: components that come from elsewhere (a different VAE or text encoder in the
    config). ``config_only``: components whose weights come from elsewhere (a single-file
    checkpoint) but whose config must be here. Raises NotAPipelineFolder when the folder has no model_index.json, ValueError for
    an unknown ``arch``.
    """
    if arch not in ARCH_COMPONENTS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {', '.join(ARCH_COMPONENTS)}")
    folder = Path(folder).expanduser()
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise NotAPipelineFolder(
            f"'{folder}' has no model_index.json, so it is not a diffusers pipeline folder"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAPipelineFolder(f"'{index_path}' is not readable JSON ({exc})") from exc
    if not isinstance(index, dict):
        raise NotAPipelineFolder(f"'{index_path}' is not a JSON object")
    problems: dict[str, str] = {}
    for name in ARCH_COMPONENTS[arch]:
        if name in skip:
            continue
        problem = _component_problem(folder, name, index.get(name), name in config_only)
        if problem:
            problems[name] = problem
    return problems


def missing_components(folder: str | Path, arch: str, skip: tuple[str, ...] = ()) -> list[str]:
    """The components ``arch`` needs that ``folder`` lacks, in loading order ([] = complete).

    Raises NotAPipelineFolder when the folder has no model_index.json.
    """
    return list(component_problems(folder, arch, skip))


def describe_problems(problems: dict[str, str]) -> str:
    """'vae (no config.json); tokenizer_2 (no 'tokenizer_2' subfolder)' for messages."""
    return "; ".join(f"{name} ({why})" for name, why in problems.items())


def arch_from_components(folders: set[str]) -> str | None:
    """The architecture a repository's top-level folders point to, or None when unclear."""
    if "transformer" in folders and "text_encoder_2" in folders:
        return "flux"
    if "unet" in folders:
        return "sdxl" if "text_encoder_2" in folders else "sd15"
    return None
