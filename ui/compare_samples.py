"""Samples of the picked runs side by side at a step any of them sampled (a run without a sample
there says which steps it has), a rating per sample image (a tag on the run, so the MLflow UI
shows it too), and a slider comparison of two runs' images."""

from __future__ import annotations

import io
from typing import Any

import streamlit as st
from PIL import Image
from streamlit_extras.image_compare_slider import image_compare_slider

from trainer.tracking.artifacts import SampleImage, sample_images
from trainer.tracking.ratings import sample_ratings, set_sample_rating
from trainer.tracking.records import RunRecord
from trainer.tracking.run_names import run_labels
from ui.compare_store import bump
from ui.text import plain, plain_line

SHOW_MIN_PX = 384  # tiny demo samples (64 px) are scaled up, pixel for pixel, to be seen
THUMB_MIN_PX = 192  # the same for the side-by-side samples


def shared_steps(per_run: dict[str, list[SampleImage]]) -> list[int]:
    return sorted(set.intersection(*({s.step for s in imgs} for imgs in per_run.values())))


def sample_steps(per_run: dict[str, list[SampleImage]]) -> tuple[list[int], int | None]:
    """Every step any run sampled, and the one shown first: the newest step all runs sampled,
    else the newest of any (a 40-step run beside an 80-step one still shows the longer run's
    later samples); ``([], None)`` when no run logged a sample."""
    steps = sorted({s.step for imgs in per_run.values() for s in imgs})
    if not steps:
        return [], None
    shared = shared_steps(per_run)
    return steps, shared[-1] if shared else steps[-1]


def _steps_text(steps: list[int]) -> str:
    if len(steps) == 1:
        return f"only at step {steps[0]}"
    return f"at steps {steps[0]}\u2013{steps[-1]}"


def missing_sample(step: int, images: list[SampleImage]) -> str | None:
    """Why a run's column is empty at ``step`` (None when it has a sample there), saying which
    steps it did sample."""
    steps = sorted({s.step for s in images})
    if step in steps:
        return None
    if not steps:
        return f"No sample at step {step}: this run logged no samples."
    return f"No sample at step {step}: this run sampled {_steps_text(steps)}."


def slider_missing(
    step: int, images: dict[str, list[SampleImage]], labels: dict[str, str]
) -> str | None:
    """Why the slider can't compare these two runs at ``step`` (None when both sampled it),
    saying which steps the run lacking a sample there has."""
    parts = []
    for run_id, imgs in images.items():
        steps = sorted({s.step for s in imgs})
        if step not in steps:
            has = f"it sampled {_steps_text(steps)}" if steps else "it logged no samples"
            parts.append(f"{labels[run_id]} has no sample there ({has})")
    return f"No slider at step {step}: {'; '.join(parts)}." if parts else None


def _stars(n: int) -> str:
    return "not rated" if not n else "★" * n


def render_samples(tracking_uri: str, runs: list[RunRecord]) -> None:
    per_run = {r.run_id: sample_images(tracking_uri, r.run_id) for r in runs}
    steps, first = sample_steps(per_run)
    if not steps:
        st.caption("None of these runs logged a sample yet.")
        return
    step = st.select_slider("Samples at step", steps, value=first, key="cmp:sample_step")
    labels = run_labels(runs)  # runs of the same name: each column still says whose it is
    cols = st.columns(len(runs))
    for col, rec in zip(cols, runs, strict=True):
        col.markdown(f"**{plain_line(labels[rec.run_id])}**")
        missing = missing_sample(step, per_run[rec.run_id])
        if missing:
            col.caption(missing)
            continue
        ratings = sample_ratings(rec.tags)
        for image in (s for s in per_run[rec.run_id] if s.step == step):
            col.image(_thumb(image.path_or_uri), caption=plain(image.prompt or image.key))
            key = f"cmp:srate:{rec.run_id[:12]}:{step}:{image.key}"
            col.selectbox(
                "Rate this sample",
                [0, 1, 2, 3, 4, 5],
                index=ratings.get((step, image.key), 0),
                format_func=_stars,
                key=key,
                on_change=_save_sample_rating,
                args=(tracking_uri, rec.run_id, step, image.key, key),
            )
    if len(runs) >= 2:
        render_slider(runs, per_run, step, labels)


def _save_sample_rating(tracking_uri: str, run_id: str, step: int, image: str, key: str) -> None:
    set_sample_rating(tracking_uri, run_id, step, image, int(st.session_state[key] or 0))
    bump()


# --------------------------------------------------------------------------------- the slider
SLIDER_WIDTH_PX = 512


def slider_pair(a: Image.Image, b: Image.Image) -> tuple[bytes, bytes]:
    """The slider's two images as PNG (no JPEG blur on tiny samples): ``b`` resized to ``a``'s
    size when they differ (the divider must cut both at the same place), both enlarged pixel for
    pixel when small."""
    a, b = a.convert("RGB"), b.convert("RGB")
    if b.size != a.size:
        b = b.resize(a.size, Image.Resampling.LANCZOS)
    return _png(_shown(a)), _png(_shown(b))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _shown(image: Any, least: int = SHOW_MIN_PX) -> Any:
    scale = -(-least // image.width) if image.width < least else 1
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _thumb(path: str) -> Any:
    """The file itself, or a pixel-exact enlargement when it is smaller than a thumbnail."""
    with Image.open(path) as image:
        if image.width >= THUMB_MIN_PX:
            return path
        return _shown(image.convert("RGB"), THUMB_MIN_PX)


def render_slider(
    runs: list[RunRecord],
    per_run: dict[str, list[SampleImage]],
    step: int,
    labels: dict[str, str] | None = None,
) -> None:
    """Baseline (left) against another picked run (right), same step and prompt, with a divider
    to drag (or to move with the arrow keys) in the browser."""
    labels = labels or run_labels(runs)
    base, others = runs[0], {r.run_id: r for r in runs[1:]}
    st.markdown("**Slider comparison**")
    cols = st.columns(2)
    other = others[
        cols[0].selectbox(
            f"Right of the split ({plain_line(labels[base.run_id])} is left)",
            list(others),
            format_func=lambda rid: labels[rid],
            key="cmp:slider_run",
        )
    ]
    left_label, right_label = labels[base.run_id], labels[other.run_id]
    pair = {rid: per_run[rid] for rid in (base.run_id, other.run_id)}
    missing = slider_missing(step, pair, labels)
    if missing:
        st.caption(plain(missing))  # names runs
        return
    left = {s.key: s for s in per_run[base.run_id] if s.step == step}
    right = {s.key: s for s in per_run[other.run_id] if s.step == step}
    shared = sorted(left.keys() & right.keys())
    if not shared:
        st.caption(f"No prompt sampled by both runs at step {step}.")
        return
    key = cols[1].selectbox(
        "Prompt", shared, format_func=lambda k: left[k].prompt or k, key="cmp:slider_prompt"
    )
    with Image.open(left[key].path_or_uri) as a, Image.open(right[key].path_or_uri) as b:
        shown_left, shown_right = slider_pair(a, b)
    image_compare_slider(
        shown_left,
        shown_right,
        label1=left_label,
        label2=right_label,
        width=SLIDER_WIDTH_PX,  # 'stretch' blew a 64 px sample up past the screen's height
        key="cmp:slider",
    )
    st.caption(
        f"◀ {plain_line(left_label)} | {plain_line(right_label)} ▶ (step {step}): "
        "drag the divider to compare"
    )
