"""Share a finished LoRA on the Hugging Face Hub (``save.push_to_hub``).

The upload runs only after the LoRA is saved locally, so a failed upload never costs the
result: ``push_after_training`` leaves the run FINISHED with a warning (log line, run note and
the ``studio.warning.hub_upload`` tag) saying where the files are and how to upload them later. The token comes from
the ``HF_TOKEN`` environment variable (or huggingface_hub's own login) and is handed to
``HfApi`` only: it is never put in the config, a log line, an MLflow param/tag or an artifact,
and any text that might echo it is redacted before it is shown.

The folder's ``README.md`` is the model card the Hub shows (``trainer.lora.usage`` writes it
beside the saved LoRA; ``push_lora_folder`` writes it first when the folder has none).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from trainer.config.schema import TrainingConfig
from trainer.lora.io import read_lora_metadata
from trainer.lora.usage import CARD_NAME, DIFFUSERS_WEIGHTS, write_usage_files
from trainer.redaction import redact_text
from trainer.settings import hub_offline
from trainer.tracking.tracker import TAG_HUB_UPLOAD_FAILED

TOKEN_ENV = "HF_TOKEN"


class HubUploadError(RuntimeError):
    """The LoRA is saved locally but could not be uploaded; the message says why and what to do."""


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return redact_text(text)


def push_lora_folder(folder: Path, cfg: TrainingConfig) -> str:
    """Upload ``folder`` (the run's saved LoRA files) to ``save.hf_repo_id``; returns its URL.

    Creates the repository (private when ``save.hf_private``) if it does not exist yet.
    Raises HubUploadError, naming the local folder, when offline or when the Hub refuses.
    """
    save = cfg.save
    repo_id = save.hf_repo_id
    if not repo_id:
        raise HubUploadError("save.push_to_hub is on but save.hf_repo_id is empty ('user/name')")
    later = (
        f"The LoRA is saved locally in {folder}. Upload it later on a connected machine with "
        f"`hf upload {repo_id} {folder} .` (token in {TOKEN_ENV}), or turn save.push_to_hub off."
    )
    if hub_offline():
        raise HubUploadError(
            f"push_to_hub: the LoRA was not uploaded to the Hugging Face Hub ({repo_id}): the "
            f"studio is offline (STUDIO_OFFLINE or HF_HUB_OFFLINE=1 is set, so no network access "
            f"is tried). " + later
        )
    ensure_card(folder, cfg)
    token = os.environ.get(TOKEN_ENV) or None
    try:
        from huggingface_hub import HfApi  # optional upload path: only with save.push_to_hub

        api = HfApi(token=token)
        api.create_repo(repo_id, private=save.hf_private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message=f"LoRA '{cfg.name}' trained with LoRA Studio",
        )
    except Exception as err:  # network, authentication, permission: all end the same way
        reason = _scrub(f"{type(err).__name__}: {err}", token)[:500]
        lowered = reason.lower()
        if any(word in lowered for word in ("401", "403", "unauthorized", "forbidden", "token")):
            why = (
                f"the Hub refused the token (set a write token in {TOKEN_ENV}, and check that "
                f"you may write to {repo_id})"
            )
        else:
            why = "the Hugging Face Hub could not be reached (network error)"
        raise HubUploadError(
            f"push_to_hub: the LoRA was not uploaded to the Hugging Face Hub ({repo_id}): {why}. "
            f"{later} (Original error: {reason})"
        ) from None  # no chained traceback: it could carry request details
    return f"https://huggingface.co/{repo_id}"


def ensure_card(folder: Path, cfg: TrainingConfig) -> Path | None:
    """The folder's model card, written first (with the usage files) when it has none."""
    card = Path(folder) / CARD_NAME
    if card.is_file():
        return card
    loras = sorted(Path(folder).glob("*.safetensors")) or sorted(
        Path(folder).glob(f"*/{DIFFUSERS_WEIGHTS}")
    )
    if not loras:
        return None
    saved_at = read_lora_metadata(loras[0]).get("steps", "")  # the step it was saved at
    write_usage_files(loras[0], cfg, step=int(saved_at) if saved_at.isdigit() else 0)
    return card


def push_after_training(folder: Path, cfg: TrainingConfig, tracker: Any) -> str | None:
    """Upload the finished LoRA (``push_lora_folder``); returns its URL, or None when the upload
    failed. A failed upload does not fail the run: the training is done and its files are saved,
    so the run gets a warning (log, run note, tag) with the way to upload later instead."""
    try:
        url = push_lora_folder(folder, cfg)
    except HubUploadError as err:
        warning = f"Training finished, but {err}"
        print(f"Warning: {warning}", file=sys.stderr, flush=True)
        tracker.set_tags({"hub.repo_id": cfg.save.hf_repo_id, TAG_HUB_UPLOAD_FAILED: str(err)})
        tracker.set_description(warning)
        return None
    tracker.set_tags({"hub.repo_id": cfg.save.hf_repo_id, "hub.url": url})
    print(f"Uploaded the LoRA to {url}", flush=True)
    return url
