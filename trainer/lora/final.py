"""Make a checkpoint's LoRA the run's final LoRA: the Monitor's "Make this the final LoRA".

``make_final(settings, run_id, step)`` copies the LoRA file the run saved at ``step`` (the MLflow
artifact ``checkpoints/step_<n>/<name>.safetensors``, else the job folder's checkpoint) over the
run's final LoRA ``lora/<name>.safetensors``: in MLflow, and in the job folder when the run has
one here. The final it replaces is never lost: it is kept first, renamed
``<name>_final_step<n>.safetensors``, in ``outputs/`` (an MLflow artifact folder, and the job
folder's ``outputs/``, which a Hub push does not upload). The tag ``studio.final_from_step``
records which checkpoint the final LoRA now is.

The usage files beside the final LoRA (model card, diffusers script, ComfyUI workflow:
``trainer.lora.usage``) are written again for the new final, from the run's logged config, in the
job folder and in MLflow, so the card never describes the LoRA it replaced. The card shows the
previews of the chosen step's round from the job folder; without a job folder here it shows none.
A Hub base model stays pinned to the commit the old script named.

Checkpoints hold the webui layout only. A diffusers-layout final (``save.save_format`` both or
diffusers) in the job folder moves to ``outputs/`` with the old file, so ``lora/`` holds one
LoRA; MLflow cannot move artifacts, so there the old ``lora/<name>/`` folder stays beside the new
file (``FinalSwap.stale`` names it).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config.io import ConfigError, loads_config
from trainer.config.schema import TrainingConfig
from trainer.files import atomic_write_bytes
from trainer.lora.io import read_lora_metadata
from trainer.lora.outputs import CHECKPOINTS_DIR, FINAL_DIR
from trainer.lora.usage import CARD_NAME, SNIPPET_NAME, USAGE_FILES, publish_usage_files
from trainer.models.hub import is_hub_id
from trainer.settings import StudioSettings
from trainer.tracking.artifacts import fetch_artifact, load_run_config, lora_artifacts
from trainer.tracking.connect import mlflow_client
from trainer.tracking.layout import REPLACED_DIR, TAG_FINAL_FROM_STEP
from trainer.tracking.run_cache import mark_changed

_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")
_REVISION = re.compile(r"revision=['\"]([^'\"]+)['\"]")  # in the old diffusers script


class MakeFinalError(ValueError):
    """The step's LoRA cannot become the final one; the message says why."""


@dataclass(frozen=True)
class FinalSwap:
    """What ``make_final`` did."""

    step: int
    final: str  # the final LoRA's artifact path (lora/<name>.safetensors)
    kept: str | None  # where the replaced final went (outputs/...); None when nothing was replaced
    local: Path | None  # the job folder's final LoRA, when the run has a job folder here
    changed: bool  # False: the final LoRA already was this step's
    stale: str | None = None  # an MLflow diffusers-layout folder of the old final, left in place
    usage: tuple[str, ...] = ()  # the usage files written for the new final (names in lora/)


def checkpoint_folder(step: int) -> str:
    return f"{CHECKPOINTS_DIR}/step_{int(step):08d}"


def make_final(settings: StudioSettings, run_id: str, step: int) -> FinalSwap:
    """Make the LoRA saved at ``step`` the run's final LoRA, keeping the old final renamed."""
    uri, cache = settings.tracking_uri, settings.cache_dir
    client = mlflow_client(uri)
    run = client.get_run(run_id)
    if run.info.status == "RUNNING":
        raise MakeFinalError("the run is still training: its final LoRA is not saved yet")
    job_dir = _job_dir(settings, run_id)
    stored = set(lora_artifacts(uri, run_id)) | _replaced(client, run_id)
    source, name = _checkpoint_file(settings, run_id, step, stored, job_dir)
    cfg = _run_config(settings, run_id, stored, job_dir)  # before anything changes
    model_path = _trained_model_path(settings, run_id, cfg, stored, job_dir)
    new = source.read_bytes()
    final = f"{FINAL_DIR}/{name}"
    local_final = job_dir / FINAL_DIR / name if job_dir else None
    old: bytes | None = None
    if final in stored:
        old = fetch_artifact(uri, run_id, final, cache).read_bytes()
    elif local_final is not None and local_final.is_file():
        old = local_final.read_bytes()
    if old == new:  # the card is written again all the same: it may lag behind a failed swap
        usage = _write_usage(settings, client, run_id, cfg, step, new, name, job_dir, model_path)
        client.set_tag(run_id, TAG_FINAL_FROM_STEP, str(step))
        mark_changed(uri, run_id)
        return FinalSwap(step, final, None, local_final, changed=False, usage=usage)
    stem = Path(name).stem
    kept = stale = None
    with tempfile.TemporaryDirectory() as tmp:
        if old is not None:  # kept before anything is overwritten
            was = run.data.tags.get(TAG_FINAL_FROM_STEP) or _steps_of(old, Path(tmp))
            kept_name = _free_name(f"{stem}_final_step{was}", stored, job_dir)
            kept_file = Path(tmp) / kept_name
            kept_file.write_bytes(old)
            client.log_artifact(run_id, str(kept_file), REPLACED_DIR)
            kept = f"{REPLACED_DIR}/{kept_name}"
            if job_dir is not None:
                atomic_write_bytes(job_dir / REPLACED_DIR / kept_name, old)
                _move_diffusers_layout(job_dir, stem, kept_name)
            if any(path.startswith(f"{FINAL_DIR}/{stem}/") for path in stored):
                stale = f"{FINAL_DIR}/{stem}/"
        fresh = Path(tmp) / "final" / name
        fresh.parent.mkdir()
        fresh.write_bytes(new)
        client.log_artifact(run_id, str(fresh), FINAL_DIR)
    if local_final is not None:
        atomic_write_bytes(local_final, new)
    _forget_downloads(settings, run_id, final)
    usage = _write_usage(settings, client, run_id, cfg, step, new, name, job_dir, model_path)
    client.set_tag(run_id, TAG_FINAL_FROM_STEP, str(step))
    mark_changed(uri, run_id)
    return FinalSwap(step, final, kept, local_final, changed=True, stale=stale, usage=usage)


# ----------------------------------------------------------------------------- the usage files
class _RunArtifacts:
    """What ``publish_usage_files`` logs through: a tracker's ``log_artifact`` on an ended run."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _has_card(stored: set[str], job_dir: Path | None) -> bool:
    local = job_dir is not None and (job_dir / FINAL_DIR / CARD_NAME).is_file()
    return local or f"{FINAL_DIR}/{CARD_NAME}" in stored


def _run_config(
    settings: StudioSettings, run_id: str, stored: set[str], job_dir: Path | None
) -> TrainingConfig | None:
    """The run's logged config, which the usage files are written from. None when it cannot be
    read and the run has no usage files to correct; refused when it has them (the card would
    go on describing the old final)."""
    try:
        return loads_config(load_run_config(settings.tracking_uri, run_id))
    except (OSError, ConfigError) as err:
        if not _has_card(stored, job_dir):
            return None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise MakeFinalError(
            f"the run's logged config cannot be read ({reason}), so its model card and "
            "scripts could not be written for the new final LoRA: nothing was changed"
        ) from err


def _trained_model_path(
    settings: StudioSettings,
    run_id: str,
    cfg: TrainingConfig | None,
    stored: set[str],
    job_dir: Path | None,
) -> str | None:
    """``id@commit`` of a Hub base model as the old diffusers script pinned it (the trainer
    logs the commit nowhere else); None for a local model or an unpinned one."""
    if cfg is None or not is_hub_id(cfg.model.name_or_path):
        return None
    script = job_dir / FINAL_DIR / SNIPPET_NAME if job_dir else None
    if script is None or not script.is_file():
        artifact = f"{FINAL_DIR}/{SNIPPET_NAME}"
        if artifact not in stored:
            return None
        script = fetch_artifact(settings.tracking_uri, run_id, artifact, settings.cache_dir)
    found = _REVISION.search(script.read_text(encoding="utf-8", errors="replace"))
    return f"{cfg.model.name_or_path}@{found[1]}" if found else None


def _write_usage(
    settings: StudioSettings,
    client: Any,
    run_id: str,
    cfg: TrainingConfig | None,
    step: int,
    lora: bytes,
    name: str,
    job_dir: Path | None,
    model_path: str | None,
) -> tuple[str, ...]:
    """Write the card, script and workflow for the final LoRA ``name`` saved at ``step``: in
    the job folder (with its previews of that step's round) and as MLflow artifacts."""
    if cfg is None:
        return ()
    with tempfile.TemporaryDirectory() as tmp:
        if job_dir is not None:
            lora_file, previews_from = job_dir / FINAL_DIR / name, job_dir
        else:  # a run trained elsewhere: the files are made in a scratch folder, then logged
            lora_file, previews_from = Path(tmp) / FINAL_DIR / name, Path(tmp)
            lora_file.parent.mkdir()
            lora_file.write_bytes(lora)
        written = publish_usage_files(
            lora_file,
            cfg,
            _RunArtifacts(client, run_id),
            job_dir=previews_from,
            step=step,
            artifact_path=FINAL_DIR,
            home=settings.home,
            model_path=model_path,
        )
    for file in USAGE_FILES:
        _forget_downloads(settings, run_id, f"{FINAL_DIR}/{file}")
    return tuple(path.name for path in written)


# ---------------------------------------------------------------------------------- the swap
def _job_dir(settings: StudioSettings, run_id: str) -> Path | None:
    """The run's job folder here, if it has one (ids come from URLs: one plain name only)."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise MakeFinalError(f"{run_id!r} is not a run id")
    folder = settings.jobs_dir / run_id
    return folder if folder.is_dir() else None


def _replaced(client: Any, run_id: str) -> set[str]:
    """Artifact paths already in ``outputs/`` (none when the folder does not exist yet)."""
    try:
        return {item.path for item in client.list_artifacts(run_id, REPLACED_DIR)}
    except OSError:
        return set()


def _checkpoint_file(
    settings: StudioSettings, run_id: str, step: int, stored: set[str], job_dir: Path | None
) -> tuple[Path, str]:
    """(a local path of the step's LoRA file, its file name): MLflow first (checkpoints there
    are never rotated away), then the job folder."""
    prefix = f"{checkpoint_folder(step)}/"
    found = sorted(
        path
        for path in stored
        if path.startswith(prefix) and path.endswith(".safetensors") and path.count("/") == 2
    )
    if found:
        path = fetch_artifact(settings.tracking_uri, run_id, found[0], settings.cache_dir)
        return path, found[0].rsplit("/", 1)[-1]
    local = job_dir / checkpoint_folder(step) / "lora" if job_dir else None
    files = sorted(local.glob("*.safetensors")) if local is not None and local.is_dir() else []
    if files:
        return files[0], files[0].name
    raise MakeFinalError(
        f"no LoRA saved at step {step} was found in MLflow or in the job folder (older "
        "checkpoints are rotated away locally: save.max_step_saves_to_keep)"
    )


def _steps_of(data: bytes, tmp: Path) -> str:
    """The training step a LoRA file says it was saved at (its ``steps`` metadata)."""
    probe = tmp / "probe.safetensors"
    probe.write_bytes(data)
    try:
        steps = read_lora_metadata(probe).get("steps", "")
    except ValueError:
        steps = ""
    return steps if steps.isdigit() else "unknown"


def _free_name(stem: str, stored: set[str], job_dir: Path | None) -> str:
    """``<stem>.safetensors``, or ``<stem>_2.safetensors``... when that name is taken."""
    for number in range(1, 10_000):
        name = f"{stem}{'' if number == 1 else f'_{number}'}.safetensors"
        taken = f"{REPLACED_DIR}/{name}" in stored
        taken = taken or (job_dir is not None and (job_dir / REPLACED_DIR / name).exists())
        if not taken:
            return name
    raise MakeFinalError(f"too many replaced finals named {stem}")


def _move_diffusers_layout(job_dir: Path, stem: str, kept_name: str) -> None:
    folder = job_dir / FINAL_DIR / stem
    if folder.is_dir():
        target = job_dir / REPLACED_DIR / f"{Path(kept_name).stem}_diffusers"
        shutil.move(str(folder), str(target))


def _forget_downloads(settings: StudioSettings, run_id: str, artifact: str) -> None:
    """A tracking server's final LoRA downloaded before is stale now."""
    for base in (settings.cache_dir, settings.cache_dir / "downloads"):
        (base / "artifacts" / run_id / artifact).unlink(missing_ok=True)
