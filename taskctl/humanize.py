"""Pure formatting of times, durations and sizes for people.

``relative`` follows the thresholds of moment.js's ``fromNow`` ("a few seconds ago", "3 hours
ago"), which is what the design's example tables show. No clock reads: ``now`` is passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def relative(when: datetime | None, now: datetime) -> str:
    """``"a few seconds ago"``, ``"3 hours ago"``, ``"in 12 minutes"``; ``""`` for None."""
    if when is None:
        return ""
    seconds = (now - when).total_seconds()
    text = _span(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def _span(s: float) -> str:
    minutes, hours, days = s / 60, s / 3600, s / 86400
    if s < 45:
        return "a few seconds"
    if s < 90:
        return "a minute"
    if minutes < 45:
        return f"{round(minutes)} minutes"
    if minutes < 90:
        return "an hour"
    if hours < 22:
        return f"{round(hours)} hours"
    if hours < 36:
        return "a day"
    if days < 26:
        return f"{round(days)} days"
    if days < 45:
        return "a month"
    if days < 320:
        return f"{round(days / 30.4375)} months"
    if days < 548:
        return "a year"
    return f"{round(days / 365.25)} years"


def duration(start: datetime | None, end: datetime | None, now: datetime | None = None) -> str:
    """``"45s"``, ``"2m5s"``, ``"1h2m"``, ``"3d4h"``; an unfinished run counts up to ``now``.

    ``""`` when there is no start (or no end and no ``now``).
    """
    if start is None:
        return ""
    stop = end or now
    if stop is None:
        return ""
    total = max(0, int((stop - start).total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds}s" if seconds else f"{minutes}m"
    return f"{seconds}s"


def size(n: int | None) -> str:
    """``"0 B"``, ``"812 B"``, ``"1.2 KiB"``, ``"3.4 MiB"``; ``""`` for None."""
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def timestamp(when: datetime | None) -> str:
    """``2025-01-01T10:00:00Z`` (UTC, whole seconds); ``""`` for None."""
    if when is None:
        return ""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> timedelta:
    """``"10m"``, ``"1h30m"``, ``"45s"``, ``"2d"`` -> timedelta; ``ValueError`` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total = 0
    number = ""
    if not text:
        raise ValueError("empty duration")
    for ch in text.strip():
        if ch.isdigit():
            number += ch
        elif ch in units and number:
            total += int(number) * units[ch]
            number = ""
        else:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 10m, 2h, 1h30m, 3d")
    if number:
        raise ValueError(f"invalid duration {text!r}: a number needs a unit (s, m, h, d, w)")
    return timedelta(seconds=total)
