"""A config being filled in by the smart defaults, and what they recommend, each with a reason.

``Draft.set`` records a value and why; a switch goes through ``Draft.set_flag`` with a reason
for each side (``set`` refuses booleans), so a reason can never contradict the value it explains.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from advisor import intents
from advisor.dataset import DatasetInfo
from advisor.intents import IntentPrior
from advisor.profile import SystemProfile
from trainer.config.paths import get_path, set_path
from trainer.config.schema import TrainingConfig

# Where a recommended value comes from (shown beside its reason).
VRAM_SOURCE = "advisor VRAM model (calibrated on docs/sources.md#published-memory-figures)"
SCHEMA = "trainer/config/fields.py ARCH_DEFAULTS"
DEMO = "presets/demo_*.yaml"
DATASET_SOURCE = "your dataset"  # a fact read from the dataset folder (stale once it changes)


@dataclass(frozen=True)
class UserIntent:
    training_type: str = "other"  # person | character | style | object | concept | other
    priority: str = "quality"  # quality | speed | memory
    experience: str = "beginner"  # beginner | intermediate | advanced
    class_word: str | None = None  # e.g. "woman", "dog": enables differential preservation
    trigger_word: str | None = None


@dataclass(frozen=True)
class Recommendation:
    path: str
    value: Any
    reason: str
    source: str


@dataclass(frozen=True)
class Recommended:
    config: TrainingConfig
    recommendations: tuple[Recommendation, ...]
    notes: tuple[str, ...] = ()

    def get(self, path: str) -> Recommendation | None:
        return next((r for r in self.recommendations if r.path == path), None)

    def patch(self) -> dict[str, Any]:
        return {r.path: r.value for r in self.recommendations}


@dataclass
class Draft:
    """A config being filled in; in ``only_auto`` mode it changes only fields left "auto"."""

    data: dict[str, Any]
    intent: UserIntent
    profile: SystemProfile
    info: DatasetInfo | None
    only_auto: bool = False
    recs: dict[str, Recommendation] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return self.data["model"]["arch"]

    @property
    def prior(self) -> IntentPrior:
        return intents.prior(self.intent.training_type)

    @property
    def kind(self) -> str:
        """What is trained, as one of the intent priors ('other' when unknown)."""
        kind = self.intent.training_type
        return kind if kind in intents.PRIORS else "other"

    @property
    def demo(self) -> bool:
        return str(self.data["model"]["name_or_path"]).startswith("demo:")

    @property
    def counted(self) -> DatasetInfo | None:
        """The dataset info when every folder exists and was counted, else None. Facts about
        images and captions come only from here (like the rules' ``Context.counted``): a folder
        that is missing has no images, no captions and no trigger word to report."""
        found = self.info.found if self.info is not None else None
        return found if found is not None and found.folders else None

    def get(self, path: str) -> Any:
        return get_path(self.data, path)

    def set(self, path: str, value: Any, reason: str, source: str) -> None:
        """Recommend ``value`` for ``path``. A switch goes through ``set_flag``: one reason for
        both of its values would contradict one of them ("use_ema = off — a smoother result")."""
        if isinstance(value, bool):
            raise TypeError(f"{path}: a switch takes set_flag(path, on, reason_on, reason_off)")
        self._record(path, value, reason, source)

    def set_flag(self, path: str, on: bool, reason_on: str, reason_off: str, source: str) -> None:
        """Recommend switching ``path`` on or off, with the reason for the side chosen."""
        self._record(path, bool(on), reason_on if on else reason_off, source)

    def _record(self, path: str, value: Any, reason: str, source: str) -> None:
        if self.only_auto and self.get(path) != "auto":
            return
        before = copy.deepcopy(self.get(path))
        set_path(self.data, path, value)
        if self.only_auto and not self._valid():
            set_path(self.data, path, before)  # an answer that clashes with a choice the user made
            return
        self.recs[path] = Recommendation(path, value, reason, source)

    def _valid(self) -> bool:
        try:
            self.cfg()
        except ValueError:
            return False
        return True

    def cfg(self) -> TrainingConfig:
        return TrainingConfig.model_validate(self.data)

    def datasets(self) -> list[int]:
        return [i for i, ds in enumerate(self.data["datasets"]) if not ds.get("is_reg")]
