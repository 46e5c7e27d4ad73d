"""The ledger service: record, commit blocks, verify, prove, checkpoint.

:class:`Ledger` is synchronous; :class:`AsyncLedger` wraps it for asyncio
(each call runs in a worker thread, one at a time).  The module functions
:func:`hash_and_record` / :func:`ahash_and_record` are the seed's API and
the parts that report events take an explicit sink (:mod:`auraseal.events`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import platformdirs

from auraseal import merkle
from auraseal._extras import require
from auraseal.errors import (
    ConfigError,
    LedgerTamperError,
    MerkleProofError,
    MissingSecretError,
    NotFoundError,
    StorageError,
)
from auraseal.ledger._model import (
    HMAC_ENV,
    Block,
    BlockPolicy,
    Entry,
    RecordResult,
    data_hash,
    env_secret,
    make_entry,
    now_text,
    parse_ts,
    prepared_mac,
)
from auraseal.ledger.checkpoint import (
    BlockProof,
    Checkpoint,
    NoteSigner,
    make_bundle,
    sign_checkpoint,
)
from auraseal.ledger.jsonl import JsonlMirror, reconcile_line, record_line
from auraseal.ledger.stores._base import Store
from auraseal.ledger.stores.sqlite import SQLiteStore
from auraseal.ledger.tiles import ENTRIES, Tile, entry_bundle, hash_tile, tile_exists

if TYPE_CHECKING:
    from auraseal.ledger.tilelog import TileWriter
from auraseal.ledger.verify import ChainReport, verify_store

__all__ = [
    "AsyncLedger",
    "InclusionProof",
    "Ledger",
    "ahash_and_record",
    "default_ledger_url",
    "hash_and_record",
    "open_ledger",
    "open_store",
]

_ENV: Any = object()  # "read INTEGRITY_HMAC_SECRET from the environment"
T = TypeVar("T")


def default_ledger_url() -> str:
    """``sqlite://<user data dir>/auraseal/ledger.db`` (platformdirs)."""
    return f"sqlite://{platformdirs.user_data_path('auraseal') / 'ledger.db'}"


def open_store(url: str, *, durable: bool = False) -> Store:
    """A store for ``sqlite:///abs/path.db``, ``sqlite:rel.db``, a bare path, or
    ``postgresql://...``.  ``durable`` makes SQLite fsync every commit
    (``synchronous=FULL``); PostgreSQL follows the server's ``synchronous_commit``."""
    if url.startswith(("postgresql://", "postgres://")):
        # psycopg costs ~150 ms to import: only when a PostgreSQL ledger is used
        # (and it comes with the ``auraseal[postgres]`` extra).
        require("postgres", url.partition("://")[0] + "://")
        from auraseal.ledger.stores.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(url)
    path = sqlite_path(url)
    assert path is not None
    return SQLiteStore(path, durable=durable)


def sqlite_path(url: str) -> Path | None:
    """The SQLite file a ledger URL names (None for PostgreSQL)."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
    elif "://" in url:
        raise ConfigError("ledger URL must be sqlite:///path or postgresql://...", url)
    else:
        path = url
    if not path:
        raise ConfigError("ledger URL names no file", url)
    return Path(path)


def open_ledger(
    url: str,
    jsonl: Path | None = None,
    *,
    durable: bool = False,
    must_exist: bool = False,
    **kwargs: Any,
) -> Ledger:
    """Open (creating or migrating) the ledger at ``url`` with an optional JSONL mirror.

    ``durable=True`` fsyncs every acknowledged entry on both sides (SQLite
    ``synchronous=FULL`` and JSONL ``fsync="always"``); the default fsyncs at
    block boundaries (docs/LEDGER.md, "Dual write and fsync policy").
    ``must_exist=True`` (for reading commands such as ``verify``) refuses a
    SQLite file or JSONL mirror that does not exist (:class:`StorageError`,
    exit 5) instead of creating it.
    """
    if must_exist:
        db = sqlite_path(url)
        if db is not None and not db.is_file():
            raise StorageError("no ledger database here (nothing was created)", str(db))
        if jsonl is not None and not Path(jsonl).is_file():
            raise StorageError("no JSONL mirror here (nothing was created)", str(jsonl))
    if durable:
        kwargs.setdefault("fsync", "always")
    return Ledger(open_store(url, durable=durable), jsonl=jsonl, **kwargs)


@dataclass(frozen=True)
class InclusionProof:
    """An entry's audit path to the root of the tree of ``tree_size`` entries."""

    entry: Entry
    leaf_index: int
    tree_size: int
    root: bytes
    proof: list[bytes]

    def verify(self) -> None:
        merkle.verify_inclusion(
            self.entry.leaf_hash(), self.leaf_index, self.tree_size, self.proof, self.root
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry.entry_id,
            "leaf_index": self.leaf_index,
            "leaf_hash": self.entry.leaf_hash().hex(),
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "proof": [p.hex() for p in self.proof],
        }


class Ledger:
    """A tamper-evident ledger over one :class:`Store` plus an optional JSONL mirror.

    Dual write: an entry is acknowledged (``record`` returns) only after the
    database transaction committed and its JSONL line was written; see
    docs/LEDGER.md for the fsync policy.  If the mirror write fails the call
    raises, the entry stays in the database, and :meth:`verify_chain` reports
    it until :meth:`reconcile` appends it.
    """

    def __init__(
        self,
        store: Store,
        *,
        jsonl: Path | JsonlMirror | None = None,
        policy: BlockPolicy | None = None,
        secret: bytes | None = _ENV,
        fsync: str = "block",
        tiles: TileWriter | None = None,
    ) -> None:
        self.store = store
        #: when set, the tile tree is brought up to date after every commit of blocks
        self.tiles = tiles
        if isinstance(jsonl, JsonlMirror) or jsonl is None:
            self.mirror = jsonl
        else:
            self.mirror = JsonlMirror(Path(jsonl), fsync=fsync)
        self.policy = policy or BlockPolicy()
        self._secret = env_secret() if secret is _ENV else secret
        self._mac = prepared_mac(self._secret) if self._secret else None

    # --- context ------------------------------------------------------------

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            if self.tiles is not None:
                self.tiles.flush(self)
        finally:
            if self.mirror is not None:
                self.mirror.close()
            self.store.close()

    @property
    def signs(self) -> bool:
        """Whether this ledger holds an HMAC secret (so it can record signed entries)."""
        return self._secret is not None

    @property
    def origin(self) -> str:
        """This ledger's checkpoint origin line (fixed when the ledger was created)."""
        return self.store.get_meta("origin") or "auraseal/ledger"

    # --- recording ----------------------------------------------------------

    def record(
        self,
        entry_type: str,
        data: Any,
        metadata: Mapping[str, Any] | None = None,
        with_signature: bool = True,
    ) -> RecordResult:
        """Hash ``data`` (SHA-256 of RFC 8785 JSON), sign it (HMAC-SHA256) and record it.

        ``with_signature=True`` without ``INTEGRITY_HMAC_SECRET`` raises
        :class:`~auraseal.errors.MissingSecretError`; ``False`` records an
        explicitly unsigned entry (``signature`` null).
        """
        return self.record_many([(entry_type, data, metadata)], with_signature)[0]

    hash_and_record = record

    def record_many(
        self,
        items: Iterable[tuple[str, Any, Mapping[str, Any] | None]],
        with_signature: bool = True,
    ) -> list[RecordResult]:
        """Record several entries in one database transaction and one mirror write."""
        secret = self._secret
        if with_signature and not secret:
            raise MissingSecretError(
                f"a signed entry needs the HMAC secret in {HMAC_ENV} (or record it unsigned)",
                HMAC_ENV,
            )
        mac = self._mac if with_signature else None
        ts = now_text()
        made = [make_entry(t, d, m, mac, ts) for t, d, m in items]
        if not made:
            return []
        if self.mirror is None:
            blocks = self.store.append(made, self.policy.max_entries, ts)
        else:
            with self.mirror.locked():  # keeps block lines in chain order across processes
                blocks = self.store.append(made, self.policy.max_entries, ts)
                self.mirror.append_lines(
                    [e.jsonl_line() for e, _ in made]
                    + [record_line(b.to_json()) for b in blocks],
                    sync=bool(blocks),
                )
        blocks += self.maybe_commit()
        if blocks:
            self._update_tiles()
        numbers = tuple(b.block_number for b in blocks)
        return [
            RecordResult(
                entry_id=e.entry_id,
                data_hash=e.data_hash,
                signature=e.signature,
                database_recorded=True,
                file_recorded=self.mirror is not None,
                timestamp=e.timestamp,
                store=self.store.kind,
                blocks_committed=numbers,
            )
            for e, _ in made
        ]

    # --- blocks -------------------------------------------------------------

    def _commit_one(self, max_entries: int) -> Block | None:
        if self.mirror is None:
            return self.store.commit_block(max_entries, now_text())
        with self.mirror.locked():
            block = self.store.commit_block(max_entries, now_text())
            if block is not None:
                self.mirror.append([block.to_json()], sync=True)
        return block

    def maybe_commit(self, now: datetime | None = None) -> list[Block]:
        """Commit full blocks, and the remainder once the oldest pending entry is too old."""
        count, oldest = self.store.pending_info()
        out: list[Block] = []
        size = self.policy.max_entries
        while count >= size:
            b = self._commit_one(size)
            if b is None:
                return out
            out.append(b)
            count -= b.data_count
        if count and oldest is not None:
            age = (now or datetime.now(UTC)) - parse_ts(oldest)
            if age >= self.policy.max_age:
                out.extend(self.commit())
        return out

    def commit(self) -> list[Block]:
        """Commit every pending entry now (in blocks of at most ``max_entries``)."""
        out: list[Block] = []
        while (b := self._commit_one(self.policy.max_entries)) is not None:
            out.append(b)
        if out:
            self._update_tiles()
        return out

    def _update_tiles(self) -> None:
        if self.tiles is not None:
            self.tiles.update(self)

    # --- reading ------------------------------------------------------------

    def head(self) -> Block | None:
        return self.store.head()

    def block(self, number: int) -> Block:
        b = self.store.block(number)
        if b is None:
            raise NotFoundError("no such block", f"block {number}")
        return b

    def blocks(self) -> Iterator[Block]:
        return self.store.blocks()

    def entry(self, entry_id: str) -> Entry:
        e = self.store.entry(entry_id)
        if e is None:
            raise NotFoundError("no such ledger entry", entry_id)
        return e

    def pending(self) -> list[Entry]:
        return self.store.pending()

    def recent(self, limit: int = 50) -> list[Entry]:
        """The ``limit`` most recently recorded entries, newest first (pending ones too)."""
        return self.store.recent(limit)

    # --- proofs -------------------------------------------------------------

    def _size(self, tree_size: int | None) -> int:
        head = self.store.head()
        size = head.tree_size if head else 0
        if tree_size is None:
            return size
        if not 0 <= tree_size <= size:
            raise NotFoundError(f"tree size {tree_size} is beyond the ledger ({size})",
                                "tree_size")
        return tree_size

    def _getter(self, coords: list[tuple[int, int]]) -> merkle.NodeGetter:
        have = self.store.nodes(coords)

        def get(level: int, index: int) -> bytes:
            try:
                return have[(level, index)]
            except KeyError as exc:
                raise LedgerTamperError(
                    f"stored tree node (level {level}, index {index}) is missing", "nodes"
                ) from exc

        return get

    def tree_root(self, tree_size: int | None = None) -> bytes:
        """Root of the tree of the first ``tree_size`` entries (default: all committed)."""
        size = self._size(tree_size)
        coords = merkle.compact_range_coords(size)
        return merkle.root_from(self._getter(coords), size)

    def checkpoint(self, tree_size: int | None = None) -> Checkpoint:
        """The (unsigned) checkpoint of the committed tree."""
        size = self._size(tree_size)
        return Checkpoint(self.origin, size, self.tree_root(size))

    def signed_checkpoint(self, name: str, key: NoteSigner, tree_size: int | None = None) -> str:
        """A C2SP signed note over :meth:`checkpoint`."""
        return sign_checkpoint(self.checkpoint(tree_size), name, key)

    def inclusion(self, entry_id: str, tree_size: int | None = None) -> InclusionProof:
        """Inclusion proof of a committed entry, with ``O(log n)`` node reads."""
        found, head = self.store.entry_and_head(entry_id)
        if found is None:
            raise NotFoundError("no such ledger entry", entry_id)
        e = found
        if e.leaf_index is None:
            raise NotFoundError("entry is not in a block yet (run commit)", entry_id)
        size = head.tree_size if head else 0
        if tree_size is not None:
            if not 0 <= tree_size <= size:
                raise NotFoundError(f"tree size {tree_size} is beyond the ledger ({size})",
                                    "tree_size")
            size = tree_size
        if e.leaf_index >= size:
            raise NotFoundError(f"entry is not in the tree of size {size}", entry_id)
        path_coords = merkle.inclusion_coords(e.leaf_index, size)
        root_coords = merkle.compact_range_coords(size)
        get = self._getter(path_coords + root_coords)
        return InclusionProof(
            entry=e,
            leaf_index=e.leaf_index,
            tree_size=size,
            root=merkle.root_from(get, size),
            proof=merkle.inclusion_proof_from(get, e.leaf_index, size),
        )

    def consistency(self, size1: int, size2: int | None = None) -> tuple[list[bytes], bytes,
                                                                         bytes]:
        """``(proof, root1, root2)`` between tree sizes ``size1`` and ``size2``."""
        size2 = self._size(size2)
        size1 = self._size(size1)
        if not 0 < size1 <= size2:
            raise MerkleProofError(f"no consistency proof from {size1} to {size2}",
                                   "consistency")
        coords = (
            merkle.consistency_coords(size1, size2)
            + merkle.compact_range_coords(size1)
            + merkle.compact_range_coords(size2)
        )
        get = self._getter(coords)
        return (
            merkle.consistency_proof_from(get, size1, size2),
            merkle.root_from(get, size1),
            merkle.root_from(get, size2),
        )

    def tile(self, tile: Tile, tree_size: int | None = None) -> bytes:
        """The bytes of a C2SP tlog-tiles tile (or entry bundle) of the committed tree.

        Read from the stored nodes (level ``8·L``) or entries; raises
        :class:`NotFoundError` if the tree of ``tree_size`` has no such tile.
        """
        size = self._size(tree_size)
        if not tile_exists(tile, size):
            raise NotFoundError(f"no such tile in the tree of size {size}", tile.path())
        level, start, end = tile.node_coords()
        if tile.level == ENTRIES:
            entries = self.store.entry_range(start, end)
            if [e.leaf_index for e in entries] != list(range(start, end)):
                raise LedgerTamperError("committed entries are missing", tile.path())
            return entry_bundle([e.leaf() for e in entries])
        got = self.store.node_range(level, start, end)
        try:
            return hash_tile([got[i] for i in range(start, end)])
        except KeyError as exc:
            raise LedgerTamperError(
                f"stored tree node (level {level}, index {exc.args[0]}) is missing",
                tile.path()) from exc

    def proof_bundle(
        self, entry_id: str, name: str, key: NoteSigner, tree_size: int | None = None
    ) -> dict[str, Any]:
        """An offline bundle: entry, inclusion proof, signed checkpoint and the entry's
        block with the proofs that bind it to the checkpoint (docs/LEDGER.md §1.7).

        At a ``tree_size`` that ends inside the entry's block, the block is left out
        (nothing could prove it at that size).
        """
        proof = self.inclusion(entry_id, tree_size)
        note = sign_checkpoint(Checkpoint(self.origin, proof.tree_size, proof.root), name, key)
        blk = self.store.block(proof.entry.block_number or 0)
        if blk is None or blk.tree_size > proof.tree_size:
            return make_bundle(proof.entry, proof.tree_size, proof.proof, note)
        first = blk.first_leaf
        front = merkle.compact_range_coords(first)
        leaf_coords = [(0, i) for i in range(first, blk.tree_size)]
        get = self._getter(leaf_coords + front)
        prev = self.store.block(blk.block_number - 1) if blk.block_number > 1 else None
        block_proof = BlockProof(
            leaves=[get(lv, i) for lv, i in leaf_coords],
            frontier=[get(lv, i) for lv, i in front],
            consistency=self.consistency(blk.tree_size, proof.tree_size)[0],
            previous_block=prev.to_json() if prev is not None else None,
        )
        return make_bundle(proof.entry, proof.tree_size, proof.proof, note, blk.to_json(),
                           block_proof=block_proof)

    # --- verification -------------------------------------------------------

    def verify_chain(
        self,
        *,
        checkpoint: Checkpoint | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> ChainReport:
        """Recompute the whole ledger (see :func:`auraseal.ledger.verify.verify_store`)."""
        return verify_store(
            self.store,
            jsonl=self.mirror,
            secret=self._secret,
            checkpoint=(checkpoint.size, checkpoint.root) if checkpoint else None,
            progress=progress,
        )

    def verify_entry(self, entry_id: str, original_data: Any) -> dict[str, Any]:
        """The seed's entry check plus the inclusion proof against the latest tree head."""
        e = self.entry(entry_id)
        hash_valid = data_hash(original_data) == e.data_hash
        signature_valid: bool | None
        if e.signature is None:
            signature_valid = None
        elif self._secret is None:
            raise MissingSecretError(
                f"entry is signed; set {HMAC_ENV} to check its signature", entry_id
            )
        else:
            signature_valid = e.signature_ok(self._secret)
        out: dict[str, Any] = {
            "entry_id": e.entry_id,
            "hash_valid": hash_valid,
            "signed": e.signature is not None,
            "signature_valid": signature_valid,
            "block_number": e.block_number,
            "included": False,
        }
        if e.leaf_index is not None:
            proof = self.inclusion(entry_id)
            try:
                proof.verify()
                out["included"] = True
            except MerkleProofError as exc:
                out["inclusion_error"] = str(exc)
            out["inclusion_proof"] = proof.to_dict()
        out["verified"] = bool(hash_valid and signature_valid is not False and out["included"])
        return out

    def reconcile(self) -> dict[str, int]:
        """Bring the JSONL mirror up to the database after an interrupted dual write.

        Only a mirror that is *behind* (missing lines, a torn last line) is
        repaired; any other difference is tampering and raises
        :class:`~auraseal.errors.LedgerTamperError`.
        """
        if self.mirror is None:
            return {"entries_appended": 0, "blocks_appended": 0, "torn_lines_removed": 0}
        with self.mirror.locked():
            rep = self.verify_chain()
            if rep.ok:
                return {"entries_appended": 0, "blocks_appended": 0, "torn_lines_removed": 0}
            if not rep.reconcilable:
                rep.raise_for_problems()
            torn = self.mirror.drop_torn_tail()
            missing = [self.entry(i).jsonl_line() for i in rep.missing_in_jsonl]
            blocks = [record_line(self.block(n).to_json()) for n in rep.blocks_missing_in_jsonl]
            # the marker tells verify that these entry lines come late on purpose
            marker = [reconcile_line(len(missing), now_text())] if missing else []
            self.mirror.append_lines(marker + missing + blocks, sync=True)
        return {"entries_appended": len(missing), "blocks_appended": len(blocks),
                "torn_lines_removed": int(torn)}


class AsyncLedger:
    """asyncio face of :class:`Ledger`: the same methods, awaited, one call at a time."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, jsonl: Path | None = None, **kwargs: Any) -> AsyncLedger:
        return cls(await asyncio.to_thread(open_ledger, url, jsonl, **kwargs))

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def hash_and_record(
        self, entry_type: str, data: Any, metadata: Mapping[str, Any] | None = None,
        with_signature: bool = True,
    ) -> RecordResult:
        return await self._run(self.ledger.record, entry_type, data, metadata, with_signature)

    record = hash_and_record

    async def commit(self) -> list[Block]:
        return await self._run(self.ledger.commit)

    async def maybe_commit(self) -> list[Block]:
        return await self._run(self.ledger.maybe_commit)

    async def verify_chain(self, **kwargs: Any) -> ChainReport:
        return await self._run(lambda: self.ledger.verify_chain(**kwargs))

    async def verify_entry(self, entry_id: str, original_data: Any) -> dict[str, Any]:
        return await self._run(self.ledger.verify_entry, entry_id, original_data)

    async def inclusion(self, entry_id: str, tree_size: int | None = None) -> InclusionProof:
        return await self._run(self.ledger.inclusion, entry_id, tree_size)

    async def block_timer(self, interval: float = 5.0) -> None:
        """Run forever: commit blocks as the policy's age limit falls due."""
        while True:
            await asyncio.sleep(interval)
            await self.maybe_commit()

    async def close(self) -> None:
        await self._run(self.ledger.close)


def hash_and_record(
    entry_type: str,
    data: Any,
    metadata: Mapping[str, Any] | None = None,
    with_signature: bool = True,
    *,
    ledger_url: str | None = None,
    jsonl: Path | None = None,
) -> RecordResult:
    """The seed's call: record in the ledger at ``ledger_url`` (default
    :func:`default_ledger_url`; reading ``$AURASEAL_LEDGER`` is the CLI's job)."""
    with open_ledger(ledger_url or default_ledger_url(), jsonl) as led:
        return led.record(entry_type, data, metadata, with_signature)


async def ahash_and_record(
    entry_type: str,
    data: Any,
    metadata: Mapping[str, Any] | None = None,
    with_signature: bool = True,
    *,
    ledger_url: str | None = None,
    jsonl: Path | None = None,
) -> RecordResult:
    """``await``-able :func:`hash_and_record` (runs in a worker thread)."""
    return await asyncio.to_thread(
        hash_and_record, entry_type, data, metadata, with_signature,
        ledger_url=ledger_url, jsonl=jsonl,
    )
