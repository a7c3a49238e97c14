"""What the home page reports about the studio: pure data, cheap to compute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.demo.tiny import DEMO_ARCHS, demo_is_built
from trainer.settings import StudioSettings


@dataclass(frozen=True)
class StudioStatus:
    home: Path
    tracking_uri: str
    local_store: bool
    store_exists: bool
    demo: dict[str, bool]
    public_bind: bool


def studio_status(settings: StudioSettings) -> StudioStatus:
    demo = {name: demo_is_built(settings.home, name) for name in (*DEMO_ARCHS, "dataset")}
    store = settings.home / "mlflow.db"
    return StudioStatus(
        home=settings.home,
        tracking_uri=settings.tracking_uri,
        local_store=settings.uses_local_store,
        store_exists=store.exists() if settings.uses_local_store else True,
        demo=demo,
        public_bind=settings.binds_publicly,
    )
