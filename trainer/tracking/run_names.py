"""Run names that tell runs apart.

Every new config is called ``my_lora``, so a store soon holds several runs of that name. Two
mechanisms keep them apart:

- ``free_name`` / ``taken_run_names`` / ``with_free_run_name``: a launched run gets a name no run
  of the store has yet (``my_lora`` → ``my_lora_2`` → ``my_lora_3``); the advisor's
  ``output_name_exists`` rule suggests the same name;
- ``run_labels``: where runs are shown together (the compare page), a name shared by several of
  them gets the run's short id (``my_lora · 1a2b3c4d``), so every run keeps its own column, curve
  and caption even when the names collide (runs from the terminal, older stores).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from trainer.tracking.connect import mlflow_client

if TYPE_CHECKING:  # pragma: no cover
    from trainer.config.schema import TrainingConfig

log = logging.getLogger(__name__)

MAX_NAME_LEN = 100  # the config's ``name`` pattern allows 100 characters
SHORT_ID_LEN = 8
_NUMBERED = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")
_LIKE_SAFE = re.compile(r"[^A-Za-z0-9.\- ]")  # anything else matches any one character


def free_name(name: str, taken: Iterable[str]) -> str:
    """``name`` when no run has it, else the next free ``<name>_<n>`` (n from 2).

    A name that already carries a number of this scheme counts on from it: with ``my_lora`` and
    ``my_lora_2`` taken, both ``my_lora`` and ``my_lora_2`` give ``my_lora_3``. A name that only
    ends in digits (``sdxl_1024``, with no run called ``sdxl``) gets its own suffix."""
    taken = set(taken)
    if name not in taken:
        return name
    base, n = name, 2
    numbered = _NUMBERED.match(name)
    if numbered and numbered["base"] in taken:
        base, n = numbered["base"], int(numbered["n"]) + 1
    while True:
        suffix = f"_{n}"
        candidate = base[: MAX_NAME_LEN - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


def taken_run_names(tracking_uri: str, name: str) -> set[str]:
    """Names of the store's active runs that ``name`` or its numbered variants could collide
    with (every run whose name starts like ``name``; one query over all experiments)."""
    client = mlflow_client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return set()
    # LIKE needs no quoting this way: unusual characters become the one-character wildcard.
    pattern = _LIKE_SAFE.sub("_", name) + "%"
    names: set[str] = set()
    token = None
    while True:
        page = client.search_runs(
            experiments,
            filter_string=f"attributes.run_name LIKE '{pattern}'",
            max_results=1000,
            page_token=token,
        )
        names |= {run.info.run_name for run in page if run.info.run_name}
        token = page.token
        if not token:
            return names


def unique_run_name(tracking_uri: str, name: str) -> str:
    """``name``, or the next free numbered variant when a run of the store already has it. When
    the store cannot be asked, ``name`` itself (a launch must not fail over its name)."""
    try:
        return free_name(name, taken_run_names(tracking_uri, name))
    except Exception as err:
        log.warning("could not check whether run name %r is taken: %s", name, err)
        return name


def with_free_run_name(tracking_uri: str, cfg: TrainingConfig) -> TrainingConfig:
    """``cfg`` itself when its run name is free in the store, else a copy renamed: the field that
    names the run (``logging.run_name`` when set, else ``name``, which also names the files)."""
    current = cfg.logging.run_name or cfg.name
    free = unique_run_name(tracking_uri, current)
    if free == current:
        return cfg
    renamed = cfg.model_copy(deep=True)
    if cfg.logging.run_name:
        renamed.logging.run_name = free
    else:
        renamed.name = free
    return renamed


def run_labels(runs: Sequence[Any]) -> dict[str, str]:
    """``{run_id: label}`` for runs shown together: the name where it is unique among them,
    ``name · <short id>`` where several share it, the short id alone for a run without a name.
    ``runs``: anything with ``name`` and ``run_id`` (``RunRecord``)."""
    counts = Counter(run.name for run in runs)
    labels = {}
    for run in runs:
        short = run.run_id[:SHORT_ID_LEN]
        if not run.name:
            labels[run.run_id] = short
        elif counts[run.name] > 1:
            labels[run.run_id] = f"{run.name} · {short}"
        else:
            labels[run.run_id] = run.name
    return labels
