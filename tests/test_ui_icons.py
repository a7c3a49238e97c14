"""Icons that render everywhere, and a toolbar without Streamlit's developer buttons.

Emoji need an emoji font; a browser without one shows empty boxes in the sidebar, the monitor's
status line and the buttons. The studio uses Material icons (``:material/name:``, drawn from a font
Streamlit ships) or plain words instead. These tests scan every string literal that can reach the
page (ui/, pages/, streamlit_app.py; docstrings are not shown) and check that each Material icon
name exists, and that ``.streamlit/config.toml`` hides the "Deploy" button.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from streamlit.material_icon_names import ALL_MATERIAL_ICONS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "streamlit_app.py",
    *sorted((ROOT / "ui").glob("*.py")),
    *sorted((ROOT / "pages").glob("*.py")),
]
# Blocks whose characters are emoji or render as emoji in a browser: Mahjong ... Symbols and
# Pictographs Extended-A (1F000-1FAFF), Miscellaneous Symbols and Dingbats (2600-27BF),
# Miscellaneous Symbols and Arrows (2B00-2BFF: ⬜ ⭐), the emoji of Miscellaneous Technical
# (⌚ ⌛ ⏩-⏺: 231A-23FA) and the two joiners that build emoji sequences (FE0F, 200D).
EMOJI_RANGES = ((0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0x231A, 0x23FA))
EMOJI_JOINERS = {0xFE0F, 0x200D}
# Not emoji (Unicode's emoji-data.txt lists neither) and drawn by common text fonts (DejaVu Sans,
# Liberation, Noto Sans Symbols): the review's "✓ matches" and the compare page's star ratings.
TEXT_SYMBOLS = {"✓", "★"}
MATERIAL = re.compile(r":material/([a-z0-9_]+):")


def is_emoji(char: str) -> bool:
    if char in TEXT_SYMBOLS:
        return False
    code = ord(char)
    return code in EMOJI_JOINERS or any(low <= code <= high for low, high in EMOJI_RANGES)


def docstring_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (never shown on a page)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def shown_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in ``path`` except docstrings (f-string parts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = docstring_nodes(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]


def test_the_emoji_rule() -> None:
    for emoji in ("🟢", "🏋️", "✅", "❌", "⏹️", "⏳", "🕓", "⚖️", "⚠", "✖", "⬜", "ℹ️", "🚀"):
        assert any(is_emoji(c) for c in emoji), emoji
    for text in ("·", "→", "↗", "≈", "≥", "—", "…", "×", "÷", "•", "✓", "★", "◀", "▶", "ℹ"):
        assert not any(is_emoji(c) for c in text), text
    tree = ast.parse('"""Doc ✅."""\nx = "shown ✅"\ny = f"{x} 🟢"\n')
    skip = docstring_nodes(tree)
    shown = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in skip]
    assert shown == ["shown ✅", " 🟢"]


def test_no_emoji_in_what_the_pages_show() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in SOURCES
        for line, text in shown_strings(path)
        if any(is_emoji(c) for c in text)
    ]
    assert not offenders, "use a :material/...: icon or words:\n" + "\n".join(offenders)


def test_every_material_icon_exists() -> None:
    # A misspelt name renders as its raw text ("check_circel"), so each one is checked.
    used = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in SOURCES
        for _, text in shown_strings(path)
        for name in MATERIAL.findall(text)
    }
    assert len({name for _, name in used}) >= 15  # the sidebar alone has nine
    unknown = sorted(f"{where}: {name}" for where, name in used if name not in ALL_MATERIAL_ICONS)
    assert not unknown, unknown


def test_the_sidebar_pages_have_material_icons() -> None:
    tree = ast.parse((ROOT / "streamlit_app.py").read_text(encoding="utf-8"))
    icons = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page":
            keywords = {k.arg: k.value for k in node.keywords}
            icons[ast.literal_eval(keywords["title"])] = ast.literal_eval(keywords["icon"])
    assert len(icons) == 9 and icons["Home"] == ":material/home:"
    assert all(MATERIAL.fullmatch(icon) for icon in icons.values()), icons


def test_the_toolbar_is_minimal_without_a_deploy_button() -> None:
    # What `streamlit run` started in the repository (make run, the e2e server) reads.
    shown = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert re.search(r'^toolbarMode = "minimal"$', shown, re.M), "client.toolbarMode"
    assert re.search(r'^address = "127.0.0.1"$', shown, re.M)  # the binding stays as it was
    # Primary buttons, focus rings and progress bars: blue, not Streamlit's error-like red.
    colour = re.search(r'^primaryColor = "#([0-9a-fA-F]{6})"$', shown, re.M)
    assert colour, "theme.primaryColor"
    red, green, blue = (int(colour.group(1)[i : i + 2], 16) for i in (0, 2, 4))
    assert blue > red and blue > green
