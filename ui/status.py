"""What the home page reports about the studio, and the step it tells a user to take next: pure
data, cheap to compute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.demo.tiny import DEMO_ARCHS, demo_is_built
from trainer.redaction import redact_text
from trainer.settings import StudioSettings, is_loopback


@dataclass(frozen=True)
class StudioStatus:
    home: Path
    tracking_uri: str  # as shown: without credentials (``postgresql://***@host/db``)
    local_store: bool
    store_exists: bool
    demo: dict[str, bool]
    bind_address: str  # what the server listens on ("": every interface)
    public_bind: bool  # other machines can reach it (the address is not loopback)


def studio_status(settings: StudioSettings, bind_address: str) -> StudioStatus:
    """``bind_address``: the address the server really listens on (``ui.access.bind_address``),
    not STUDIO_HOST, which only ``make run`` passes on."""
    demo = {name: demo_is_built(settings.home, name) for name in (*DEMO_ARCHS, "dataset")}
    store = settings.home / "mlflow.db"
    return StudioStatus(
        home=settings.home,
        tracking_uri=redact_text(settings.tracking_uri),
        local_store=settings.uses_local_store,
        store_exists=store.exists() if settings.uses_local_store else True,
        demo=demo,
        bind_address=bind_address,
        public_bind=not is_loopback(bind_address),
    )


PREFLIGHT_PAGE = "pages/preflight.py"
WIZARD_PAGE = "pages/wizard.py"
REVIEW_PAGE = "pages/review.py"


@dataclass(frozen=True)
class StartHere:
    """Home's call to action: the button's words, the page it opens, and why this step."""

    label: str
    page: str
    why: str


def start_here(preflight_done: bool) -> StartHere:
    """Preflight until it has been confirmed once (it fills the wizard), then the wizard."""
    if not preflight_done:
        return StartHere(
            "Preflight: check this machine →",
            PREFLIGHT_PAGE,
            "Preflight checks your hardware and asks what you are training, what matters most, "
            "your experience and the model family; the advisor then fills the wizard with "
            "recommended values, each with its reason.",
        )
    return StartHere(
        "Continue in the wizard →",
        WIZARD_PAGE,
        "Your draft is filled in. Walk the wizard's steps, then review and launch.",
    )
