"""Where a base model comes from, and what to say when it cannot be loaded.

A model reference (``model.name_or_path``, ``vae_path``, ``te_name_or_path``, the refiner) is a
local diffusers folder, a single checkpoint file or a Hugging Face Hub id (``demo:`` refs are
resolved before: ``trainer.demo.tiny.resolve_demo_ref``). ``classify_source`` tells which, without
touching the network; ``load_error`` turns a failed load into a ModelLoadError that says what was
tried, why it failed and how to fix it. The component loaders (a different VAE or text encoder)
live here too, so the Arch classes only decide which classes to load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.settings import hub_offline

if TYPE_CHECKING:
    import torch
    from torch import nn

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")
# What a failed from_pretrained / from_single_file raises for a missing or unreadable model.
LOAD_FAILURES = (OSError, ValueError, KeyError, RuntimeError)


class ModelLoadError(RuntimeError):
    """A base model (or its VAE / text encoder) could not be loaded; the message says the fix."""


def classify_source(ref: str) -> str:
    """'dir', 'file', 'hub' or 'missing' for a model reference (after demo refs are resolved)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return "dir"
    if path.is_file():
        return "file"
    looks_like_path = (
        ref.startswith(("/", ".", "~", "\\"))
        or ref.lower().endswith(SINGLE_FILE_SUFFIXES)
        or ref.count("/") != 1
        or ":" in ref
        or not re.fullmatch(r"[\w.-]+/[\w.-]+", ref)
    )
    return "missing" if looks_like_path else "hub"


def load_error(
    what: str, ref: str, source: str, arch: str, exc: BaseException | None
) -> ModelLoadError:
    """A ModelLoadError that says what was tried, why it failed and how to fix it."""
    demo = f"demo:{arch}"
    fixes = (
        f"point it to a local diffusers folder (with model_index.json) or a single "
        f".safetensors checkpoint, or use '{demo}' to try the studio with the tiny built-in model"
    )
    if source == "missing":
        message = (
            f"{what} '{ref}' was not found: no such folder or file on this machine. "
            f"Fix: check the path for typos, or {fixes}."
        )
    elif source == "hub":
        if hub_offline():
            why = (
                "the studio is offline (STUDIO_OFFLINE or HF_HUB_OFFLINE=1) and the model is "
                "not in the local Hugging Face cache"
            )
        else:
            why = "it could not be downloaded from the Hugging Face Hub or found in the cache"
        message = (
            f"{what} '{ref}' was tried as a Hugging Face Hub id, but {why}. Fix: download it "
            f"first on a connected machine (`hf download {ref}`) and copy the cache here, or "
            f"{fixes}."
        )
    elif source == "dir":
        message = (
            f"{what} '{ref}' is a folder but could not be loaded as a diffusers model. Fix: "
            f"make sure it is a complete diffusers folder (model_index.json plus one subfolder "
            f"per component), or {fixes}."
        )
    else:
        message = (
            f"{what} '{ref}' is a file but could not be loaded as a single-file checkpoint: "
            f"from_single_file also needs the model's configs, which come from the Hugging Face "
            f"Hub or its local cache{' (this machine is offline)' if hub_offline() else ''}. "
            f"Fix: check that the file is a complete {arch} checkpoint, convert it once to a "
            f"diffusers folder on a connected machine and point model.name_or_path there, or "
            f"use '{demo}' to try the studio with the tiny built-in model."
        )
    if exc is not None:
        message += f" (Original error: {type(exc).__name__}: {str(exc).strip()[:400]})"
    return ModelLoadError(message)


def check_pipeline_source(what: str, path: str, source: str, arch: str) -> None:
    """Refuse, before diffusers is asked, a base model that is missing or not a pipeline folder."""
    if source == "missing":
        raise load_error(what, path, source, arch, None)
    if source == "dir" and not (Path(path) / "model_index.json").is_file():
        raise ModelLoadError(
            f"{what} '{path}' is a folder without model_index.json, so it is not a diffusers "
            f"pipeline folder. Fix: point to the folder that contains model_index.json, to a "
            f"single .safetensors checkpoint, or use 'demo:{arch}'."
        )


def load_pipeline(
    pipeline_class: type, path: str, source: str, what: str, arch: str, kwargs: dict[str, Any]
) -> Any:
    """The pipeline at ``path`` (a single checkpoint file, a folder or a Hub id), or a
    ModelLoadError that says why not."""
    try:
        if source == "file":
            return pipeline_class.from_single_file(path, **kwargs)
        return pipeline_class.from_pretrained(path, **kwargs)
    except LOAD_FAILURES as exc:
        raise load_error(what, path, source, arch, exc) from exc


def load_vae(ref: str, dtype: torch.dtype, arch: str) -> nn.Module:
    """A VAE (``model.vae_path``) from a single file, a folder (with or without ``vae/``) or a
    Hub id (the VAE repository itself, or a pipeline's ``vae`` subfolder)."""
    from diffusers import AutoencoderKL  # diffusers: seconds to import; only when a model loads

    source = classify_source(ref)
    what = "The VAE (model.vae_path)"
    if source == "missing":
        raise load_error(what, ref, source, arch, None)
    try:
        if source == "file":
            return AutoencoderKL.from_single_file(ref, dtype=dtype)
        if source == "dir":
            sub = "vae" if (Path(ref) / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(ref, subfolder=sub, dtype=dtype)
        try:
            return AutoencoderKL.from_pretrained(ref, dtype=dtype)
        except OSError:
            return AutoencoderKL.from_pretrained(ref, subfolder="vae", dtype=dtype)
    except LOAD_FAILURES as exc:
        raise load_error(what, ref, source, arch, exc) from exc


def load_text_encoders(
    ref: str,
    dtype: torch.dtype,
    arch: str,
    *,
    pairs: Sequence[tuple[str, str]],
    primary: tuple[str, str],
    classes: dict[str, str],
) -> dict[str, Any]:
    """Text encoder(s) and their tokenizers (``model.te_name_or_path``) by pipeline attribute.

    ``pairs``: the pipeline's (text encoder, tokenizer) attribute names; a pipeline folder
    replaces those it has subfolders for. A bare model folder or Hub id replaces ``primary``.
    ``classes``: the transformers class name per text encoder attribute.
    """
    import transformers  # transformers: seconds to import; only when a model loads

    source = classify_source(ref)
    what = "The text encoder (model.te_name_or_path)"
    if source == "file":
        raise ModelLoadError(
            f"{what} '{ref}' is a single file; text encoders load from a folder or Hub id "
            f"(config.json + weights). Fix: point to such a folder."
        )
    if source == "missing":
        raise load_error(what, ref, source, arch, None)
    root = Path(ref)
    if source == "dir" and any((root / te).is_dir() for te, _ in pairs):
        wanted = [(te, tok, te, tok) for te, tok in pairs if (root / te).is_dir()]
    else:  # one bare model folder / Hub id: it replaces the primary text encoder
        wanted = [(*primary, None, None)]
    out: dict[str, Any] = {}
    try:
        for te_name, tok_name, te_sub, tok_sub in wanted:
            model_class = getattr(transformers, classes[te_name])
            te_kwargs = {"subfolder": te_sub} if te_sub else {}
            out[te_name] = model_class.from_pretrained(ref, dtype=dtype, **te_kwargs)
            tok_dir = root / tok_sub if tok_sub else root
            if source == "hub" or (tok_dir / "tokenizer_config.json").is_file():
                tok_kwargs = {"subfolder": tok_sub} if tok_sub else {}
                out[tok_name] = transformers.AutoTokenizer.from_pretrained(ref, **tok_kwargs)
    except LOAD_FAILURES as exc:
        raise load_error(what, ref, source, arch, exc) from exc
    return out
