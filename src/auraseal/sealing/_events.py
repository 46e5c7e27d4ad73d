"""The one place sealing records ledger events (``auraseal.ledger.record_event``).

``record_event`` does nothing unless a ledger is configured
(``$AURASEAL_LEDGER``); a ledger failure never fails a seal or a repair.
"""

from __future__ import annotations

import contextlib
from typing import Any

from auraseal.errors import AuraSealError

__all__ = ["record"]


def record(entry_type: str, data: dict[str, Any]) -> None:
    try:
        from auraseal.ledger import record_event  # noqa: PLC0415 - optional at import time
    except ImportError:  # pragma: no cover - the ledger ships with the product
        return
    with contextlib.suppress(AuraSealError, OSError):
        record_event(entry_type, data)
