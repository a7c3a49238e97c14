"""Dataset analysis for the wizard: images, sizes, captions, buckets and steps per epoch.

Uses the trainer's own scan and bucketing (``trainer.data.scanning`` and
``trainer.data.batches``), so the numbers are the ones the run will see. The result is cached per
folder state and settings.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import streamlit as st
from pydantic import ValidationError

from trainer.config.fields import ARCH_DEFAULTS
from trainer.config.sections.datasets import DatasetConfig
from trainer.data.scanning import DatasetError, scan_dataset

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


def analyse(folder: Path, ds: dict[str, Any], numbers: dict[str, Any]) -> dict[str, Any]:
    relevant = {k: ds.get(k) for k in SCAN_FIELDS}
    try:
        stamp = folder.stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _analyse(str(folder), stamp, json.dumps(relevant, sort_keys=True), json.dumps(numbers))


@st.cache_data(ttl=600, show_spinner=False, max_entries=64)
def _analyse(folder: str, stamp: int, relevant_json: str, numbers_json: str) -> dict[str, Any]:
    from trainer.data.batches import BucketBatches, build_report  # imports torch: ~2.5 s

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
    multiple = ARCH_DEFAULTS[numbers["arch"]]["size_multiple"]
    data = BucketBatches([scan], batch_size=max(1, numbers["batch_size"]), size_multiple=multiple)
    report = build_report(data, max(1, numbers["grad_accum"]))
    sizes = Counter(f"{i.width}×{i.height}" for i in scan.images)
    images = len(scan.images)
    spe = report.steps_per_epoch
    steps = numbers.get("steps")
    result: dict[str, Any] = {
        "images": images,
        "captioned": sum(i.caption_from_file for i in scan.images),
        "sizes": sizes.most_common(6),
        "distinct_sizes": len(sizes),
        "smallest": min((min(i.width, i.height) for i in scan.images), default=0),
        "buckets": report.buckets,
        "steps_per_epoch": spe,
        "skipped": scan.skipped[:20],
        "notes": scan.notes[:20],
        "example_caption": scan.images[0].caption if scan.images else "",
        "steps": steps,
    }
    if isinstance(steps, int) and spe:
        batch = numbers["batch_size"] * numbers["grad_accum"]
        result["epochs"] = steps / spe
        result["repeats_per_image"] = steps * batch / max(1, images)
    return result


def render_report(report: dict[str, Any]) -> None:
    if "error" in report:
        st.markdown(f":material/error: **Cannot use this dataset:** {report['error']}")
        return
    cols = st.columns(4)
    cols[0].metric("Images", report["images"])
    cols[1].metric(
        "With captions",
        f"{report['captioned']} / {report['images']}",
        help="Images with a caption file; the others use the default caption.",
    )
    cols[2].metric("Steps per epoch", report["steps_per_epoch"], help="At the current batch size.")
    if "epochs" in report:
        cols[3].metric(
            "Epochs",
            f"{report['epochs']:.1f}",
            help=f"{report['steps']} steps; each image is seen about "
            f"{report['repeats_per_image']:.0f} times.",
        )
    else:
        cols[3].metric("Epochs", "auto", help="Steps are 'auto': the advisor decides.")
    sizes = ", ".join(f"{size} ({n})" for size, n in report["sizes"])
    more = f" and {report['distinct_sizes'] - 6} more" if report["distinct_sizes"] > 6 else ""
    st.caption(
        f"Sizes: {sizes}{more}. Smallest side {report['smallest']} px. Buckets: "
        + ", ".join(f"{b} ({n})" for b, n in report["buckets"].items())
    )
    if report["example_caption"]:
        st.caption(f"Example caption: “{report['example_caption'][:160]}”")
    if report["captioned"] < report["images"]:
        missing = report["images"] - report["captioned"]
        st.markdown(
            f":material/warning: **{missing} image(s) without a caption file** use the default caption."
        )
    if report["skipped"]:
        with st.expander(f"{len(report['skipped'])} file(s) skipped"):
            st.markdown("\n".join(f"- `{name}`: {why}" for name, why in report["skipped"]))
    if report["notes"]:
        with st.expander(f"{len(report['notes'])} note(s)"):
            st.markdown("\n".join(f"- `{name}`: {why}" for name, why in report["notes"]))
