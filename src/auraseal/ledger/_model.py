"""Ledger records and their byte encodings (docs/LEDGER.md, format version 1).

* :class:`Entry` — one recorded event; :meth:`Entry.leaf` is the Merkle leaf
  input, :meth:`Entry.signed_bytes` the HMAC input.
* :class:`Block` — a chained, Merkle-rooted batch of entries;
  :meth:`Block.compute_hash` is the block hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring as _encode_str
from typing import Any

from auraseal import merkle
from auraseal._canonical import canonical_json
from auraseal.errors import InputError, MissingSecretError

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "HMAC_ENV",
    "MAX_LEAF_BYTES",
    "Block",
    "BlockPolicy",
    "Entry",
    "RecordResult",
    "canonical_text",
    "data_hash",
    "env_secret",
    "hmac_hex",
    "make_entry",
    "new_entry",
    "new_entry_id",
    "now_text",
    "prepared_mac",
]

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
HMAC_ENV = "INTEGRITY_HMAC_SECRET"
_LEAF_TAG = b"auraseal-ledger-entry-v1\n"
#: Largest leaf (``Entry.leaf()``) a tlog-tiles entry bundle can carry (u16 length).
MAX_LEAF_BYTES = 0xFFFF


def now_text(t: datetime | None = None) -> str:
    """UTC timestamp with microseconds: ``2026-11-22T03:00:00.123456Z``."""
    t = t or datetime.now(UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def canonical_text(obj: Any) -> str:
    """RFC 8785 canonical JSON of ``obj`` as text (:func:`auraseal._canonical.canonical_json`,
    with its fast path for plain data)."""
    return canonical_json(obj).decode("utf-8")


def new_entry_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so index inserts stay local."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return str(uuid.UUID(int=value))


def data_hash(data: Any) -> str:
    """Hex SHA-256 of the RFC 8785 canonical JSON of ``data``."""
    return hashlib.sha256(canonical_text(data).encode("utf-8")).hexdigest()


def env_secret() -> bytes | None:
    """The HMAC secret from ``INTEGRITY_HMAC_SECRET`` (UTF-8), or None."""
    value = os.environ.get(HMAC_ENV)
    return value.encode("utf-8") if value else None


def hmac_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def _jstr(text: str) -> str:
    return _encode_str(text)


def _lp(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry as stored (``metadata_json`` is canonical JSON text)."""

    entry_id: str
    entry_type: str
    data_hash: str
    metadata_json: str
    timestamp: str
    signature: str | None
    block_number: int | None = None
    leaf_index: int | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.metadata_json)
        return out

    def signed_bytes(self) -> bytes:
        """The HMAC input: every field except the signature, length-prefixed."""
        return _signed_bytes(
            self.entry_id, self.entry_type, self.data_hash, self.metadata_json, self.timestamp
        )

    def leaf_hash_and_signed(self) -> tuple[bytes, bytes]:
        """``(leaf_hash, signed_bytes)`` computed once (verification hot path)."""
        signed = self.signed_bytes()
        raw = (self.signature or "").encode("utf-8")
        return merkle.leaf_hash(signed + len(raw).to_bytes(4, "big") + raw), signed

    def leaf(self) -> bytes:
        """The Merkle leaf input: :meth:`signed_bytes` then the signature ('' if unsigned)."""
        return self.signed_bytes() + _lp(self.signature or "")

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf())

    def signature_ok(self, secret: bytes) -> bool:
        if self.signature is None:
            return False
        return hmac.compare_digest(self.signature, hmac_hex(secret, self.signed_bytes()))

    def to_json(self) -> dict[str, Any]:
        """The JSONL ``entry`` line / API form."""
        return {
            "record_type": "entry",
            "v": FORMAT_VERSION,
            "entry_id": self.entry_id,
            "entry_type": self.entry_type,
            "data_hash": self.data_hash,
            "metadata": self.metadata,
            "signature": self.signature,
            "timestamp": self.timestamp,
        }

    def jsonl_line(self) -> bytes:
        """:meth:`to_json` as one JSONL line (keys sorted, no spaces), built directly."""
        sig = "null" if self.signature is None else _jstr(self.signature)
        return (
            f'{{"data_hash":{_jstr(self.data_hash)},"entry_id":{_jstr(self.entry_id)},'
            f'"entry_type":{_jstr(self.entry_type)},"metadata":{self.metadata_json},'
            f'"record_type":"entry","signature":{sig},"timestamp":{_jstr(self.timestamp)},'
            f'"v":{FORMAT_VERSION}}}\n'
        ).encode()

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "") -> Entry:
        try:
            sig = d["signature"]
            e = cls(
                entry_id=str(d["entry_id"]),
                entry_type=str(d["entry_type"]),
                data_hash=str(d["data_hash"]),
                metadata_json=canonical_text(d.get("metadata") or {}),
                timestamp=str(d["timestamp"]),
                signature=None if sig is None else str(sig),
            )
        except (KeyError, TypeError) as exc:
            raise InputError(f"malformed ledger entry: missing {exc}", where) from exc
        return e


def _signed_bytes(*fields: str) -> bytes:
    parts = [_LEAF_TAG]
    for text in fields:
        raw = text.encode("utf-8")
        parts.append(len(raw).to_bytes(4, "big"))
        parts.append(raw)
    return b"".join(parts)


def prepared_mac(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``secret``, to ``copy()`` per message."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def make_entry(
    entry_type: str,
    data: Any,
    metadata: Mapping[str, Any] | None,
    mac: hmac.HMAC | None,
    timestamp: str,
) -> tuple[Entry, bytes]:
    """Build an entry (signed with ``mac`` if given) and its Merkle leaf hash."""
    if not isinstance(entry_type, str) or not entry_type or len(entry_type) > 100:
        raise InputError("entry_type must be a non-empty string of at most 100 characters",
                         "entry_type")
    entry_id = new_entry_id()
    dh = hashlib.sha256(canonical_text(data).encode("utf-8")).hexdigest()
    meta = canonical_text(dict(metadata) if metadata else {})
    signed = _signed_bytes(entry_id, entry_type, dh, meta, timestamp)
    sig: str | None = None
    if mac is not None:
        m = mac.copy()
        m.update(signed)
        sig = m.hexdigest()
    raw_sig = (sig or "").encode("ascii")
    if len(signed) + 4 + len(raw_sig) > MAX_LEAF_BYTES:
        raise InputError(
            f"entry too large: its leaf would exceed {MAX_LEAF_BYTES} bytes (tlog-tiles entry"
            " bundles use a 16-bit length)", "metadata")
    leaf = merkle.leaf_hash(signed + len(raw_sig).to_bytes(4, "big") + raw_sig)
    return Entry(entry_id, entry_type, dh, meta, timestamp, sig), leaf


def new_entry(
    entry_type: str,
    data: Any,
    metadata: Mapping[str, Any] | None,
    secret: bytes | None,
    *,
    sign: bool,
    timestamp: str | None = None,
) -> Entry:
    """Hash ``data`` and build a (signed or explicitly unsigned) entry."""
    if sign and not secret:
        raise MissingSecretError(
            f"a signed entry needs the HMAC secret in {HMAC_ENV} (or record it unsigned)",
            HMAC_ENV,
        )
    mac = prepared_mac(secret) if sign and secret else None
    return make_entry(entry_type, data, metadata, mac, timestamp or now_text())[0]


@dataclass(frozen=True, slots=True)
class Block:
    """A committed block: the seed's columns plus the global tree size and root."""

    block_number: int
    previous_hash: str
    block_hash: str
    merkle_root: str
    tree_size: int
    tree_root: str
    timestamp: str
    data_count: int

    @property
    def first_leaf(self) -> int:
        return self.tree_size - self.data_count

    def header(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "block_number": self.block_number,
            "previous_hash": self.previous_hash,
            "merkle_root": self.merkle_root,
            "tree_size": self.tree_size,
            "tree_root": self.tree_root,
            "timestamp": self.timestamp,
            "data_count": self.data_count,
        }

    def compute_hash(self) -> str:
        """Hex SHA-256 of the RFC 8785 canonical JSON of :meth:`header`."""
        return hashlib.sha256(canonical_json(self.header())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        d = {"record_type": "block", **self.header(), "block_hash": self.block_hash}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "") -> Block:
        try:
            return cls(
                block_number=int(d["block_number"]),
                previous_hash=str(d["previous_hash"]),
                block_hash=str(d["block_hash"]),
                merkle_root=str(d["merkle_root"]),
                tree_size=int(d["tree_size"]),
                tree_root=str(d["tree_root"]),
                timestamp=str(d["timestamp"]),
                data_count=int(d["data_count"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed ledger block: {exc}", where) from exc


@dataclass(frozen=True)
class BlockPolicy:
    """Commit a block every ``max_entries`` entries or ``max_age``, whichever is first."""

    max_entries: int = 100
    max_age: timedelta = field(default_factory=lambda: timedelta(minutes=5))

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise InputError("a block holds at least one entry", "max_entries")


@dataclass(frozen=True)
class RecordResult:
    """What :func:`hash_and_record` returns (the seed's fields)."""

    entry_id: str
    data_hash: str
    signature: str | None
    database_recorded: bool
    file_recorded: bool
    timestamp: str
    store: str
    blocks_committed: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id,
            "data_hash": self.data_hash,
            "signature": self.signature,
            "signed": self.signature is not None,
            "database_recorded": self.database_recorded,
            f"{self.store}_recorded": self.database_recorded,
            "file_recorded": self.file_recorded,
            "timestamp": self.timestamp,
            "blocks_committed": list(self.blocks_committed),
        }
