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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from auraseal import merkle
from auraseal.errors import (
    BadSignatureError,
    DigestMismatchError,
    InputError,
    MalformedNoteError,
    MerkleProofError,
)
from auraseal.ledger._model import FORMAT_VERSION, GENESIS_HASH, Block, Entry, data_hash
from auraseal.ledger.note import (
    ALG_ED25519,
    CosignatureVerifier,
    Ed25519NoteVerifier,
    NoteVerifier,
    check_note_text,
    key_id,
    open_note,
    verified_witnesses,
)

if TYPE_CHECKING:
    from auraseal.signing import PublicKey

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BlockProof",
    "Checkpoint",
    "NotePublicKey",
    "NoteSigner",
    "make_bundle",
    "note_key_id",
    "open_checkpoint",
    "open_checkpoint_note",
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


def note_key_id(name: str, public_raw: bytes) -> bytes:
    """The signed-note key id of an Ed25519 key: 4 bytes."""
    return key_id(name, ALG_ED25519, public_raw)


def verifier_key(name: str, public: NotePublicKey) -> str:
    """The note verifier key string ``name+hexid+base64(0x01||key)``."""
    kid = note_key_id(name, public.raw).hex()
    return f"{name}+{kid}+{base64.b64encode(_ED25519 + public.raw).decode()}"


_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_SIZE = 2**64 - 1


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: ``origin``, ``size`` and ``root`` (raw 32 bytes), plus any
    extension lines (C2SP tlog-checkpoint)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        if not self.origin or "\n" in self.origin:
            raise InputError("checkpoint origin must be one non-empty line", "origin")
        ext = "".join(e + "\n" for e in self.extensions)
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n{ext}"

    @classmethod
    def parse_body(cls, body: str | bytes, where: str = "checkpoint") -> Checkpoint:
        """Parse checkpoint text exactly as C2SP tlog-checkpoint writes it.

        Rejects control characters (CR included), a size that is not a plain
        ASCII decimal without leading zeros (or above 2**64-1), a root that is
        not canonical base64 of 32 bytes, empty extension lines, and text not
        ending in a newline.
        """
        text = check_note_text(body, where)
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise MalformedNoteError("checkpoint needs origin, size and root lines", where)
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        extensions = tuple(lines[3:-1])
        if any(ln == "" for ln in extensions):
            raise MalformedNoteError("empty extension line in checkpoint", where)
        if not origin:
            raise MalformedNoteError("checkpoint origin is empty", where)
        if not _SIZE.fullmatch(size_text) or int(size_text) > _MAX_SIZE:
            raise MalformedNoteError(
                f"tree size {size_text!r} is not a plain decimal number", where)
        try:
            root = base64.b64decode(root_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedNoteError("checkpoint root is not base64", where) from exc
        if len(root) != merkle.HASH_SIZE or base64.b64encode(root).decode() != root_text:
            raise MalformedNoteError("checkpoint root is not a canonical base64 SHA-256 hash",
                                     where)
        return cls(origin, int(size_text), root, extensions)


def sign_checkpoint(cp: Checkpoint, name: str, key: NoteSigner) -> str:
    """The signed note text for ``cp``, signed by ``key`` under ``name``."""
    body = cp.body()
    sig = key.sign(body.encode("utf-8"))
    kid = note_key_id(name, key.public.raw)
    return f"{body}\n{_DASH} {name} {base64.b64encode(kid + sig).decode()}\n"


def open_checkpoint_note(
    note: str | bytes, verifier: NoteVerifier, *, origin: str | None = None,
    witnesses: Sequence[NoteVerifier] = (), witness_threshold: int = 0,
    where: str = "checkpoint",
) -> Checkpoint:
    """Verify ``note`` (strict C2SP signed note) by the log key ``verifier``, require
    ``witness_threshold`` valid cosignatures from ``witnesses``, parse the checkpoint."""
    parsed, _ = open_note(note, [verifier], where)
    cp = Checkpoint.parse_body(parsed.text, where)
    if origin is not None and cp.origin != origin:
        raise BadSignatureError(f"checkpoint origin {cp.origin!r} is not {origin!r}", where)
    if witnesses or witness_threshold:
        verified_witnesses(parsed, witnesses, witness_threshold, where)
    return cp


def _b64list(hashes: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


@dataclass(frozen=True)
class BlockProof:
    """What binds a bundle's ``block`` to the signed tree (docs/LEDGER.md §1.7).

    ``leaves``: the leaf hashes of the block's entries, in order; ``frontier``:
    the complete-subtree hashes of the tree before the block
    (:func:`auraseal.merkle.compact_range_coords` of its first leaf);
    ``consistency``: an RFC 9162 consistency proof from the block's tree size
    to the checkpoint's; ``previous_block``: the JSONL object of the block
    before (None for block 1).
    """

    leaves: Sequence[bytes]
    frontier: Sequence[bytes]
    consistency: Sequence[bytes]
    previous_block: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"leaves": _b64list(self.leaves), "frontier": _b64list(self.frontier),
                "consistency": _b64list(self.consistency)}


def open_checkpoint(
    note: str | bytes, name: str, public: NotePublicKey | NoteVerifier, *,
    origin: str | None = None, where: str = "checkpoint",
    witnesses: Sequence[NoteVerifier] = (), witness_threshold: int = 0,
) -> Checkpoint:
    """Verify ``note``'s signature by (``name``, ``public``) and parse its checkpoint.

    ``public`` is an Ed25519 public key (then named ``name``) or a note verifier
    (:func:`auraseal.ledger.note.parse_verifier_key`), whose own name counts.
    """
    verifier: NoteVerifier
    if isinstance(public, Ed25519NoteVerifier | CosignatureVerifier):
        verifier = public
    else:
        verifier = Ed25519NoteVerifier(name, cast("PublicKey", public))
    return open_checkpoint_note(note, verifier, origin=origin, witnesses=witnesses,
                                witness_threshold=witness_threshold, where=where)


def make_bundle(
    entry: Entry, tree_size: int, proof: Sequence[bytes], note: str,
    block: Mapping[str, Any] | None = None, *, block_proof: BlockProof | None = None,
) -> dict[str, Any]:
    """An offline proof bundle: entry, inclusion proof and signed checkpoint.

    A ``block`` needs its ``block_proof``: :func:`verify_bundle` refuses a
    block it cannot check.
    """
    extra: dict[str, Any] = {}
    if block_proof is not None:
        extra = {"block_proof": block_proof.to_json(),
                 "previous_block": (dict(block_proof.previous_block)
                                    if block_proof.previous_block is not None else None)}
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "entry": entry.to_json(),
        "leaf_index": entry.leaf_index,
        "tree_size": tree_size,
        "inclusion_proof": [base64.b64encode(p).decode() for p in proof],
        "checkpoint": note,
        "block": dict(block) if block is not None else None,
        **extra,
    }


def _hashes(value: Any, field: str, where: str) -> list[bytes]:
    try:
        out = [base64.b64decode(h, validate=True) for h in value]
    except (TypeError, ValueError, binascii.Error) as exc:
        raise InputError(f"malformed {field}: {exc}", where) from exc
    if any(len(h) != merkle.HASH_SIZE for h in out):
        raise InputError(f"malformed {field}: hashes must be {merkle.HASH_SIZE} bytes", where)
    return out


def _block_record(value: Any, field: str, where: str) -> Block:
    if not isinstance(value, Mapping) or value.get("record_type") != "block" \
            or value.get("v") != FORMAT_VERSION:
        raise InputError(f"{field} is not a version-{FORMAT_VERSION} block object",
                         f"{where}: {field}")
    return Block.from_json(value, f"{where}: {field}")


def _verify_block(
    bundle: Mapping[str, Any], entry: Entry, index: int, size: int, root: bytes, *, where: str
) -> Block | None:
    """Check every field of the bundle's ``block`` against the signed tree; raise
    :class:`MerkleProofError` naming the field that does not hold."""
    if bundle.get("block") is None:
        return None
    blk = _block_record(bundle["block"], "block", where)

    def fail(field: str, what: str) -> MerkleProofError:
        return MerkleProofError(what, f"{where}: {field}")

    if blk.compute_hash() != blk.block_hash:
        raise fail("block.block_hash", "does not recompute from the block's fields")
    first = blk.first_leaf
    if blk.block_number < 1 or blk.data_count < 1 or first < 0:
        raise fail("block.data_count", "block number, data_count and tree_size are "
                   "inconsistent")
    if not first <= index < blk.tree_size:
        raise fail("block.tree_size", f"the entry (leaf {index}) is not among the block's "
                   f"leaves [{first}, {blk.tree_size})")
    if blk.tree_size > size:
        raise fail("block.tree_size", f"beyond the signed tree size {size}")
    bp = bundle.get("block_proof")
    if not isinstance(bp, Mapping):
        raise fail("block_proof", "the bundle claims a block but carries no proof of its "
                   "merkle_root, tree_root and previous_hash (a bundle from an older "
                   "AuraSeal: export it again)")
    leaves = _hashes(bp.get("leaves"), "block_proof.leaves", where)
    frontier = _hashes(bp.get("frontier"), "block_proof.frontier", where)
    consistency = _hashes(bp.get("consistency"), "block_proof.consistency", where)
    if len(leaves) != blk.data_count:
        raise fail("block.data_count", f"block_proof holds {len(leaves)} leaves")
    if leaves[index - first] != entry.leaf_hash():
        raise fail("block_proof.leaves", "the entry is not at its leaf index in the block")
    if merkle.root(leaves).hex() != blk.merkle_root:
        raise fail("block.merkle_root", "does not recompute from the block's leaves")
    coords = merkle.compact_range_coords(first)
    if len(frontier) != len(coords):
        raise fail("block_proof.frontier", f"does not fit a tree of {first} leaves")
    _, tree_root = merkle.append_nodes(first, frontier, leaves)
    if tree_root.hex() != blk.tree_root:
        raise fail("block.tree_root", "does not recompute from the tree before the block "
                   "and the block's leaves")
    try:
        merkle.verify_consistency(blk.tree_size, size, consistency, tree_root, root)
    except MerkleProofError as exc:
        raise fail("block.tree_root", f"is not a root of the tree the checkpoint signs "
                   f"({exc.what})") from exc
    # the chain link: the block before, whose tree is the one the block extends
    if blk.block_number == 1:
        if blk.previous_hash != GENESIS_HASH or first != 0:
            raise fail("block.previous_hash", "block 1 must start the tree and link to the "
                       "genesis hash")
        return blk
    prev = _block_record(bundle.get("previous_block"), "previous_block", where)
    if prev.compute_hash() != prev.block_hash or prev.block_hash != blk.previous_hash:
        raise fail("block.previous_hash", "is not the hash of the previous block")
    if prev.block_number != blk.block_number - 1 or prev.tree_size != first:
        raise fail("previous_block", f"is not block {blk.block_number - 1} ending at leaf "
                   f"{first}")
    at = dict(zip(coords, frontier, strict=True))
    if merkle.root_from(lambda lv, i: at[(lv, i)], first).hex() != prev.tree_root:
        raise fail("previous_block.tree_root", "is not the root of the tree before the block")
    return blk


_NO_DATA = object()


def verify_bundle(
    bundle: Mapping[str, Any], name: str, public: NotePublicKey | NoteVerifier, *,
    original_data: Any = _NO_DATA, where: str = "bundle",
    witnesses: Sequence[NoteVerifier] = (), witness_threshold: int = 0,
) -> dict[str, Any]:
    """Check a bundle with only the public key; raise on any failure.

    Returns a summary (entry id, leaf index, tree size, origin, whether
    ``original_data`` was checked).  The HMAC is symmetric, so a third party
    cannot check it; the Merkle proof and the Ed25519 checkpoint are enough to
    show the entry is in the log the key holder signed.  A ``block`` in the
    bundle is checked field by field against the signed tree (see
    ``_verify_block``); a block that cannot be checked is refused.
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
    cp = open_checkpoint(note, name, public, where=f"{where}: checkpoint",
                         witnesses=witnesses, witness_threshold=witness_threshold)
    if cp.size != size:
        raise MerkleProofError(f"proof is for tree size {size}, checkpoint is {cp.size}", where)
    merkle.verify_inclusion(entry.leaf_hash(), index, size, proof, cp.root)
    blk = _verify_block(bundle, entry, index, size, cp.root, where=where)
    checked = original_data is not _NO_DATA
    if checked and data_hash(original_data) != entry.data_hash:
        raise DigestMismatchError("data does not hash to the entry's data_hash", where)
    return {"verified": True, "entry_id": entry.entry_id, "leaf_index": index,
            "tree_size": size, "origin": cp.origin, "data_checked": checked,
            "signed_entry": entry.signature is not None,
            "block_number": blk.block_number if blk is not None else None,
            "block_checked": blk is not None}
