"""Time helpers: UTC timestamps in RFC 3339 and human durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from auraseal.errors import InputError

__all__ = ["format_time", "parse_duration", "parse_time", "utcnow"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdwy]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def utcnow() -> datetime:
    """Now, in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(t: datetime) -> str:
    """``2026-11-22T03:00:00Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, where: str = "") -> datetime:
    """Parse an RFC 3339 timestamp; naive times are refused."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError, TypeError) as exc:
        raise InputError(f"not an RFC 3339 timestamp: {text!r}", where) from exc
    if t.tzinfo is None:
        raise InputError(f"timestamp without time zone: {text!r}", where)
    return t.astimezone(UTC)


def parse_duration(text: str, where: str = "duration") -> timedelta:
    """Parse ``90``, ``30s``, ``15m``, ``1h``, ``30d``, ``2w``, ``1y`` (365d);
    plain numbers are seconds."""
    m = _DURATION.match(text or "")
    if not m:
        raise InputError(f"not a duration (use e.g. 30s, 15m, 1h, 30d): {text!r}", where)
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
