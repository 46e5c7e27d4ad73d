"""The store interface every ledger backend implements, and block planning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from auraseal import merkle
from auraseal.ledger._model import GENESIS_HASH, Block, Entry

__all__ = ["AppendPlan", "Store", "plan_append"]

K = TypeVar("K")


@dataclass
class AppendPlan(Generic[K]):
    """What one locked transaction writes: blocks, tree nodes, entry placements."""

    blocks: list[Block] = field(default_factory=list)
    nodes: list[tuple[int, int, bytes]] = field(default_factory=list)
    #: already-stored pending entries now placed: (row key, block number, leaf index)
    moved: list[tuple[K, int, int]] = field(default_factory=list)
    #: new entries with their (block number, leaf index), or (None, None) if pending
    placed: list[tuple[Entry, int | None, int | None]] = field(default_factory=list)


def plan_append(
    head: Block | None,
    frontier: Sequence[bytes],
    pending: Sequence[tuple[K, Entry]],
    new: Sequence[tuple[Entry, bytes]],
    *,
    max_entries: int,
    now: str,
    force: bool = False,
) -> AppendPlan[K]:
    """Queue ``pending`` (oldest first) then ``new``; cut full blocks of ``max_entries``.

    With ``force`` the remainder also goes into a (smaller) block.  Leaf hashes
    of ``pending`` are recomputed from the stored fields.
    """
    queue: list[tuple[K | None, Entry, bytes]] = [(k, e, e.leaf_hash()) for k, e in pending]
    queue += [(None, e, lh) for e, lh in new]
    plan: AppendPlan[K] = AppendPlan()
    size = head.tree_size if head else 0
    number = head.block_number if head else 0
    prev = head.block_hash if head else GENESIS_HASH
    front = list(frontier)
    pos = 0
    while len(queue) - pos >= max_entries or (force and pos < len(queue)):
        chunk = queue[pos : pos + max_entries]
        leaves = [lh for _, _, lh in chunk]
        nodes, tree_root, front = merkle.extend_tree(size, front, leaves)
        number += 1
        unsigned = Block(number, prev, "", merkle.root(leaves).hex(), size + len(leaves),
                         tree_root.hex(), now, len(leaves))
        block = Block(number, prev, unsigned.compute_hash(), unsigned.merkle_root,
                      unsigned.tree_size, unsigned.tree_root, now, len(leaves))
        plan.blocks.append(block)
        plan.nodes.extend(nodes)
        for j, (k, e, _) in enumerate(chunk):
            if k is None:
                plan.placed.append((e, number, size + j))
            else:
                plan.moved.append((k, number, size + j))
        size += len(leaves)
        prev = block.block_hash
        pos += len(chunk)
    for k, e, _ in queue[pos:]:
        if k is None:
            plan.placed.append((e, None, None))
    return plan


class Store(ABC):
    """A ledger backend: entries, blocks and the Merkle tree's complete nodes.

    Writers may be several processes: :meth:`append` and :meth:`commit_block`
    hold one lock on the chain head for their whole transaction, so the chain
    never forks and block numbers are never reused.
    """

    kind: str = "store"
    url: str = ""

    @abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the schema (idempotent)."""

    @abstractmethod
    def append(
        self, new: Sequence[tuple[Entry, bytes]], max_entries: int, now: str
    ) -> list[Block]:
        """In one transaction under the head lock: add ``(entry, leaf_hash)`` pairs and
        commit every full block of pending entries.  Durable when it returns."""

    @abstractmethod
    def pending_info(self) -> tuple[int, str | None]:
        """Number of pending entries and the oldest one's timestamp."""

    @abstractmethod
    def commit_block(self, max_entries: int, now: str) -> Block | None:
        """Under the head lock: put up to ``max_entries`` pending entries in a new block."""

    @abstractmethod
    def head(self) -> Block | None: ...

    @abstractmethod
    def block(self, number: int) -> Block | None: ...

    @abstractmethod
    def blocks(self) -> Iterator[Block]:
        """Every block, by block number."""

    @abstractmethod
    def committed_entries(self) -> Iterator[Entry]:
        """Every entry that has a block, by leaf index (then block number)."""

    @abstractmethod
    def pending(self) -> list[Entry]:
        """Entries not yet in a block, oldest first."""

    @abstractmethod
    def entry(self, entry_id: str) -> Entry | None: ...

    def recent(self, limit: int) -> list[Entry]:
        """The ``limit`` most recently recorded entries (committed or not), newest first.

        This default reads every entry; stores override it with one bounded query."""
        tail: deque[Entry] = deque(self.committed_entries(), maxlen=limit)
        tail.extend(self.pending())
        return list(tail)[::-1]

    def entry_and_head(self, entry_id: str) -> tuple[Entry | None, Block | None]:
        """:meth:`entry` and :meth:`head` together (one round trip where the store can)."""
        return self.entry(entry_id), self.head()

    @abstractmethod
    def nodes(self, coords: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored complete-subtree hashes at the given ``(level, index)``."""

    def node_range(self, level: int, start: int, end: int) -> dict[int, bytes]:
        """Stored hashes at ``level`` with index in ``[start, end)`` (tiles read these)."""
        got = self.nodes((level, i) for i in range(start, end))
        return {i: h for (_, i), h in got.items()}

    def entry_range(self, start: int, end: int) -> list[Entry]:
        """Committed entries with leaf index in ``[start, end)``, by leaf index."""
        out: list[Entry] = []
        for e in self.committed_entries():
            if e.leaf_index is not None and start <= e.leaf_index < end:
                out.append(e)
            elif e.leaf_index is not None and e.leaf_index >= end:
                break
        return out

    @abstractmethod
    def all_nodes(self) -> Iterator[tuple[int, int, bytes]]:
        """Every stored node, by level then index."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def close(self) -> None: ...
