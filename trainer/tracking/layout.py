"""How a training run is laid out in MLflow: written by the trainer, read by the studio.

Layout of one run (every training run is one MLflow run):

- params: the flattened config (``train.lr``, ``datasets.0.resolution``, ...), secrets dropped;
  ``total_steps`` and ``steps_per_epoch``, the run's length as the trainer resolved it at its
  start (``train.epochs`` made steps: ``trainer.engine.run_length``; read it with
  ``trained_steps``);
- metrics: whatever the loop logs (``loss``, ``lr``, ...) sent in batches, ``val_loss`` (the
  validation loss: fixed noise and timesteps on images never trained on, ``METRIC_VAL_LOSS``),
  ``hparam/<dotted>`` = every numeric setting at step 0 (``search_runs`` compares params as
  text), ``system/...`` from MLflow's system-metrics monitor;
- tags: ``studio.app``, ``studio.arch``, ``studio.intent``, ``studio.preset``, ``studio.config_name``,
  ``studio.dataset_fingerprint``, ``studio.rating`` (1-5), ``studio.host`` / ``studio.pid`` /
  ``studio.pid_create_time`` (who trains it), ``mlflow.note.content`` (the note),
  ``studio.sample_rating.<step>.<image key>`` (1-5 per sample image), ``studio.device`` and
  ``studio.predicted_s_per_step`` / ``studio.predicted_total_s`` (set at launch by the studio),
  ``studio.group`` (the runs queued together as one sweep share it), ``studio.best_step`` /
  ``studio.best_val_loss`` (the saved LoRA with the lowest ``val_loss``) and
  ``studio.final_from_step`` (the checkpoint made the final LoRA on the Monitor);
- inputs: each dataset (name ``<index>:<folder>``, digest = the content fingerprint);
- artifacts: ``config/train_config.yaml`` (the exact YAML), ``images/<key>+step+<n>+timestamp+<ms>
  +<uuid>.png`` (+ ``+compressed.webp``; written by ``log_image(key=, step=)``),
  ``samples/step_<n>.json`` (prompt, seed, sampler, steps of each image at that step),
  ``lora/`` and ``checkpoints/`` (the adapters), ``outputs/`` (a final LoRA that "make final"
  replaced, renamed ``<name>_final_step<n>.safetensors``); beside the final LoRA,
  ``lora/README.md`` (its model card), ``lora/diffusers_usage.py``,
  ``lora/comfyui_workflow_api.json`` and ``lora/samples/sample_<i>.png`` (``trainer.lora.usage``).

Next to MLflow, each job launched by the studio has a folder ``<home>/jobs/<run id>/`` holding
``job.json`` (pid, start time, command: ``trainer.tracking.job_file``) and ``progress.json``
(rewritten atomically every step: ``trainer.tracking.progress``; the monitor page reads it without
touching MLflow).

``import mlflow`` takes 1-2 s, so no module of ``trainer.tracking`` imports it at module level:
pages and tools that only read progress and job files stay cheap.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal

EndStatus = Literal["FINISHED", "FAILED", "KILLED"]
END_STATUSES = ("FINISHED", "FAILED", "KILLED")

APP = "lora-studio"
TAG_APP = "studio.app"
TAG_ARCH = "studio.arch"
TAG_INTENT = "studio.intent"
TAG_PRESET = "studio.preset"
TAG_CONFIG_NAME = "studio.config_name"
TAG_MODEL = "studio.model"
TAG_DATASET = "studio.dataset_fingerprint"
TAG_RATING = "studio.rating"
TAG_SAMPLE_RATING = "studio.sample_rating"  # + ".<step>.<image key>" = 1-5
TAG_DEVICE = "studio.device"  # the device the run was launched on, set at launch
TAG_PREDICTED = "studio.predicted_s_per_step"  # the advisor's s/step, recorded at launch
TAG_PREDICTED_TOTAL = "studio.predicted_total_s"  # the advisor's whole-run seconds, at launch
TAG_GROUP = "studio.group"  # the sweep a queued run belongs to (Compare opens them together)
# The saved LoRA with the lowest validation loss (trainer.engine.validation), and the checkpoint
# step whose LoRA "make final" made the run's final LoRA (trainer.lora.final).
TAG_BEST_STEP = "studio.best_step"
TAG_BEST_VAL_LOSS = "studio.best_val_loss"
TAG_FINAL_FROM_STEP = "studio.final_from_step"
# Seconds the run trained over all its launches (a stopped-then-resumed run: not the pause)
TAG_ACTIVE_S = "studio.active_s"
# X/Y grids made before they joined their LoRA's run had runs of their own here: not training
LEGACY_GRID_EXPERIMENT = "xy_grids"
TAG_HOST = "studio.host"
TAG_PID = "studio.pid"
TAG_PID_CREATE_TIME = "studio.pid_create_time"
TAG_NOTE = "mlflow.note.content"
TAG_RUN_NAME = "mlflow.runName"

CONFIG_ARTIFACT = "config/train_config.yaml"
IMAGES_DIR = "images"
SAMPLES_DIR = "samples"
LORA_DIRS = ("lora", "checkpoints")
HPARAM_PREFIX = "hparam/"
METRIC_VAL_LOSS = "val_loss"
PARAM_TOTAL_STEPS = "total_steps"  # the steps the run trains, resolved at its start
PARAM_STEPS_PER_EPOCH = "steps_per_epoch"
PARAM_CONFIG_STEPS = "train.steps"  # ignored by the trainer when train.epochs is set
REPLACED_DIR = "outputs"  # a final LoRA that "make final" replaced: kept here, renamed

# MLflow's limits: longer keys are refused, longer values cut
MAX_KEY_LEN = 250
MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000


def trained_steps(params: Mapping[str, str]) -> int | None:
    """The steps a run trains: its ``total_steps`` param, else (a run logged before the trainer
    wrote it) ``train.steps``; None when neither is a number ('auto', epochs of an old run)."""
    for key in (PARAM_TOTAL_STEPS, PARAM_CONFIG_STEPS):
        value = str(params.get(key) or "").strip()
        if value.isdigit():
            return int(value)
    return None


def now_ms() -> int:
    """Now as MLflow stamps metrics and runs: epoch milliseconds."""
    return int(time.time() * 1000)
