"""Tamper-evident ledger: HMAC-signed entries in RFC 9162 Merkle-rooted, chained
blocks, stored in SQLite or PostgreSQL with an append-only JSONL mirror.

See docs/LEDGER.md for the formats and the API.
"""

from __future__ import annotations

from auraseal.ledger._model import (
    FORMAT_VERSION,
    HMAC_ENV,
    Block,
    BlockPolicy,
    Entry,
    RecordResult,
    data_hash,
)
from auraseal.ledger.checkpoint import (
    BlockProof,
    Checkpoint,
    make_bundle,
    note_key_id,
    open_checkpoint,
    sign_checkpoint,
    verifier_key,
    verify_bundle,
)
from auraseal.ledger.jsonl import JsonlMirror
from auraseal.ledger.service import (
    AsyncLedger,
    InclusionProof,
    Ledger,
    ahash_and_record,
    default_ledger_url,
    hash_and_record,
    open_ledger,
    open_store,
)
from auraseal.ledger.stores._base import Store
from auraseal.ledger.verify import ChainReport, Problem

__all__ = [
    "FORMAT_VERSION",
    "HMAC_ENV",
    "AsyncLedger",
    "Block",
    "BlockPolicy",
    "BlockProof",
    "ChainReport",
    "Checkpoint",
    "Entry",
    "InclusionProof",
    "JsonlMirror",
    "Ledger",
    "Problem",
    "RecordResult",
    "Store",
    "ahash_and_record",
    "data_hash",
    "default_ledger_url",
    "hash_and_record",
    "make_bundle",
    "note_key_id",
    "open_checkpoint",
    "open_ledger",
    "open_store",
    "sign_checkpoint",
    "verifier_key",
    "verify_bundle",
]
