""":class:`LedgerPort` over :class:`auraseal.ledger.Ledger` (thread-safe wrapper)."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from auraseal.errors import InputError, MerkleProofError, NotFoundError
from auraseal.ledger import HMAC_ENV, BlockPolicy, Ledger, open_ledger, verifier_key
from auraseal.server.config import ServerConfig
from auraseal.signing import SigningKey, generate_keypair, load_signing_key

__all__ = ["RealLedgerPort"]

CHECKPOINT_NAME = "auraseal-server"


def _checkpoint_key(path: Path) -> SigningKey:
    if path.exists():
        return load_signing_key(path)
    return generate_keypair(path)


class RealLedgerPort:
    """The server's ledger: records events, serves entries, proofs, blocks, checkpoints."""

    def __init__(self, ledger: Ledger, key: SigningKey, name: str = CHECKPOINT_NAME) -> None:
        self.ledger = ledger
        self.key = key
        self.name = name
        self._lock = threading.Lock()

    @classmethod
    def open(cls, config: ServerConfig) -> RealLedgerPort:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        policy = BlockPolicy(max_age=timedelta(seconds=config.commit_interval))
        led = open_ledger(config.ledger_location, config.ledger_jsonl, policy=policy)
        key = _checkpoint_key(config.state_dir / "checkpoint.key")
        return cls(led, key)

    @property
    def verifier_key(self) -> str:
        """The note verifier key (``name+hexid+base64``) that checks our checkpoints."""
        return verifier_key(self.name, self.key.public)

    def record(
        self, kind: str, data: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> str:
        signed = bool(os.environ.get(HMAC_ENV))
        with self._lock:
            return self.ledger.record(
                f"server.{kind}", data, metadata, with_signature=signed
            ).entry_id

    def head(self) -> dict[str, Any]:
        with self._lock:
            head = self.ledger.head()
            pending = len(self.ledger.pending())
        return {
            "entries": head.tree_size if head else 0,
            "blocks": head.block_number if head else 0,
            "pending": pending,
            "block": head.to_json() if head else None,
        }

    def checkpoint(self) -> str | None:
        with self._lock:
            if self.ledger.head() is None:
                return None
            return self.ledger.signed_checkpoint(self.name, self.key)

    def entry(self, entry_id: str) -> dict[str, Any]:
        with self._lock:
            e = self.ledger.entry(entry_id)
            out = e.to_json()
            try:
                out["inclusion"] = self.ledger.inclusion(entry_id).to_dict()
            except NotFoundError:
                out["inclusion"] = None
        return out

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        with self._lock:
            try:
                proof, root1, root2 = self.ledger.consistency(first, second)
            except MerkleProofError as exc:
                raise InputError(str(exc.what), "from") from exc
        return {
            "from": first,
            "to": second,
            "root_from": root1.hex(),
            "root_to": root2.hex(),
            "proof": [p.hex() for p in proof],
        }

    def block(self, number: int) -> dict[str, Any]:
        with self._lock:
            return self.ledger.block(number).to_json()

    def commit(self) -> dict[str, Any] | None:
        with self._lock:
            blocks = self.ledger.maybe_commit()
        return blocks[-1].to_json() if blocks else None

    def commit_now(self) -> dict[str, Any] | None:
        with self._lock:
            blocks = self.ledger.commit()
        return blocks[-1].to_json() if blocks else None

    def close(self) -> None:
        with self._lock:
            self.ledger.close()
