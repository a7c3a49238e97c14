"""A LoRA ready to use: the files written next to every saved LoRA, and the previews they show.

Beside the weights go a model card (``README.md``, Hugging Face format: ``trainer.lora.card``),
a diffusers script (``diffusers_usage.py``) and a ComfyUI workflow in API prompt format
(``comfyui_workflow_api.json``), plus the preview images the card shows (``samples/``).

- ``preview_recipes(cfg)`` and ``base_model_of(cfg)`` (``trainer.lora.recipes``): how each
  preview image is made and what base model it was made with, which all these files describe.
- ``download_name(weight_name)`` / ``lora_purpose(weight_name)``: the name a LoRA file downloads
  as (both layouts of one run apart) and what it is for (the Monitor's download buttons).
- ``diffusers_snippet(...)``: a script that loads the base model and the LoRA and generates the
  run's first preview of the LoRA's step again (``card.remade_preview``: the card says the same);
  with the run's precision on the run's kind of device, pixel for pixel (the LoRA file saved in
  fp32; fp16/bf16 files round the weights).
- ``comfyui_workflow(...)``: the same settings as ComfyUI nodes (settings, not pixels: ComfyUI
  draws its noise and steps its samplers its own way).
- ``publish_usage_files(...)``: writes all of them next to a LoRA file and logs them to MLflow
  (the final LoRA: ``trainer.engine.loop.save_final``; any other LoRA file, e.g. the best
  checkpoint made final, the same way).

The previews themselves are kept per round in the job folder (``keep_preview``:
``<job>/previews/step_<n>/sample_<i>.png``) so the card can show the round of its LoRA's step.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from trainer.config.schema import TrainingConfig
from trainer.files import atomic_write_text
from trainer.lora.card import ValidationSummary, base_model_licence, model_card, remade_preview
from trainer.lora.recipes import BaseModel, Recipe, base_model_of, preview_recipes

CARD_NAME = "README.md"
SNIPPET_NAME = "diffusers_usage.py"
WORKFLOW_NAME = "comfyui_workflow_api.json"
USAGE_FILES = (CARD_NAME, SNIPPET_NAME, WORKFLOW_NAME)
SAMPLES_FOLDER = "samples"  # beside the card: the preview images it shows
PREVIEWS_DIR = "previews"  # in the job folder: previews/step_<n>/sample_<i>.png
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"  # trainer.lora.io.WEIGHTS_NAME


def download_name(weight_name: str) -> str:
    """The file name the Monitor downloads the LoRA ``weight_name`` (its path in the run's
    ``lora`` folder) as: a single file keeps its name; the diffusers layout's weights take their
    folder's name plus ``_diffusers`` (a run saved in both layouts would get one name twice)."""
    path = Path(weight_name)
    if path.name == DIFFUSERS_WEIGHTS and path.parent.name:
        return f"{path.parent.name}_diffusers.safetensors"
    return path.name


def lora_purpose(weight_name: str) -> str:
    """What the LoRA file ``weight_name`` is for, in a few words for its download button."""
    if Path(weight_name).name == DIFFUSERS_WEIGHTS:
        return "diffusers layout: load_lora_weights"
    return "single file for ComfyUI / A1111 / Forge"


PIPELINES = {
    "sd15": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
}
# What the previews pass to from_pretrained besides the dtype (trainer.arch: extra_pipeline_kwargs);
# an SDXL watermark would change the pixels.
PIPELINE_KWARGS = {
    "sd15": "safety_checker=None, requires_safety_checker=False",
    "sdxl": "add_watermarker=False",
    "flux": "",
}
SCHEDULERS = {  # trainer.arch.pipelines.SAMPLERS, spelled out: the script must not import us
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "ddpm": "DDPMScheduler",
    "flowmatch": "FlowMatchEulerDiscreteScheduler",
}
# The studio's samplers by ComfyUI's names (comfy/samplers.py KSAMPLER_NAMES, SCHEDULER_NAMES):
# diffusers' schedulers step on the model's own schedule, which ComfyUI calls "normal"; Flux's
# flow-matching Euler is ComfyUI's euler on the "simple" schedule.
COMFY_SAMPLERS = {
    "euler": ("euler", "normal"),
    "euler_a": ("euler_ancestral", "normal"),
    "dpmpp_2m": ("dpmpp_2m", "normal"),
    "ddpm": ("ddpm", "normal"),
    "flowmatch": ("euler", "simple"),
}
TORCH_DTYPES = {"fp32": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}


# ---------------------------------------------------------------------------- diffusers script
def _device_and_dtype(cfg: TrainingConfig) -> list[str]:
    """Lines choosing the device and precision the way the trainer did (engine.loop.pick_*)."""
    device = cfg.runtime.device
    lines = (
        [f"device = {device!r}"]
        if device != "auto"
        else [
            'device = "cpu"',
            "if torch.cuda.is_available():",
            '    device = "cuda"',
            "elif torch.backends.mps.is_available():",
            '    device = "mps"',
        ]
    )
    if cfg.train.dtype != "auto":
        return [*lines, f"dtype = {TORCH_DTYPES[cfg.train.dtype]}"]
    return [
        *lines,
        "dtype = torch.float32  # the trainer's choice on a CPU or Mac",
        'if device == "cuda":',
        "    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16",
    ]


def diffusers_snippet(
    cfg: TrainingConfig,
    recipe: Recipe,
    base: BaseModel,
    weight_name: str,
    lora_repo: str | None = None,
    step: int | None = None,
) -> str:
    """A script that generates ``recipe`` with the base model and the LoRA ``weight_name``
    (a path relative to the script's folder, or inside the Hub repo ``lora_repo``) saved at
    ``step`` of the run (the script names it: a checkpoint made final is not the last step).
    A local script looks for the LoRA beside it under its ``download_name``."""
    arch = cfg.model.arch
    pipeline, scheduler = PIPELINES[arch], SCHEDULERS[recipe.sampler]
    load = "from_single_file" if base.single_file else "from_pretrained"
    extra = ", ".join(
        part
        for part in (
            PIPELINE_KWARGS[arch],
            f"revision={base.revision!r}" if base.revision else "",
        )
        if part
    )
    prediction = ', prediction_type="v_prediction"' if cfg.model.is_v_pred else ""
    local = download_name(weight_name)
    in_run_folder = [  # the job folder keeps the diffusers layout's weights in a folder
        "if not LORA_PATH.is_file():  # beside the run's own files",
        f"    LORA_PATH = LORA_PATH.parent / {weight_name!r}",
    ]
    lora_from = [  # a browser saves the downloads loose in one folder: the script looks there
        "# The LoRA file: put it next to this script under the name LoRA Studio's Monitor",
        "# downloads it as (LORA_WEIGHTS), or set LORA_PATH = Path('/full/path/to/the.safetensors').",
        f"LORA_WEIGHTS = {local!r}",
        "LORA_PATH = Path(__file__).resolve().parent / LORA_WEIGHTS",
        *(in_run_folder if local != weight_name else []),
        "if not LORA_PATH.is_file():",
        '    raise SystemExit(f"Put {LORA_WEIGHTS} next to this script, or set LORA_PATH.")',
    ]
    load_lora = "pipe.load_lora_weights(str(LORA_PATH.parent), weight_name=LORA_PATH.name"
    if lora_repo:
        lora_from = [
            f"LORA = {lora_repo!r}  # the Hub repository",
            f"LORA_WEIGHTS = {weight_name!r}",
        ]
        load_lora = "pipe.load_lora_weights(LORA, weight_name=LORA_WEIGHTS"
    call = [
        "image = pipe(",
        "    PROMPT,",
        *([] if arch == "flux" else ["    negative_prompt=NEGATIVE_PROMPT or None,"]),
        "    num_inference_steps=STEPS,",
        "    guidance_scale=GUIDANCE,",
        "    width=WIDTH,",
        "    height=HEIGHT,",
        "    generator=generator,",
        *(["    max_sequence_length=512,"] if arch == "flux" else []),
        ").images[0]",
    ]
    where = "the base model the LoRA was trained on"
    if not (base.on_hub or Path(base.source).is_absolute()):
        where = "the base model: put the path of its folder or file on your machine here"
    notes = []
    if cfg.save.dtype != "fp32":
        notes.append(f"# The LoRA was saved in {cfg.save.dtype}: its rounded weights may move a")
        notes.append("# few pixel values of the preview by one.")
    if base.single_file and cfg.model.components_from:
        notes.append("# The run took the parts this file lacks from model.components_from:")
        notes.append("# pass them to from_single_file (config=..., text_encoder=...).")
    if cfg.model.refiner_name_or_path:
        notes.append("# The run's previews were finished by a refiner; this script does not.")
    if cfg.model.vae_path or cfg.model.te_name_or_path:
        notes.append("# The run replaced the VAE or text encoder (model.vae_path/te_name_or_path):")
        notes.append("# pass the same ones to from_pretrained (vae=..., text_encoder=...).")
    which = remade_preview(step)
    lines = [
        f'"""Generate with the LoRA {cfg.name!r} (LoRA Studio): the run\'s first preview prompt with',
        "the previews' sampler, seed and size; run with the run's precision on the same kind of",
        f"device, it makes {which} again, pixel for pixel.",
        *([] if step is None else ["", f"The LoRA was saved at step {step} of the run."]),
        "",
        "Needs: pip install torch diffusers transformers peft safetensors accelerate",
        '"""',
        "",
        "from pathlib import Path",
        "",
        "import torch",
        f"from diffusers import {', '.join(sorted({pipeline, scheduler}))}",
        "",
        f"BASE_MODEL = {base.source!r}  # {where}",
        *lora_from,
        f"PROMPT = {recipe.prompt!r}",
        f"NEGATIVE_PROMPT = {recipe.negative!r}",
        f"SEED, STEPS, GUIDANCE = {recipe.seed}, {recipe.steps}, {recipe.guidance_scale!r}",
        f"WIDTH, HEIGHT = {recipe.width}, {recipe.height}",
        f"LORA_SCALE = {recipe.lora_scale!r}",
        f"OUTPUT = {cfg.name + '_preview.png'!r}",
        *notes,
        "",
        *_device_and_dtype(cfg),
        f"pipe = {pipeline}.{load}(",
        f"    BASE_MODEL, dtype=dtype{', ' + extra if extra else ''}",
        ")",
        f"# The previews' sampler ({recipe.sampler}) on the base model's own noise schedule.",
        f"pipe.scheduler = {scheduler}.from_config(pipe.scheduler.config{prediction})",
        f'{load_lora}, adapter_name="lora")',
        "if LORA_SCALE != 1.0:",
        '    pipe.set_adapters(["lora"], adapter_weights=[LORA_SCALE])',
        "pipe = pipe.to(device)",
        "pipe.set_progress_bar_config(disable=True)",
        'generator = torch.Generator("cpu").manual_seed(SEED)  # the previews\' noise: on the CPU',
        *call,
        "image.save(OUTPUT)",
        'print(f"saved {OUTPUT}")',
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- ComfyUI workflow
def _node(class_type: str, title: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def comfyui_workflow(
    cfg: TrainingConfig, recipe: Recipe, base: BaseModel, lora_name: str
) -> dict[str, Any]:
    """The previews' settings as a ComfyUI API prompt: node id -> {class_type, inputs}, a link
    being [node id, output index]. Flux loads its parts separately and takes its (distilled)
    guidance through FluxGuidance, with cfg 1."""
    sampler_name, scheduler = COMFY_SAMPLERS[recipe.sampler]
    nodes: dict[str, dict[str, Any]] = {}
    if cfg.model.arch == "flux":
        nodes["1"] = _node(
            "UNETLoader", "Base model", unet_name=base.comfy_file, weight_dtype="default"
        )
        nodes["2"] = _node(
            "DualCLIPLoader",
            "Text encoders",
            clip_name1="clip_l.safetensors",
            clip_name2="t5xxl_fp16.safetensors",
            type="flux",
        )
        nodes["3"] = _node("VAELoader", "VAE", vae_name="ae.safetensors")
        model, clip, vae = ["1", 0], ["2", 0], ["3", 0]
    else:
        nodes["1"] = _node("CheckpointLoaderSimple", "Base model", ckpt_name=base.comfy_file)
        model, clip, vae = ["1", 0], ["1", 1], ["1", 2]
    nodes["4"] = _node(
        "LoraLoader",
        f"LoRA {cfg.name}",
        model=model,
        clip=clip,
        lora_name=lora_name,
        strength_model=recipe.lora_scale,
        strength_clip=recipe.lora_scale,
    )
    nodes["5"] = _node("CLIPTextEncode", "Prompt", text=recipe.prompt, clip=["4", 1])
    nodes["6"] = _node("CLIPTextEncode", "Negative prompt", text=recipe.negative, clip=["4", 1])
    positive, cfg_scale = ["5", 0], recipe.guidance_scale
    if cfg.model.arch == "flux":
        nodes["7"] = _node(
            "FluxGuidance", "Guidance", conditioning=["5", 0], guidance=recipe.guidance_scale
        )
        positive, cfg_scale = ["7", 0], 1.0
    nodes["8"] = _node(
        "EmptyLatentImage", "Size", width=recipe.width, height=recipe.height, batch_size=1
    )
    nodes["9"] = _node(
        "KSampler",
        "Sampler",
        model=["4", 0],
        seed=recipe.seed,
        steps=recipe.steps,
        cfg=cfg_scale,
        sampler_name=sampler_name,
        scheduler=scheduler,
        positive=positive,
        negative=["6", 0],
        latent_image=["8", 0],
        denoise=1.0,
    )
    nodes["10"] = _node("VAEDecode", "Decode", samples=["9", 0], vae=vae)
    nodes["11"] = _node("SaveImage", "Save", images=["10", 0], filename_prefix=cfg.name)
    return nodes


# ------------------------------------------------------------------------------ the previews
def preview_folder(job_dir: Path, step: int) -> Path:
    return Path(job_dir) / PREVIEWS_DIR / f"step_{step:08d}"


def keep_preview(job_dir: Path, step: int, index: int, image: Any) -> Path:
    """Keep one preview image in the job folder (its round's folder) for the model cards."""
    folder = preview_folder(job_dir, step)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sample_{index}.png"
    image.save(path)
    return path


def previews_for(job_dir: Path, step: int) -> list[Path]:
    """The newest preview round made at or before ``step`` (none: an empty list)."""
    rounds = sorted(
        (int(p.name.removeprefix("step_")), p)
        for p in (Path(job_dir) / PREVIEWS_DIR).glob("step_*")
        if p.name.removeprefix("step_").isdigit()
    )
    found = [folder for at, folder in rounds if at <= step]
    if not found:
        return []
    return sorted(found[-1].glob("sample_*.png"), key=lambda p: int(p.stem.split("_")[-1]))


# ------------------------------------------------------------------------------ writing them
def card_folder(lora_file: Path) -> Path:
    """Where the usage files go: beside a single-file LoRA; beside a diffusers-layout folder
    (so the folder a Hub upload sends holds the card at its top)."""
    lora_file = Path(lora_file)
    return lora_file.parent.parent if lora_file.name == DIFFUSERS_WEIGHTS else lora_file.parent


def write_usage_files(
    lora_file: Path,
    cfg: TrainingConfig,
    *,
    step: int,
    previews: list[Path] | tuple[Path, ...] = (),
    model_path: str | None = None,
    home: Path | None = None,
    validation: ValidationSummary | None = None,
) -> list[Path]:
    """Write the card, the diffusers script, the ComfyUI workflow and the card's sample images
    (copies of ``previews``) for the LoRA ``lora_file`` saved at ``step``; returns the files.
    ``validation``: the run's validation loss, for the card."""
    folder = card_folder(lora_file)
    weight_name = Path(lora_file).relative_to(folder).as_posix()
    base = base_model_of(cfg, model_path, home)
    recipes = preview_recipes(cfg)
    samples = folder / SAMPLES_FOLDER
    for stale in samples.glob("sample_*.png"):
        stale.unlink()
    shown = []
    for source in previews:
        samples.mkdir(parents=True, exist_ok=True)
        shown.append(Path(shutil.copyfile(source, samples / Path(source).name)))
    lora_repo = cfg.save.hf_repo_id if cfg.save.push_to_hub else None
    snippet = diffusers_snippet(cfg, recipes[0], base, weight_name, step=step)
    comfy_name = download_name(weight_name)  # as downloaded: ComfyUI's loras folder wants one
    workflow = comfyui_workflow(cfg, recipes[0], base, comfy_name)
    # A card is for sharing: a local base model appears by name, never by its path here.
    public_base = base if base.on_hub else replace(base, source=base.display)
    card = model_card(
        cfg,
        base_model=base.display if (base.on_hub or not lora_repo) else None,
        licence=base_model_licence(cfg),
        recipes=recipes,
        samples=[p.relative_to(folder).as_posix() for p in shown],
        step=step,
        snippet=diffusers_snippet(cfg, recipes[0], public_base, weight_name, lora_repo, step),
        files=(weight_name, SNIPPET_NAME, WORKFLOW_NAME),
        comfy_files=(base.comfy_file, comfy_name),
        validation=validation,
    )
    written = [
        atomic_write_text(folder / CARD_NAME, str(card)),
        atomic_write_text(folder / SNIPPET_NAME, snippet),
        atomic_write_text(folder / WORKFLOW_NAME, json.dumps(workflow, indent=2) + "\n"),
    ]
    return written + shown


def publish_usage_files(
    lora_file: Path,
    cfg: TrainingConfig,
    tracker: Any,
    *,
    job_dir: Path,
    step: int,
    arch: Any = None,
    artifact_path: str = "lora",
    home: Path | None = None,
    model_path: str | None = None,
) -> list[Path]:
    """``write_usage_files`` with the previews of ``step``'s round from ``job_dir``, then log
    the files as MLflow artifacts under ``artifact_path`` (samples under ``.../samples``); the
    card reports the validation loss ``job_dir`` holds (``ValidationSummary``), if any.
    ``arch``: the loaded model, when there is one (its Hub commit goes into the script);
    ``model_path``: the same without a loaded model (``id@commit`` for a Hub model)."""
    written = write_usage_files(
        lora_file,
        cfg,
        step=step,
        previews=previews_for(job_dir, step),
        model_path=model_path or getattr(arch, "model_path", None),
        home=home,
        validation=ValidationSummary.read(job_dir),
    )
    folder = card_folder(lora_file)
    for path in written:
        inner = path.parent.relative_to(folder).as_posix()
        tracker.log_artifact(path, artifact_path if inner == "." else f"{artifact_path}/{inner}")
    return written
