"""Dataset uploads: a zip, uploaded files or a local folder become ``<datasets>/<name>/``.

Uploads are checked before anything is written: entries with absolute paths, ``..`` or drive
letters, and symlinks are refused (no zip-slip); file count, per-file and total sizes are bounded
(counted while reading, not trusted from headers); non-image files are listed and skipped; every
image is verified and fully decoded once (``scanning.decode_problem``, the trainer's own check),
so an image that cannot be decoded is skipped with its reason rather than imported. A zip that
cannot be read (not a zip, truncated, a bad checksum, a password, an unknown compression method)
is a ``DatasetUploadError`` naming the upload and the member. A dataset is built in a temporary
folder and renamed into place.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from trainer.data.scanning import IMAGE_EXTENSIONS, decode_problem

MANIFEST = ".manifest.json"  # hidden: the trainer's scan ignores it
CAPTION_EXTS = (".txt", ".caption")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")
ZIP_ENCRYPTED = 0x1  # general purpose flag bit 0: the member is encrypted
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# How zipfile says a member is damaged or unreadable: a bad CRC (BadZipFile), a cut or corrupt
# deflate stream (EOFError, zlib.error), a password (RuntimeError), an unknown method
# (NotImplementedError).
ZIP_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)


class DatasetUploadError(ValueError):
    """An upload or request refused before anything was written; the message says why."""


@dataclass(frozen=True)
class Limits:
    max_files: int = 5000
    max_file_bytes: int = 50 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024


@dataclass
class ImportResult:
    folder: Path
    images: list[str]
    captions: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def validate_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name) or name in (".", "..") or ".." in name:
        raise DatasetUploadError(
            f"dataset name {name!r}: use letters, digits, space, '_', '-', '.' (max 64)"
        )
    return name


def safe_member(name: str) -> str:
    """The file name to keep for an archive member; refuses anything that could escape."""
    if "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
        raise DatasetUploadError(f"unsafe path in upload: {name!r}")
    parts = PurePosixPath(name).parts
    if any(part == ".." for part in parts):
        raise DatasetUploadError(f"unsafe path in upload: {name!r} ('..')")
    return parts[-1] if parts else ""


def file_kind(name: str) -> str | None:
    ext = Path(name).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in CAPTION_EXTS:
        return "caption"
    return None


def _read_bounded(stream: io.BufferedIOBase, limit: int, name: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise DatasetUploadError(f"{name} is larger than the {limit // 1_000_000} MB file limit")
    return data


def _write_dataset(
    root: Path,
    name: str,
    entries: Iterable[tuple[str, Callable[[], bytes]]],
    source: str,
    limits: Limits,
) -> ImportResult:
    """Check names/kinds/limits for every entry, then build the folder atomically."""
    name = validate_name(name)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    if final.exists():
        raise DatasetUploadError(f"a dataset named {name!r} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    result = ImportResult(final, [], [])
    total = count = 0
    seen: set[str] = set()
    try:
        for member, read in entries:
            base = safe_member(member)
            if not base or base.startswith(".") or "__MACOSX" in member:
                continue
            kind = file_kind(base)
            if kind is None:
                result.skipped.append((member, "not an image or caption file"))
                continue
            count += 1
            if count > limits.max_files:
                raise DatasetUploadError(f"more than {limits.max_files} files in the upload")
            if base.lower() in seen:
                raise DatasetUploadError(f"two files are named {base!r} (folders are flattened)")
            seen.add(base.lower())
            data = read()
            total += len(data)
            if total > limits.max_total_bytes:
                raise DatasetUploadError(
                    f"the upload is larger than the {limits.max_total_bytes // 1_000_000} MB limit"
                )
            problem = image_problem(data) if kind == "image" else None
            if problem:
                result.skipped.append((member, "not a readable image"))
                continue
            (staging / base).write_bytes(data)
            (result.images if kind == "image" else result.captions).append(base)
        if not result.images:
            raise DatasetUploadError("the upload holds no readable images")
        manifest = {
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            "images": sorted(result.images),
            "captions": sorted(result.captions),
            "skipped": result.skipped,
            "removals": [],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def image_problem(data: bytes) -> str | None:
    """Why these bytes are no readable image, or None: verified and fully decoded, once, by the
    trainer's own check (``scanning.decode_problem``), so nothing imported breaks a page later."""
    found = decode_problem(data, limit_pixels=False)
    return found if isinstance(found, str) else None


def _open_zip(upload: Path | bytes, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(upload) if isinstance(upload, bytes) else upload)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DatasetUploadError(
            f"{label} is not a readable zip file ({err}): it may be truncated or damaged — "
            "zip the images again"
        ) from err


def _check_member(info: zipfile.ZipInfo, label: str, limits: Limits) -> None:
    safe_member(info.filename)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetUploadError(f"symlink in upload: {info.filename!r}")
    if info.flag_bits & ZIP_ENCRYPTED:
        raise DatasetUploadError(
            f"{label}: {info.filename} is password-protected, which the studio cannot open — "
            "zip the images again without a password"
        )
    if info.compress_type not in ZIP_METHODS:
        raise DatasetUploadError(
            f"{label}: {info.filename} uses compression method {info.compress_type}, which the "
            "studio cannot read — zip the images again with the standard (deflate) compression"
        )
    if info.file_size > limits.max_file_bytes:
        raise DatasetUploadError(
            f"{info.filename} is larger than the {limits.max_file_bytes // 1_000_000} MB file limit"
        )


def import_zip(
    root: Path,
    name: str,
    upload: Path | bytes,
    limits: Limits = Limits(),
    *,
    label: str | None = None,
) -> ImportResult:
    """Create ``root/name`` from a zip (path or bytes); see the module docstring for checks.

    A zip that cannot be read (not a zip, truncated, a bad checksum, a password, a compression
    method Python cannot decode) is a ``DatasetUploadError`` naming ``label`` (the uploaded
    file's name) and the member, never an exception from ``zipfile``.
    """
    label = label or ("the zip file" if isinstance(upload, bytes) else Path(upload).name)
    with _open_zip(upload, label) as handle:
        infos = [i for i in handle.infolist() if not i.is_dir()]
        for info in infos:  # refuse the whole upload before writing anything
            _check_member(info, label, limits)
        if sum(i.file_size for i in infos) > limits.max_total_bytes:
            raise DatasetUploadError(
                f"the upload is larger than the {limits.max_total_bytes // 1_000_000} MB limit"
            )

        def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
            def read() -> bytes:
                try:
                    with handle.open(info) as stream:
                        return _read_bounded(stream, limits.max_file_bytes, info.filename)
                except DatasetUploadError:
                    raise
                except ZIP_READ_ERRORS as err:
                    raise DatasetUploadError(
                        f"{label}: {info.filename} cannot be read ({err}): the zip is damaged — "
                        "zip the images again"
                    ) from err

            return read

        return _write_dataset(root, name, ((i.filename, reader(i)) for i in infos), "zip", limits)


def import_files(
    root: Path, name: str, files: Iterable[tuple[str, bytes]], limits: Limits = Limits()
) -> ImportResult:
    """Create ``root/name`` from uploaded (file name, bytes) pairs."""
    entries = []
    for filename, data in files:
        if len(data) > limits.max_file_bytes:
            raise DatasetUploadError(
                f"{filename} is larger than the {limits.max_file_bytes // 1_000_000} MB file limit"
            )
        entries.append((filename, lambda data=data: data))
    return _write_dataset(root, name, entries, "files", limits)


def import_folder(root: Path, name: str, folder: Path, limits: Limits = Limits()) -> ImportResult:
    """Copy the images and captions directly in ``folder`` (symlinks are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetUploadError(f"{folder} is not a folder")
    entries = []
    skipped = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink():
            skipped.append((path.name, "symlink"))
            continue
        if not path.is_file():
            continue
        if path.stat().st_size > limits.max_file_bytes:
            skipped.append((path.name, "larger than the file limit"))
            continue
        entries.append((path.name, path.read_bytes))
    result = _write_dataset(root, name, entries, f"folder:{folder}", limits)
    result.skipped += skipped
    return result
