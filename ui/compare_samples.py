"""Samples of the picked runs side by side: each run's last samples (what a user wants most when a
30-step run sits beside a 200-step one), or all at one step any of them sampled (a run without a
sample there says which steps it has); a rating per sample image (a tag on the run, so the MLflow
UI shows it too), and a slider comparison of two runs' images."""

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
MODE_LAST = "Each run's last samples"
MODE_STEP = "Samples at one step"
MODES = (MODE_LAST, MODE_STEP)
MODE_KEY = "cmp:sample_mode"
STEP_KEY = "cmp:sample_step"
_MODE_DEFAULT_KEY = "cmp:sample_mode_default"


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


def last_steps(per_run: dict[str, list[SampleImage]]) -> dict[str, int | None]:
    """Each run's newest sampled step (None for a run that logged no sample)."""
    return {rid: max((s.step for s in imgs), default=None) for rid, imgs in per_run.items()}


def default_mode(per_run: dict[str, list[SampleImage]]) -> str:
    """Each run's last samples when the runs stopped sampling at different steps: at any one step
    the shorter run's column (and the slider) would be empty at the longer run's end. Runs that
    end together start at that shared last step in the one-step view, which also moves."""
    ends = {step for step in last_steps(per_run).values() if step is not None}
    return MODE_LAST if len(ends) > 1 else MODE_STEP


def at_step(images: list[SampleImage], step: int) -> list[SampleImage]:
    """A run's images at ``step``, one per key: the newest when a step was sampled twice (a
    resumed run), since two images of one key would also share one rating widget."""
    return list({s.key: s for s in images if s.step == step}.values())


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


def last_missing(images: dict[str, list[SampleImage]], labels: dict[str, str]) -> str | None:
    """Why the slider can't compare these two runs' last samples (None when both sampled)."""
    parts = [f"{labels[rid]} logged no samples" for rid, imgs in images.items() if not imgs]
    return f"No slider: {'; '.join(parts)}." if parts else None


def _stars(n: int) -> str:
    return "not rated" if not n else "★" * n


def render_samples(tracking_uri: str, runs: list[RunRecord]) -> None:
    per_run = {r.run_id: sample_images(tracking_uri, r.run_id) for r in runs}
    steps, first = sample_steps(per_run)
    if not steps:
        st.caption("None of these runs logged a sample yet.")
        return
    if _pick_mode(per_run) == MODE_LAST:
        step, shown = None, last_steps(per_run)
        # the step slider's value outlives its absence: back in one-step mode it starts anew
        st.session_state.pop(STEP_KEY, None)
    else:
        step = st.select_slider("Samples at step", steps, value=first, key=STEP_KEY)
        shown = dict.fromkeys(per_run, step)
    images = {rid: at_step(per_run[rid], at) if at is not None else [] for rid, at in shown.items()}
    width = thumb_width([s.path_or_uri for imgs in images.values() for s in imgs])
    labels = run_labels(runs)  # runs of the same name: each column still says whose it is
    cols = st.columns(len(runs))
    for col, rec in zip(cols, runs, strict=True):
        col.markdown(f"**{plain_line(labels[rec.run_id])}**")
        at = shown[rec.run_id]
        missing = missing_sample(step, per_run[rec.run_id]) if step is not None else None
        if at is None or missing:
            col.caption(missing or "This run logged no samples.")
            continue
        ratings = sample_ratings(rec.tags)
        for image in images[rec.run_id]:
            caption = plain(image.prompt or image.key)
            if step is None:
                caption = f"step {at} (last): {caption}"
            col.image(_thumb(image.path_or_uri, width), caption=caption, width=width)
            key = f"cmp:srate:{rec.run_id[:12]}:{at}:{image.key}"
            col.selectbox(
                "Rate this sample",
                [0, 1, 2, 3, 4, 5],
                index=ratings.get((at, image.key), 0),
                format_func=_stars,
                key=key,
                on_change=_save_sample_rating,
                args=(tracking_uri, rec.run_id, at, image.key, key),
            )
    if len(runs) >= 2:
        render_slider(runs, per_run, step, labels)


def _pick_mode(per_run: dict[str, list[SampleImage]]) -> str:
    """The choice between each run's last samples and one step; it starts from
    ``default_mode`` again when other picked runs change that default, and keeps the user's
    choice otherwise."""
    default = default_mode(per_run)
    if st.session_state.get(_MODE_DEFAULT_KEY) != default:
        st.session_state.pop(MODE_KEY, None)
        st.session_state[_MODE_DEFAULT_KEY] = default
    return st.radio("Show", MODES, index=MODES.index(default), horizontal=True, key=MODE_KEY)


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


def thumb_width(paths: list[str]) -> int:
    """One width for every sample drawn side by side: the widest one's, at least
    ``THUMB_MIN_PX``. Each image used to be drawn at its own size: a file of 192 px or more as it
    is, a smaller one enlarged to the first whole multiple of at least 192 px (64 px to 192, 100
    to 200), so samples of different sizes came out at different widths in one column. The page
    narrows this width to the column's."""
    widest = 0
    for path in paths:
        with Image.open(path) as image:  # reads the header only
            widest = max(widest, image.width)
    return max(widest, THUMB_MIN_PX)


def _thumb(path: str, width: int = THUMB_MIN_PX) -> Any:
    """The file itself when it is at least ``width`` wide, else a pixel-exact enlargement to
    ``width`` or just over (the page scales it to ``width``: no blur from a small image blown
    up)."""
    with Image.open(path) as image:
        if image.width >= width:
            return path
        return _shown(image.convert("RGB"), width)


def render_slider(
    runs: list[RunRecord],
    per_run: dict[str, list[SampleImage]],
    step: int | None,
    labels: dict[str, str] | None = None,
) -> None:
    """Baseline (left) against another picked run (right), same prompt, with a divider to drag
    (or to move with the arrow keys) in the browser: both at ``step``, or with ``step`` None each
    run's last samples (the slider's labels and caption then say which step each side is)."""
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
    pair = {rid: per_run[rid] for rid in (base.run_id, other.run_id)}
    missing = slider_missing(step, pair, labels) if step is not None else last_missing(pair, labels)
    if missing:
        st.caption(plain(missing))  # names runs
        return
    at = dict.fromkeys(pair, step) if step is not None else last_steps(pair)
    a, b = at[base.run_id], at[other.run_id]
    assert a is not None and b is not None  # both sampled: checked above
    left = {s.key: s for s in at_step(per_run[base.run_id], a)}
    right = {s.key: s for s in at_step(per_run[other.run_id], b)}
    shared = sorted(left.keys() & right.keys())
    if not shared:
        where = f"step {step}" if step is not None else f"their last steps ({a} and {b})"
        st.caption(f"No prompt sampled by both runs at {where}.")
        return
    key = cols[1].selectbox(
        "Prompt", shared, format_func=lambda k: left[k].prompt or k, key="cmp:slider_prompt"
    )
    with Image.open(left[key].path_or_uri) as ia, Image.open(right[key].path_or_uri) as ib:
        shown_left, shown_right = slider_pair(ia, ib)
    left_label, right_label = labels[base.run_id], labels[other.run_id]
    if step is None:
        left_label, right_label = (
            f"{left_label} (step {a}, last)",
            f"{right_label} (step {b}, last)",
        )
    image_compare_slider(
        shown_left,
        shown_right,
        label1=left_label,
        label2=right_label,
        width=SLIDER_WIDTH_PX,  # 'stretch' blew a 64 px sample up past the screen's height
        key="cmp:slider",
    )
    where = f" (step {step})" if step is not None else ""
    st.caption(
        f"◀ {plain_line(left_label)} | {plain_line(right_label)} ▶{where}: "
        "drag the divider to compare"
    )
