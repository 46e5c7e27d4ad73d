"""The server's narrow view of the ledger (``auraseal.ledger``).

Routes and the healing store talk to :class:`LedgerPort` only, so the server
runs (with ledger endpoints answering 503) when no ledger can be opened.
"""

from __future__ import annotations

from typing import Any, Protocol

from auraseal.server.config import ServerConfig

__all__ = ["CHECKPOINT_NAME", "LedgerPort", "open_port"]

#: the key name the server signs its ledger checkpoints with
CHECKPOINT_NAME = "auraseal-server"


class LedgerPort(Protocol):
    def record(
        self, kind: str, data: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> str: ...

    def head(self) -> dict[str, Any]: ...

    def checkpoint(self) -> str | None: ...

    def entry(self, entry_id: str) -> dict[str, Any]: ...

    def recent(self, limit: int) -> list[dict[str, Any]]: ...

    def consistency(self, first: int, second: int) -> dict[str, Any]: ...

    def block(self, number: int) -> dict[str, Any]: ...

    def log_file(self, path: str) -> tuple[bytes, str, str]:
        """A tlog-tiles file (``checkpoint``, ``tile/...``): bytes, type, Cache-Control."""
        ...

    def publish_proof(self, entry_id: str) -> dict[str, Any]:
        """The proof bundle of one entry at the latest (witnessed) checkpoint."""
        ...

    def commit(self) -> dict[str, Any] | None: ...

    def commit_now(self) -> dict[str, Any] | None: ...

    @property
    def verifier_key(self) -> str: ...

    def close(self) -> None: ...


def open_port(config: ServerConfig) -> LedgerPort | None:
    """Open the configured ledger, or None when the ledger library is not available."""
    try:
        from auraseal.server._ledger_impl import RealLedgerPort  # noqa: PLC0415
    except ImportError:
        return None
    port: LedgerPort = RealLedgerPort.open(config)
    return port
