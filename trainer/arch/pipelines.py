"""Running the loaded diffusers pipeline for previews, beside training (``Arch.sample``).

``make_scheduler`` builds the training noise scheduler and the preview samplers (``SAMPLERS``).

Each preview image has its own settings (a ``SamplePrompt``'s overrides, else the run's
defaults: ``image_settings``); the networks sample in eval mode and go back to their training
mode afterwards (``eval_mode``); and the pipeline is made to run on the training device even when
the VAE or text encoders live elsewhere (``pinned_pipeline``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

SAMPLERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
    "flowmatch": "FlowMatchEulerDiscreteScheduler",
}


def make_scheduler(name: str, base_config: dict[str, Any], **kwargs: Any) -> Any:
    """A fresh diffusers scheduler of the kind ``SAMPLERS[name]`` on the base model's schedule
    (``base_config``: the pipeline's scheduler config; ``kwargs`` override it)."""
    import diffusers  # diffusers: seconds to import; only once a model is loaded

    return getattr(diffusers, SAMPLERS[name]).from_config(base_config, **kwargs)


def _first_set(value: Any, default: Any) -> Any:
    return default if value is None else value


def image_settings(item: dict | str, defaults: dict[str, Any]) -> dict[str, Any]:
    """One preview's prompt, neg, seed, width, height, steps, guidance_scale and
    network_multiplier: the prompt's own value where it sets one, else ``defaults``'s.

    ``item`` is a prompt or a dict with ``prompt`` and optional overrides (``neg``, ``seed``,
    ``width``, ``height``, ``guidance_scale``, ``sample_steps``, ``network_multiplier``, as in
    ``SamplePrompt``); a width, height or step count of 0 counts as not set.
    """
    spec = {"prompt": item} if isinstance(item, str) else dict(item)
    return {
        "prompt": spec["prompt"],
        "neg": _first_set(spec.get("neg"), defaults["neg"]),
        "seed": _first_set(spec.get("seed"), defaults["seed"]),
        "width": spec.get("width") or defaults["width"],
        "height": spec.get("height") or defaults["height"],
        "steps": spec.get("sample_steps") or defaults["steps"],
        "guidance_scale": _first_set(spec.get("guidance_scale"), defaults["guidance_scale"]),
        "network_multiplier": _first_set(
            spec.get("network_multiplier"), defaults["network_multiplier"]
        ),
    }


@contextlib.contextmanager
def eval_mode(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Eval mode for ``modules`` (no adapter dropout), then each one's previous mode again."""
    modes = [(module, module.training) for module in modules]
    try:
        for module, _ in modes:
            module.eval()
        yield
    finally:
        for module, training in modes:
            module.train(training)


def pinned_pipeline(pipe: Any, device: torch.device, extras: dict[str, Any]) -> Any:
    """A copy of ``pipe`` (same components) whose execution device is always ``device``.

    A pipeline takes its device from its first module, often the VAE, which may live elsewhere
    (``model.vae_device``, offloading). ``extras``: constructor arguments that are not
    components (e.g. SDXL's ``force_zeros_for_empty_prompt``)."""
    pinned = type(
        f"{type(pipe).__name__}OnTrainingDevice",
        (type(pipe),),
        {"_execution_device": property(lambda _self: device)},
    )
    copy = pinned(**pipe.components, **extras)
    copy.set_progress_bar_config(disable=True)
    return copy
