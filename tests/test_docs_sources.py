"""The repository stands alone: its citations point at docs/sources.md, never at outside notes.

Presets, advisor modules, benchmarks and tests cite the published figures and priors they use as
``docs/sources.md#<anchor>``. These tests fail when a file in the repository points at notes that
live outside it, or cites an anchor that docs/sources.md has no heading for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "docs" / "sources.md"
CITATION = re.compile(r"docs/sources\.md#([A-Za-z0-9_-]+)")
IN_PAGE_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")
# Notes outside the repository (assembled here so this file does not match itself).
OUTSIDE = tuple(
    "".join(parts)
    for parts in (
        ("ADVISOR", "-NOTES"),
        ("DESIGN", ".md"),
        ("STACK", ".md"),
        ("/work", "/shared"),
        ("../", "shared"),
        ("shared", "/seeds"),
    )
)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lowercase, punctuation other than '-' and '_' dropped,
    spaces turned into '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets GitHub's -1, -2... suffixes."""
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6} +(.+?) *#* *$", line)
        if not match:
            continue
        base = github_anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def repository_files() -> list[Path]:
    """Tracked files plus new ones git does not ignore (what the next commit can hold)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = [ROOT / name for name in sorted(set(listed.split("\0"))) if name]
    return [p for p in paths if p.is_file()]


def text_files() -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in repository_files():
        try:
            texts[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, databases: nothing to cite
    return texts


def test_github_anchor_rules() -> None:
    assert github_anchor("SD1.5 prior") == "sd15-prior"
    assert github_anchor("Memory-saving trade-offs") == "memory-saving-trade-offs"
    assert github_anchor("Video (not reproduced)") == "video-not-reproduced"
    assert github_anchor("bitsandbytes on CPU") == "bitsandbytes-on-cpu"
    assert heading_anchors("## A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_no_file_points_outside_the_repository() -> None:
    offenders = [
        f"{name}:{number}: {line.strip()}"
        for name, text in text_files().items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(outside in line for outside in OUTSIDE)
    ]
    assert not offenders, "cite docs/sources.md instead:\n" + "\n".join(offenders)


def test_every_cited_anchor_has_a_heading() -> None:
    anchors = heading_anchors(SOURCES.read_text(encoding="utf-8"))
    cited: dict[str, set[str]] = {}
    for name, text in text_files().items():
        for anchor in CITATION.findall(text):
            cited.setdefault(anchor, set()).add(name)
    for anchor in IN_PAGE_LINK.findall(SOURCES.read_text(encoding="utf-8")):
        cited.setdefault(anchor, set()).add("docs/sources.md")
    assert cited, "nothing cites docs/sources.md"
    missing = {anchor: sorted(names) for anchor, names in cited.items() if anchor not in anchors}
    assert not missing, f"anchors without a heading in docs/sources.md: {missing}"


@pytest.mark.parametrize("path", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_presets_cite_sections_of_the_sources_page(path: Path) -> None:
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert CITATION.search("\n".join(header)), f"{path.name}: no docs/sources.md#<anchor> cited"
