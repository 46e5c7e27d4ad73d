"""Integrity strings: W3C SRI metadata and AuraSeal strings.

Two notations name the digests a resource must match:

* **SRI metadata** (W3C Subresource Integrity): whitespace-separated tokens
  ``<alg>-<base64>[?options]`` with ``alg`` in ``sha256``, ``sha384``,
  ``sha512``. Unknown algorithms are skipped (and reported in
  :attr:`SRIMetadata.unknown`); the strongest algorithm present wins and any
  token of that algorithm matching passes.
* **AuraSeal strings**: ``auraseal-<alg>-<primary>`` or the dual form
  ``auraseal-<alg>-<primary>-<secondary>``; content passes if its digest equals
  either. Standard base64 only: base64url's ``-`` would make the separator
  ambiguous.

Verifying against metadata with no usable token is an error, never a pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from auraseal.errors import DigestMismatchError, MalformedIntegrityError, StorageError

__all__ = [
    "ALGORITHMS",
    "AuraSealString",
    "Integrity",
    "SRIMetadata",
    "SRIToken",
    "StreamVerifier",
    "auraseal_string",
    "check_integrity",
    "hash_bytes",
    "hash_file",
    "hash_stream",
    "parse_auraseal",
    "parse_integrity",
    "parse_sri",
    "sri_token",
    "verify_bytes",
    "verify_file",
    "verify_stream",
]

#: Supported algorithms, weakest first, with their digest sizes in bytes.
ALGORITHMS: dict[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}
_STRENGTH = {name: i for i, name in enumerate(ALGORITHMS)}
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
CHUNK = 1 << 20


def _check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise MalformedIntegrityError(
            f"unsupported algorithm (use {', '.join(ALGORITHMS)})", algorithm
        )
    return algorithm


def _decode_digest(algorithm: str, b64: str, token: str) -> bytes:
    if b64 == "":
        raise MalformedIntegrityError("empty digest", token)
    if not _B64.match(b64) or len(b64) % 4:
        raise MalformedIntegrityError("digest is not standard padded base64", token)
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as exc:
        raise MalformedIntegrityError("digest is not valid base64", token) from exc
    want = ALGORITHMS[algorithm]
    if len(raw) != want:
        raise MalformedIntegrityError(
            f"{algorithm} digest must be {want} bytes, got {len(raw)}", token
        )
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- hashing ----------------------------------------------------------------


def hash_bytes(data: bytes | memoryview, algorithm: str = "sha512") -> bytes:
    """Raw digest of ``data``."""
    return hashlib.new(_check_algorithm(algorithm), data).digest()


def hash_stream(
    stream: BinaryIO,
    algorithm: str = "sha512",
    progress: Callable[[int], None] | None = None,
    chunk_size: int = CHUNK,
) -> bytes:
    """Raw digest of everything read from ``stream``, in constant memory."""
    h = hashlib.new(_check_algorithm(algorithm))
    while chunk := stream.read(chunk_size):
        h.update(chunk)
        if progress is not None:
            progress(len(chunk))
    return h.digest()


def hash_file(
    path: Path,
    algorithm: str = "sha512",
    progress: Callable[[int], None] | None = None,
    *,
    buffer: bytearray | None = None,
    flags: int = 0,
) -> bytes:
    """Raw digest of the file at ``path`` (streamed; the GIL is released per chunk).

    ``buffer``: read into it (reused across calls by one thread: no
    allocation per chunk); ``flags``: added to ``os.open``'s (e.g.
    ``os.O_NOFOLLOW``).
    """
    h = hashlib.new(_check_algorithm(algorithm))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
        try:
            # no buffer given: one sized to a regular file (64 KiB .. CHUNK), so
            # hashing many small files does not clear 1 MiB for each
            st = os.fstat(fd)
            want = min(CHUNK, max(st.st_size + 1, 64 << 10)) if S_ISREG(st.st_mode) else CHUNK
            buf = buffer or bytearray(want)
            view = memoryview(buf)
            while n := os.readv(fd, (buf,)):
                h.update(view[:n])
                if progress is not None:
                    progress(n)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot read: {exc.strerror}", str(path)) from exc
    return h.digest()


# --- SRI --------------------------------------------------------------------


@dataclass(frozen=True)
class SRIToken:
    """One ``<alg>-<base64>[?options]`` token."""

    algorithm: str
    digest: bytes
    options: str = ""

    def __str__(self) -> str:
        opt = f"?{self.options}" if self.options else ""
        return f"{self.algorithm}-{_b64(self.digest)}{opt}"


def sri_token(algorithm: str, digest: bytes) -> str:
    """Format one SRI token, checking the digest length for the algorithm."""
    _check_algorithm(algorithm)
    if len(digest) != ALGORITHMS[algorithm]:
        raise MalformedIntegrityError(
            f"{algorithm} digest must be {ALGORITHMS[algorithm]} bytes", algorithm
        )
    return str(SRIToken(algorithm, digest))


@dataclass(frozen=True)
class SRIMetadata:
    """Parsed SRI metadata, read as Chromium reads it (docs/WEB.md, "SRI parity").

    ``tokens``: hash tokens (a digest of the wrong length, or one that cannot
    be decoded, is kept as a token that never matches, as browsers do);
    ``signatures``: raw public keys of ``ed25519-<key>`` tokens (signature-based
    SRI: the response must carry a valid signature by one of them);
    ``unknown``: skipped tokens (unknown algorithm, malformed digest).
    """

    tokens: tuple[SRIToken, ...]
    unknown: tuple[str, ...] = ()
    signatures: tuple[bytes, ...] = ()

    @property
    def algorithm(self) -> str:
        """The strongest algorithm present (the only one that counts)."""
        if not self.tokens:
            why = "signature-only metadata has no digest" if self.signatures else (
                "no usable integrity token (unknown algorithms or malformed base64 only)"
            )
            raise MalformedIntegrityError(why, " ".join(self.unknown) or "''")
        return max((t.algorithm for t in self.tokens), key=_STRENGTH.__getitem__)

    @property
    def digests(self) -> tuple[bytes, ...]:
        alg = self.algorithm
        return tuple(t.digest for t in self.tokens if t.algorithm == alg)

    def matches(self, digest: bytes) -> bool:
        return _any_equal(digest, self.digests)

    def to_sri(self) -> str:
        return str(self)

    def __str__(self) -> str:
        toks = [str(t) for t in self.tokens]
        toks += [f"ed25519-{_b64(k)}" for k in self.signatures]
        return " ".join(toks)


#: What Chromium splits integrity metadata at (ASCII whitespace, and \v).
SRI_SEPARATORS = re.compile(r"[\t\n\v\f\r ]+")
#: One token Chromium accepts: a known algorithm (case-sensitive), ``-``, a
#: digest of base64/base64url characters and ``=``, then options after ``?``.
_SRI_TOKEN = re.compile(r"(sha256|sha384|sha512|ed25519)-([A-Za-z0-9+/_=-]+)(?:\?.*)?", re.S)
_LOOSE_B64 = re.compile(r"([A-Za-z0-9+/_-]+)=*")


def decode_loose(text: str) -> bytes:
    """Decode standard or url-safe base64, padded or not, as browsers do; b""
    (matching nothing) when it cannot be decoded."""
    m = _LOOSE_B64.fullmatch(text)
    if m is None:
        return b""
    std = m.group(1).replace("-", "+").replace("_", "/")
    if len(std) % 4 == 1:
        return b""
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def parse_sri(text: str, where: str = "") -> SRIMetadata:
    """Parse W3C SRI metadata with the browser's rules: tokens are split at
    ASCII whitespace; a token of an unknown algorithm or with characters
    outside base64/base64url is skipped (listed in ``unknown``), never an
    error; base64url and unpadded digests are accepted."""
    del where  # kept for callers: parsing SRI metadata never fails
    tokens: list[SRIToken] = []
    unknown: list[str] = []
    keys: list[bytes] = []
    for raw in SRI_SEPARATORS.split(text):
        if not raw:
            continue
        m = _SRI_TOKEN.fullmatch(raw)
        if m is None:
            unknown.append(raw)
            continue
        alg, b64 = m.group(1), m.group(2)
        options = raw.partition("?")[2]
        if alg == "ed25519":
            keys.append(decode_loose(b64))
        else:
            tokens.append(SRIToken(alg, decode_loose(b64), options))
    return SRIMetadata(tuple(tokens), tuple(unknown), tuple(keys))


# --- AuraSeal strings --------------------------------------------------------


@dataclass(frozen=True)
class AuraSealString:
    """``auraseal-<alg>-<primary>[-<secondary>]``."""

    algorithm: str
    primary: bytes
    secondary: bytes | None = None

    @property
    def digests(self) -> tuple[bytes, ...]:
        return (self.primary,) if self.secondary is None else (self.primary, self.secondary)

    @property
    def is_dual(self) -> bool:
        return self.secondary is not None

    def matches(self, digest: bytes) -> bool:
        return _any_equal(digest, self.digests)

    def to_sri(self) -> str:
        """Browser SRI: ``<alg>-<primary>`` (and ``<alg>-<secondary>`` for dual)."""
        return " ".join(sri_token(self.algorithm, d) for d in self.digests)

    def __str__(self) -> str:
        s = f"auraseal-{self.algorithm}-{_b64(self.primary)}"
        return s if self.secondary is None else f"{s}-{_b64(self.secondary)}"


def auraseal_string(
    primary: bytes, secondary: bytes | None = None, algorithm: str = "sha512"
) -> str:
    """Format an AuraSeal string from raw digest(s)."""
    _check_algorithm(algorithm)
    for d in (primary,) if secondary is None else (primary, secondary):
        if len(d) != ALGORITHMS[algorithm]:
            raise MalformedIntegrityError(
                f"{algorithm} digest must be {ALGORITHMS[algorithm]} bytes", algorithm
            )
    return str(AuraSealString(algorithm, primary, secondary))


def parse_auraseal(text: str, where: str = "") -> AuraSealString:
    """Parse an AuraSeal string (single or dual)."""
    where = where or text
    s = text.strip()
    if not s.startswith("auraseal-"):
        raise MalformedIntegrityError("AuraSeal string must start with 'auraseal-'", where)
    if any(c.isspace() for c in s):
        raise MalformedIntegrityError("whitespace inside AuraSeal string", where)
    fields = s.split("-")
    if len(fields) not in (3, 4):
        raise MalformedIntegrityError(
            "expected auraseal-<alg>-<primary>[-<secondary>]", where
        )
    alg = fields[1]
    if alg not in ALGORITHMS:
        raise MalformedIntegrityError(
            f"unsupported algorithm '{alg}' (use {', '.join(ALGORITHMS)})", where
        )
    primary = _decode_digest(alg, fields[2], where)
    secondary = _decode_digest(alg, fields[3], where) if len(fields) == 4 else None
    return AuraSealString(alg, primary, secondary)


Integrity = SRIMetadata | AuraSealString


def parse_integrity(text: str, where: str = "") -> Integrity:
    """Parse either notation; the result has at least one usable digest."""
    if not isinstance(text, str) or not text.strip():
        raise MalformedIntegrityError("empty integrity string", where or "''")
    if text.strip().startswith("auraseal-"):
        return parse_auraseal(text, where)
    meta = parse_sri(text, where)
    _ = meta.algorithm  # raises if nothing usable
    return meta


# One well-formed token or AuraSeal string of exactly the right digest length:
# valid by construction, so validation needs no base64 decode (hot for the
# thousands of part entries in a large manifest).
_WELL_FORMED = re.compile(
    r"(?:auraseal-)?(?:"
    r"sha256-[A-Za-z0-9+/]{43}=(?:-[A-Za-z0-9+/]{43}=)?"
    r"|sha384-[A-Za-z0-9+/]{64}(?:-[A-Za-z0-9+/]{64})?"
    r"|sha512-[A-Za-z0-9+/]{86}==(?:-[A-Za-z0-9+/]{86}==)?"
    r")"
)


def check_integrity(text: str, where: str = "") -> None:
    """Raise :class:`MalformedIntegrityError` unless ``text`` parses (as
    :func:`parse_integrity` would) — without building the parsed object."""
    m = _WELL_FORMED.fullmatch(text) if isinstance(text, str) else None
    if m is not None and (text.startswith("auraseal-") or text.count("-") == 1):
        return
    parse_integrity(text, where)


def _coerce(integrity: str | Integrity, where: str) -> Integrity:
    return parse_integrity(integrity, where) if isinstance(integrity, str) else integrity


def _any_equal(digest: bytes, candidates: tuple[bytes, ...]) -> bool:
    ok = False
    for c in candidates:
        ok |= hmac.compare_digest(digest, c)
    return ok


def _mismatch(integ: Integrity, actual: bytes, where: str) -> DigestMismatchError:
    expected = str(integ)
    actual_s = sri_token(integ.algorithm, actual)
    return DigestMismatchError(
        f"integrity mismatch: expected {expected}, got {actual_s}",
        where,
        expected=expected,
        actual=actual_s,
    )


# --- verification -----------------------------------------------------------


def verify_bytes(data: bytes | memoryview, integrity: str | Integrity, where: str = "") -> None:
    """Raise :class:`DigestMismatchError` unless ``data`` matches ``integrity``."""
    integ = _coerce(integrity, where)
    actual = hash_bytes(data, integ.algorithm)
    if not integ.matches(actual):
        raise _mismatch(integ, actual, where)


def verify_stream(
    stream: BinaryIO,
    integrity: str | Integrity,
    where: str = "",
    progress: Callable[[int], None] | None = None,
) -> None:
    """Like :func:`verify_bytes` for a binary stream, in constant memory."""
    integ = _coerce(integrity, where)
    actual = hash_stream(stream, integ.algorithm, progress)
    if not integ.matches(actual):
        raise _mismatch(integ, actual, where)


def verify_file(
    path: Path,
    integrity: str | Integrity,
    where: str = "",
    progress: Callable[[int], None] | None = None,
) -> None:
    """Like :func:`verify_bytes` for the file at ``path``."""
    integ = _coerce(integrity, where or str(path))
    actual = hash_file(path, integ.algorithm, progress)
    if not integ.matches(actual):
        raise _mismatch(integ, actual, where or str(path))


class StreamVerifier:
    """Incremental verification for data that arrives in chunks (downloads)."""

    def __init__(self, integrity: str | Integrity, where: str = "") -> None:
        self.integrity = _coerce(integrity, where)
        self.where = where
        self._h = hashlib.new(self.integrity.algorithm)
        self.bytes_seen = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._h.update(chunk)
        self.bytes_seen += len(chunk)

    def digest(self) -> bytes:
        return self._h.digest()

    def verify(self) -> None:
        actual = self._h.digest()
        if not self.integrity.matches(actual):
            raise _mismatch(self.integrity, actual, self.where)
