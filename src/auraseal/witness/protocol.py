"""The C2SP tlog-witness ``add-checkpoint`` request body, built and parsed strictly.

::

    old <size>\n
    <base64 consistency proof hash>\n      (zero to 63 lines)
    \n
    <signed checkpoint note>
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from auraseal.errors import MalformedNoteError

__all__ = [
    "MAX_BODY",
    "MAX_PROOF",
    "SIZE_TYPE",
    "AddCheckpoint",
    "build_add_checkpoint",
    "parse_add_checkpoint",
    "parse_size_response",
]

MAX_PROOF = 63
MAX_BODY = 64 * 1024
#: Content-Type of a 409 Conflict response body (the witness's known size).
SIZE_TYPE = "text/x.tlog.size"
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")
_SIZE = re.compile(r"(0|[1-9][0-9]{0,19})\n")


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes


def build_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str | bytes) -> bytes:
    raw = note.encode("utf-8") if isinstance(note, str) else note
    lines = [f"old {old_size}\n".encode()]
    lines += [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + raw


def parse_add_checkpoint(body: bytes, where: str = "add-checkpoint") -> AddCheckpoint:
    """Parse a request body; raise :class:`MalformedNoteError` (400) if malformed."""
    if len(body) > MAX_BODY:
        raise MalformedNoteError("request body too large", where)
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise MalformedNoteError("no blank line before the checkpoint", where)
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as exc:
        raise MalformedNoteError("non-ASCII request header", where) from exc
    m = _OLD.fullmatch(lines[0])
    if m is None:
        raise MalformedNoteError("first line must be 'old <size>'", where)
    if len(lines) - 1 > MAX_PROOF:
        raise MalformedNoteError(f"more than {MAX_PROOF} proof lines", where)
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedNoteError("proof line is not base64", where) from exc
        if len(h) != 32 or base64.b64encode(h).decode() != line:
            raise MalformedNoteError("proof line is not a canonical base64 hash", where)
        proof.append(h)
    return AddCheckpoint(int(m.group(1)), tuple(proof), note)


def parse_size_response(body: bytes, where: str = "witness") -> int:
    """The ``text/x.tlog.size`` body of a 409: ``<decimal>\\n``."""
    m = _SIZE.fullmatch(body.decode("ascii", "replace"))
    if m is None:
        raise MalformedNoteError("malformed tree size in 409 response", where)
    return int(m.group(1))
