"""The rules about the base model's source.

``ModelSource`` (``advisor.model_facts``) is measured outside the advisor (the studio looks at the folder, the file or the
Hub, see ``ui.model_status``) and handed in, so these rules stay pure: a model that cannot be
found or loaded blocks Launch with the fix; a Hub model that is not downloaded yet, a gated one
this account cannot get, and a download that will not fit in the Hugging Face cache are said
before a run fails on them.
"""

from __future__ import annotations

from collections.abc import Iterator

from advisor.findings import Context, Finding, finding, rule
from advisor.model_facts import GB

SOURCE_PATHS = ("model.name_or_path",)
MODEL_RULES = (
    "model_unavailable",
    "model_warning",
    "model_gated",
    "model_not_downloaded",
    "download_over",
)


def _size(n_bytes: int) -> str:
    """GB for a real model; MB for a small one, which would read '0.0 GB'."""
    return f"{n_bytes / GB:.1f} GB" if n_bytes >= 0.1 * GB else f"{n_bytes / 1e6:.1f} MB"


@rule("model_unavailable", SOURCE_PATHS, "the base model cannot be found or loaded")
def model_unavailable(ctx: Context) -> Iterator[Finding]:
    facts = ctx.model
    if facts is not None and facts.problem:
        yield finding("model_unavailable", "error", SOURCE_PATHS, facts.problem)


@rule("model_warning", SOURCE_PATHS, "the base model loads, but not as expected")
def model_warning(ctx: Context) -> Iterator[Finding]:
    facts = ctx.model
    if facts is not None and facts.warning and not facts.problem:
        yield finding("model_warning", "warning", ("model.arch", *SOURCE_PATHS), facts.warning)


@rule("model_gated", SOURCE_PATHS, "a gated model this account cannot download")
def model_gated(ctx: Context) -> Iterator[Finding]:
    facts = ctx.model
    if facts is None or facts.problem or not facts.gated or facts.access is not False:
        return
    if not facts.needs_download:
        return  # already cached: the licence was accepted once; training reads the cache
    if facts.account:
        what = (
            f"{facts.ref} is gated and {facts.account} (signed in) has no access yet: accept its "
            f"licence at {facts.page_url} with that account, then download it."
        )
    else:
        what = (
            f"{facts.ref} is gated: sign in with a Hugging Face token (on the Model step or "
            f"here) and accept its licence at {facts.page_url}, then download it."
        )
    yield finding("model_gated", "error", SOURCE_PATHS, what)


@rule("model_not_downloaded", SOURCE_PATHS, "a Hub model that is not in the local cache yet")
def model_not_downloaded(ctx: Context) -> Iterator[Finding]:
    facts = ctx.model
    if facts is None or facts.problem or not facts.needs_download:
        return
    yield finding(
        "model_not_downloaded",
        "error",
        SOURCE_PATHS,
        f"{facts.ref} is not downloaded yet: {_size(facts.download_bytes)} still to fetch into the "
        f"Hugging Face cache ({facts.cache_dir}). Press Download on the Model step (or here); "
        f"Launch opens once it is complete, so a run never stalls or fails on a download.",
    )


@rule("download_over", SOURCE_PATHS, "the model download would not fit in the cache's disk")
def download_over(ctx: Context) -> Iterator[Finding]:
    facts = ctx.model
    downloads = facts is not None and (facts.needs_download or facts.downloads_at_launch)
    if not downloads or facts.cache_free_bytes is None:
        return
    needed = facts.download_bytes
    if facts.cache_on_home_disk and ctx.prediction is not None:
        needed += int(ctx.prediction.disk.value * GB)
    free = facts.cache_free_bytes
    if needed <= free * 0.95:
        return
    what = "the download and the run's files need" if facts.cache_on_home_disk else "needs"
    yield finding(
        "download_over",
        "error" if needed > free else "warning",
        SOURCE_PATHS,
        f"{facts.ref} {what} {needed / GB:.1f} GB but the disk of the Hugging Face cache "
        f"({facts.cache_dir}) has {free / GB:.1f} GB free. Fix: free space, or point HF_HOME "
        f"(or HF_HUB_CACHE) to a bigger disk before starting the studio.",
    )
