"""Signed checkpoints (C2SP ``tlog-checkpoint`` in a C2SP ``signed-note``) and
offline proof bundles.

A checkpoint body is three lines — origin, decimal tree size, base64 root —
and the note appends a blank line and one ``— <name> <base64(keyid || sig)>``
line per signature.  For Ed25519 the 4-byte key id is
``SHA-256(name || "\\n" || 0x01 || public_key)[:4]`` and the signature covers
the body bytes exactly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from auraseal import merkle
from auraseal.errors import (
    BadSignatureError,
    DigestMismatchError,
    InputError,
    MerkleProofError,
    UnknownKeyError,
)
from auraseal.ledger._model import Entry, data_hash

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "Checkpoint",
    "NotePublicKey",
    "NoteSigner",
    "make_bundle",
    "note_key_id",
    "open_checkpoint",
    "sign_checkpoint",
    "verifier_key",
    "verify_bundle",
]

BUNDLE_FORMAT = "auraseal-ledger-proof"
BUNDLE_VERSION = 1
_DASH = "\u2014"
_ED25519 = b"\x01"


class NotePublicKey(Protocol):
    """What a checkpoint verifier needs (``auraseal.signing.PublicKey`` fits)."""

    @property
    def raw(self) -> bytes: ...

    def verify(self, signature: bytes, data: bytes, where: str = "") -> None: ...


class NoteSigner(Protocol):
    """What a checkpoint signer needs (``auraseal.signing.SigningKey`` fits)."""

    @property
    def public(self) -> Any: ...

    def sign(self, data: bytes) -> bytes: ...


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise InputError("a note key name must be non-empty, with no spaces or '+'", name)
    return name


def note_key_id(name: str, public_raw: bytes) -> bytes:
    """The signed-note key id of an Ed25519 key: 4 bytes."""
    return hashlib.sha256(_check_name(name).encode() + b"\n" + _ED25519 + public_raw).digest()[:4]


def verifier_key(name: str, public: NotePublicKey) -> str:
    """The note verifier key string ``name+hexid+base64(0x01||key)``."""
    kid = note_key_id(name, public.raw).hex()
    return f"{name}+{kid}+{base64.b64encode(_ED25519 + public.raw).decode()}"


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``origin``, ``size`` and ``root`` (raw 32 bytes)."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        if not self.origin or "\n" in self.origin:
            raise InputError("checkpoint origin must be one non-empty line", "origin")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse_body(cls, body: str, where: str = "checkpoint") -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise InputError("checkpoint body needs origin, size and root lines", where)
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if any(ln == "" for ln in lines[3:-1]):
            raise InputError("empty extension line in checkpoint body", where)
        if not origin:
            raise InputError("checkpoint origin is empty", where)
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise InputError(f"tree size {size_text!r} is not a decimal number", where)
        try:
            root = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("checkpoint root is not base64", where) from exc
        if len(root) != merkle.HASH_SIZE:
            raise InputError("checkpoint root is not a SHA-256 hash", where)
        return cls(origin, int(size_text), root)


def sign_checkpoint(cp: Checkpoint, name: str, key: NoteSigner) -> str:
    """The signed note text for ``cp``, signed by ``key`` under ``name``."""
    body = cp.body()
    sig = key.sign(body.encode("utf-8"))
    kid = note_key_id(name, key.public.raw)
    return f"{body}\n{_DASH} {name} {base64.b64encode(kid + sig).decode()}\n"


def open_checkpoint(
    note: str, name: str, public: NotePublicKey, *, origin: str | None = None,
    where: str = "checkpoint",
) -> Checkpoint:
    """Verify ``note``'s signature by (``name``, ``public``) and parse its checkpoint."""
    body, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise InputError("not a signed note (no blank line before signatures)", where)
    body += "\n"
    kid = note_key_id(name, public.raw)
    found = False
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise InputError(f"malformed signature line {line!r}", where)
        if parts[1] != name:
            continue
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("signature is not base64", where) from exc
        if len(raw) < 5 or raw[:4] != kid:
            continue
        public.verify(raw[4:], body.encode("utf-8"), where)
        found = True
    if not found:
        raise UnknownKeyError(f"note carries no signature by key {name!r}", where)
    cp = Checkpoint.parse_body(body, where)
    if origin is not None and cp.origin != origin:
        raise BadSignatureError(f"checkpoint origin {cp.origin!r} is not {origin!r}", where)
    return cp


def make_bundle(
    entry: Entry, tree_size: int, proof: Sequence[bytes], note: str,
    block: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An offline proof bundle: entry, inclusion proof and signed checkpoint."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "entry": entry.to_json(),
        "leaf_index": entry.leaf_index,
        "tree_size": tree_size,
        "inclusion_proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": note,
        "block": dict(block) if block is not None else None,
    }


_NO_DATA = object()


def verify_bundle(
    bundle: Mapping[str, Any], name: str, public: NotePublicKey, *,
    original_data: Any = _NO_DATA, where: str = "bundle",
) -> dict[str, Any]:
    """Check a bundle with only the public key; raise on any failure.

    Returns a summary (entry id, leaf index, tree size, origin, whether
    ``original_data`` was checked).  The HMAC is symmetric, so a third party
    cannot check it; the Merkle proof and the Ed25519 checkpoint are enough to
    show the entry is in the log the key holder signed.
    """
    if bundle.get("format") != BUNDLE_FORMAT:
        raise InputError("not an AuraSeal ledger proof bundle", where)
    if bundle.get("version") != BUNDLE_VERSION:
        raise InputError(f"unsupported bundle version {bundle.get('version')!r}", where)
    try:
        entry = Entry.from_json(bundle["entry"], where)
        index = int(bundle["leaf_index"])
        size = int(bundle["tree_size"])
        proof = [base64.b64decode(p, validate=True) for p in bundle["inclusion_proof"]]
        note = str(bundle["checkpoint"])
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise InputError(f"malformed bundle: {exc}", where) from exc
    cp = open_checkpoint(note, name, public, where=f"{where}: checkpoint")
    if cp.size != size:
        raise MerkleProofError(f"proof is for tree size {size}, checkpoint is {cp.size}", where)
    merkle.verify_inclusion(entry.leaf_hash(), index, size, proof, cp.root)
    checked = original_data is not _NO_DATA
    if checked and data_hash(original_data) != entry.data_hash:
        raise DigestMismatchError("data does not hash to the entry's data_hash", where)
    return {"verified": True, "entry_id": entry.entry_id, "leaf_index": index,
            "tree_size": size, "origin": cp.origin, "data_checked": checked,
            "signed_entry": entry.signature is not None}
