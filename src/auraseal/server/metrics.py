"""Server metrics in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import ClassVar

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    parts = []
    for k, v in sorted(labels.items()):
        esc = v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        parts.append(f'{k}="{esc}"')
    return "{" + ",".join(parts) + "}"


class Metrics:
    """Counters owned by one app instance; gauges are read at scrape time."""

    COUNTERS: ClassVar[dict[str, str]] = {
        "auraseal_http_requests_total": "HTTP requests answered, by method and status code.",
        "auraseal_http_response_bytes_total": "Body bytes sent in HTTP responses.",
        "auraseal_verification_failures_total": "Stored bytes found not matching their digest.",
        "auraseal_repairs_total": "Components rebuilt from parity by the healing store.",
        "auraseal_scrubs_total": "Package scrubs completed.",
        "auraseal_publishes_total": "Publish attempts, by result.",
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self._gauges: list[Callable[[], list[tuple[str, str, dict[str, str], float]]]] = []

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] += value

    def count_request(self, method: str, code: int, body_bytes: int) -> None:
        """``inc`` of the request and byte counters in one step (the hot path)."""
        key = (("code", str(code)), ("method", method))
        with self._lock:
            self._counters["auraseal_http_requests_total"][key] += 1.0
            if body_bytes:
                self._counters["auraseal_http_response_bytes_total"][()] += float(body_bytes)

    def value(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0.0)

    def add_gauges(self, fn: Callable[[], list[tuple[str, str, dict[str, str], float]]]) -> None:
        """Register ``fn() -> [(name, help, labels, value), ...]`` read at each scrape."""
        self._gauges.append(fn)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            snapshot = {k: dict(v) for k, v in self._counters.items()}
        for name, help_text in self.COUNTERS.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            series = snapshot.get(name) or {(): 0.0}
            for key, val in sorted(series.items()):
                lines.append(f"{name}{_labels(dict(key))} {val:g}")
        seen: set[str] = set()
        for fn in self._gauges:
            for name, help_text, labels, val in fn():
                if name not in seen:
                    lines.append(f"# HELP {name} {help_text}")
                    lines.append(f"# TYPE {name} gauge")
                    seen.add(name)
                lines.append(f"{name}{_labels(labels)} {val:g}")
        return "\n".join(lines) + "\n"
