"""PostgreSQL ledger store (psycopg 3): the seed's ``ledger.blocks`` /
``ledger.entries`` plus ``ledger.nodes`` and ``ledger.meta``.

Block commits take a transaction-level advisory lock, so any number of
processes may append to one ledger: the chain never forks and a block number
is never reused.  Entries are copied in with ``COPY``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from auraseal import merkle
from auraseal.errors import LedgerError, StorageError
from auraseal.ledger._model import Block, Entry
from auraseal.ledger.stores._base import AppendPlan, Store, plan_append

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

SCHEMA_VERSION = 1
#: pg_advisory_xact_lock keys: the chain head, and schema migration.
HEAD_LOCK = 0x41555241  # "AURA"
MIGRATE_LOCK = 0x4D494752  # "MIGR"

# The seed's schema, verbatim, then migration 1 (AuraSeal's columns and tables).
_SEED_SCHEMA = [
    "CREATE SCHEMA IF NOT EXISTS ledger",
    """CREATE TABLE IF NOT EXISTS ledger.blocks (
        block_number BIGSERIAL PRIMARY KEY,
        previous_hash VARCHAR(64) NOT NULL,
        block_hash VARCHAR(64) UNIQUE NOT NULL,
        merkle_root VARCHAR(64) NOT NULL,
        timestamp TIMESTAMPTZ DEFAULT NOW(),
        data_count INTEGER DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS ledger.entries (
        id UUID PRIMARY KEY,
        block_number BIGINT REFERENCES ledger.blocks(block_number),
        entry_type VARCHAR(100) NOT NULL,
        data_hash VARCHAR(64) NOT NULL,
        metadata JSONB DEFAULT '{}',
        signature VARCHAR(256),
        created_at TIMESTAMPTZ DEFAULT NOW()
    )""",
]
_MIGRATION_1 = [
    "CREATE TABLE IF NOT EXISTS ledger.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """ALTER TABLE ledger.blocks
        ADD COLUMN IF NOT EXISTS tree_size BIGINT,
        ADD COLUMN IF NOT EXISTS tree_root VARCHAR(64),
        ADD COLUMN IF NOT EXISTS ts TEXT""",
    """ALTER TABLE ledger.entries
        ADD COLUMN IF NOT EXISTS seq BIGSERIAL,
        ADD COLUMN IF NOT EXISTS leaf_index BIGINT UNIQUE,
        ADD COLUMN IF NOT EXISTS metadata_c TEXT,
        ADD COLUMN IF NOT EXISTS ts TEXT""",
    "CREATE INDEX IF NOT EXISTS entries_pending ON ledger.entries (seq)"
    " WHERE block_number IS NULL",
    """CREATE TABLE IF NOT EXISTS ledger.nodes (
        level SMALLINT NOT NULL,
        idx BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        PRIMARY KEY (level, idx)
    )""",
]

_BLOCK_SELECT = (
    "SELECT block_number, previous_hash, block_hash, merkle_root, tree_size, tree_root,"
    " ts, data_count FROM ledger.blocks"
)
_ENTRY_SELECT = (
    "SELECT id::text, entry_type, data_hash, metadata_c, ts, signature, block_number,"
    " leaf_index FROM ledger.entries"
)

_ENTRY_AND_HEAD = (
    "SELECT h.*, e.* FROM (SELECT 1) AS one"
    " LEFT JOIN LATERAL (SELECT block_number, previous_hash, block_hash, merkle_root,"
    " tree_size, tree_root, ts, data_count FROM ledger.blocks"
    " ORDER BY block_number DESC LIMIT 1) AS h ON true"
    " LEFT JOIN LATERAL (SELECT id::text, entry_type, data_hash, metadata_c, ts, signature,"
    " block_number, leaf_index FROM ledger.entries WHERE id = %s) AS e ON true"
)


def _block(row: Sequence[Any] | None) -> Block | None:
    if row is None:
        return None
    return Block(
        int(row[0]), row[1], row[2], row[3], int(row[4] if row[4] is not None else -1),
        row[5] or "", row[6] or "", int(row[7] or 0),
    )


def _entry(row: Sequence[Any]) -> Entry:
    return Entry(row[0], row[1], row[2], row[3] or "", row[4] or "", row[5], row[6], row[7])


class PostgresStore(Store):
    """A ledger in a PostgreSQL database (``postgresql://user@host:port/db``)."""

    kind = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.url = dsn
        self._conn = self._connect()
        self.migrate()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL: {_msg(exc)}", _safe(self.dsn)) \
                from exc

    def _fail(self, what: str, exc: psycopg.Error) -> StorageError:
        return StorageError(f"{what}: {_msg(exc)}", _safe(self.dsn))

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise self._fail("PostgreSQL query failed", exc) from exc

    # --- schema -------------------------------------------------------------

    def _version(self, cur: psycopg.Cursor[Any]) -> int | None:
        cur.execute("SELECT to_regclass('ledger.meta') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            return None
        cur.execute("SELECT value FROM ledger.meta WHERE key = 'schema_version'")
        row = cur.fetchone()
        return int(row[0]) if row else None

    def migrate(self) -> None:
        """Create the seed schema and apply migration 1, once, under an advisory lock.

        DDL runs only when the recorded ``schema_version`` is behind, so a
        writer opening an up-to-date ledger never takes a table lock.  The lock
        is session-level and the version is re-read in a fresh transaction
        after it is granted: a transaction that waited on an advisory lock can
        still hold a stale catalog cache and miss tables created meanwhile.
        """
        try:
            with self._conn.cursor() as cur:
                if self._version(cur) == SCHEMA_VERSION:
                    return
                cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
                try:
                    version = self._version(cur)
                    if version == SCHEMA_VERSION:
                        return
                    if version is not None and version > SCHEMA_VERSION:
                        raise LedgerError(
                            f"ledger schema version {version} is newer than this AuraSeal",
                            _safe(self.dsn),
                        )
                    with self._conn.transaction():
                        for stmt in _SEED_SCHEMA + _MIGRATION_1:
                            cur.execute(stmt)
                        cur.execute(
                            "INSERT INTO ledger.meta VALUES ('schema_version', %s), ('origin', %s)"
                            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                            " WHERE ledger.meta.key = 'schema_version'",
                            (str(SCHEMA_VERSION), f"auraseal/ledger/{uuid.uuid4().hex[:16]}"),
                        )
                finally:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
        except psycopg.Error as exc:
            raise self._fail("cannot create ledger schema", exc) from exc

    # --- writing ------------------------------------------------------------

    def _locked_state(
        self, cur: psycopg.Cursor[Any], pending_limit: int | None
    ) -> tuple[Block | None, list[bytes], list[tuple[str, Entry]]]:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (HEAD_LOCK,))
        cur.execute(_BLOCK_SELECT + " ORDER BY block_number DESC LIMIT 1")
        head = _block(cur.fetchone())
        pending: list[tuple[str, Entry]] = []
        if pending_limit != 0:
            cur.execute(
                _ENTRY_SELECT + " WHERE block_number IS NULL ORDER BY seq LIMIT %s",
                (pending_limit,),
            )
            pending = [(r[0], _entry(r)) for r in cur.fetchall()]
        coords = merkle.compact_range_coords(head.tree_size if head else 0)
        have = self._nodes_in(cur, coords)
        try:
            frontier = [have[c] for c in coords]
        except KeyError as exc:
            raise LedgerError(f"tree node {exc} is missing; run verify", _safe(self.dsn)) \
                from exc
        return head, frontier, pending

    @staticmethod
    def _copy_entries(
        cur: psycopg.Cursor[Any], placed: Sequence[tuple[Entry, int | None, int | None]]
    ) -> None:
        if not placed:
            return
        with cur.copy(
            "COPY ledger.entries (id, entry_type, data_hash, metadata, metadata_c, signature,"
            " created_at, ts, block_number, leaf_index) FROM STDIN"
        ) as cp:
            for e, n, i in placed:
                cp.write_row(
                    (e.entry_id, e.entry_type, e.data_hash, e.metadata_json, e.metadata_json,
                     e.signature, e.timestamp, e.timestamp, n, i)
                )

    def _apply(self, cur: psycopg.Cursor[Any], plan: AppendPlan[str]) -> None:
        if plan.blocks:
            cur.executemany(
                "INSERT INTO ledger.blocks (block_number, previous_hash, block_hash,"
                " merkle_root, tree_size, tree_root, ts, timestamp, data_count)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (b.block_number, b.previous_hash, b.block_hash, b.merkle_root,
                     b.tree_size, b.tree_root, b.timestamp, b.timestamp, b.data_count)
                    for b in plan.blocks
                ],
            )
        if plan.moved:
            cur.execute(
                "UPDATE ledger.entries e SET block_number = v.n, leaf_index = v.i"
                " FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[]) AS v(id, n, i)"
                " WHERE e.id = v.id",
                (
                    [k for k, _, _ in plan.moved],
                    [n for _, n, _ in plan.moved],
                    [i for _, _, i in plan.moved],
                ),
            )
        self._copy_entries(cur, plan.placed)
        if plan.nodes:
            with cur.copy("COPY ledger.nodes (level, idx, hash) FROM STDIN") as cp:
                for row in plan.nodes:
                    cp.write_row(row)

    def append(
        self, new: Sequence[tuple[Entry, bytes]], max_entries: int, now: str
    ) -> list[Block]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM ledger.entries WHERE block_number IS NULL")
                row = cur.fetchone()
                waiting = int(row[0]) if row else 0
                if waiting + len(new) < max_entries:
                    # no block to cut: add pending rows without taking the head lock
                    self._copy_entries(cur, [(e, None, None) for e, _ in new])
                    return []
                head, frontier, pending = self._locked_state(cur, None)
                plan = plan_append(head, frontier, pending, new, max_entries=max_entries, now=now)
                self._apply(cur, plan)
                return plan.blocks
        except psycopg.errors.UniqueViolation as exc:
            raise LedgerError(f"entry already recorded: {_msg(exc)}", _safe(self.dsn)) from exc
        except psycopg.Error as exc:
            raise self._fail("cannot record entries", exc) from exc

    def commit_block(self, max_entries: int, now: str) -> Block | None:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                head, frontier, pending = self._locked_state(cur, max_entries)
                if not pending:
                    return None
                plan = plan_append(
                    head, frontier, pending, [], max_entries=max_entries, now=now, force=True
                )
                self._apply(cur, plan)
                return plan.blocks[0]
        except psycopg.Error as exc:
            raise self._fail("cannot commit block", exc) from exc

    # --- reading ------------------------------------------------------------

    def pending_info(self) -> tuple[int, str | None]:
        rows = self._q(
            "SELECT count(*), (SELECT ts FROM ledger.entries WHERE block_number IS NULL"
            " ORDER BY seq LIMIT 1) FROM ledger.entries WHERE block_number IS NULL"
        )
        return int(rows[0][0]), rows[0][1]

    def head(self) -> Block | None:
        rows = self._q(_BLOCK_SELECT + " ORDER BY block_number DESC LIMIT 1")
        return _block(rows[0]) if rows else None

    def block(self, number: int) -> Block | None:
        rows = self._q(_BLOCK_SELECT + " WHERE block_number = %s", (number,))
        return _block(rows[0]) if rows else None

    def blocks(self) -> Iterator[Block]:
        for row in self._q(_BLOCK_SELECT + " ORDER BY block_number"):
            b = _block(row)
            assert b is not None
            yield b

    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor(name="auraseal_stream") as cur:
                cur.itersize = 20000
                cur.execute(sql)
                yield from cur
        except psycopg.Error as exc:
            raise self._fail("cannot read ledger", exc) from exc
        finally:
            conn.close()

    def committed_entries(self) -> Iterator[Entry]:
        for row in self._stream(
            _ENTRY_SELECT + " WHERE block_number IS NOT NULL ORDER BY leaf_index, block_number"
        ):
            yield Entry(row[0], row[1], row[2], row[3] or "", row[4] or "", row[5], row[6],
                        row[7])

    def pending(self) -> list[Entry]:
        return [_entry(r) for r in
                self._q(_ENTRY_SELECT + " WHERE block_number IS NULL ORDER BY seq")]

    def recent(self, limit: int) -> list[Entry]:
        rows = self._q(_ENTRY_SELECT + " ORDER BY seq DESC LIMIT %s", (max(0, limit),))
        return [_entry(r) for r in rows]

    def entry(self, entry_id: str) -> Entry | None:
        try:
            key = str(uuid.UUID(entry_id))
        except ValueError:
            return None
        rows = self._q(_ENTRY_SELECT + " WHERE id = %s", (key,))
        return _entry(rows[0]) if rows else None

    def entry_and_head(self, entry_id: str) -> tuple[Entry | None, Block | None]:
        try:
            key = str(uuid.UUID(entry_id))
        except ValueError:
            return None, self.head()
        rows = self._q(
            _ENTRY_AND_HEAD,
            (key,),
        )
        row = rows[0]
        head = _block(row[:8]) if row[0] is not None else None
        entry = _entry(row[8:]) if row[8] is not None else None
        return entry, head

    @staticmethod
    def _nodes_in(
        cur: psycopg.Cursor[Any], coords: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], bytes]:
        want = list(dict.fromkeys(coords))
        if not want:
            return {}
        cur.execute(
            "SELECT n.level, n.idx, n.hash FROM ledger.nodes n"
            " JOIN unnest(%s::smallint[], %s::bigint[]) AS c(level, idx)"
            " ON n.level = c.level AND n.idx = c.idx",
            ([c[0] for c in want], [c[1] for c in want]),
        )
        return {(int(lv), int(ix)): bytes(h) for lv, ix, h in cur.fetchall()}

    def nodes(self, coords: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        try:
            with self._conn.cursor() as cur:
                return self._nodes_in(cur, coords)
        except psycopg.Error as exc:
            raise self._fail("cannot read tree nodes", exc) from exc

    def node_range(self, level: int, start: int, end: int) -> dict[int, bytes]:
        rows = self._q("SELECT idx, hash FROM ledger.nodes WHERE level = %s AND idx >= %s"
                       " AND idx < %s", (level, start, end))
        return {int(i): bytes(h) for i, h in rows}

    def entry_range(self, start: int, end: int) -> list[Entry]:
        rows = self._q(_ENTRY_SELECT + " WHERE leaf_index >= %s AND leaf_index < %s"
                       " ORDER BY leaf_index", (start, end))
        return [_entry(r) for r in rows]

    def all_nodes(self) -> Iterator[tuple[int, int, bytes]]:
        for lv, ix, h in self._stream("SELECT level, idx, hash FROM ledger.nodes"
                                      " ORDER BY level, idx"):
            yield int(lv), int(ix), bytes(h)

    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM ledger.meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()


def _msg(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _safe(dsn: str) -> str:
    """The DSN without a password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql"
    host = info.get("host", "")
    port = info.get("port", "")
    db = info.get("dbname", "")
    return f"postgresql://{host}:{port}/{db}"
