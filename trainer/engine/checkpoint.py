"""Checkpoints: LoRA weights + optimizer, scheduler, RNG state, step and a config snapshot.

The state dict also holds the fp16 gradient scaler's state (``scaler``, None without one);
the loop (``trainer.engine.loop``) writes and restores it.

A checkpoint is a folder written under a temporary name and renamed into place, so a crash or a
full disk mid-save never damages the previous one (a full disk raises ``DiskFullError`` naming
the folder and the bytes it needed). Only the newest `keep` folders are kept.

``find_resume_checkpoint`` turns what ``--resume`` names (a step_* folder, a checkpoints folder or
a job folder) into the newest checkpoint that loads, reading only; a damaged newer one is
reported, and ``set_aside`` renames it so that rotation never keeps it over a good one.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trainer.config.io import dump_yaml, loads_config
from trainer.config.paths import get_path
from trainer.config.schema import TrainingConfig
from trainer.engine.failures import DiskFullError, is_write_full

PREFIX = "step_"
DAMAGED_PREFIX = "damaged_"  # a checkpoint that failed to load, renamed out of the rotation
LORA_FILE = "lora_state.safetensors"
STATE_FILE = "training_state.pt"
CONFIG_FILE = "config.yaml"


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with the reason and what to do."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    lora: dict[str, dict[str, torch.Tensor]]
    state: dict[str, Any]
    config: TrainingConfig


def rng_state() -> dict[str, Any]:
    # numpy's state as plain ints and text, so ``torch.load(weights_only=True)`` can read it back.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    lora: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    cfg: TrainingConfig,
    keep: int,
) -> Path:
    """Write checkpoint `step` atomically into `folder`, then drop all but the newest `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{PREFIX}{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=f".{target.name}."))
    try:
        flat = {
            f"{component}::{key}": tensor.detach().to("cpu").contiguous()
            for component, tensors in lora.items()
            for key, tensor in tensors.items()
        }
        save_file(flat, str(tmp / LORA_FILE), metadata={"step": str(step)})
        torch.save({**state, "step": step}, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(dump_yaml(cfg), encoding="utf-8")
        _fsync_dir(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and is_write_full(err):
            raise DiskFullError(target, _bytes_needed(folder, lora, state), err) from err
        raise
    rotate(folder, keep)
    return target


def _bytes_needed(folder: Path, lora: dict[str, Any], state: dict[str, Any]) -> int:
    """About what a checkpoint takes: the previous one's size, else its tensors' bytes."""
    previous = latest_checkpoint(folder)
    try:
        return folder_bytes(previous) if previous else tensor_bytes(lora) + tensor_bytes(state)
    except OSError:
        return tensor_bytes(lora) + tensor_bytes(state)


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a (nested) dict / list / tuple: about what saving them writes."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(tensor_bytes(v) for v in value)
    return 0


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: p.name)


def rotate(folder: Path, keep: int) -> list[Path]:
    removed = list_checkpoints(folder)[:-keep] if keep > 0 else []
    for old in removed:
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(f".{PREFIX}*"):  # temporaries left by a crash
        shutil.rmtree(stale, ignore_errors=True)
    return removed


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def folder_bytes(path: Path) -> int:
    """Bytes of the files in ``path`` (a checkpoint: what the next one will need about)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class ResumeChoice:
    """The checkpoint a resume continues from (it loaded), and newer ones that did not."""

    path: Path
    step: int
    run_id: str | None  # the MLflow run the checkpoint was saved by
    config: TrainingConfig  # the config it was saved with
    damaged: list[tuple[Path, str]]  # (folder, why it failed to load), newest first

    @classmethod
    def of(cls, saved: Checkpoint, damaged: list[tuple[Path, str]]) -> ResumeChoice:
        # Only what the resume needs: the weights and optimizer state are loaded again by the
        # loop, not held twice for the whole run.
        run_id = saved.state.get("run_id")
        return cls(saved.path, saved.step, str(run_id) if run_id else None, saved.config, damaged)

    @property
    def job_dir(self) -> Path | None:
        """The job folder it belongs to (``<job>/checkpoints/step_N``), None outside a job."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else None

    def fallback_note(self) -> str:
        """What a resume that skipped damaged checkpoints says, or "" when none was skipped."""
        if not self.damaged:
            return ""
        skipped = "; ".join(f"{path.name} ({why})" for path, why in self.damaged)
        return (
            f"Resumed from {self.path.name} (step {self.step}), the newest checkpoint that "
            f"loads. Set aside as {DAMAGED_PREFIX}*, since they could not be loaded: {skipped}"
        )


def find_resume_checkpoint(point: Path) -> ResumeChoice:
    """The newest checkpoint at ``point`` that loads; reads only, writes nothing.

    ``point`` is a checkpoint folder (exactly that one is used), a folder of step_* checkpoints,
    or a job folder holding ``checkpoints/``: then newer checkpoints that fail to load are
    skipped and listed in ``damaged``. CheckpointError (saying why and what to pass instead)
    when ``point`` is none of these or no checkpoint in it loads.
    """
    if not point.exists():
        raise CheckpointError(
            f"{point} does not exist — pass a job folder or one of its checkpoints/step_* folders"
        )
    if not point.is_dir():
        raise CheckpointError(f"{point} is a file, not a checkpoint folder or job folder")
    if (point / STATE_FILE).exists():
        return ResumeChoice.of(load_checkpoint(point), [])
    candidates = list_checkpoints(point / "checkpoints") or list_checkpoints(point)
    if not candidates:
        raise CheckpointError(
            f"{point} holds no checkpoint of this trainer (no checkpoints/step_* folder in it) "
            "— pass the job folder of a run that saved a checkpoint, or one of its step_* folders"
        )
    damaged: list[tuple[Path, str]] = []
    for candidate in reversed(candidates):
        try:
            return ResumeChoice.of(load_checkpoint(candidate), damaged)
        except CheckpointError as err:
            damaged.append((candidate, _first_line(err)))
    raise CheckpointError(
        f"no checkpoint in {candidates[0].parent} can be loaded: "
        + "; ".join(f"{path.name}: {why}" for path, why in damaged)
        + " — start the run again"
    )


def set_aside(path: Path) -> Path | None:
    """Rename a damaged checkpoint to ``damaged_<name>``: rotation ignores it, so it never
    stands in for a good one; the files stay for a look. None when it could not be renamed."""
    target = path.with_name(DAMAGED_PREFIX + path.name)
    try:
        if target.exists():
            shutil.rmtree(target)
        path.rename(target)
    except OSError:
        return None
    return target


def _first_line(err: BaseException) -> str:
    reason = err.__cause__ or err  # the loader's own words, without the path said twice
    text = str(reason).strip().splitlines()
    return f"{type(reason).__name__}: {text[0][:300]}" if text else type(reason).__name__


def load_checkpoint(path: Path) -> Checkpoint:
    missing = [name for name in (LORA_FILE, STATE_FILE, CONFIG_FILE) if not (path / name).exists()]
    if not path.is_dir() or missing:
        raise CheckpointError(
            f"{path} is not a complete checkpoint (missing: {', '.join(missing) or 'folder'}) — "
            "pick another step_* folder from the run's checkpoints"
        )
    try:
        flat = load_file(str(path / LORA_FILE))
        state = _load_state(path / STATE_FILE)
        config = loads_config((path / CONFIG_FILE).read_text(encoding="utf-8"))
        step = int(state["step"])
    except Exception as err:  # a damaged file of any kind
        raise CheckpointError(f"{path} is damaged ({err}) — resume from an older one") from err
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        component, _, name = key.partition("::")
        lora.setdefault(component, {})[name] = tensor
    return Checkpoint(path=path, step=step, lora=lora, state=state, config=config)


def _load_state(file: Path) -> dict[str, Any]:
    """The training state, unpickled with ``weights_only=True``: tensors, numbers, text and
    containers only, so a checkpoint handed over by someone else cannot run code. Checkpoints
    written before the numpy RNG state was stored as ints hold one uint32 array; numpy's array
    reconstruction is allow-listed for them (it builds data, it calls nothing else)."""
    numpy_arrays = [
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
        np._core.multiarray._reconstruct,
    ]
    with torch.serialization.safe_globals(numpy_arrays):
        return torch.load(file, map_location="cpu", weights_only=True)


# Settings whose change makes a checkpoint's weights or state meaningless for this run.
_MUST_MATCH = {
    "model.arch": "architecture",
    "network.type": "network type",
    "network.linear": "rank",
    "network.conv": "conv rank",
    "network.lokr_factor": "LoKr factor",
    "network.target_modules": "target modules",
    "train.train_text_encoder": "text-encoder training",
    "train.train_unet": "U-Net / transformer training",
    "train.optimizer": "optimizer",
    "train.learnable_snr_gos": "learnable SNR weights (optimizer parameters)",
}


def incompatibilities(saved: TrainingConfig, current: TrainingConfig) -> list[str]:
    """Why a checkpoint cannot continue this config (empty when it can)."""
    problems = []
    for path, label in _MUST_MATCH.items():
        before, now = get_path(saved, path), get_path(current, path)
        if before != now:
            problems.append(f"{label} ({path}) was {before!r} in the checkpoint, now {now!r}")
    return problems
