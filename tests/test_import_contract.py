"""The import contract in pyproject.toml ([tool.importlinter]) holds, and it can fail.

pages -> ui -> advisor -> trainer (imports point downwards only), the advisor and the trainer never
import Streamlit, the rooms of trainer/ import only the rooms below them, and no two modules or sub-packages of one package import each other, directly or
round a circle (function-local imports count). docs/architecture.md explains the rooms.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trainer", "advisor", "ui", "pages")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--no-logo"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contract_holds():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("trainer/settings.py", "import ui.state", "Imports point downwards"),
        ("advisor/models.py", "from ui import summary", "Imports point downwards"),
        ("trainer/files.py", "import streamlit", "never import Streamlit"),
        ("trainer/settings.py", "from trainer.engine import run", "No import circles"),
        ("trainer/config/io.py", "from trainer.tracking import layout", "trainer's rooms"),
        ("trainer/arch/base.py", "from trainer.engine import loop", "trainer's rooms"),
    ],
)
def test_a_planted_violation_breaks_the_contract(tree_copy, module, line, broken):
    _append(tree_copy / module, line)  # inside a function: local imports count too
    result = lint_imports(tree_copy)
    assert result.returncode == 1, result.stdout
    assert f"{broken}" in result.stdout
    assert "BROKEN" in result.stdout.split(broken, 1)[1].splitlines()[0]


MAX_LINES = 600  # a module a reader can hold in mind; split by concern beyond this


def test_no_source_file_is_over_600_lines():
    sources = [ROOT / "streamlit_app.py"]
    for package in (*PACKAGES, "benchmarks", "docs"):
        sources += sorted((ROOT / package).rglob("*.py"))
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in sources
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert len(sources) > 100
    assert too_long == {}
