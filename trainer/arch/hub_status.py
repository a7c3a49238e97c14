"""Whether the Hugging Face Hub can be reached, and where its downloads go (for preflight).

``hub_status`` answers without ever hanging: offline mode (``trainer.settings.hub_offline``) is
reported without any network call, and the reachability probe gives up after ``timeout`` seconds
even when name resolution stalls.
"""

from __future__ import annotations

import shutil
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hf_constants

from trainer.settings import StudioSettings, hub_offline

PROBE_TIMEOUT_S = 2.0
REACHABLE, UNREACHABLE, OFFLINE = "reachable", "unreachable", "offline"
OFFLINE_WHY = "offline (STUDIO_OFFLINE / HF_HUB_OFFLINE)"


@dataclass(frozen=True)
class HubStatus:
    state: str  # REACHABLE, UNREACHABLE or OFFLINE
    detail: str  # one line for people: why it is in that state
    endpoint: str
    cache_dir: Path
    cache_free_gb: float | None  # None when the disk could not be read


def probe_hub(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, detail) after one HEAD request to ``endpoint``; any HTTP answer counts as
    reachable. Returns within ``timeout`` seconds (plus thread start-up) whatever happens."""
    outcome: list[tuple[bool, str]] = []

    def ask() -> None:
        request = urllib.request.Request(endpoint, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                outcome.append((True, f"it answers (HTTP {response.status})"))
        except urllib.error.HTTPError as exc:  # an answer, even if not a 2xx one: it is there
            outcome.append((True, f"it answers (HTTP {exc.code})"))
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append((False, f"no answer ({type(exc).__name__}: {reason})"))

    # urlopen's timeout does not cover name resolution, which can stall for much longer.
    worker = threading.Thread(target=ask, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else (False, f"no answer within {timeout:g} s")


def free_gb(folder: Path) -> float | None:
    """Free space on the disk that holds ``folder`` (or would, once created), in GB."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return None
    try:
        return shutil.disk_usage(existing).free / 1e9
    except OSError:
        return None


def hub_status(
    settings: StudioSettings | None = None,
    *,
    endpoint: str | None = None,
    timeout: float = PROBE_TIMEOUT_S,
) -> HubStatus:
    """The Hub's state (offline mode asks nothing of the network), the cache folder and its
    free space. ``endpoint`` defaults to huggingface_hub's (HF_ENDPOINT is honoured there)."""
    endpoint = endpoint or hf_constants.ENDPOINT
    cache_dir = Path(hf_constants.HF_HUB_CACHE)
    if hub_offline(settings):
        state, detail = OFFLINE, OFFLINE_WHY
    else:
        reachable, detail = probe_hub(endpoint, timeout)
        state = REACHABLE if reachable else UNREACHABLE
    return HubStatus(state, detail, endpoint, cache_dir, free_gb(cache_dir))
