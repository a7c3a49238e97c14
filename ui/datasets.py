"""The one dataset analysis of the studio: images, sizes, captions, buckets and steps per epoch.

The wizard's dataset step and the Datasets page both call ``analyse`` with the draft's dataset
settings (``draft_dataset``) and training numbers (``draft_numbers``), and both draw the result
with ``render_report``, so they can never disagree. The numbers are the run's: the trainer's own
scan (``trainer.data.scanning``) and bucket arithmetic (``trainer.data.buckets``, which the
trainer's ``BucketBatches`` and the advisor use too), and the epoch is the advisor's count
(``advisor.dataset.epoch_count``: the draft's validation hold-out is never trained on, so it
leaves the steps per epoch, as on the Training step). The result is cached per folder state and
settings.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import streamlit as st
from pydantic import ValidationError

from advisor.dataset import DatasetInfo, FolderInfo, epoch_count, held_out_counts
from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.schema import TrainingConfig
from trainer.config.sections.datasets import DatasetConfig
from trainer.config.sections.validation import ValidationConfig
from trainer.data.buckets import bucket_label, epoch_bucket_counts
from trainer.data.scanning import DatasetError, DatasetScan, scan_dataset
from trainer.demo.tiny import demo_is_built, resolve_demo_ref
from trainer.files import ReadRefused, readable_path
from trainer.settings import load_settings
from ui import state
from ui.access import read_roots
from ui.dataset_facts import dataset_info
from ui.steps_epochs import epoch_words
from ui.text import code, plain

SCAN_FIELDS = (
    "caption_ext",
    "default_caption",
    "num_repeats",
    "resolution",
    "enable_bucketing",
    "bucket_no_upscale",
    "mask_path",
    "alpha_mask",
)


# ------------------------------------------------------------------------ the draft's settings
def draft_numbers() -> dict[str, Any]:
    """The draft's training numbers the analysis needs: batch, accumulation, steps, arch."""
    train = state.get_value("train") or {}
    batch = train.get("batch_size")
    accum = train.get("gradient_accumulation_steps")
    return {
        "batch_size": batch if isinstance(batch, int) and batch > 0 else 1,
        "batch_auto": not isinstance(batch, int),
        "grad_accum": accum if isinstance(accum, int) and accum > 0 else 1,
        "steps": train.get("steps"),
        "arch": state.get_value("model.arch", "sd15"),
        "processes": state.get_value("runtime.num_processes") or 1,
    }


def draft_dataset(folder: Path | None = None) -> dict[str, Any]:
    """The draft's settings for the dataset in ``folder``: its own entry when the draft trains
    on that folder, else the first dataset's (the settings a new dataset would get)."""
    datasets = [ds for ds in state.get_value("datasets") or [] if isinstance(ds, dict)]
    if folder is not None:
        wanted = _resolved(folder)
        for ds in datasets:
            ref = str(ds.get("folder_path") or "")
            if ref == state.DEMO_DATASET and not demo_is_built(load_settings().home, "dataset"):
                continue  # not built yet, so not this folder: no need to build it now
            if ref and _resolved(dataset_folder(ref)) == wanted:
                return ds
    return datasets[0] if datasets else {}


def dataset_folder(ref: str) -> Path:
    """The folder a draft's ``folder_path`` names ("demo:dataset" is built on first use)."""
    if ref == state.DEMO_DATASET:
        return Path(resolve_demo_ref(ref, load_settings().home))
    return Path(ref).expanduser()


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()


# -------------------------------------------------------------------------------- the analysis
def analyse(folder: Path, ds: dict[str, Any], numbers: dict[str, Any]) -> dict[str, Any]:
    """The report on ``folder`` at these settings; ``{"error": why}`` when it cannot be read,
    or may not be (outside the allowed roots while the studio is served to the network)."""
    try:
        readable_path(folder, roots=read_roots())
    except ReadRefused as err:
        return {"error": str(err)}
    relevant = {k: ds.get(k) for k in SCAN_FIELDS}
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        stamp = 0
    numbers = {**numbers, "held_out": draft_held_out(folder)}
    return _analyse(str(folder), stamp, json.dumps(relevant, sort_keys=True), json.dumps(numbers))


@st.cache_data(ttl=600, show_spinner=False, max_entries=64)
def _analyse(folder: str, stamp: int, relevant_json: str, numbers_json: str) -> dict[str, Any]:
    relevant = json.loads(relevant_json)
    numbers = json.loads(numbers_json)
    try:
        config = DatasetConfig(
            folder_path=folder, **{k: v for k, v in relevant.items() if v is not None}
        )
    except ValidationError as err:
        return {
            "error": f"the dataset settings have problems ({err.error_count()}); fix them first"
        }
    try:
        scan = scan_dataset(config, Path(folder))
    except DatasetError as err:
        return {"error": str(err)}
    batch, accum = max(1, numbers["batch_size"]), max(1, numbers["grad_accum"])
    run = _folder_run(config, scan, numbers)
    count = epoch_count(*run)
    counts = epoch_bucket_counts(
        [(i.width, i.height) for i in scan.images],
        config.resolution,
        ARCH_DEFAULTS[numbers["arch"]]["size_multiple"],
        enable_bucketing=config.enable_bucketing,
        no_upscale=config.bucket_no_upscale,
        repeats=config.num_repeats,
    )
    sizes = Counter(f"{i.width}×{i.height}" for i in scan.images)
    images = len(scan.images)
    spe = count.steps
    steps = numbers.get("steps")
    result: dict[str, Any] = {
        "images": images,
        "captioned": sum(i.caption_from_file for i in scan.images),
        "sizes": sizes.most_common(6),
        "distinct_sizes": len(sizes),
        "smallest": min((min(i.width, i.height) for i in scan.images), default=0),
        "buckets": {bucket_label(b): n for b, n in counts.items()},
        "steps_per_epoch": spe,
        "held_out": count.held_out,
        "epoch_text": f"{epoch_words(*run, count)} = {spe:,} steps per epoch",
        "skipped": scan.skipped[:20],
        "notes": scan.notes[:20],
        "example_caption": scan.images[0].caption if scan.images else "",
        "steps": steps,
        "settings": {
            "resolutions": list(config.resolution),
            "batch_size": batch,
            "batch_auto": bool(numbers.get("batch_auto")),
            "grad_accum": accum,
            "repeats": config.num_repeats,
            "bucketing": config.enable_bucketing,
        },
    }
    if isinstance(steps, int) and spe:
        result["epochs"] = steps / spe
        result["repeats_per_image"] = steps * batch * accum / max(1, count.trained)
    return result


def _folder_run(
    config: DatasetConfig, scan: DatasetScan, numbers: dict[str, Any]
) -> tuple[TrainingConfig, DatasetInfo]:
    """A run on this one folder at the draft's numbers, holding out the draft's share of its
    images, so the advisor counts its epoch (``advisor.dataset.epoch_count``) as for the run."""
    base = TrainingConfig()
    batch = "auto" if numbers.get("batch_auto") else max(1, numbers["batch_size"])
    train = {"batch_size": batch, "gradient_accumulation_steps": max(1, numbers["grad_accum"])}
    cfg = base.model_copy(  # no validation: the draft's own checks speak for the draft
        update={
            "model": base.model.model_copy(update={"arch": numbers["arch"]}),
            "datasets": [config],
            "train": base.train.model_copy(update=train),
            "validation": ValidationConfig(holdout=numbers.get("held_out", 0)),
            "runtime": base.runtime.model_copy(
                update={"num_processes": max(1, numbers.get("processes") or 1)}
            ),
        }
    )
    sizes = tuple((i.width, i.height) for i in scan.images)
    return cfg, DatasetInfo((FolderInfo(len(sizes), sizes=sizes),))


def draft_held_out(folder: Path) -> int:
    """Images of ``folder`` the draft holds out for validation: the advisor's share of
    ``validation.holdout`` (``held_out_counts``); 0 when the draft does not train on it."""
    checked = state.validated()
    cfg = checked.config or checked.last_valid
    if cfg is None or not cfg.validation.holdout:
        return 0
    wanted = _resolved(folder)
    built = demo_is_built(load_settings().home, "dataset")
    indices = [
        i
        for i, ds in enumerate(cfg.datasets)
        if (built or ds.folder_path != state.DEMO_DATASET)
        and _resolved(dataset_folder(ds.folder_path)) == wanted
    ]
    info = dataset_info(state.draft(), cfg) if indices else None
    if info is None:
        return 0
    taken = held_out_counts(cfg, info)
    return sum(taken.get(i, 0) for i in indices)


def settings_text(settings: dict[str, Any]) -> str:
    """The settings the numbers were counted at, in words: '64 px, batch size 2, 1 repeat'."""
    sizes = ", ".join(str(r) for r in settings["resolutions"])
    batch = f"batch size {settings['batch_size']}"
    if settings["batch_auto"]:
        batch = f"batch size auto (counted as {settings['batch_size']})"
    if settings["grad_accum"] > 1:
        batch += f" × {settings['grad_accum']} accumulated"
    repeats = settings["repeats"]
    text = f"{sizes} px, {batch}, {repeats} repeat{'s' if repeats != 1 else ''}"
    return text + ("" if settings["bucketing"] else ", no bucketing (square crops)")


# ------------------------------------------------------------------------------------ drawing
def render_report(report: dict[str, Any]) -> None:
    if "error" in report:
        st.markdown(f":material/error: **Cannot use this dataset:** {plain(report['error'])}")
        return
    cols = st.columns(4)
    cols[0].metric("Images", report["images"])
    cols[1].metric(
        "With captions",
        f"{report['captioned']} / {report['images']}",
        help="Images with a caption file; the others use the default caption.",
    )
    cols[2].metric(
        "Steps per epoch",
        report["steps_per_epoch"],
        help=f"{report['epoch_text']}, at the draft's settings: "
        f"{settings_text(report['settings'])}.",
    )
    if "epochs" in report:
        cols[3].metric(
            "Epochs",
            f"{report['epochs']:.1f}",
            help=f"{report['steps']} steps; each image is seen about "
            f"{report['repeats_per_image']:.0f} times.",
        )
    else:
        cols[3].metric("Epochs", "auto", help="Steps are 'auto': the advisor decides.")
    if report["held_out"]:  # validation images are never trained on: say why the count drops
        st.caption(f":material/fact_check: {report['epoch_text']}.")
    sizes = ", ".join(f"{size} ({n})" for size, n in report["sizes"])
    more = f" and {report['distinct_sizes'] - 6} more" if report["distinct_sizes"] > 6 else ""
    st.caption(
        f"Sizes: {sizes}{more}. Smallest side {report['smallest']} px. Buckets: "
        + ", ".join(f"{b} ({n})" for b, n in report["buckets"].items())
    )
    if report["example_caption"]:
        st.caption(f"Example caption: “{plain(report['example_caption'][:160])}”")
    if report["captioned"] < report["images"]:
        missing = report["images"] - report["captioned"]
        st.markdown(
            f":material/warning: **{missing} image(s) without a caption file** use the default caption."
        )
    if report["skipped"]:
        with st.expander(f"{len(report['skipped'])} file(s) skipped"):
            st.markdown("\n".join(f"- {code(n)}: {plain(why)}" for n, why in report["skipped"]))
    if report["notes"]:
        with st.expander(f"{len(report['notes'])} note(s)"):
            st.markdown("\n".join(f"- {code(n)}: {plain(why)}" for n, why in report["notes"]))
