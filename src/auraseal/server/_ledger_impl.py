""":class:`LedgerPort` over :class:`auraseal.ledger.Ledger` (thread-safe wrapper)."""

from __future__ import annotations

import json
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from auraseal.errors import InputError, MerkleProofError, NotFoundError
from auraseal.ledger import HMAC_ENV, BlockPolicy, Ledger, open_ledger, verifier_key
from auraseal.ledger.note import Ed25519NoteSigner
from auraseal.ledger.tilelog import TileCache, log_file
from auraseal.server.config import ServerConfig
from auraseal.signing import SigningKey, generate_keypair, load_signing_key

__all__ = ["RealLedgerPort"]

CHECKPOINT_NAME = "auraseal-server"
#: Event details up to this size (JSON) are kept as the entry's metadata too.
MAX_METADATA = 8192


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
        self._tiles = TileCache()

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
            # the event's details are kept as the entry's metadata too, so the
            # dashboard reads its events back from the ledger after a restart
            meta = metadata if metadata is not None else data
            if len(json.dumps(meta, default=str)) > MAX_METADATA:
                meta = {"metadata_omitted": f"details larger than {MAX_METADATA} bytes"}
            return self.ledger.record(
                f"server.{kind}", data, meta, with_signature=signed
            ).entry_id

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The latest ``limit`` server events, newest first, with their ledger state."""
        with self._lock:
            entries = self.ledger.recent(limit)
        out = []
        for e in entries:
            if not e.entry_type.startswith("server."):
                continue
            meta = e.metadata
            out.append({
                **{k: v for k, v in meta.items() if k not in ("type", "time", "entry_id")},
                "type": e.entry_type.removeprefix("server."),
                "time": e.timestamp,
                "entry_id": e.entry_id,
                "committed": e.block_number is not None,
            })
        return out

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

    def log_file(self, path: str) -> tuple[bytes, str, str]:
        with self._lock:
            f = log_file(self.ledger, path, Ed25519NoteSigner(self.name, self.key), self._tiles)
        return f.data, f.content_type, f.cache_control

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
