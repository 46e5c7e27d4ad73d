"""The append-only JSONL mirror of a ledger (the seed's ``record_type`` lines).

Fsync policy (``fsync=``): ``"block"`` (default) writes every acknowledged
entry line with ``write(2)`` before the call returns and fsyncs the file when
a block line is written and on close; ``"always"`` fsyncs after every append;
``"never"`` leaves it to the OS.  Appends take an exclusive ``flock`` so
several processes can share one file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auraseal._canonical import canonical_json
from auraseal.errors import InputError, StorageError, UsageError
from auraseal.ledger._model import FORMAT_VERSION, Block, Entry

__all__ = [
    "FSYNC_POLICIES",
    "JsonlContents",
    "JsonlMirror",
    "canonical_line_key",
    "line_key",
    "reconcile_line",
    "record_line",
]

FSYNC_POLICIES = ("always", "block", "never")


def line_key(line: bytes) -> bytes:
    """How :meth:`JsonlMirror.read` keys an entry line: SHA-256 of its bytes."""
    return hashlib.sha256(line).digest()


def canonical_line_key(rec: dict[str, Any]) -> bytes:
    """The :func:`line_key` of ``rec`` written canonically (RFC 8785 JSON, ``\\n``).

    An entry line AuraSeal writes *is* the canonical JSON of its record, so a
    line in another layout (spaces, CRLF, key order, escapes) that holds the
    same record has the same key; one with any other content does not.
    """
    return line_key(canonical_json(rec) + b"\n")


def record_line(record: dict[str, Any]) -> bytes:
    return canonical_json(record) + b"\n"


def reconcile_line(count: int, timestamp: str) -> bytes:
    """The marker :meth:`Ledger.reconcile` writes before the ``count`` entry lines it
    appends late (so that their place in the file is not taken for tampering)."""
    return record_line({"record_type": "reconcile", "v": FORMAT_VERSION, "entries": count,
                        "timestamp": timestamp})


@dataclass
class JsonlContents:
    """What a JSONL mirror holds: entry line keys -> line number, blocks in file order,
    bad lines.  Entries are kept only as a 32-byte key, so a million-line mirror fits
    in memory.
    """

    entries: dict[bytes, int] = field(default_factory=dict)
    blocks: list[tuple[int, Block]] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    torn_tail: int | None = None  # line number of an unterminated last line
    lines: int = 0
    #: (first, last) line numbers of the entry lines each reconcile marker announces
    reconciled: list[tuple[int, int]] = field(default_factory=list)
    #: entry lines not in AuraSeal's byte layout, keyed by their canonical form
    reserialized: int = 0


class JsonlMirror:
    """Append-only JSONL file; see the module docstring for the fsync policy."""

    def __init__(self, path: Path, fsync: str = "block") -> None:
        if fsync not in FSYNC_POLICIES:
            raise UsageError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}", "fsync")
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None
        self._held = False

    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            except OSError as exc:
                raise StorageError(f"cannot open JSONL mirror: {exc.strerror}", str(self.path)) \
                    from exc
        return self._fd

    def append(self, records: Sequence[dict[str, Any]], *, sync: bool = False) -> None:
        """Append records as lines, atomically with respect to other writers."""
        self.append_lines([record_line(r) for r in records], sync=sync)

    def append_lines(self, lines: Sequence[bytes], *, sync: bool = False) -> None:
        """Append ready-made lines (each ending in a newline)."""
        data = b"".join(lines)
        fd = self._open()
        try:
            if not self._held:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size:
                    # a torn last line stays a (reported) bad line of its own
                    with open(self.path, "rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            data = b"\n" + data
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                if self.fsync == "always" or (sync and self.fsync == "block"):
                    os.fsync(fd)
            finally:
                if not self._held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise StorageError(f"cannot append to JSONL mirror: {exc.strerror}", str(self.path)) \
                from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's append lock (so a block commit and its line stay in order)."""
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StorageError(f"cannot lock JSONL mirror: {exc.strerror}", str(self.path)) \
                from exc
        self._held = True
        try:
            yield
        finally:
            self._held = False
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)

    def sync(self) -> None:
        if self._fd is not None and self.fsync != "never":
            try:
                os.fsync(self._fd)
            except OSError as exc:
                raise StorageError(f"cannot fsync JSONL mirror: {exc.strerror}", str(self.path)) \
                    from exc

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.sync()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def read(self) -> JsonlContents:
        """Index the whole file; malformed lines are collected, not raised.

        Entry lines are keyed by the SHA-256 of their bytes (:func:`line_key`):
        a line written by AuraSeal is byte-for-byte :meth:`Entry.jsonl_line`,
        so comparing with the database needs no JSON parsing.  Other lines are
        parsed and keyed by their canonical form (:func:`canonical_line_key`);
        so are, later, entry lines that match no database entry as written
        (:meth:`canonical_keys`).  Reconcile markers are collected too.
        """
        out = JsonlContents()
        try:
            fh = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return out
        except OSError as exc:
            raise StorageError(f"cannot read JSONL mirror: {exc.strerror}", str(self.path)) \
                from exc
        sha = hashlib.sha256
        entries = out.entries
        with fh:
            lineno = 0
            for raw in fh:
                lineno += 1
                if not raw.endswith(b"\n"):
                    out.torn_tail = lineno
                    out.bad_lines.append((lineno, "torn last line"))
                    continue
                if raw.startswith(b'{"data_hash":') and not raw.endswith(b"\r\n"):
                    key = sha(raw).digest()  # as written; other layouts: canonical_keys
                else:
                    try:
                        rec = json.loads(raw)
                        if not isinstance(rec, dict):
                            raise InputError("not a JSON object")
                        kind = rec.get("record_type")
                        if kind == "block":
                            out.blocks.append((lineno, Block.from_json(rec)))
                            continue
                        if kind == "reconcile":
                            count = rec.get("entries")
                            if type(count) is not int or count < 0:
                                raise InputError("reconcile marker without an entry count")
                            out.reconciled.append((lineno + 1, lineno + count))
                            continue
                        if kind != "entry":
                            raise InputError(f"unknown record_type {kind!r}")
                        Entry.from_json(rec)  # well-formed
                        key = canonical_line_key(rec)
                        out.reserialized += 1
                    except (ValueError, InputError, TypeError) as exc:
                        out.bad_lines.append((lineno, f"unreadable line: {exc}"))
                        continue
                if key in entries:
                    out.bad_lines.append((lineno, "entry line appears twice"))
                else:
                    entries[key] = lineno
            out.lines = lineno
        return out

    def canonical_keys(self, linenos: set[int]) -> dict[int, bytes]:
        """For these line numbers, if they hold an entry record: its
        :func:`canonical_line_key` (so a re-serialized line matches its entry)."""
        out: dict[int, bytes] = {}
        for lineno, raw in self._lines(linenos):
            with contextlib.suppress(ValueError, InputError, TypeError):
                rec = json.loads(raw)
                if isinstance(rec, dict) and rec.get("record_type") == "entry":
                    out[lineno] = canonical_line_key(rec)
        return out

    def describe_lines(self, linenos: set[int]) -> dict[int, tuple[str | None, str | None]]:
        """For these line numbers: ``(entry_id, None)`` if readable, else ``(None, why)``."""
        out: dict[int, tuple[str | None, str | None]] = {}
        for lineno, raw in self._lines(linenos):
            try:
                out[lineno] = (Entry.from_json(json.loads(raw)).entry_id, None)
            except (ValueError, InputError, AttributeError, TypeError) as exc:
                out[lineno] = (None, f"unreadable line: {exc}")
        return out

    def _lines(self, linenos: set[int]) -> list[tuple[int, bytes]]:
        """The raw lines with these (1-based) numbers; none if the file cannot be read."""
        if not linenos:
            return []
        try:
            with open(self.path, "rb") as fh:
                return [(n, raw) for n, raw in enumerate(fh, 1) if n in linenos]
        except OSError:
            return []

    def drop_torn_tail(self) -> bool:
        """Cut an unterminated last line (a torn write); True if one was cut."""
        try:
            with open(self.path, "r+b") as fh:
                data = fh.read()
                if not data or data.endswith(b"\n"):
                    return False
                cut = data.rfind(b"\n") + 1
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
                return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot repair JSONL mirror: {exc.strerror}", str(self.path)) \
                from exc
