"""Utilities page parts: inspect, resize, convert and merge LoRA files (``trainer.lora.tools``).

The picker lists the LoRAs of the studio's job folders a user can use (final files, the LoRA of
each checkpoint, what these utilities made), labelled by run name and file name; checkpoint
internals (``lora_state.safetensors``, optimizer state) are left out. Everything made here is
saved by default beside the chosen LoRA in an ``outputs/`` folder (``tools.output_path``), or in
the studio home's ``outputs/`` when that LoRA lies elsewhere.

Every "Save as" goes through ``trainer.files.writable_target``: under the studio home, never in
a run's folder (but its ``outputs/``) nor MLflow's artifact store whatever is ticked
(``tools.kept_out``), with the right extension (.safetensors; a folder for a diffusers LoRA or a
pipeline), and an existing file or folder is replaced only after "Replace the existing …" is
ticked for that very path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import streamlit as st

from trainer.files import WouldReplace, WriteRefused, writable_target
from trainer.lora import io as lora_io
from trainer.lora import tools as lt
from trainer.tracking.job_file import read_job
from trainer.tracking.run_names import run_labels
from ui.access import checked_path
from ui.text import code, plain

RESIZE_HELP = {
    "rank": "the new rank (a whole number)",
    "sv_ratio": "keep singular values ≥ largest / this ratio (e.g. 10)",
    "sv_fro": "keep this fraction of the Frobenius norm (e.g. 0.9)",
    "sv_cumulative": "keep this fraction of the sum of singular values (e.g. 0.9)",
}
MAX_LISTED = 200
SAFETENSORS, FOLDER = ".safetensors", ""  # what a "Save as" names: a LoRA file, or a folder


@dataclass(frozen=True)
class StudioLora:
    """One usable LoRA of a job folder: a file, or a diffusers LoRA folder."""

    path: Path
    run_id: str
    run_name: str
    where: str  # "final", "step 20" (a checkpoint's LoRA) or "outputs" (made here)

    @property
    def file_name(self) -> str:
        return self.path.name + ("/" if self.path.is_dir() else "")


def _diffusers_folders(folder: Path) -> list[Path]:
    """LoRA folders in the diffusers layout (not merged pipelines: those hold model_index.json)."""
    return [
        d
        for d in sorted(folder.iterdir())
        if (d / lora_io.WEIGHTS_NAME).is_file() and not (d / "model_index.json").exists()
    ]


def _job_loras(job: Path, name: str) -> list[StudioLora]:
    found: list[StudioLora] = []
    for sub, where in ((lt.FINAL_DIR, "final"), (lt.OUTPUTS_DIR, "outputs")):
        folder = job / sub
        if folder.is_dir():
            files = sorted(folder.glob("*.safetensors")) + _diffusers_folders(folder)
            found += [StudioLora(p, job.name, name, where) for p in files]
    steps = job / lt.CHECKPOINTS_DIR
    # Only each checkpoint's lora/ file: lora_state.safetensors and training_state.pt beside it
    # are the trainer's resume state, not LoRAs a user loads.
    for step in sorted(steps.glob("step_*"), reverse=True) if steps.is_dir() else []:
        number = step.name.removeprefix("step_").lstrip("0") or "0"
        for path in sorted((step / lt.FINAL_DIR).glob("*.safetensors")):
            found.append(StudioLora(path, job.name, name, f"step {number}"))
    return found


def studio_loras(jobs_dir: Path) -> list[StudioLora]:
    """The usable LoRAs of every job folder, newest job first (at most ``MAX_LISTED``)."""
    if not jobs_dir.is_dir():
        return []
    jobs = sorted(
        (d for d in jobs_dir.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True
    )
    found: list[StudioLora] = []
    for job in jobs:
        info = read_job(job)
        found += _job_loras(job, str((info.extra.get("name") if info else "") or ""))
        if len(found) >= MAX_LISTED:
            break
    return found[:MAX_LISTED]


def lora_labels(loras: list[StudioLora]) -> dict[str, str]:
    """``{path: "run name · where · file name"}``; runs sharing a name get their short id."""
    runs = {lora.run_id: SimpleNamespace(run_id=lora.run_id, name=lora.run_name) for lora in loras}
    names = run_labels(list(runs.values()))
    return {
        str(lora.path): f"{names[lora.run_id]} · {lora.where} · {lora.file_name}" for lora in loras
    }


def _typed(key: str) -> None:
    st.session_state[f"{key}:pick"] = ""  # the last choice wins: a typed path over a picked one


def _picked(key: str) -> None:
    st.session_state[f"{key}:path"] = ""


def pick_file(home: Path, label: str, key: str) -> Path | None:
    """A studio LoRA picked by its label, or any path typed; whichever was chosen last."""
    labels = lora_labels(studio_loras(home / "jobs"))
    chosen = ""
    if labels:
        chosen = st.selectbox(
            f"{label}: one of the studio's LoRAs",
            ["", *labels],
            format_func=lambda p: labels.get(p, "") if p else "(none)",
            key=f"{key}:pick",
            on_change=_picked,
            args=(key,),
        )
    typed = st.text_input(
        f"{label} (path)" if not labels else "… or its path",
        key=f"{key}:path",
        on_change=_typed,
        args=(key,),
    )
    choice = typed or chosen
    if not choice:
        return None
    path = checked_path(choice)  # served to a network: a refusal before the path is looked at
    if path is None:
        return None
    if not path.exists():
        st.error(f"{code(path)} does not exist")
        return None
    if chosen and not typed:
        st.caption(code(path))
    return path


def write_roots(home: Path) -> list[Path]:
    """Where the utilities may save: the studio home (a setting for more folders would add here)."""
    return [home]


def checked_target(path: str | Path, home: Path, suffix: str, replace: bool = False) -> Path:
    """``writable_target`` with the utilities' places: inside ``write_roots``, out of
    ``tools.kept_out`` (a run's own files, MLflow's store)."""
    return writable_target(
        path, suffix=suffix, roots=write_roots(home), replace=replace, keep_out=lt.kept_out(home)
    )


def propose(source: Path, tag: str, home: Path, suffix: str = ".safetensors") -> Path:
    """``tools.output_path`` beside ``source`` when the studio may write there, else the same
    name in the studio home's ``outputs/`` folder."""
    beside = lt.output_path(source, tag, suffix)
    try:
        checked_target(beside, home, suffix, replace=True)
    except WriteRefused:
        return home / lt.OUTPUTS_DIR / beside.name
    return beside


@dataclass(frozen=True)
class Target:
    """Where a button may save now (``path``), or why it may not (``problem``)."""

    path: Path | None
    problem: str = ""


def save_target(label: str, proposal: Path, key: str, home: Path, suffix: str) -> Target:
    """The "Save as" field and its check (``writable_target``): a refusal shows under the field;
    an existing target shows a "Replace the existing …" checkbox, keyed by that path so a tick
    never carries over to another file."""
    typed = save_as(label, proposal, key)
    try:
        return Target(checked_target(typed, home, suffix))
    except WouldReplace as err:
        if st.checkbox(f"Replace the existing {err.kind}", key=f"{key}:replace:{err.path}"):
            return Target(err.path)
        problem = f"{err}. Tick “Replace the existing {err.kind}” to replace it."
        return Target(None, problem)
    except WriteRefused as err:
        st.warning(plain(err), icon=":material/block:")
        return Target(None, str(err))


def save_as(label: str, proposal: Path, key: str) -> str:
    """A "Save as" field that proposes ``proposal`` and follows it: when the proposal changes
    (another LoRA picked, another format) the field shows the new one; a path typed over the
    proposal stays while the proposal does."""
    marker = f"{key}:proposed"
    if st.session_state.get(marker) != str(proposal) or key not in st.session_state:
        st.session_state[marker] = str(proposal)
        st.session_state[key] = str(proposal)
    return st.text_input(label, key=key)


def rank_text(rank: float) -> str:
    """A rank as people write it: "4", not "4.00"; a mean of mixed ranks to two decimals."""
    return lt.rank_label(round(rank, 2))


def layer_counts(word: str, counts: dict[float, int]) -> str:
    """``{16: 30, 8: 2}`` -> "rank 16 in 30 layers, rank 8 in 2 layers" (largest share first)."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(
        f"{word} {lt.rank_label(value)} in {n} layer{'' if n == 1 else 's'}" for value, n in ordered
    )


def rank_summary(ranks: dict[float, int], alphas: dict[float, int]) -> str:
    """What ``tools.inspect`` counted, in words: "rank 16 in 32 layers · alpha 8 in 32 layers"."""
    parts = [layer_counts("rank", ranks), layer_counts("alpha", alphas)]
    return " · ".join(part for part in parts if part) or "no LoRA layers"


def _run(action, success: str, target: Target) -> None:
    """Do ``action`` when ``target`` may be written; otherwise say why and write nothing."""
    if target.path is None:
        st.error(f"Not saved: {plain(target.problem)}")
        return
    try:
        result = action(target.path)
    except (lt.LoraToolError, OSError, ValueError) as err:
        st.error(f"Failed: {plain(err)}")
        return
    st.success(plain(success.format(result=result)))  # it names the file saved


def render_inspect(path: Path) -> bool:
    """The LoRA's layout, modules, ranks and alphas; False (with a plain message) when ``path`` is
    not a LoRA this page can use (a model's weights, a renamed text file, ...)."""
    try:
        info = lt.inspect(path)
    except lora_io.UnreadableLora as err:  # already plain: "not a LoRA file: x is not a …"
        text = str(err)
        st.error(plain(text[:1].upper() + text[1:]))
        return False
    except (lt.LoraToolError, OSError, ValueError) as err:
        st.error(f"{plain(path.name)} is not a LoRA file the utilities can use: {plain(err)}")
        return False
    cols = st.columns(2)
    cols[0].metric("Layout", info["layout"])
    cols[1].metric("Layers", info["modules"])
    st.markdown(plain(rank_summary(info["ranks"], info["alphas"])))
    with st.expander("Keys and metadata"):
        st.json({"keys": info["keys"], "components": info["components"], **info["metadata"]})
    return True


def resize_result(out: Path, stats: dict[str, Any]) -> str:
    """What a resize kept, in words: "mean error 0.0911" said nothing to a newcomer. The error
    (``tools.resize``) is per layer: the norm of the lost part of its weight change over the
    norm of the original change."""
    return (
        f"{out}: mean rank {rank_text(stats['mean_rank'])}. The resized LoRA's weight changes "
        f"differ from the original's by {stats['mean_error']:.1%} on average (at most "
        f"{stats['max_error']:.1%} in one layer), relative to the size of each layer's original "
        "change; 0% means nothing was lost. Try both on the same prompts to see whether it shows."
    )


def render_resize(path: Path, home: Path) -> None:
    method = st.selectbox("Method", list(RESIZE_HELP), key="lu:method")
    if method == "rank":  # a whole number, shown as one
        param = st.number_input(RESIZE_HELP[method], 1, 4096, 4, step=1, key="lu:param:rank")
    else:
        default = 10.0 if method == "sv_ratio" else 0.9
        param = st.number_input(RESIZE_HELP[method], value=default, key=f"lu:param:{method}")
    target = save_target("Save as", propose(path, "resized", home), "lu:rout", home, SAFETENSORS)
    if st.button("Resize", key="lu:resize"):

        def action(out: Path) -> str:
            resized, stats = lt.resize(lt.load(path), method, param)
            lt.save(resized, out, {"resized": f"{method}={lt.rank_label(param)}"})
            return resize_result(out, stats)

        _run(action, "Saved {result}", target)


def render_convert(path: Path, home: Path) -> None:
    to = st.radio("To", ["webui", "diffusers"], key="lu:to", horizontal=True)
    base = st.text_input("Base model (diffusers only; default: from the file)", key="lu:cbase")
    suffix = SAFETENSORS if to == "webui" else FOLDER  # diffusers: a folder holding the file
    target = save_target("Save as", propose(path, to, home, suffix), "lu:cout", home, suffix)
    if st.button("Convert", key="lu:convert"):

        def action(out: Path) -> Path:
            lora = lt.load(path)
            if to == "webui":
                return lt.save(lt.to_kohya(lora), out)
            arch = lt.file_arch(lora)
            pipe = lt.load_base_pipeline(arch, base or lora.metadata.get("base_model", ""), home)
            return lt.save(lt.to_peft(lora, pipe, arch), out)

        _run(action, "Saved {result}", target)


def render_merge(path: Path, home: Path) -> None:
    into_base = st.toggle("Merge into the base model (save a full pipeline)", key="lu:intobase")
    if into_base:
        base = st.text_input("Base model", key="lu:mbase")
        scale = st.number_input("LoRA strength", value=1.0, key="lu:mscale")
        proposal = propose(path, "merged_base", home, FOLDER)
        target = save_target("Save pipeline to", proposal, "lu:mout", home, FOLDER)
        if st.button("Merge into base", key="lu:merge_base"):

            def action(out: Path) -> Path:
                lora = lt.load(path)
                ref = base or lora.metadata.get("base_model", "")
                pipe = lt.load_base_pipeline(lt.file_arch(lora), ref, home)
                return lt.merge_into_base(path, pipe, out, scale)

            _run(action, "Saved {result}", target)
        return
    other = pick_file(home, "Second LoRA", "lu:other")
    cols = st.columns(2)
    w1 = cols[0].number_input("Weight of the first", value=1.0, key="lu:w1")
    w2 = cols[1].number_input("Weight of the second", value=1.0, key="lu:w2")
    target = save_target("Save as", propose(path, "merged", home), "lu:out2", home, SAFETENSORS)
    if other is not None and st.button("Merge", key="lu:merge"):
        _run(
            lambda out: lt.save(lt.merge([lt.load(path), lt.load(other)], [w1, w2]), out),
            "Saved {result}",
            target,
        )
