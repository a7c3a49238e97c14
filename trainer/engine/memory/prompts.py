"""``train.unload_text_encoder``: encode every prompt the run needs, then free the text encoders.

Every caption the run will use, the empty prompt, the class prompts of differential output
preservation and the sample prompts are encoded first; then the text encoders are removed from
the pipeline and freed, and ``Arch.encode_prompts`` answers from the stored embeddings (an
unknown prompt gets an error naming the option).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from trainer.arch.base import Arch
from trainer.config.schema import TrainingConfig
from trainer.engine.batching import planned_captions
from trainer.engine.failures import MemoryOptionError
from trainer.engine.objective import class_prompts
from trainer.engine.previews import sample_prompts


class PromptStore:
    """Embeddings of every prompt a run needs, kept after the text encoders are freed."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Tensor]] = {}

    def add(self, prompt: str, embeds: dict[str, Tensor]) -> None:
        self.entries[prompt] = embeds

    def __contains__(self, prompt: str) -> bool:
        return prompt in self.entries

    def lookup(self, prompts: Sequence[str], device: torch.device, dtype: torch.dtype) -> dict:
        missing = [p for p in prompts if p not in self.entries]
        if missing:
            raise MemoryOptionError(
                f"the text encoders were unloaded (train.unload_text_encoder), and the prompt "
                f"{missing[0]!r} was not encoded before — turn unload_text_encoder off for "
                "features that make new prompts during training"
            )
        out = {}
        for key, first in self.entries[prompts[0]].items():
            stacked = torch.stack([self.entries[p][key] for p in prompts])
            out[key] = (
                stacked.to(device, dtype) if first.is_floating_point() else stacked.to(device)
            )
        return out


def release_text_encoders(
    arch: Arch,
    prompts: Iterable[str],
    encode: Callable[[str], dict[str, Tensor]] | None = None,
) -> list[weakref.ref]:
    """Encode ``prompts`` (each once), then remove the text encoders and free them.

    ``encode(prompt)`` returns per-prompt embeddings without a batch dimension (the loop passes
    its text cache, so stored and cached tensors are shared); by default ``arch.encode_prompts``.
    Returns weak references to the freed encoders (dead once nothing else holds them).
    """
    store = PromptStore()
    for prompt in dict.fromkeys(prompts):
        if encode is not None:
            embeds = encode(prompt)
        else:
            embeds = {k: v[0].cpu() for k, v in arch.encode_prompts([prompt]).items()}
        store.add(prompt, embeds)
    refs = [weakref.ref(te) for te in arch.text_encoders.values()]
    offloaders = getattr(arch, "offloaders", {})
    for name in arch.text_encoder_names:
        if name in offloaders:
            offloaders.pop(name).detach()
    arch.pipe.register_modules(**dict.fromkeys(arch.text_encoder_names))
    arch.prompt_store = store
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return refs


def unload_for_run(
    arch: Arch, cfg: TrainingConfig, inputs: Any, data: Any, start: int, steps: int
) -> list[weakref.ref]:
    """``train.unload_text_encoder``: encode what the next ``steps`` steps and the previews need
    (through the loop's text cache, so each caption is encoded once), then free the encoders."""
    captions = planned_captions(data, cfg.train, start, steps)
    return release_text_encoders(arch, planned_prompts(cfg, captions), encode=inputs.one_text)


def planned_prompts(cfg: TrainingConfig, captions: Iterable[str]) -> list[str]:
    """The prompts the run will need: captions, the empty prompt, DOP class prompts, previews."""
    out = list(captions)
    out.append("")
    train = cfg.train
    if train.diff_output_preservation:
        captions = list(out)
        for trigger in {ds.trigger_word for ds in cfg.datasets if ds.trigger_word}:
            out += class_prompts(captions, [trigger] * len(captions), train)
    if cfg.sample.prompts and cfg.sample.sample_every:
        for spec in sample_prompts(cfg):
            out.append(spec["prompt"])
            out.append(spec.get("neg") or "")
        out.append(cfg.sample.neg or "")
    return list(dict.fromkeys(out))
