"""``POST /reports``: browsers' Reporting API reports (Integrity-Policy violations).

A page served with ``Integrity-Policy`` (or ``-Report-Only``) and
``Reporting-Endpoints: auraseal="/reports"`` makes the browser POST
``application/reports+json`` (a JSON array of ``{type, url, body, ...}``)
here when it blocks (or would block) a script or stylesheet without
integrity. Each ``integrity-violation`` report becomes one ledger event
``browser.integrity-violation`` (``{page, blocked, destination, report_only}``)
so the ledger's event list shows "a browser blocked script X on page Y".

Bounded: a body above :data:`MAX_REPORT_BYTES` is refused (413), at most
:data:`MAX_REPORTS_PER_POST` reports of one POST are recorded, strings are
cut to :data:`MAX_FIELD`, and a sliding window allows :data:`RATE_LIMIT`
recorded reports per :data:`RATE_WINDOW` seconds per server (the rest are
counted and dropped: 429 when a whole POST is dropped).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVENT_TYPE",
    "INTEGRITY_POLICY_VALUE",
    "MAX_REPORT_BYTES",
    "ReportLimiter",
    "integrity_policy_headers",
    "report_events",
]

EVENT_TYPE = "browser.integrity-violation"
MAX_REPORT_BYTES = 64 << 10
MAX_REPORTS_PER_POST = 20
MAX_FIELD = 512
RATE_LIMIT = 120
RATE_WINDOW = 60.0
ENDPOINT_NAME = "auraseal"
REPORTS_PATH = "/reports"
INTEGRITY_POLICY_VALUE = f"blocked-destinations=(script style), endpoints=({ENDPOINT_NAME})"
POLICY_MODES = ("enforce", "report-only")


def integrity_policy_headers(
    mode: str | None, endpoint: str = REPORTS_PATH
) -> list[tuple[str, str]]:
    """The headers an HTML response gets for ``--integrity-policy MODE``."""
    if mode is None:
        return []
    name = "Integrity-Policy" if mode == "enforce" else "Integrity-Policy-Report-Only"
    return [
        (name, INTEGRITY_POLICY_VALUE),
        ("Reporting-Endpoints", f'{ENDPOINT_NAME}="{endpoint}"'),
    ]


def _cut(v: Any) -> str:
    return v[:MAX_FIELD] if isinstance(v, str) else ""


def report_events(doc: Any) -> list[dict[str, Any]]:
    """The ledger event data of each integrity-violation report in a Reporting
    API upload (other report types and malformed items are skipped)."""
    items = doc if isinstance(doc, list) else [doc]
    out: list[dict[str, Any]] = []
    for item in items[:MAX_REPORTS_PER_POST]:
        if not isinstance(item, dict) or item.get("type") != "integrity-violation":
            continue
        body = item.get("body")
        if not isinstance(body, dict):
            continue
        out.append(
            {
                "page": _cut(body.get("documentURL")) or _cut(item.get("url")),
                "blocked": _cut(body.get("blockedURL")),
                "destination": _cut(body.get("destination")),
                "report_only": body.get("reportOnly") is True,
                "user_agent": _cut(item.get("user_agent"))[:200],
            }
        )
    return out


@dataclass
class ReportLimiter:
    """A sliding-window limit on recorded reports (one per server)."""

    limit: int = RATE_LIMIT
    window: float = RATE_WINDOW
    clock: Callable[[], float] = time.monotonic
    dropped: int = 0
    _times: deque[float] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, n: int) -> int:
        """How many of ``n`` reports may be recorded now (the rest are dropped)."""
        with self._lock:
            now = self.clock()
            while self._times and now - self._times[0] > self.window:
                self._times.popleft()
            ok = max(0, min(n, self.limit - len(self._times)))
            self._times.extend([now] * ok)
            self.dropped += n - ok
            return ok
