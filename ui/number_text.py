"""Numbers typed as text: how a number field shows a value and reads what was typed.

Why the studio's number fields are text boxes and not ``st.number_input``: that widget is an
``<input type=number>``, and the browser drops what is not a number before the studio sees it —
"3o" arrived as 3, "abc" as nothing (a required field then silently kept its value), and a value
past the field's limit stayed on screen without ever reaching the draft. A text box sends exactly
what was typed; ``parse_number`` reads it or says why it cannot (not a number, not whole, out of
range), and the field then shows the value in force again (``ui.widgets``).
"""

from __future__ import annotations

import contextlib
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+$")  # "1,000": digits grouped by commas


@dataclass(frozen=True)
class Bounds:
    """A numeric field's limits; an open limit (``gt``/``lt``) excludes the limit itself."""

    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def hint(self, kind: str) -> str:
        """What the field takes, for its placeholder: "whole number, 1 to 4096"."""
        what = "whole number" if kind == "int" else "number"
        low, high = format_number(self.low), format_number(self.high)
        closed = not (self.low_open or self.high_open)
        if self.low is not None and self.high is not None and closed:
            return f"{what}, {low} to {high}"
        parts = [what]
        if self.low is not None:
            parts.append(f"{'above' if self.low_open else 'at least'} {low}")
        if self.high is not None:
            parts.append(f"{'below' if self.high_open else 'at most'} {high}")
        return ", ".join(parts)


def number_bounds(info: FieldInfo) -> Bounds:
    """The limits of a numeric config field from its ``ge``/``gt``/``le``/``lt``, also when they
    sit inside a union (``Annotated[float, Field(gt=0)] | "auto"``)."""
    found = list(info.metadata)
    for arg in typing.get_args(info.annotation):
        for inner in getattr(arg, "__metadata__", ()):
            found += [inner, *getattr(inner, "metadata", ())]
    low = high = None
    low_open = high_open = False
    for item in found:
        for attr, is_open in (("ge", False), ("gt", True)):
            if getattr(item, attr, None) is not None:
                low, low_open = getattr(item, attr), is_open
        for attr, is_open in (("le", False), ("lt", True)):
            if getattr(item, attr, None) is not None:
                high, high_open = getattr(item, attr), is_open
    return Bounds(low, low_open, high, high_open)


def format_number(value: Any) -> str:
    """A number as the field shows it: short (``0.0001``, ``5e-05``, ``16``) and exact — the text
    reads back as the same number. ``""`` for None and "auto"."""
    if value is None or value == "auto":
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    short = f"{value:.15g}"
    return short if float(short) == value else repr(value)


def parse_number(text: Any, kind: str, bounds: Bounds, optional: bool = False) -> Any:
    """The number ``text`` means for an ``int`` or ``float`` field (None when empty and the field
    is optional). ValueError with what was typed and why it is refused otherwise."""
    typed = "" if text is None else str(text).strip()
    if not typed:
        if optional:
            return None
        raise ValueError("the field was left empty and needs a number")
    number = _read(typed, kind)
    _check_range(typed, number, bounds)
    return number


def _read(typed: str, kind: str) -> int | float:
    whole = kind == "int"
    if whole:
        with contextlib.suppress(ValueError):
            return int(typed)
    try:
        number = float(typed)
    except ValueError:
        hint = _comma_hint(typed, whole)
        raise ValueError(f"'{typed}' is not a {'whole ' if whole else ''}number{hint}") from None
    if not math.isfinite(number):
        raise ValueError(f"'{typed}' is not a finite number")
    if whole and not number.is_integer():
        raise ValueError(f"'{typed}' is not a whole number")
    return int(number) if whole else number  # "1e3" or "8.0" in a whole-number field: fine


def _comma_hint(typed: str, whole: bool) -> str:
    """How to write a number typed with a comma: "1,000" → 1000, "0,5" → 0.5."""
    if whole and _THOUSANDS.match(typed):
        return f" (write it without commas: {typed.replace(',', '')})"
    if not whole and typed.count(",") == 1:
        with contextlib.suppress(ValueError):
            float(typed.replace(",", "."))
            return f" (write a dot: {typed.replace(',', '.')})"
    return ""


def _check_range(typed: str, number: float, bounds: Bounds) -> None:
    low, high = bounds.low, bounds.high
    if low is not None and (number <= low if bounds.low_open else number < low):
        limit = "more than" if bounds.low_open else "at least"
        raise ValueError(f"{typed} is too small: it must be {limit} {format_number(low)}")
    if high is not None and (number >= high if bounds.high_open else number > high):
        limit = "less than" if bounds.high_open else "at most"
        raise ValueError(f"{typed} is too large: it must be {limit} {format_number(high)}")
