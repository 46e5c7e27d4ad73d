"""The part file format (``docs/FORMAT.md`` §3): a 128-byte header, the payload,
and a 40-byte footer with SHA-256 and CRC-32 of header and payload.

All integers are unsigned little-endian. Parsing raises only
:class:`~auraseal.errors.PartFormatError` (shape) and
:class:`~auraseal.errors.ChecksumError` (footer).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from auraseal.errors import ChecksumError, PartFormatError

__all__ = [
    "CODECS",
    "DIGEST_ALGS",
    "ENGINES",
    "FOOTER_MAGIC",
    "FOOTER_SIZE",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PARTS",
    "PartFooter",
    "PartHasher",
    "PartHeader",
    "build_part",
    "parse_part",
    "stripe_spans",
]

MAGIC = b"\x89ASPART\n"
FOOTER_MAGIC = b"ASPF"
FORMAT_VERSION = 1
HEADER_SIZE = 128
FOOTER_SIZE = 40
MAX_PARTS = 256

CODECS: dict[str, int] = {"none": 0, "huffman": 1, "zstd": 2}
ENGINES: dict[str, int] = {"zfec": 1, "isa_l": 2, "pyeclib": 3}
DIGEST_ALGS: dict[str, int] = {"sha256": 1, "sha384": 2, "sha512": 3}
_DIGEST_LEN = {"sha256": 32, "sha384": 48, "sha512": 64}

# magic, version, header_size, part_number, total_parts, k, codec, engine,
# digest_alg, reserved(3), component_size, compressed_size, stripe_size,
# fragment_size, payload_size, component_digest(64)
_HEADER = struct.Struct("<8sHHHHHBBB3sQQQQQ64s")
_FOOTER = struct.Struct("<32sI4s")
assert _HEADER.size == HEADER_SIZE
assert _FOOTER.size == FOOTER_SIZE


def _name_of(table: dict[str, int], code: int) -> str | None:
    for name, c in table.items():
        if c == code:
            return name
    return None


def stripe_spans(compressed_size: int, stripe_size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of each stripe of a compressed stream (at least one)."""
    if stripe_size < 1:
        raise PartFormatError("stripe_size must be >= 1", "stripe_size")
    if compressed_size == 0:
        return [(0, 0)]
    return [
        (off, min(stripe_size, compressed_size - off))
        for off in range(0, compressed_size, stripe_size)
    ]


@dataclass(frozen=True)
class PartHeader:
    """The fixed 128-byte header of a part file."""

    part_number: int
    total_parts: int
    k: int
    codec: str
    engine: str
    digest_alg: str
    component_size: int
    compressed_size: int
    stripe_size: int
    fragment_size: int
    payload_size: int
    component_digest: bytes
    version: int = FORMAT_VERSION

    @property
    def m(self) -> int:
        return self.total_parts - self.k

    @property
    def stripes(self) -> int:
        if self.compressed_size == 0:
            return 1
        return -(-self.compressed_size // self.stripe_size)

    @property
    def last_fragment_size(self) -> int:
        return self.payload_size - (self.stripes - 1) * self.fragment_size

    @property
    def file_size(self) -> int:
        return HEADER_SIZE + self.payload_size + FOOTER_SIZE

    def fragment_span(self, stripe: int) -> tuple[int, int]:
        """``(offset within the part file, length)`` of this part's fragment of ``stripe``."""
        length = self.fragment_size if stripe < self.stripes - 1 else self.last_fragment_size
        return HEADER_SIZE + stripe * self.fragment_size, length

    def with_number(self, number: int) -> PartHeader:
        return PartHeader(
            number,
            self.total_parts,
            self.k,
            self.codec,
            self.engine,
            self.digest_alg,
            self.component_size,
            self.compressed_size,
            self.stripe_size,
            self.fragment_size,
            self.payload_size,
            self.component_digest,
            self.version,
        )

    def check(self, where: str = "") -> None:
        """Raise :class:`PartFormatError` unless every field is in range and consistent."""
        if self.version != FORMAT_VERSION:
            raise PartFormatError(f"unsupported part format version {self.version}", where)
        if not 2 <= self.total_parts <= MAX_PARTS:
            raise PartFormatError(f"total_parts {self.total_parts} not in 2..256", where)
        if not 1 <= self.k < self.total_parts:
            raise PartFormatError(f"k {self.k} not in 1..total_parts-1", where)
        if not 0 <= self.part_number < self.total_parts:
            raise PartFormatError(f"part_number {self.part_number} >= total_parts", where)
        if self.codec not in CODECS:
            raise PartFormatError(f"unknown codec {self.codec!r}", where)
        if self.engine not in ENGINES:
            raise PartFormatError(f"unknown engine {self.engine!r}", where)
        if self.digest_alg not in DIGEST_ALGS:
            raise PartFormatError(f"unknown digest algorithm {self.digest_alg!r}", where)
        if len(self.component_digest) != _DIGEST_LEN[self.digest_alg]:
            raise PartFormatError("component digest has the wrong length", where)
        if self.stripe_size < 1 or self.fragment_size < 1:
            raise PartFormatError("stripe_size and fragment_size must be >= 1", where)
        if self.codec == "none" and self.compressed_size != self.component_size:
            raise PartFormatError("codec none needs compressed_size == component_size", where)
        if self.payload_size >= 1 << 48 or self.compressed_size >= 1 << 48:
            raise PartFormatError("sizes beyond 256 TiB", where)
        last = self.last_fragment_size
        if not 1 <= last <= self.fragment_size:
            raise PartFormatError("payload_size does not fit stripes x fragment_size", where)

    def pack(self) -> bytes:
        self.check("header")
        return _HEADER.pack(
            MAGIC,
            self.version,
            HEADER_SIZE,
            self.part_number,
            self.total_parts,
            self.k,
            CODECS[self.codec],
            ENGINES[self.engine],
            DIGEST_ALGS[self.digest_alg],
            b"\0\0\0",
            self.component_size,
            self.compressed_size,
            self.stripe_size,
            self.fragment_size,
            self.payload_size,
            self.component_digest.ljust(64, b"\0"),
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, where: str = "") -> PartHeader:
        if len(data) < HEADER_SIZE:
            raise PartFormatError(f"truncated header ({len(data)} < {HEADER_SIZE} bytes)", where)
        (
            magic,
            version,
            header_size,
            number,
            total,
            k,
            codec,
            engine,
            alg,
            reserved,
            csize,
            comp,
            stripe,
            frag,
            payload,
            digest,
        ) = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise PartFormatError("not an AuraSeal part file (bad magic)", where)
        if version != FORMAT_VERSION:
            raise PartFormatError(f"unsupported part format version {version}", where)
        if header_size != HEADER_SIZE:
            raise PartFormatError(f"header_size {header_size} != {HEADER_SIZE}", where)
        if reserved != b"\0\0\0":
            raise PartFormatError("reserved header bytes are not zero", where)
        codec_name = _name_of(CODECS, codec)
        engine_name = _name_of(ENGINES, engine)
        alg_name = _name_of(DIGEST_ALGS, alg)
        if codec_name is None:
            raise PartFormatError(f"unknown codec id {codec}", where)
        if engine_name is None:
            raise PartFormatError(f"unknown engine id {engine}", where)
        if alg_name is None:
            raise PartFormatError(f"unknown digest algorithm id {alg}", where)
        dlen = _DIGEST_LEN[alg_name]
        if any(digest[dlen:]):
            raise PartFormatError("component digest padding is not zero", where)
        header = cls(
            number,
            total,
            k,
            codec_name,
            engine_name,
            alg_name,
            csize,
            comp,
            stripe,
            frag,
            payload,
            bytes(digest[:dlen]),
            version,
        )
        header.check(where)
        return header

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.version,
            "part_number": self.part_number,
            "total_parts": self.total_parts,
            "k": self.k,
            "m": self.m,
            "codec": self.codec,
            "engine": self.engine,
            "digest_alg": self.digest_alg,
            "component_size": self.component_size,
            "compressed_size": self.compressed_size,
            "stripe_size": self.stripe_size,
            "fragment_size": self.fragment_size,
            "payload_size": self.payload_size,
            "stripes": self.stripes,
            "component_digest": self.component_digest.hex(),
        }


@dataclass(frozen=True)
class PartFooter:
    """The 40-byte footer: SHA-256 and CRC-32 of header and payload."""

    sha256: bytes
    crc32: int

    def pack(self) -> bytes:
        return _FOOTER.pack(self.sha256, self.crc32, FOOTER_MAGIC)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, where: str = "") -> PartFooter:
        if len(data) != FOOTER_SIZE:
            raise PartFormatError("truncated footer", where)
        sha, crc, magic = _FOOTER.unpack(data)
        if magic != FOOTER_MAGIC:
            raise PartFormatError("bad footer magic", where)
        return cls(bytes(sha), crc)

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256.hex(), "crc32": f"{self.crc32:08x}"}


class PartHasher:
    """Running SHA-256 + CRC-32 over header ‖ payload, then over the whole file.

    One pass gives the footer's digests and the whole-file SHA-256 the
    manifest records (``hashlib`` copies, no second read).
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._crc = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha.update(data)
        self._crc = zlib.crc32(data, self._crc)

    def footer(self) -> PartFooter:
        return PartFooter(self._sha.copy().digest(), self._crc)

    def file_digest(self, footer: bytes) -> bytes:
        """SHA-256 of header ‖ payload ‖ ``footer``."""
        h = self._sha.copy()
        h.update(footer)
        return h.digest()


def build_part(header: PartHeader, payload: bytes | bytearray | memoryview) -> bytes:
    """A complete part file (header, payload, footer) in memory."""
    if len(payload) != header.payload_size:
        raise PartFormatError("payload length differs from payload_size", "payload")
    head = header.pack()
    hasher = PartHasher()
    hasher.update(head)
    hasher.update(payload)
    return b"".join((head, payload, hasher.footer().pack()))


def parse_part(
    data: bytes | bytearray | memoryview, where: str = ""
) -> tuple[PartHeader, PartFooter, memoryview]:
    """Parse and check a whole part file: ``(header, footer, payload view)``."""
    view = memoryview(data)
    header = PartHeader.unpack(view, where)
    if len(view) != header.file_size:
        raise PartFormatError(f"part is {len(view)} bytes, header says {header.file_size}", where)
    footer = PartFooter.unpack(view[-FOOTER_SIZE:], where)
    body = view[:-FOOTER_SIZE]
    sha = hashlib.sha256(body).digest()
    if not hmac.compare_digest(sha, footer.sha256):
        raise ChecksumError("part footer SHA-256 does not match header and payload", where)
    if zlib.crc32(body) != footer.crc32:
        raise ChecksumError("part footer CRC-32 does not match header and payload", where)
    return header, footer, view[HEADER_SIZE:-FOOTER_SIZE]
