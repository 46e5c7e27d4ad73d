""":class:`LedgerPort` over :class:`auraseal.ledger.Ledger` (thread-safe wrapper)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from auraseal.errors import AuraSealError, InputError, MerkleProofError, NotFoundError
from auraseal.ledger import BlockPolicy, Ledger, open_ledger, verifier_key
from auraseal.ledger.note import Ed25519NoteSigner
from auraseal.ledger.tilelog import (
    CHECKPOINT_CACHE,
    CHECKPOINT_TYPE,
    TileCache,
    log_file,
    signed_log_checkpoint,
)
from auraseal.server.config import ServerConfig
from auraseal.server.ledger_port import CHECKPOINT_NAME
from auraseal.signing import SigningKey, generate_keypair, load_signing_key

__all__ = ["RealLedgerPort"]

#: Event details up to this size (JSON) are kept as the entry's metadata too.
MAX_METADATA = 8192


def _checkpoint_key(path: Path) -> SigningKey:
    if path.exists():
        return load_signing_key(path)
    return generate_keypair(path)


class RealLedgerPort:
    """The server's ledger: records events, serves entries, proofs, blocks, checkpoints."""

    def __init__(self, ledger: Ledger, key: SigningKey, name: str = CHECKPOINT_NAME,
                 witness_urls: Sequence[str] = ()) -> None:
        self.ledger = ledger
        self.key = key
        self.name = name
        self.witness_urls = tuple(witness_urls)
        #: the last witness failure (None after a successful submission)
        self.witness_error: str | None = None
        self._lock = threading.Lock()
        self._witness_lock = threading.Lock()
        #: (tree size, note) of the latest checkpoint every witness cosigned
        self._cosigned: tuple[int, str] | None = None
        #: after a failed submission the block timer waits this long before retrying
        self.witness_retry = 30.0
        self._retry_at = 0.0
        self._tiles = TileCache()

    @classmethod
    def open(cls, config: ServerConfig) -> RealLedgerPort:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        policy = BlockPolicy(max_age=timedelta(seconds=config.commit_interval))
        led = open_ledger(config.ledger_location, config.ledger_jsonl, policy=policy)
        key = _checkpoint_key(config.state_dir / "checkpoint.key")
        return cls(led, key, witness_urls=config.witness_urls)

    @property
    def verifier_key(self) -> str:
        """The note verifier key (``name+hexid+base64``) that checks our checkpoints."""
        return verifier_key(self.name, self.key.public)

    def record(
        self, kind: str, data: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> str:
        signed = self.ledger.signs
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
        """The latest cosigned checkpoint when witnesses are configured (and one
        has been cosigned), else the committed tree's, signed now."""
        cosigned = self._cosigned
        if cosigned is not None:
            return cosigned[1]
        with self._lock:
            if self.ledger.head() is None:
                return None
            return self.ledger.signed_checkpoint(self.name, self.key)

    # --- witnesses ------------------------------------------------------------

    def witness(self) -> tuple[int, str] | None:
        """Submit the committed tree's checkpoint to every witness unless the last
        cosigned one is of that size already; return the latest cosigned
        ``(tree size, note)`` (None: no witnesses, or nothing committed).

        Raises what :func:`auraseal.witness.client.cosign` raises (a witness
        that refuses or cannot be reached); the previous cosigned note stays.
        """
        if not self.witness_urls:
            return None
        from auraseal.witness.client import cosign  # noqa: PLC0415

        with self._witness_lock:
            with self._lock:
                if self.ledger.head() is None:
                    return self._cosigned
                cp, note = signed_log_checkpoint(
                    self.ledger, Ed25519NoteSigner(self.name, self.key))
            if self._cosigned is not None and self._cosigned[0] >= cp.size:
                return self._cosigned

            def proof(size1: int, size2: int) -> Sequence[bytes]:
                with self._lock:
                    return self.ledger.consistency(size1, size2)[0]

            try:
                cosigned = cosign(note, self.witness_urls, proof)
            except AuraSealError as exc:
                self.witness_error = str(exc)
                self._retry_at = time.monotonic() + self.witness_retry
                raise
            self._cosigned, self.witness_error = (cp.size, cosigned), None
            return self._cosigned

    def _witness_quietly(self) -> None:
        if self.witness_urls and time.monotonic() >= self._retry_at:
            # a failure is kept in witness_error; retried after witness_retry seconds
            with contextlib.suppress(AuraSealError):
                self.witness()

    def publish_proof(self, entry_id: str) -> dict[str, Any]:
        """The proof bundle (docs/LEDGER.md §1.7) of ``entry_id`` at the latest
        cosigned checkpoint (witnesses configured) or the committed tree: a
        pending entry is committed first, and a tree not yet cosigned is
        submitted to the witnesses now."""
        with self._lock:
            if self.ledger.entry(entry_id).leaf_index is None:
                self.ledger.commit()
            index = self.ledger.entry(entry_id).leaf_index
        if index is None:
            raise NotFoundError("entry is not in a block yet", entry_id)
        size: int | None = None
        note: str | None = None
        if self.witness_urls:
            why = "no witness has cosigned a checkpoint yet"
            try:
                got = self.witness()
            except AuraSealError as exc:  # a witness down: the last cosigned may still do
                got, why = self._cosigned, str(exc)
            if got is None or index >= got[0]:
                raise NotFoundError(f"entry is not in a witnessed checkpoint yet: {why}",
                                    entry_id)
            size, note = got
        with self._lock:
            bundle = self.ledger.proof_bundle(entry_id, self.name, self.key, tree_size=size)
        if note is not None:
            bundle["checkpoint"] = note  # the same body, with the witnesses' cosignatures
        return bundle

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
        cosigned = self._cosigned
        if path == "checkpoint" and cosigned is not None:
            return cosigned[1].encode("utf-8"), CHECKPOINT_TYPE, CHECKPOINT_CACHE
        with self._lock:
            f = log_file(self.ledger, path, Ed25519NoteSigner(self.name, self.key), self._tiles)
        return f.data, f.content_type, f.cache_control

    def commit(self) -> dict[str, Any] | None:
        with self._lock:
            blocks = self.ledger.maybe_commit()
        self._witness_quietly()
        return blocks[-1].to_json() if blocks else None

    def commit_now(self) -> dict[str, Any] | None:
        with self._lock:
            blocks = self.ledger.commit()
        self._witness_quietly()
        return blocks[-1].to_json() if blocks else None

    def close(self) -> None:
        with self._lock:
            self.ledger.close()
