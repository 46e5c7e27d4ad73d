"""Where the library reports what it did: an explicit event sink.

seal, repair, fetch (and the server, through its own ledger) report events
such as ``package.seal`` to an :class:`EventSink` passed in by the caller
(keyword ``events``). The library never decides by itself -- from the
environment or a config file -- to write a ledger: the CLI builds a sink
from ``--ledger`` / ``$AURASEAL_LEDGER`` / the config file
(:mod:`auraseal.cli._events`), the server builds its own from its config,
and a library caller passes one or nothing (no events).

A sink should not raise: the CLI's ledger sink swallows its failures and
warns once, so a ledger failure never fails a seal or a repair.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["EventSink", "ListSink", "emit"]


class EventSink(Protocol):
    """Receives events: ``entry_type`` (e.g. ``package.seal``) and JSON-able data."""

    def record(self, entry_type: str, data: dict[str, Any]) -> None: ...


class ListSink:
    """A sink that keeps the events in memory (tests, embedding callers)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def record(self, entry_type: str, data: dict[str, Any]) -> None:
        self.events.append((entry_type, data))


def emit(events: EventSink | None, entry_type: str, data: dict[str, Any]) -> None:
    """Report one event to ``events`` (nothing when it is None)."""
    if events is not None:
        events.record(entry_type, data)
