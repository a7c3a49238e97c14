"""A duration in words for people (logs, the Monitor, notifications): one wording everywhere."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """12 s, 3 min 05 s, 2 h 10 min; '—' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
