"""C2SP tlog-tiles math: pure functions over tree sizes and bytes (no I/O).

A tree of ``size`` leaves is published as tiles of width 256:

* ``tile/<L>/<N>`` — the 256 hashes of the complete subtrees of height
  ``8·L`` with indexes ``[256·N, 256·N + 256)`` (level 0: the leaf hashes);
  ``tile/<L>/<N>.p/<W>`` — the first ``W`` (1..255) of them, while the tile
  is not full.
* ``tile/entries/<N>[.p/<W>]`` — the entry bundle of the same leaves: each leaf's
  bytes as ``u16be(len) || bytes``, so ``SHA-256(0x00 || bytes)`` is the
  leaf hash at level 0.

``N`` is written in 3-digit groups, all but the last with an ``x`` prefix:
``1234067`` → ``x001/x234/067``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from auraseal import merkle
from auraseal.errors import InputError, MerkleProofError

__all__ = [
    "ENTRIES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "Tile",
    "encode_index",
    "entry_bundle",
    "hash_tile",
    "new_tiles",
    "parse_entry_bundle",
    "parse_hash_tile",
    "parse_tile_path",
    "tile_exists",
    "tiles_for_size",
]

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
#: ``Tile.level`` of entry bundles (``tile/entries/...``).
ENTRIES = -1
_MAX_LEAF = 0xFFFF


@dataclass(frozen=True, order=True)
class Tile:
    """Tile ``index`` at ``level`` (``ENTRIES`` for entry bundles), ``width`` 1..256."""

    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def start(self) -> int:
        """Index of the first hash (at tree level ``8·level``) the tile holds."""
        return self.index * TILE_WIDTH

    def node_coords(self) -> tuple[int, int, int]:
        """``(tree level, first index, end index)`` of the stored nodes it lists."""
        level = 0 if self.level == ENTRIES else TILE_HEIGHT * self.level
        return level, self.start, self.start + self.width

    def path(self) -> str:
        name = "entries" if self.level == ENTRIES else str(self.level)
        part = "" if self.full else f".p/{self.width}"
        return f"tile/{name}/{encode_index(self.index)}{part}"


def encode_index(n: int) -> str:
    """``1234067`` → ``x001/x234/067`` (tlog-tiles path encoding)."""
    if n < 0:
        raise InputError("tile index is negative", "tile")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


_PATH = re.compile(
    r"tile/(entries|0|[1-9][0-9]{0,1})/((?:x[0-9]{3}/)*)([0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def parse_tile_path(path: str) -> Tile:
    """Parse a tile path strictly (canonical encoding only); raise :class:`InputError`."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise InputError("not a tile path", path[:80])
    groups = [g[1:] for g in m.group(2).split("/") if g] + [m.group(3)]
    if len(groups) > 1 and groups[0] == "000":
        raise InputError("tile index has a leading zero group", path[:80])
    index = 0
    for g in groups:
        index = index * 1000 + int(g)
    width = TILE_WIDTH
    if m.group(4) is not None:
        width = int(m.group(4))
        if width >= TILE_WIDTH:
            raise InputError("partial tile width must be 1..255", path[:80])
    level = ENTRIES if m.group(1) == "entries" else int(m.group(1))
    return Tile(level, index, width)


def _count(size: int, level: int) -> int:
    """Hashes at tile ``level`` (tree level ``8·level``) of a tree of ``size`` leaves."""
    return size >> (TILE_HEIGHT * max(level, 0))


def tile_exists(tile: Tile, size: int) -> bool:
    """Whether a tree of ``size`` leaves determines ``tile`` (full, or partial of its width)."""
    return tile.index >= 0 and tile.width > 0 and tile.start + tile.width <= _count(size,
                                                                                   tile.level)


def new_tiles(old_size: int, new_size: int, *, entries: bool = True) -> list[Tile]:
    """Tiles of a tree of ``new_size`` that a tree of ``old_size`` did not have
    (Go's ``tlog.NewTiles``); with ``entries``, the entry bundles too."""
    if not 0 <= old_size <= new_size:
        raise MerkleProofError(f"tree cannot shrink from {old_size} to {new_size}", "tiles")
    out: list[Tile] = []
    level = 0
    while _count(new_size, level) > 0:
        old_n, new_n = _count(old_size, level), _count(new_size, level)
        if old_n != new_n:
            levels = [level, ENTRIES] if level == 0 and entries else [level]
            for lv in levels:
                out.extend(Tile(lv, n) for n in range(old_n // TILE_WIDTH, new_n // TILE_WIDTH))
                if w := new_n % TILE_WIDTH:
                    out.append(Tile(lv, new_n // TILE_WIDTH, w))
        level += 1
    return out


def tiles_for_size(size: int, *, entries: bool = True) -> list[Tile]:
    """Every tile of a tree of ``size`` leaves (full tiles and the last partial ones)."""
    return new_tiles(0, size, entries=entries)


def hash_tile(hashes: Sequence[bytes]) -> bytes:
    """A hash tile's bytes: the hashes concatenated."""
    if any(len(h) != merkle.HASH_SIZE for h in hashes):
        raise MerkleProofError("tile hashes must be 32 bytes", "tile")
    return b"".join(hashes)


def parse_hash_tile(data: bytes, width: int) -> list[bytes]:
    if len(data) != width * merkle.HASH_SIZE:
        raise MerkleProofError(f"hash tile is {len(data)} bytes, want {width * 32}", "tile")
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def entry_bundle(leaves: Sequence[bytes]) -> bytes:
    """An entry bundle: ``u16be(len) || leaf`` for each leaf."""
    parts: list[bytes] = []
    for leaf in leaves:
        if len(leaf) > _MAX_LEAF:
            raise InputError(f"leaf of {len(leaf)} bytes exceeds 65535", "entry bundle")
        parts.append(len(leaf).to_bytes(2, "big"))
        parts.append(leaf)
    return b"".join(parts)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    """The leaves of an entry bundle; raise on a truncated one."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise MerkleProofError("truncated entry bundle", "entry bundle")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise MerkleProofError("truncated entry bundle", "entry bundle")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out
