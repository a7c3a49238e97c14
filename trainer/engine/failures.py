"""Turn known failure causes into a sentence a person can act on (shown in the run's note).

A write that fails for lack of room comes in many shapes: ``OSError`` ENOSPC / EDQUOT / EFBIG,
torch.save's "[enforce fail at inline_container.cc] unexpected pos" or "PytorchStreamWriter
failed", safetensors' "I/O error: ... (os error 28)". All of them are told as one sentence:
"Disk full at PATH: X free, about Y needed", with what to do.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator
from pathlib import Path


class MemoryOptionError(ValueError):
    """A memory/speed option this machine or model cannot honour; the message says why and how."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training cannot recover from it."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss became {value} at step {step}")
        self.step = step


_SUGGESTIONS: list[tuple[tuple[str, ...], str]] = [
    (
        ("was not uploaded to the hugging face hub",),
        "Training finished and the LoRA is saved locally (see above); only the upload to the "
        "Hugging Face Hub failed. Upload the folder later from a connected machine, or turn "
        "save.push_to_hub off.",
    ),
    (
        ("out of memory", "cuda oom", "outofmemoryerror", "mps backend out of memory"),
        "The GPU ran out of memory. Lower the batch size or resolution, turn on gradient "
        "checkpointing and latent caching, use an 8-bit optimizer, quantize the base model or "
        "offload layers. The advisor's VRAM prediction shows which change helps most.",
    ),
    (
        ("loss became nan", "loss became inf"),
        "The loss became NaN/inf. Lower the learning rate (try half), keep max_grad_norm at 1, "
        "and avoid fp16 with SDXL's VAE or Flux: use bf16, or fp32 for the VAE.",
    ),
    (
        ("not fully cached locally", "offline mode", "hf_hub_offline", "couldn't connect"),
        "The model is a Hugging Face id that is not downloaded and this machine is offline. "
        "Download it first (e.g. `hf download <id>`), or point name_or_path at a local folder "
        "or .safetensors file, or use demo:sd15 to try the studio.",
    ),
    (
        ("no such file or directory", "does not exist", "not found", "modelloaderror"),
        "A file or folder the config names is missing. Check model.name_or_path, the dataset "
        "folder_path and any vae_path / lora_path.",
    ),
]

DISK_FULL_SUGGESTION = (
    "The disk is full. Free space on it, or move the studio home (STUDIO_HOME) to a disk with "
    "room; keep fewer checkpoints (save.max_step_saves_to_keep) or turn cache_latents_to_disk "
    "off. The last complete checkpoint is intact: resume from it once there is room."
)
# errno values of a write refused for lack of room: disk full, quota, file-size limit.
WRITE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# The same refusals as torch's zip writer and safetensors (Rust) word them.
_WRITE_FULL_TEXT = (
    "no space left on device",
    "disk quota exceeded",
    "file too large",
    "unexpected pos",  # inline_container.cc: the writer's position after a short write
    "pytorchstreamwriter failed",
    "file write failed",
    "os error 28",
    "os error 122",
    "os error 27",
    "storagefull",
    "filetoolarge",
    "quotaexceeded",
    "database or disk is full",  # SQLite
)


class DiskFullError(OSError):
    """A write refused for lack of room, with the path written and the bytes it needed.

    Raised by writers that know both (``save_checkpoint``) from the original error, which stays
    the ``__cause__``; ``explain_failure`` turns it into the disk-full sentence.
    """

    def __init__(self, path: str | Path, needed_bytes: int | None, cause: BaseException) -> None:
        code = _errno_of(cause) or errno.ENOSPC
        super().__init__(code, f"could not write {path}: {_describe(cause)}", str(path))
        self.path = Path(path)
        self.needed_bytes = needed_bytes
        self.cause = cause


def explain_failure(
    error: BaseException, *, writing_to: str | Path | None = None, needed_bytes: int | None = None
) -> str:
    """A note for the run: what happened, and for known causes what to do.

    ``writing_to`` / ``needed_bytes``: where the run was writing and about how much, used for a
    write failure when the error itself does not say (torch's and safetensors' errors do not).
    """
    if is_write_full(error):
        return disk_full_note(error, writing_to, needed_bytes)
    text = _describe(error)
    lowered = text.lower()
    for needles, suggestion in _SUGGESTIONS:
        if any(needle in lowered for needle in needles):
            return f"{text}\n\nSuggestion: {suggestion}"
    return text


def is_write_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is a write refused for lack of room."""
    for err in _chain(error):
        if isinstance(err, DiskFullError) or _errno_of(err) in WRITE_FULL_ERRNOS:
            return True
        if any(needle in str(err).lower() for needle in _WRITE_FULL_TEXT):
            return True
    return False


def disk_full_note(
    error: BaseException, writing_to: str | Path | None = None, needed_bytes: int | None = None
) -> str:
    """ "Disk full at PATH: X free, about Y needed (the original error)", then the suggestion."""
    known = next((e for e in _chain(error) if isinstance(e, DiskFullError)), None)
    named = next((e.filename for e in _chain(error) if getattr(e, "filename", None)), None)
    path = known.path if known else named or writing_to
    needed = known.needed_bytes if known and known.needed_bytes else needed_bytes
    free = free_bytes(path) if path else None
    sentence = f"Disk full at {path}" if path else "Disk full (the error names no path)"
    sentence += f": {human_bytes(free)} free" if free is not None else ""
    sentence += f", about {human_bytes(needed)} needed" if needed else ""
    original = _describe(known.cause if known else error)
    if free is not None and needed and free > needed:
        sentence += (
            " (the disk reports enough room, so a quota or a file-size limit refused the write)"
        )
    return f"{sentence}. {original}\n\nSuggestion: {DISK_FULL_SUGGESTION}"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the disk holding ``path`` (or its nearest existing folder)."""
    place = Path(path).absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        return shutil.disk_usage(place).free
    except OSError:
        return None


def human_bytes(count: int | float) -> str:
    size = float(count)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _errno_of(error: BaseException) -> int | None:
    return error.errno if isinstance(error, OSError) else None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and those it was raised from or during, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
