"""Where a base model comes from, and what to say when it cannot be loaded.

A model reference (``model.name_or_path``, ``vae_path``, ``te_name_or_path``, the refiner) is a
local diffusers folder, a single checkpoint file or a Hugging Face Hub id (``demo:`` refs are
resolved before: ``trainer.demo.tiny.resolve_demo_ref``). ``classify_source`` tells which, without
touching the network; ``load_error`` turns a failed load into a ModelLoadError that says what was
tried, why it failed and how to fix it. The component loaders (a different VAE or text encoder)
live here too, so the Arch classes only decide which classes to load.

A folder is checked against what its architecture loads before diffusers is asked
(``check_pipeline_source``, listing each missing component). A single checkpoint file loads
through ``load_single_file``: its architecture is read from its tensor names
(``trainer.arch.single_file``), and its configs, tokenizers and any network it lacks come from
``model.components_from`` (a diffusers folder or Hub id; by default the architecture's usual base
model).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.arch.single_file import (
    CheckpointError,
    CheckpointInfo,
    arch_mismatch,
    detect_checkpoint,
    read_flux_transformer,
)
from trainer.demo.tiny import resolve_demo_ref
from trainer.models.components import (
    ARCH_COMPONENTS,
    BASE_MODEL_IDS,
    MODEL_PARTS,
    NotAPipelineFolder,
    component_problems,
    describe_problems,
)
from trainer.models.fetch import ModelNotAvailable, ensure_snapshot
from trainer.settings import hub_offline

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

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
    what: str,
    ref: str,
    source: str,
    arch: str,
    exc: BaseException | None,
    components_from: str | None = None,
) -> ModelLoadError:
    """A ModelLoadError that says what was tried, why it failed and how to fix it
    (``components_from``: where a single-file base model's configs came from)."""
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
    elif components_from is not None:
        offline = " (this machine is offline: it must be a local folder or cached)"
        message = (
            f"{what} '{ref}' is a file but could not be loaded as a single-file checkpoint. "
            f"Its configs and tokenizers, and any part it lacks (a Flux transformer-only file "
            f"has no VAE or text encoders), come from model.components_from, here "
            f"'{components_from}': a diffusers folder or Hugging Face id of the same "
            f"architecture{offline if hub_offline() else ''}. Fix: check that the file is a "
            f"complete {arch} checkpoint and that model.components_from fits it, or use "
            f"'{demo}' to try the studio with the tiny built-in model."
        )
    else:
        message = (
            f"{what} '{ref}' is a file but could not be loaded as a single-file checkpoint: "
            f"from_single_file also needs the model's configs, which come from the Hugging Face "
            f"Hub or its local cache{' (this machine is offline)' if hub_offline() else ''}. "
            f"Fix: check that the file is a complete {arch} checkpoint, convert it once to a "
            f"diffusers folder on a connected machine and point there, or "
            f"use '{demo}' to try the studio with the tiny built-in model."
        )
    if exc is not None:
        message += f" (Original error: {type(exc).__name__}: {str(exc).strip()[:400]})"
    return ModelLoadError(message)


def check_pipeline_source(
    what: str, path: str, source: str, arch: str, skip: tuple[str, ...] = ()
) -> None:
    """Refuse, before diffusers is asked, a base model that is missing, not a pipeline folder or
    a folder without a component ``arch`` loads (``skip``: components that come from elsewhere)."""
    if source == "missing":
        raise load_error(what, path, source, arch, None)
    if source != "dir":
        return
    try:
        problems = component_problems(path, arch, skip)
    except NotAPipelineFolder:
        raise ModelLoadError(
            f"{what} '{path}' is a folder without model_index.json, so it is not a diffusers "
            f"pipeline folder. Fix: point to the folder that contains model_index.json, to a "
            f"single .safetensors checkpoint, or use 'demo:{arch}'."
        ) from None
    if problems:
        raise ModelLoadError(
            f"{what} '{path}' is a diffusers folder, but it lacks what model.arch {arch} loads: "
            f"{describe_problems(problems)}. Fix: copy the missing parts from the model's "
            f"repository (every component needs its subfolder with config and weights), or "
            f"point to a complete folder or a Hugging Face id."
        )


def supplied_elsewhere(
    vae_path: str | None, te_name_or_path: str | None, arch: str
) -> tuple[str, ...]:
    """Pipeline components the config loads from model.vae_path / te_name_or_path instead."""
    names = ARCH_COMPONENTS.get(arch, ())
    vae = ("vae",) if vae_path else ()
    encoders = tuple(n for n in names if n.startswith(("text_encoder", "tokenizer")))
    return vae + (encoders if te_name_or_path else ())


def load_pipeline(
    pipeline_class: type, path: str, source: str, what: str, arch: str, kwargs: dict[str, Any]
) -> Any:
    """The pipeline at ``path`` (a single checkpoint file, a folder or a Hub id), or a
    ModelLoadError that says why not."""
    if source == "file":  # what the file lacks comes from the architecture's usual base model
        return load_single_file(pipeline_class, path, what, arch, kwargs, BASE_MODEL_IDS[arch])
    try:
        return pipeline_class.from_pretrained(path, **kwargs)
    except LOAD_FAILURES as exc:
        raise load_error(what, path, source, arch, exc) from exc


def hub_snapshot(
    what: str, repo_id: str, arch: str, config_only: tuple[str, ...] = ()
) -> tuple[str, str | None]:
    """The local snapshot folder of a Hub model and its weight variant: only the files a run
    on ``arch`` loads, downloaded first when they are not cached (``trainer.models.fetch``)."""
    try:
        folder, variant = ensure_snapshot(repo_id, arch, config_only=config_only)
    except ModelNotAvailable as exc:
        demo = f" Or use 'demo:{arch}' to try the studio with the tiny built-in model."
        raise ModelLoadError(f"{what}: {exc}{demo}") from exc
    return str(folder), variant


def components_ref(components_from: str | None, arch: str, home: Path) -> str:
    """Where a single file's configs and missing parts come from: ``model.components_from``
    (a ``demo:`` ref resolved to its folder) or the architecture's usual base model."""
    try:
        return resolve_demo_ref(components_from or BASE_MODEL_IDS[arch], home)
    except ValueError as exc:
        raise ModelLoadError(f"model.components_from: {exc}") from exc


def load_single_file(
    pipeline_class: type,
    path: str,
    what: str,
    arch: str,
    kwargs: dict[str, Any],
    components_from: str,
) -> Any:
    """The pipeline from the single checkpoint at ``path``; its configs, tokenizers, scheduler
    and any network the file lacks come from ``components_from`` (a diffusers folder or Hub id,
    ``model.components_from``).

    SD1.5 / SDXL files load through diffusers' ``from_single_file`` (original or diffusers key
    layout); a Flux file gives the transformer only (BFL or diffusers layout; the VAE and text
    encoders of an all-in-one file are not read) and the rest of the pipeline loads from
    ``components_from``. A file whose tensor names show another architecture than ``arch`` is
    refused with the mismatch and its fix (diffusers can load such a file into the wrong model
    without an error: the tiny SDXL checkpoint "loads" as SD1.5).
    """
    try:
        info = detect_checkpoint(path)
    except CheckpointError as exc:
        raise ModelLoadError(f"{what} '{path}': {exc}") from exc
    if info.layout == "lora":
        raise ModelLoadError(
            f"{what} '{path}' is {info.describe()}. Fix: set it as model.lora_path and name "
            f"its base model in model.name_or_path."
        )
    mismatch = arch_mismatch(info, arch)
    if mismatch:  # refused: diffusers may load a mismatched file without error, as noise
        raise ModelLoadError(f"{what} '{path}': {mismatch}")
    from_file = info.contains
    if classify_source(components_from) == "hub":  # only what the file lacks is downloaded
        config_only = ("transformer",) if arch == "flux" else from_file
        what_from = "The components for the single-file checkpoint (model.components_from)"
        components_from, _ = hub_snapshot(what_from, components_from, arch, config_only)
    check_components_source(
        components_from, classify_source(components_from), arch, from_file, tuple(kwargs)
    )
    kwargs = dict(kwargs)
    try:
        if arch == "flux":
            if len(info.contains) > 1:
                log.warning(
                    "%s: only its transformer is read; the VAE and text encoders come from %s",
                    path,
                    components_from,
                )
            transformer = load_flux_transformer(path, info, components_from, kwargs["dtype"])
            return pipeline_class.from_pretrained(
                components_from, transformer=transformer, **kwargs
            )
        for name in ARCH_COMPONENTS[arch]:
            if name in MODEL_PARTS and name not in from_file and name not in kwargs:
                kwargs[name] = load_reference_component(components_from, name, kwargs["dtype"])
        return pipeline_class.from_single_file(path, config=components_from, **kwargs)
    except (*LOAD_FAILURES, single_file_component_error()) as exc:
        error = load_error(what, path, "file", arch, exc, components_from)
        raise ModelLoadError(f"{error} It was read as {info.describe()}.") from exc


def check_components_source(
    ref: str, source: str, arch: str, from_file: tuple[str, ...], passed: tuple[str, ...]
) -> None:
    """Refuse a model.components_from that is missing or a folder without what the file lacks
    (the parts the file holds need only their config there)."""
    what = "The components for the single-file checkpoint (model.components_from)"
    if source == "missing":
        raise load_error(what, ref, source, arch, None)
    if source == "file":
        raise ModelLoadError(
            f"{what} '{ref}' is a file; configs, tokenizers and the parts a checkpoint lacks "
            f"come from a diffusers folder or a Hugging Face id. Fix: point there, e.g. "
            f"'{BASE_MODEL_IDS[arch]}'."
        )
    if source == "dir":
        try:
            problems = component_problems(ref, arch, skip=passed, config_only=from_file)
        except NotAPipelineFolder as exc:
            raise ModelLoadError(f"{what}: {exc}. Fix: point to a diffusers folder.") from None
        if problems:
            raise ModelLoadError(
                f"{what} '{ref}' lacks what this checkpoint needs from it: "
                f"{describe_problems(problems)}."
            )


def single_file_component_error() -> type[Exception]:
    """diffusers' error for a component whose weights a checkpoint lacks (not an OSError)."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError  # diffusers: heavy

    return SingleFileComponentError


def load_reference_component(ref: str, name: str, dtype: torch.dtype) -> nn.Module:
    """Pipeline component ``name`` from the diffusers folder or Hub id ``ref``, with the class
    its model_index.json names."""
    import diffusers  # diffusers: seconds to import; only when a model loads

    library, class_name = diffusers.DiffusionPipeline.load_config(ref)[name]
    model_class = getattr(importlib.import_module(library), class_name)
    return model_class.from_pretrained(ref, subfolder=name, dtype=dtype)


def load_flux_transformer(
    path: str, info: CheckpointInfo, ref: str, dtype: torch.dtype
) -> nn.Module:
    """The Flux transformer from a single file, built from ``ref``'s transformer config; every
    tensor of the model must be in the file (no silently random weights)."""
    import accelerate  # accelerate: only when a model loads
    from diffusers import FluxTransformer2DModel  # diffusers: seconds to import

    config = FluxTransformer2DModel.load_config(ref, subfolder="transformer")
    state = read_flux_transformer(path, info, config)
    with accelerate.init_empty_weights():
        model = FluxTransformer2DModel.from_config(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"the file's Flux transformer does not fit the config from '{ref}': "
            f"{len(missing)} tensor(s) missing (e.g. {missing[:3]}), {len(unexpected)} "
            f"unexpected (e.g. {unexpected[:3]})"
        )
    # Cast before assigning: one copy of the weights, in the training dtype, and no float32 one.
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


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
