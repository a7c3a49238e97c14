"""What the studio measured about the base model's source (folder, file or Hub repository),
handed to the advisor's rules (``advisor.model_source``) and predictions."""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
# Kinds of ModelSource.kind
DEMO, HUB, FOLDER, FILE, MISSING = "demo", "hub", "dir", "file", "missing"


@dataclass(frozen=True)
class ModelSource:
    """The base model as found on this machine and the Hub (all sizes in bytes)."""

    ref: str
    kind: str  # DEMO, HUB, FOLDER, FILE or MISSING
    problem: str = ""  # why it cannot be loaded, with the fix; empty when it can
    note: str = ""  # what was found, for people (e.g. what a checkpoint file holds)
    warning: str = ""  # loadable, but something is off (e.g. another architecture)
    total_bytes: int = 0  # what a run loads from it
    download_bytes: int = 0  # of which not in the local cache yet
    cache_dir: str = ""
    cache_free_bytes: int | None = None
    cache_on_home_disk: bool = False  # the download and the run's files share one disk
    gated: bool = False
    access: bool | None = None  # None: not gated, or could not be checked
    account: str | None = None  # the signed-in Hugging Face account, when that was asked
    page_url: str = ""
    license: str | None = None
    checked: bool = True  # False: the Hub did not answer; sizes unknown

    @property
    def download_gb(self) -> float:
        return self.download_bytes / GB

    @property
    def needs_download(self) -> bool:
        """A Hub model not fully cached: the user downloads it before Launch."""
        return self.kind == HUB and self.download_bytes > 0

    @property
    def downloads_at_launch(self) -> bool:
        """A single file whose missing parts (model.components_from) the run downloads first."""
        return self.kind == FILE and self.download_bytes > 0
