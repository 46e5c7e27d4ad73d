"""SQLite ledger store: the embedded default (WAL, batched commits)."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from auraseal import merkle
from auraseal.errors import LedgerError, StorageError
from auraseal.ledger._model import Block, Entry
from auraseal.ledger.stores._base import AppendPlan, Store, plan_append

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    block_number INTEGER PRIMARY KEY,
    previous_hash TEXT NOT NULL,
    block_hash TEXT UNIQUE NOT NULL,
    merkle_root TEXT NOT NULL,
    tree_size INTEGER NOT NULL,
    tree_root TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    data_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    block_number INTEGER REFERENCES blocks(block_number),
    leaf_index INTEGER UNIQUE,
    entry_type TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    signature TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_pending ON entries(seq) WHERE block_number IS NULL;
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
"""

_ENTRY_SELECT = (
    "SELECT id, entry_type, data_hash, metadata, created_at, signature, block_number,"
    " leaf_index FROM entries"
)
_PENDING_SELECT = (
    "SELECT seq, id, entry_type, data_hash, metadata, created_at, signature, block_number,"
    " leaf_index FROM entries WHERE block_number IS NULL ORDER BY seq LIMIT ?"
)


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


_BLOCK_SELECT = (
    "SELECT block_number, previous_hash, block_hash, merkle_root, tree_size, tree_root,"
    " timestamp, data_count FROM blocks"
)


def _block(row: Sequence[Any] | None) -> Block | None:
    return None if row is None else Block(*row)


class SQLiteStore(Store):
    """A ledger in one SQLite file (``sqlite:///abs/path.db``)."""

    kind = "sqlite"

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{self.path.resolve()}"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA cache_size=-131072")
            self._db.execute("PRAGMA temp_store=MEMORY")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open SQLite ledger: {exc}", str(self.path)) from exc
        self.migrate()

    # --- transactions -------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot lock SQLite ledger: {exc}", str(self.path)) from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StorageError(f"SQLite commit failed: {exc}", str(self.path)) from exc

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite query failed: {exc}", str(self.path)) from exc

    # --- Store --------------------------------------------------------------

    def migrate(self) -> None:
        try:
            with self._tx() as db:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?), ('origin', ?)",
                        (str(SCHEMA_VERSION), f"auraseal/ledger/{uuid.uuid4().hex[:16]}"),
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger schema version {row[0]} is newer than this AuraSeal", self.url
                    )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot create ledger schema: {exc}", str(self.path)) from exc

    def _locked_state(
        self, db: sqlite3.Connection, pending_limit: int | None
    ) -> tuple[Block | None, list[bytes], list[tuple[int, Entry]]]:
        head = _block(
            db.execute(
                _BLOCK_SELECT + " ORDER BY block_number DESC LIMIT 1"
            ).fetchone()
        )
        rows = db.execute(
            _PENDING_SELECT,
            (-1 if pending_limit is None else pending_limit,),
        ).fetchall() if pending_limit != 0 else []
        coords = merkle.compact_range_coords(head.tree_size if head else 0)
        have = self._nodes_in(db, coords)
        try:
            frontier = [have[c] for c in coords]
        except KeyError as exc:
            raise LedgerError(f"tree node {exc} is missing; run verify", self.url) from exc
        return head, frontier, [(int(r[0]), _entry(r[1:])) for r in rows]

    @staticmethod
    def _apply(db: sqlite3.Connection, plan: AppendPlan[int]) -> None:
        db.executemany(
            "INSERT INTO blocks (block_number, previous_hash, block_hash, merkle_root,"
            " tree_size, tree_root, timestamp, data_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (b.block_number, b.previous_hash, b.block_hash, b.merkle_root, b.tree_size,
                 b.tree_root, b.timestamp, b.data_count)
                for b in plan.blocks
            ],
        )
        if plan.moved:
            db.executemany(
                "UPDATE entries SET block_number = ?, leaf_index = ? WHERE seq = ?",
                [(n, i, k) for k, n, i in plan.moved],
            )
        db.executemany(
            "INSERT INTO entries (id, entry_type, data_hash, metadata, created_at, signature,"
            " block_number, leaf_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.entry_id, e.entry_type, e.data_hash, e.metadata_json, e.timestamp,
                 e.signature, n, i)
                for e, n, i in plan.placed
            ],
        )
        db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", plan.nodes)

    def append(
        self, new: Sequence[tuple[Entry, bytes]], max_entries: int, now: str
    ) -> list[Block]:
        try:
            with self._tx() as db:
                waiting = db.execute(
                    "SELECT count(*) FROM entries WHERE block_number IS NULL"
                ).fetchone()[0]
                # pending rows are only read back when a block will be cut
                cut = waiting + len(new) >= max_entries
                head, frontier, pending = self._locked_state(db, None if cut else 0)
                plan = plan_append(head, frontier, pending, new, max_entries=max_entries, now=now)
                self._apply(db, plan)
                return plan.blocks
        except sqlite3.IntegrityError as exc:
            raise LedgerError(f"entry already recorded: {exc}", self.url) from exc
        except sqlite3.Error as exc:
            raise StorageError(f"cannot record entries: {exc}", str(self.path)) from exc

    def pending_info(self) -> tuple[int, str | None]:
        rows = self._q(
            "SELECT count(*), (SELECT created_at FROM entries WHERE block_number IS NULL"
            " ORDER BY seq LIMIT 1) FROM entries WHERE block_number IS NULL"
        )
        return int(rows[0][0]), rows[0][1]

    def commit_block(self, max_entries: int, now: str) -> Block | None:
        try:
            with self._tx() as db:
                head, frontier, pending = self._locked_state(db, max_entries)
                if not pending:
                    return None
                plan = plan_append(
                    head, frontier, pending, [], max_entries=max_entries, now=now, force=True
                )
                self._apply(db, plan)
                return plan.blocks[0]
        except sqlite3.Error as exc:
            raise StorageError(f"cannot commit block: {exc}", str(self.path)) from exc

    def head(self) -> Block | None:
        rows = self._q(_BLOCK_SELECT + " ORDER BY block_number DESC LIMIT 1")
        return _block(rows[0]) if rows else None

    def block(self, number: int) -> Block | None:
        rows = self._q(_BLOCK_SELECT + " WHERE block_number = ?", (number,))
        return _block(rows[0]) if rows else None

    def blocks(self) -> Iterator[Block]:
        cur = self._db.execute(_BLOCK_SELECT + " ORDER BY block_number")
        for row in cur:
            yield Block(*row)

    def committed_entries(self) -> Iterator[Entry]:
        cur = self._db.execute(
            _ENTRY_SELECT + " WHERE block_number IS NOT NULL ORDER BY leaf_index, block_number"
        )
        while True:
            rows = cur.fetchmany(20000)
            if not rows:
                return
            for r in rows:
                yield Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])

    def pending(self) -> list[Entry]:
        rows = self._q(
            _ENTRY_SELECT + " WHERE block_number IS NULL ORDER BY seq"
        )
        return [_entry(r) for r in rows]

    def entry(self, entry_id: str) -> Entry | None:
        rows = self._q(_ENTRY_SELECT + " WHERE id = ?", (entry_id,))
        return _entry(rows[0]) if rows else None

    def recent(self, limit: int) -> list[Entry]:
        rows = self._q(_ENTRY_SELECT + " ORDER BY seq DESC LIMIT ?", (max(0, limit),))
        return [_entry(r) for r in rows]

    @staticmethod
    def _nodes_in(
        db: sqlite3.Connection, coords: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        for c in dict.fromkeys(coords):
            row = db.execute("SELECT hash FROM nodes WHERE level = ? AND idx = ?", c).fetchone()
            if row is not None:
                out[c] = bytes(row[0])
        return out

    def nodes(self, coords: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        try:
            return self._nodes_in(self._db, coords)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read tree nodes: {exc}", str(self.path)) from exc

    def node_range(self, level: int, start: int, end: int) -> dict[int, bytes]:
        rows = self._q("SELECT idx, hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ?",
                       (level, start, end))
        return {int(i): bytes(h) for i, h in rows}

    def entry_range(self, start: int, end: int) -> list[Entry]:
        rows = self._q(_ENTRY_SELECT + " WHERE leaf_index >= ? AND leaf_index < ?"
                       " ORDER BY leaf_index", (start, end))
        return [_entry(r) for r in rows]

    def all_nodes(self) -> Iterator[tuple[int, int, bytes]]:
        cur = self._db.execute("SELECT level, idx, hash FROM nodes ORDER BY level, idx")
        while True:
            rows = cur.fetchmany(50000)
            if not rows:
                return
            yield from rows

    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
