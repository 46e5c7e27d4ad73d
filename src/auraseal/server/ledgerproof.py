"""``/packages/<name>/files/ledger-proof.json``: the ledger proof of the publish of
the served version (docs/LEDGER.md §1.11), for ``auraseal fetch
--require-witnessed-log``.

At each publish the server notes which ledger entry recorded it
(``ROOT/.auraseal/publish-entries/<name>.json``); the bundle itself is made on
request, at the latest witnessed checkpoint, so it is never part of the
package (not in the manifest's file list, like ``root/`` and ``timestamp.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auraseal._fs import atomic_write_bytes
from auraseal.errors import NotFoundError
from auraseal.server.config import STATE_DIR
from auraseal.server.ledger_port import LedgerPort

__all__ = ["LEDGER_PROOF_NAME", "ledger_proof", "remember_publish"]

#: the file name under ``/packages/<name>/files/`` (kept in step with
#: :data:`auraseal.client.witnessed.LEDGER_PROOF_NAME`)
LEDGER_PROOF_NAME = "ledger-proof.json"


def _record_path(root: Path, name: str) -> Path:
    return root.resolve() / STATE_DIR / "publish-entries" / f"{name}.json"


def remember_publish(root: Path, name: str, version: int, entry_id: str) -> None:
    """Note that ledger entry ``entry_id`` records the publish of ``name`` ``version``."""
    path = _record_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"version": version, "entry_id": entry_id}).encode())


def ledger_proof(root: Path, name: str, version: int, ledger: LedgerPort) -> dict[str, Any]:
    """The proof bundle of the ledger entry that recorded the publish of ``name``
    ``version`` (the served one); NotFoundError when none was recorded."""
    try:
        rec = json.loads(_record_path(root, name).read_bytes())
        entry_id, recorded = str(rec["entry_id"]), int(rec["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotFoundError("no ledger entry recorded the publish of this package",
                            name) from exc
    if recorded != version:
        raise NotFoundError(f"no ledger entry recorded the publish of version {version}",
                            name)
    return ledger.publish_proof(entry_id)
