"""Where an X/Y grid's cells and labels go, with labels wrapped (never cut) in a legible font.

The font scales with the cells (a 64 px demo cell and a 1024 px SDXL cell both get labels that
read at the size the grid is shown), and a label that needs more lines than its cell is tall
makes its row (or the header) taller instead of losing words.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageDraw, ImageFont

MIN_FONT_PX, MAX_FONT_PX = 11, 48  # below 11 px Pillow's default face stops being readable
PAD = 4


@cache
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled face at ``size`` px (the bitmap fallback without FreeType)."""
    return ImageFont.load_default(size=size)


def font_px(cell_w: int, cell_h: int) -> int:
    """The label size for cells of this size: a twelfth of the shorter side, kept legible."""
    return max(MIN_FONT_PX, min(MAX_FONT_PX, min(cell_w, cell_h) // 12))


def _width(font, text: str) -> float:
    return font.getlength(text)


def _split_word(font, word: str, width: float) -> list[str]:
    """A word wider than ``width`` (a long file name) in pieces that fit, by characters."""
    pieces, piece = [], ""
    for char in word:
        if piece and _width(font, piece + char) > width:
            pieces.append(piece)
            piece = char
        else:
            piece += char
    return [*pieces, piece] if piece else pieces


def wrap_label(text: str, font, width: float) -> list[str]:
    """``text`` as lines no wider than ``width``: at spaces, at the newlines it holds, and inside
    a word only where that word alone is too wide. Every character but the spaces broken at
    stays."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _width(font, candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            pieces = _split_word(font, word, width)
            lines += pieces[:-1]
            line = pieces[-1]
        lines.append(line)
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Pixel positions of a grid: a header band, a label column, one band per row."""

    cell_w: int
    cell_h: int
    font_px: int
    line_h: int
    label_w: int
    header_h: int
    row_tops: tuple[int, ...]
    size: tuple[int, int]
    row_lines: tuple[tuple[str, ...], ...]
    col_lines: tuple[tuple[str, ...], ...]

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        return self.label_w + col * self.cell_w, self.row_tops[row]


def grid_layout(
    cell_size: tuple[int, int], row_labels: list[str], col_labels: list[str]
) -> GridLayout:
    cell_w, cell_h = cell_size
    size = font_px(cell_w, cell_h)
    font = label_font(size)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 2
    # Wide enough for ~14 characters a line at this size, and never narrower than a cell.
    label_w = max(cell_w, size * 9)
    row_lines = tuple(tuple(wrap_label(t, font, label_w - 2 * PAD)) for t in row_labels)
    col_lines = tuple(tuple(wrap_label(t, font, cell_w - 2 * PAD)) for t in col_labels)
    header_h = 2 * PAD + line_h * max((len(lines) for lines in col_lines), default=1)
    tops, y = [], header_h
    for lines in row_lines:
        tops.append(y)
        y += max(cell_h, 2 * PAD + line_h * len(lines))
    width = label_w + cell_w * len(col_labels)
    return GridLayout(
        cell_w, cell_h, size, line_h, label_w, header_h, tuple(tops), (width, y), row_lines,
        col_lines,
    )  # fmt: skip


def compose(rows: list[list[Image.Image]], row_labels: list[str], col_labels: list[str]):
    """Cells in a grid under a header of column labels, beside a column of row labels."""
    layout = grid_layout(rows[0][0].size, row_labels, col_labels)
    grid = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(grid)
    font = label_font(layout.font_px)

    def write(x: int, y: int, lines: tuple[str, ...]) -> None:
        for i, line in enumerate(lines):
            draw.text((x + PAD, y + PAD + i * layout.line_h), line, fill="black", font=font)

    for c, lines in enumerate(layout.col_lines):
        write(layout.label_w + c * layout.cell_w, 0, lines)
    for r, (row, lines) in enumerate(zip(rows, layout.row_lines, strict=True)):
        write(0, layout.row_tops[r], lines)
        for c, cell in enumerate(row):
            grid.paste(cell.convert("RGB"), layout.cell_origin(r, c))
    return grid
