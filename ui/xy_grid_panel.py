"""The utilities page's X/Y grid tab: the chosen LoRA (plus other checkpoints) × prompts ×
strengths, as one labelled image (``trainer.lora.xy_grid``).

The size, steps and guidance start from what the LoRA was trained with (its file's metadata, its
run's preview settings), else from its base model's native size and the architecture's guidance,
and follow the LoRA picked, as a "Save as" follows it. Generating shows "image i of n". The grid
is saved as a PNG in the studio home ("Save the grid as", beside the LoRA in ``outputs/``) and
offered for download; a studio run's LoRA also gets it among that run's MLflow artifacts. No
MLflow run is ever made for a grid: it would list as a training run with no steps and no LoRA.
The last grid made stays shown while its LoRA is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image

from advisor.models import FACTS, facts, is_demo
from trainer.config.fields import ARCH_DEFAULTS
from trainer.lora import tools as lt
from trainer.lora.xy_grid import (
    GridNotLogged,
    GridSpec,
    TrainedWith,
    generate_grid,
    log_grid,
    next_free,
    save_grid,
    trained_with,
)
from trainer.tracking.connect import StoreUnreachable
from ui.access import checked_path
from ui.lora_utilities import propose, save_target
from ui.text import code, plain

RESULT = "lu:grid:result"
PNG = ".png"
DEFAULT_STEPS = 20
MIN_SIZE, MAX_SIZE = 64, 2048
SMALL_GRID_PX = 400


@st.cache_data(show_spinner=False, max_entries=64)
def _trained_with(path: str, changed_ns: int, home: str) -> TrainedWith:
    return trained_with(path, Path(home))  # changed_ns: a rewritten file is read again


@dataclass(frozen=True)
class GridDefaults:
    size: int
    steps: int
    guidance: float
    why: str  # where they came from, in words


def grid_defaults(trained: TrainedWith, base: str = "") -> GridDefaults:
    """The grid's size, steps and guidance for a LoRA trained as ``trained`` says, on ``base``
    (the base model typed on the page, else the LoRA's own)."""
    arch = trained.arch if trained.arch in FACTS else "sd15"
    ref = base or trained.base_model
    model = facts(arch, demo=is_demo(ref))
    if trained.resolution:
        size, why = trained.resolution, [f"{trained.resolution} px, the LoRA's training size"]
    else:
        size, why = model.native_resolution, [f"{model.native_resolution} px, {model.label}'s size"]
    size = max(MIN_SIZE, min(MAX_SIZE, size // 8 * 8))
    steps = trained.steps or DEFAULT_STEPS
    guidance = trained.guidance
    if trained.steps or guidance is not None:
        why.append("steps and guidance of its run's previews")
    if guidance is None:
        guidance = float(ARCH_DEFAULTS[arch]["guidance_scale"])
    return GridDefaults(size, steps, guidance, "; ".join(why))


def _follow(key: str, value: object) -> None:
    """Set widget ``key`` to ``value`` when the proposed value changes (another LoRA picked),
    leaving a value the user typed while the proposal stays."""
    marker = f"{key}:proposed"
    if st.session_state.get(marker) != value or key not in st.session_state:
        st.session_state[marker] = value
        st.session_state[key] = value


def _progress_text(done: int, total: int) -> str:
    if done >= total:
        return f"{total} of {total} images made"
    return f"Generating image {done + 1} of {total}…"


def render_grid(path: Path, home: Path, tracking_uri: str) -> None:
    """X/Y grid: this LoRA (plus other checkpoints) × prompts × strengths, saved as a PNG."""
    more = st.text_area("Other checkpoints (one path per line)", key="lu:gridmore")
    prompts = st.text_area("Prompts (one per line)", "a photo of sks", key="lu:gridprompts")
    strengths = st.text_input("Strengths", "0, 0.5, 1", key="lu:gridstrengths")
    cols = st.columns(5)
    base = cols[0].text_input("Base model", key="lu:gridbase", placeholder="from the file")
    trained = _trained_with(str(path), path.stat().st_mtime_ns, str(home))
    defaults = grid_defaults(trained, base)
    _follow("lu:gridsteps", defaults.steps)
    _follow("lu:gridsize", defaults.size)
    _follow("lu:gridguidance", defaults.guidance)
    steps = cols[1].number_input("Steps", 1, 200, key="lu:gridsteps")
    size = cols[2].number_input("Size", MIN_SIZE, MAX_SIZE, step=8, key="lu:gridsize")
    guidance = cols[3].number_input("Guidance", 0.0, 30.0, step=0.5, key="lu:gridguidance")
    seed = cols[4].number_input("Seed", 0, 2**31 - 1, 0, key="lu:gridseed")
    st.caption(plain(f"Defaults: {defaults.why}."))
    proposal = next_free(propose(path, "xy_grid", home, PNG))
    target = save_target("Save the grid as", proposal, "lu:gridout", home, PNG)
    if st.button("Generate grid", key="lu:grid"):
        others = [checked_path(p.strip()) for p in more.splitlines() if p.strip()]
        if None in others:  # served to a network: a checkpoint outside the allowed roots
            return
        try:
            spec = GridSpec(
                [path, *[p for p in others if p is not None]],
                [p.strip() for p in prompts.splitlines() if p.strip()],
                [float(s) for s in strengths.split(",") if s.strip()],
                steps=int(steps),
                width=int(size),
                height=int(size),
                guidance_scale=float(guidance),
                seed=int(seed),
            )
        except ValueError as err:
            st.error(f"Failed: {plain(err)}")
            return
        if target.path is None:
            st.error(f"Not saved: {plain(target.problem)}")
            return
        _make(path, spec, base, home, target.path, tracking_uri, trained.run_id)
    show_result(path)


def _make(
    path: Path, spec: GridSpec, base: str, home: Path, out: Path, tracking_uri: str, run_id: str
) -> None:
    status = st.status(f"Making an X/Y grid of {spec.images} images…", expanded=True)
    try:
        with status:
            st.write("Loading the base model…")
            lora = lt.load(path)
            ref = base or lora.metadata.get("base_model", "")
            pipe = lt.load_base_pipeline(lt.file_arch(lora), ref, home)
            pipe.set_progress_bar_config(disable=True)
            bar = st.progress(0.0, text=_progress_text(0, spec.images))
            grid, _ = generate_grid(
                pipe,
                spec,
                lambda done, total: bar.progress(done / total, _progress_text(done, total)),
            )
            saved = save_grid(grid, spec, out)
    except (lt.LoraToolError, OSError, ValueError) as err:
        status.update(label="The X/Y grid failed", state="error")
        st.error(f"Failed: {plain(err)}")
        return
    result = {"lora": str(path), "file": str(saved), "run_id": run_id, "logged": "", "note": ""}
    if run_id:
        try:
            logged = log_grid(saved, spec, tracking_uri, run_id)
            result.update(run_name=logged.run_name, logged=logged.artifact)
        except (GridNotLogged, StoreUnreachable, OSError) as err:
            result["note"] = f"It was not added to its run's artifacts: {err}."
    else:
        result["note"] = "This LoRA is not a studio run's: the grid is kept as a file only."
    status.update(label=f"X/Y grid made: {spec.images} images", state="complete", expanded=False)
    st.session_state[RESULT] = result


def show_result(path: Path) -> None:
    """The last grid made from this LoRA: the image, where it was saved, a download button."""
    result = st.session_state.get(RESULT)
    if not result or result["lora"] != str(path):
        return
    file = Path(result["file"])
    if not file.is_file():  # removed since
        return
    with Image.open(file) as image:
        shown = image.convert("RGB")
    if shown.width < SMALL_GRID_PX:  # a grid of 64 px cells: shown twice as big, still crisp
        shown = shown.resize((shown.width * 2, shown.height * 2), Image.Resampling.NEAREST)
    st.image(shown, caption=file.name)
    where = f"Saved to {code(file)}"
    if result["logged"]:
        name = result.get("run_name") or result["run_id"][:8]
        where += f", and added to run {code(name)}'s MLflow artifacts as {code(result['logged'])}"
    st.success(where + ".")
    if result["note"]:
        st.caption(plain(result["note"]))
    st.download_button(
        "Download the grid",
        file.read_bytes(),
        file_name=file.name,
        mime="image/png",
        on_click="ignore",
        key="lu:griddownload",
    )
