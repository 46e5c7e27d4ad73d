"""Publishing the ledger as a C2SP tlog-tiles log: served over HTTP or written to a
directory for any static host / CDN.

The tiles are a pure function of the committed tree (:mod:`auraseal.ledger.tiles`
says which exist); :meth:`Ledger.tile` reads one from the stored nodes.  Every
server sharing one database therefore serves byte-identical tiles, and a
directory written by :class:`TileWriter` holds the same bytes.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from auraseal._fs import atomic_write_bytes, clean_stale_temps, file_lock
from auraseal.errors import AuraSealError, InputError, NotFoundError, StorageError
from auraseal.ledger.checkpoint import Checkpoint
from auraseal.ledger.note import Ed25519NoteSigner, open_note, sign_note
from auraseal.ledger.tiles import Tile, new_tiles, parse_tile_path, tiles_for_size

if TYPE_CHECKING:
    from auraseal.ledger.service import Ledger

__all__ = [
    "CHECKPOINT_CACHE",
    "CHECKPOINT_TYPE",
    "FULL_TILE_CACHE",
    "PARTIAL_TILE_CACHE",
    "Cosigner",
    "LogFile",
    "TileCache",
    "TileWriter",
    "log_file",
    "signed_log_checkpoint",
    "write_tiles",
]

FULL_TILE_CACHE = "public, max-age=31536000, immutable"
PARTIAL_TILE_CACHE = "public, max-age=60"
CHECKPOINT_CACHE = "no-cache"
CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"

#: Adds witness cosignatures to a signed checkpoint note (see auraseal.witness.client).
Cosigner = Callable[[str], str]


@dataclass(frozen=True)
class LogFile:
    """One file of the tile tree: bytes, content type and Cache-Control value."""

    data: bytes
    content_type: str
    cache_control: str


def signed_log_checkpoint(ledger: Ledger, signer: Ed25519NoteSigner,
                          cosigner: Cosigner | None = None) -> tuple[Checkpoint, str]:
    """The checkpoint of the committed tree, signed (and cosigned if ``cosigner``)."""
    cp = ledger.checkpoint()
    note = sign_note(cp.body(), [signer])
    if cosigner is not None:
        note = cosigner(note)
    return cp, note


class TileCache:
    """An LRU of *full* tiles (immutable: a full tile's bytes never change), bounded
    by total bytes; keyed by the log origin too."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, Tile], bytes] = OrderedDict()
        self._bytes = 0

    def get(self, ledger: Ledger, tile: Tile) -> bytes:
        if not tile.full:
            return ledger.tile(tile)
        key = (ledger.origin, tile)
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
            return data
        data = ledger.tile(tile)
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)
        return data


def log_file(ledger: Ledger, path: str, signer: Ed25519NoteSigner,
             cache: TileCache | None = None) -> LogFile:
    """``checkpoint`` or a ``tile/...`` path of the log, as served under ``/ledger/log/``.

    Full tiles never change (``immutable``); a partial tile of width W never
    changes either but may be superseded, so it is cached briefly.
    """
    if path == "checkpoint":
        _, note = signed_log_checkpoint(ledger, signer)
        return LogFile(note.encode("utf-8"), CHECKPOINT_TYPE, CHECKPOINT_CACHE)
    try:
        tile = parse_tile_path(path)
    except InputError as exc:
        raise NotFoundError("no such log file", path[:80]) from exc
    data = cache.get(ledger, tile) if cache is not None else ledger.tile(tile)
    return LogFile(data, TILE_TYPE, FULL_TILE_CACHE if tile.full else PARTIAL_TILE_CACHE)


def _dir_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    return file_lock(out / ".auraseal-tiles.lock", 0o644)


@dataclass
class TileWriter:
    """Writes the log's tile tree into ``out`` for a static host.

    Only tiles not already present are written (a tile's bytes at a given
    path never change); the ``checkpoint`` is written last, and never replaced
    by one of a smaller tree (several writers may share ``out``).  Every file
    is written atomically (temp file, fsync, rename).
    """

    out: Path
    signer: Ed25519NoteSigner
    cosigner: Cosigner | None = None
    #: skip :meth:`update` calls less than this many seconds after the last one
    #: (``force=True`` and :meth:`flush` always write); 0 updates on every call
    min_interval: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _last: float | None = None
    _stale: bool = False
    _cleaned: set[Path] = field(default_factory=set)
    #: tree size whose tiles this writer knows are all in ``out`` (-1: scan once)
    _done: int = -1

    def _published_size(self) -> int:
        try:
            raw = (self.out / "checkpoint").read_bytes()
        except FileNotFoundError:
            return -1
        except OSError as exc:
            raise StorageError(f"cannot read: {exc.strerror}", str(self.out / "checkpoint")
                               ) from exc
        try:
            note, _ = open_note(raw, [self.signer.verifier()], str(self.out / "checkpoint"))
            return Checkpoint.parse_body(note.text).size
        except AuraSealError:
            return -1  # not ours or damaged: rewrite it

    def _write(self, path: Path, data: bytes) -> None:
        parent = path.parent
        if parent not in self._cleaned:
            parent.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(parent, {"write"})
            self._cleaned.add(parent)
        atomic_write_bytes(path, data)

    def missing(self, size: int) -> list[Tile]:
        """Tiles of the tree of ``size`` not in ``out``: after the first scan, only the
        tiles that changed since the last size this writer completed (``NewTiles``)."""
        if 0 <= self._done <= size:
            candidates = new_tiles(self._done, size)
        else:
            candidates = tiles_for_size(size)
        return [t for t in candidates if not (self.out / t.path()).exists()]

    def update(self, ledger: Ledger, *, force: bool = False) -> dict[str, int]:
        """Write the new tiles and the checkpoint of ``ledger``'s committed tree.

        Within ``min_interval`` of the previous update nothing is written (the
        result has ``skipped: 1``) until the next call after it, or :meth:`flush`.
        """
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.min_interval:
            self._stale = True
            return {"tree_size": self._done, "tiles_written": 0, "checkpoint_written": 0,
                    "skipped": 1}
        self._last, self._stale = now, False
        with _dir_lock(self.out):
            cp, note = signed_log_checkpoint(ledger, self.signer, self.cosigner)
            todo = self.missing(cp.size)
            for tile in todo:
                self._write(self.out / tile.path(), ledger.tile(tile, cp.size))
            self._done = cp.size
            published = self._published_size()
            wrote_cp = cp.size >= published
            if wrote_cp:
                self._write(self.out / "checkpoint", note.encode("utf-8"))
        return {"tree_size": cp.size, "tiles_written": len(todo),
                "checkpoint_written": int(wrote_cp), "skipped": 0}

    def flush(self, ledger: Ledger) -> None:
        """Write what an update skipped within ``min_interval``, if anything."""
        if self._stale:
            self.update(ledger, force=True)


def write_tiles(ledger: Ledger, out: Path, signer: Ed25519NoteSigner,
                cosigner: Cosigner | None = None) -> dict[str, int]:
    """:class:`TileWriter` once."""
    return TileWriter(out, signer, cosigner).update(ledger)
