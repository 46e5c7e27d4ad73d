"""C2SP signed notes, parsed strictly (as Go's ``golang.org/x/mod/sumdb/note``).

A note is UTF-8 text with no control character but newline, then a blank
line, then one or more signature lines ``— <name> <base64(keyid || sig)>``.
The text/signature split is the *last* ``"\\n\\n"`` (Go's ``note.Open``): the
text keeps its final newline, and every line after the split must be a
well-formed signature line — a malformed line from *any* key rejects the
note, and unknown keys' well-formed signatures are ignored.

Keys:

* Ed25519 note key (algorithm ``0x01``): key id
  ``SHA-256(name || 0x0A || 0x01 || pubkey)[:4]``; signature over the text.
* Ed25519 ``cosignature/v1`` witness key (algorithm ``0x04``, C2SP
  tlog-cosignature): key id ``SHA-256(name || 0x0A || 0x04 || pubkey)[:4]``;
  the signature is ``u64be(timestamp) || Ed25519(msg)`` with
  ``msg = "cosignature/v1\\ntime <timestamp>\\n" || text``.

Verifier keys are written ``<name>+<8 hex key id>+<base64(alg || pubkey)>``,
signer keys ``PRIVATE+KEY+<name>+<8 hex>+<base64(alg || seed)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from auraseal.errors import (
    BadSignatureError,
    ConfigError,
    MalformedNoteError,
    NotFoundError,
    StorageError,
    ThresholdError,
    UnknownKeyError,
)
from auraseal.signing import PublicKey, SigningKey, load_public_key, load_signing_key

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "CosignatureSigner",
    "CosignatureVerifier",
    "Ed25519NoteSigner",
    "Ed25519NoteVerifier",
    "Note",
    "NoteSignature",
    "NoteVerifier",
    "check_key_name",
    "check_note_text",
    "cosignature_message",
    "key_id",
    "load_note_signer",
    "load_note_verifier",
    "open_note",
    "parse_note",
    "parse_signer_key",
    "parse_verifier_key",
    "read_note_file",
    "sign_note",
    "signature_line",
    "signer_key_string",
    "verified_witnesses",
]

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
DASH = "\u2014"
_SIG_PREFIX = DASH + " "
_MAX_SIGS = 100
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def check_key_name(name: str, where: str = "key name") -> str:
    """A note key name: non-empty, no Unicode space, no ``+`` (Go's ``isValidName``)."""
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise MalformedNoteError(f"invalid note key name {name!r}", where)
    return name


def key_id(name: str, alg: int, public_raw: bytes) -> bytes:
    """``SHA-256(name || 0x0A || alg || public key)[:4]``."""
    return hashlib.sha256(
        check_key_name(name).encode("utf-8") + b"\n" + bytes([alg]) + public_raw
    ).digest()[:4]


def cosignature_message(text: str | bytes, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signature covers (C2SP tlog-cosignature)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return b"cosignature/v1\ntime %d\n" % timestamp + raw


# --- parsing -----------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return signature_line(self.name, self.key_id, self.signature)


@dataclass(frozen=True)
class Note:
    """A structurally valid note: ``text`` (ends in ``\\n``) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode("utf-8")


def signature_line(name: str, kid: bytes, signature: bytes) -> str:
    return f"{_SIG_PREFIX}{name} {base64.b64encode(kid + signature).decode()}\n"


def _b64(text: str) -> bytes:
    """Strict, canonical standard base64 (Go's StdEncoding plus canonical padding bits)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise ValueError("not canonical base64")
    return raw


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def check_note_text(msg: bytes | str, where: str) -> str:
    """Valid UTF-8 with no control character but newline."""
    if isinstance(msg, str):
        try:
            msg.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedNoteError("note is not valid UTF-8", where) from exc
        text = msg
    else:
        try:
            text = bytes(msg).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNoteError("note is not valid UTF-8", where) from exc
    m = _CONTROL.search(text)
    if m:
        raise MalformedNoteError(
            f"control character U+{ord(m.group()):04X} at offset {m.start()}", where)
    return text


def parse_note(msg: bytes | str, where: str = "note") -> Note:
    """Split and check a signed note exactly as Go's ``note.Open`` does (no verification).

    Raises :class:`MalformedNoteError` for invalid UTF-8, any control character
    but newline (CR included), no ``"\\n\\n"`` split, a signature block not
    ending in newline, more than 100 signatures, or any malformed signature line.
    """
    text_all = check_note_text(msg, where)
    split = text_all.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("no blank line before the signatures", where)
    text, sigs = text_all[: split + 1], text_all[split + 2 :]
    if not sigs or not sigs.endswith("\n"):
        raise MalformedNoteError("signature block must end with a newline", where)
    out: list[NoteSignature] = []
    for n, line in enumerate(sigs[:-1].split("\n"), 1):
        bad = f"malformed signature line {n}"
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError(f"{bad}: does not start with '— '", where)
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            check_key_name(name)
            blob = _b64(b64)
        except (MalformedNoteError, ValueError) as exc:
            raise MalformedNoteError(f"{bad}: {exc}", where) from exc
        if not b64 or len(blob) < 5:
            raise MalformedNoteError(f"{bad}: signature too short", where)
        if len(out) >= _MAX_SIGS:
            raise MalformedNoteError(f"more than {_MAX_SIGS} signatures", where)
        out.append(NoteSignature(name, blob[:4], blob[4:]))
    return Note(text, tuple(out))


def read_note_file(path: Path) -> bytes:
    """A note file's exact bytes (no newline translation)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(path)) from exc


# --- keys --------------------------------------------------------------------


class NoteVerifier(Protocol):
    """A verifier of one key: ``name``, ``key_id`` and :meth:`verify`."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, text: str, signature: bytes) -> bool: ...

    def vkey(self) -> str: ...


class NoteSigner(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def sign(self, text: str) -> bytes: ...


def _vkey(name: str, alg: int, public_raw: bytes) -> str:
    kid = key_id(name, alg, public_raw).hex()
    return f"{name}+{kid}+{base64.b64encode(bytes([alg]) + public_raw).decode()}"


@dataclass(frozen=True)
class Ed25519NoteVerifier:
    """An Ed25519 signed-note key (algorithm 0x01)."""

    name: str
    public: PublicKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, ALG_ED25519, self.public.raw)

    def verify(self, text: str, signature: bytes) -> bool:
        try:
            self.public.verify(signature, text.encode("utf-8"))
        except BadSignatureError:
            return False
        return True

    def vkey(self) -> str:
        return _vkey(self.name, ALG_ED25519, self.public.raw)


@dataclass(frozen=True)
class CosignatureVerifier:
    """An Ed25519 ``cosignature/v1`` witness key (algorithm 0x04)."""

    name: str
    public: PublicKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, ALG_COSIGNATURE_V1, self.public.raw)

    def verify(self, text: str, signature: bytes) -> bool:
        if len(signature) != 8 + 64:
            return False
        ts = int.from_bytes(signature[:8], "big")
        try:
            self.public.verify(signature[8:], cosignature_message(text, ts))
        except BadSignatureError:
            return False
        return True

    @staticmethod
    def timestamp(signature: bytes) -> int:
        return int.from_bytes(signature[:8], "big")

    def vkey(self) -> str:
        return _vkey(self.name, ALG_COSIGNATURE_V1, self.public.raw)


@dataclass(frozen=True)
class Ed25519NoteSigner:
    name: str
    key: SigningKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, ALG_ED25519, self.key.public.raw)

    def sign(self, text: str) -> bytes:
        return self.key.sign(text.encode("utf-8"))

    def verifier(self) -> Ed25519NoteVerifier:
        return Ed25519NoteVerifier(self.name, self.key.public)


@dataclass(frozen=True)
class CosignatureSigner:
    """Signs ``cosignature/v1`` lines; ``clock`` returns POSIX seconds."""

    name: str
    key: SigningKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, ALG_COSIGNATURE_V1, self.key.public.raw)

    def sign(self, text: str, timestamp: int | None = None) -> bytes:
        ts = int(time.time()) if timestamp is None else timestamp
        return ts.to_bytes(8, "big") + self.key.sign(cosignature_message(text, ts))

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.key.public)


def parse_verifier_key(vkey: str, where: str = "verifier key") -> NoteVerifier:
    """``<name>+<hex id>+<base64(alg || key)>`` (alg 0x01 note key or 0x04 cosignature)."""
    name, _, rest = vkey.strip().partition("+")
    hex_id, _, key64 = rest.partition("+")
    try:
        check_key_name(name, where)
        raw = _b64(key64)
    except (MalformedNoteError, ValueError) as exc:
        raise MalformedNoteError(f"not a note verifier key: {exc}", where) from exc
    if not _HEX8.fullmatch(hex_id) or len(raw) != 33:
        raise MalformedNoteError("not a note verifier key (name+hash+base64)", where)
    alg, pub = raw[0], raw[1:]
    if key_id(name, alg, pub) != bytes.fromhex(hex_id):
        raise MalformedNoteError("verifier key id does not match the key", where)
    try:
        public = PublicKey(Ed25519PublicKey.from_public_bytes(pub))
    except ValueError as exc:
        raise MalformedNoteError("not an Ed25519 public key", where) from exc
    if alg == ALG_ED25519:
        return Ed25519NoteVerifier(name, public)
    if alg == ALG_COSIGNATURE_V1:
        return CosignatureVerifier(name, public)
    raise MalformedNoteError(f"unsupported note key algorithm 0x{alg:02x}", where)


def parse_signer_key(skey: str, where: str = "signer key") -> Ed25519NoteSigner | CosignatureSigner:
    """``PRIVATE+KEY+<name>+<hex id>+<base64(alg || seed)>``."""
    parts = skey.strip().split("+", 4)
    if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
        raise MalformedNoteError("not a note signer key (PRIVATE+KEY+name+hash+base64)", where)
    name, hex_id, key64 = parts[2:]
    try:
        check_key_name(name, where)
        raw = _b64(key64)
    except (MalformedNoteError, ValueError) as exc:
        raise MalformedNoteError(f"not a note signer key: {exc}", where) from exc
    if not _HEX8.fullmatch(hex_id) or len(raw) != 33:
        raise MalformedNoteError("not a note signer key", where)
    key = SigningKey(Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if key_id(name, raw[0], key.public.raw) != bytes.fromhex(hex_id):
        raise MalformedNoteError("signer key id does not match the key", where)
    if raw[0] == ALG_ED25519:
        return Ed25519NoteSigner(name, key)
    if raw[0] == ALG_COSIGNATURE_V1:
        return CosignatureSigner(name, key)
    raise MalformedNoteError(f"unsupported note key algorithm 0x{raw[0]:02x}", where)


def signer_key_string(name: str, key: SigningKey, alg: int = ALG_ED25519) -> str:
    """The ``PRIVATE+KEY+...`` string of an AuraSeal Ed25519 key."""
    priv = serialization.load_pem_private_key(key.pem(), password=None)
    assert isinstance(priv, Ed25519PrivateKey)
    raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    kid = key_id(name, alg, key.public.raw).hex()
    return f"PRIVATE+KEY+{name}+{kid}+{base64.b64encode(bytes([alg]) + raw).decode()}"


def _arg_text(arg: str | Path) -> tuple[str | None, str]:
    """(text if ``arg`` is a key string or a file holding one, where)."""
    s = str(arg)
    p = Path(s)
    if "\n" not in s and s.count("+") >= 2 and not p.exists():
        return s, "key"
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:  # a path the user named: bad input, as everywhere
        raise NotFoundError("no such file or directory", s) from exc
    except OSError as exc:
        raise StorageError(f"cannot read key: {exc.strerror}", s) from exc
    if data.startswith(b"-----BEGIN"):
        return None, s
    try:
        return data.decode("ascii").strip(), s
    except UnicodeDecodeError as exc:
        raise ConfigError("not a PEM key or a note key string", s) from exc


def load_note_verifier(
    arg: str | Path, name: str, alg: int = ALG_ED25519
) -> NoteVerifier:
    """A verifier from a ``name+hash+base64`` string, a file holding one, or a PEM
    public key file (then named ``name``, algorithm ``alg``)."""
    text, where = _arg_text(arg)
    if text is not None:
        return parse_verifier_key(text, where)
    pub = load_public_key(Path(where))
    if alg == ALG_COSIGNATURE_V1:
        return CosignatureVerifier(name, pub)
    return Ed25519NoteVerifier(name, pub)


def load_note_signer(arg: str | Path, name: str, alg: int = ALG_ED25519
                     ) -> Ed25519NoteSigner | CosignatureSigner:
    """A signer from a ``PRIVATE+KEY+...`` string, a file holding one, or a PEM
    private key file (then named ``name``, algorithm ``alg``)."""
    text, where = _arg_text(arg)
    if text is not None:
        return parse_signer_key(text, where)
    key = load_signing_key(Path(where))
    if alg == ALG_COSIGNATURE_V1:
        return CosignatureSigner(name, key)
    return Ed25519NoteSigner(name, key)


# --- signing and opening -----------------------------------------------------


def sign_note(text: str, signers: Iterable[NoteSigner], existing: Sequence[NoteSignature] = ()
              ) -> str:
    """``text`` (ending in a newline) signed by ``signers``, after ``existing`` signatures
    of other keys."""
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline", "note")
    check_note_text(text, "note")
    signers = list(signers)
    mine = {(s.name, s.key_id) for s in signers}
    lines = [s.line() for s in existing if (s.name, s.key_id) not in mine]
    lines += [signature_line(s.name, s.key_id, s.sign(text)) for s in signers]
    return text + "\n" + "".join(lines)


def open_note(
    msg: bytes | str, verifiers: Sequence[NoteVerifier], where: str = "note"
) -> tuple[Note, list[NoteVerifier]]:
    """Parse ``msg`` and verify every signature by a known key (Go's ``note.Open``).

    A signature whose (name, key id) matches a verifier but does not verify
    raises :class:`BadSignatureError`; signatures by unknown keys are ignored;
    no verified signature at all raises :class:`UnknownKeyError`.  Returns the
    note and the verifiers whose signatures verified.
    """
    note = parse_note(msg, where)
    known = {(v.name, v.key_id): v for v in verifiers}
    ok: list[NoteVerifier] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None or (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not v.verify(note.text, sig.signature):
            raise BadSignatureError(f"invalid signature by note key {sig.name!r}", where)
        ok.append(v)
    if not ok:
        names = ", ".join(sorted({v.name for v in verifiers})) or "none given"
        raise UnknownKeyError(f"note carries no signature by a known key ({names})", where)
    return note, ok


def verified_witnesses(
    note: Note, witnesses: Sequence[NoteVerifier], threshold: int, where: str = "note"
) -> list[NoteVerifier]:
    """The witnesses whose cosignatures on ``note`` verify; at least ``threshold``.

    A cosignature by a listed witness that does not verify raises
    :class:`BadSignatureError` (as in :func:`open_note`).
    """
    if threshold < 0 or threshold > len(witnesses):
        raise ConfigError(
            f"witness threshold {threshold} needs at least as many witness keys"
            f" ({len(witnesses)} given)", "--witness-threshold")
    known = {(v.name, v.key_id): v for v in witnesses}
    ok: dict[tuple[str, bytes], NoteVerifier] = {}
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None or (sig.name, sig.key_id) in ok:
            continue
        if not v.verify(note.text, sig.signature):
            raise BadSignatureError(f"invalid cosignature by witness {sig.name!r}", where)
        ok[(sig.name, sig.key_id)] = v
    if len(ok) < threshold:
        raise ThresholdError(
            f"{len(ok)} of the required {threshold} witness cosignatures", where)
    return list(ok.values())
