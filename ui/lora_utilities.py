"""Utilities page parts: inspect, resize, convert and merge LoRA files (``trainer.lora.tools``)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from trainer.lora import tools as lt
from trainer.lora.xy_grid import GridSpec, generate_grid, log_grid

RESIZE_HELP = {
    "rank": "the new rank (a whole number)",
    "sv_ratio": "keep singular values ≥ largest / this ratio (e.g. 10)",
    "sv_fro": "keep this fraction of the Frobenius norm (e.g. 0.9)",
    "sv_cumulative": "keep this fraction of the sum of singular values (e.g. 0.9)",
}


def lora_files(home: Path) -> list[str]:
    found = sorted((home / "jobs").glob("**/*.safetensors")) if (home / "jobs").is_dir() else []
    return [str(p) for p in found if "checkpoint" not in p.parts[-2]][:200]


def pick_file(home: Path, label: str, key: str) -> Path | None:
    options = lora_files(home)
    typed = st.text_input(f"{label} (path)", key=f"{key}:path")
    if options:
        chosen = st.selectbox("… or one of the studio's LoRAs", ["", *options], key=f"{key}:pick")
        typed = typed or chosen
    if not typed:
        return None
    path = Path(typed).expanduser()
    if not path.exists():
        st.error(f"{path} does not exist")
        return None
    return path


def _run(action, success: str) -> None:
    try:
        result = action()
    except (lt.LoraToolError, OSError, ValueError) as err:
        st.error(f"Failed: {err}")
        return
    st.success(success.format(result=result))


def render_inspect(path: Path) -> None:
    try:
        info = lt.inspect(path)
    except (lt.LoraToolError, OSError, ValueError) as err:
        st.error(f"Cannot read {path}: {err}")
        return
    cols = st.columns(4)
    cols[0].metric("Layout", info["layout"])
    cols[1].metric("Modules", info["modules"])
    cols[2].metric("Ranks", ", ".join(f"{r}×{n}" for r, n in info["ranks"].items()) or "–")
    cols[3].metric(
        "Alphas", ", ".join(f"{lt.rank_label(a)}×{n}" for a, n in info["alphas"].items()) or "–"
    )
    with st.expander("Keys and metadata"):
        st.json({"keys": info["keys"], "components": info["components"], **info["metadata"]})


def render_resize(path: Path) -> None:
    method = st.selectbox("Method", list(RESIZE_HELP), key="lu:method")
    default = 4.0 if method == "rank" else (10.0 if method == "sv_ratio" else 0.9)
    param = st.number_input(RESIZE_HELP[method], value=default, key=f"lu:param:{method}")
    out = st.text_input(
        "Save as", str(path.with_name(path.stem + "_resized.safetensors")), key="lu:rout"
    )
    if st.button("Resize", key="lu:resize"):

        def action():
            resized, stats = lt.resize(lt.load(path), method, param)
            lt.save(resized, out, {"resized": f"{method}={param}"})
            return (
                f"{out}: mean rank {stats['mean_rank']:.2f}, mean error {stats['mean_error']:.4f}"
            )

        _run(action, "Saved {result}")


def render_convert(path: Path, home: Path) -> None:
    to = st.radio("To", ["webui", "diffusers"], key="lu:to", horizontal=True)
    base = st.text_input("Base model (diffusers only; default: from the file)", key="lu:cbase")
    out = st.text_input("Save as", str(path.with_name(path.stem + f"_{to}")), key="lu:cout")
    if st.button("Convert", key="lu:convert"):

        def action():
            lora = lt.load(path)
            if to == "webui":
                return lt.save(lt.to_kohya(lora), Path(out).with_suffix(".safetensors"))
            arch = lt.file_arch(lora)
            pipe = lt.load_base_pipeline(arch, base or lora.metadata.get("base_model", ""), home)
            return lt.save(lt.to_peft(lora, pipe, arch), out)

        _run(action, "Saved {result}")


def render_merge(path: Path, home: Path) -> None:
    into_base = st.toggle("Merge into the base model (save a full pipeline)", key="lu:intobase")
    if into_base:
        base = st.text_input("Base model", key="lu:mbase")
        scale = st.number_input("LoRA strength", value=1.0, key="lu:mscale")
        out = st.text_input(
            "Save pipeline to", str(path.with_name(path.stem + "_merged")), key="lu:mout"
        )
        if st.button("Merge into base", key="lu:merge_base"):

            def action():
                lora = lt.load(path)
                ref = base or lora.metadata.get("base_model", "")
                pipe = lt.load_base_pipeline(lt.file_arch(lora), ref, home)
                return lt.merge_into_base(path, pipe, out, scale)

            _run(action, "Saved {result}")
        return
    other = pick_file(home, "Second LoRA", "lu:other")
    cols = st.columns(2)
    w1 = cols[0].number_input("Weight of the first", value=1.0, key="lu:w1")
    w2 = cols[1].number_input("Weight of the second", value=1.0, key="lu:w2")
    out = st.text_input(
        "Save as", str(path.with_name(path.stem + "_merged.safetensors")), key="lu:out2"
    )
    if other is not None and st.button("Merge", key="lu:merge"):
        _run(
            lambda: lt.save(lt.merge([lt.load(path), lt.load(other)], [w1, w2]), out),
            "Saved {result}",
        )


def render_grid(path: Path, home: Path, tracking_uri: str) -> None:
    """X/Y grid: this LoRA (plus other checkpoints) × prompts × strengths, logged to MLflow."""
    more = st.text_area("Other checkpoints (one path per line)", key="lu:gridmore")
    prompts = st.text_area("Prompts (one per line)", "a photo of sks", key="lu:gridprompts")
    strengths = st.text_input("Strengths", "0, 0.5, 1", key="lu:gridstrengths")
    cols = st.columns(4)
    base = cols[0].text_input("Base model", key="lu:gridbase", placeholder="from the file")
    steps = cols[1].number_input("Steps", 1, 100, 20, key="lu:gridsteps")
    size = cols[2].number_input("Size", 64, 2048, 512, step=64, key="lu:gridsize")
    seed = cols[3].number_input("Seed", 0, 2**31 - 1, 0, key="lu:gridseed")
    if not st.button("Generate grid", key="lu:grid"):
        return
    try:
        spec = GridSpec(
            [path, *(Path(p.strip()) for p in more.splitlines() if p.strip())],
            [p.strip() for p in prompts.splitlines() if p.strip()],
            [float(s) for s in strengths.split(",") if s.strip()],
            steps=int(steps),
            width=int(size),
            height=int(size),
            seed=int(seed),
        )
        lora = lt.load(path)
        ref = base or lora.metadata.get("base_model", "")
        pipe = lt.load_base_pipeline(lt.file_arch(lora), ref, home)
        pipe.set_progress_bar_config(disable=True)
        with st.spinner("Generating…"):
            grid, _ = generate_grid(pipe, spec)
        run_id = log_grid(grid, spec, tracking_uri)
    except (lt.LoraToolError, OSError, ValueError) as err:
        st.error(f"Failed: {err}")
        return
    st.image(grid, caption=f"Logged to MLflow run {run_id} as xy_grid.png")
