"""Full verification of a ledger: chain, Merkle roots, stored nodes, HMACs, JSONL mirror."""

from __future__ import annotations

import bisect
import hmac
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from auraseal import merkle
from auraseal.errors import LedgerTamperError
from auraseal.ledger._model import GENESIS_HASH, Block, Entry, prepared_mac
from auraseal.ledger.jsonl import JsonlContents, JsonlMirror, line_key
from auraseal.ledger.stores._base import Store

__all__ = ["ChainReport", "Problem", "verify_store"]

MAX_PROBLEMS = 1000


@dataclass(frozen=True)
class Problem:
    """One thing that is wrong, with the block and entry it concerns."""

    what: str
    source: str  # "database" or "jsonl"
    block: int | None = None
    entry: str | None = None

    def __str__(self) -> str:
        where = []
        if self.block is not None:
            where.append(f"block {self.block}")
        if self.entry is not None:
            where.append(f"entry {self.entry}")
        return f"{self.source} {' '.join(where)}: {self.what}".replace("  ", " ")

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "source": self.source, "block": self.block,
                "entry": self.entry}


@dataclass
class ChainReport:
    """The result of :func:`verify_store`; ``ok`` only if nothing at all is wrong."""

    blocks: int = 0
    entries: int = 0
    pending: int = 0
    tree_size: int = 0
    tree_root: str = merkle.EMPTY_ROOT.hex()
    signatures_checked: bool = False
    unsigned_entries: int = 0
    jsonl_checked: bool = False
    jsonl_lines: int = 0
    jsonl_entries: int = 0
    jsonl_blocks: int = 0
    #: entry lines in another layout than AuraSeal writes, holding the same record
    jsonl_reserialized: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    #: JSONL repairs that :meth:`Ledger.reconcile` may make (interrupted dual write)
    missing_in_jsonl: list[str] = field(default_factory=list)
    blocks_missing_in_jsonl: list[int] = field(default_factory=list)
    torn_jsonl_tail: bool = False
    _tamper: bool = False

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def reconcilable(self) -> bool:
        """True if the only problems are a JSONL mirror behind the database."""
        return not self.ok and not self._tamper

    @property
    def first_bad_block(self) -> int | None:
        blocks = [p.block for p in self.problems if p.block is not None]
        return min(blocks) if blocks else None

    @property
    def first_problem(self) -> Problem | None:
        if not self.problems:
            return None
        bad = self.first_bad_block
        for p in self.problems:
            if p.block == bad:
                return p
        return self.problems[0]

    def add(self, problem: Problem, *, tamper: bool = True) -> None:
        self.problem_count += 1
        self._tamper = self._tamper or tamper
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def raise_for_problems(self) -> None:
        p = self.first_problem
        if p is not None:
            raise LedgerTamperError(
                f"{p.what} ({self.problem_count} problem(s) in all)",
                f"{p.source} block {p.block}" if p.block is not None else p.source,
                block=p.block,
                entry=p.entry,
            )

    def to_dict(self) -> dict[str, Any]:
        db = [p for p in self.problems if p.source == "database"]
        fl = [p for p in self.problems if p.source == "jsonl"]
        return {
            "overall_valid": self.ok,
            "database_chain": {"valid": not db, "block_count": self.blocks,
                               "entry_count": self.entries, "pending": self.pending},
            "file_chain": {"checked": self.jsonl_checked, "valid": not fl,
                           "lines": self.jsonl_lines, "block_count": self.jsonl_blocks,
                           "entry_count": self.jsonl_entries,
                           "reserialized_lines": self.jsonl_reserialized},
            "tree_size": self.tree_size,
            "tree_root": self.tree_root,
            "signatures_checked": self.signatures_checked,
            "unsigned_entries": self.unsigned_entries,
            "first_bad_block": self.first_bad_block,
            "problem_count": self.problem_count,
            "problems": [p.to_dict() for p in self.problems],
            "reconcilable": self.reconcilable,
        }


class _Peek:
    def __init__(self, it: Iterator[Entry]) -> None:
        self._it = it
        self._next: Entry | None = next(it, None)

    def peek(self) -> Entry | None:
        return self._next

    def pop(self) -> Entry:
        cur = self._next
        assert cur is not None
        self._next = next(self._it, None)
        return cur


def verify_store(
    store: Store,
    *,
    jsonl: JsonlMirror | None = None,
    secret: bytes | None = None,
    checkpoint: tuple[int, bytes] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ChainReport:
    """Recompute everything the ledger claims; collect every problem found.

    ``checkpoint`` is ``(tree_size, root)`` from a verified signed checkpoint:
    the recomputed tree must have had that root at that size.
    """
    rep = ChainReport(signatures_checked=secret is not None)
    jl = jsonl.read() if jsonl is not None else None
    jentries = jl.entries if jl is not None else {}
    if jl is not None:
        rep.jsonl_checked = True
        rep.jsonl_lines = jl.lines
        rep.jsonl_entries = len(jl.entries)
        rep.jsonl_blocks = len(jl.blocks)
        rep.jsonl_reserialized = jl.reserialized

    mac = prepared_mac(secret) if secret is not None else None
    # the JSONL line number of each database entry, in ledger order (0: not found)
    line_of = array("q")
    unmatched: list[tuple[int, bytes, str, int | None]] = []  # index, key, entry id, block

    def check_entry(e: Entry, lh: bytes, signed: bytes, block: int | None) -> None:
        if e.signature is None:
            rep.unsigned_entries += 1
        elif mac is not None:
            m = mac.copy()
            m.update(signed)
            if not hmac.compare_digest(m.hexdigest(), e.signature):
                rep.add(Problem("HMAC signature does not verify", "database", block,
                                e.entry_id))
        if jl is not None:
            key = line_key(e.jsonl_line())
            lineno = jentries.pop(key, 0)
            if not lineno:
                unmatched.append((len(line_of), key, e.entry_id, block))
            line_of.append(lineno)

    entries = _Peek(store.committed_entries())
    levels: list[list[bytes]] = [[]]  # every complete node, recomputed once
    leaves = levels[0]
    ends: list[int] = []  # tree size after each block, for leaf -> block
    numbers: list[int] = []
    db_blocks: dict[int, Block] = {}
    prev_hash, expected, size = GENESIS_HASH, 1, 0
    frontier: list[bytes] = []
    for blk in store.blocks():
        n = blk.block_number
        db_blocks[n] = blk
        rep.blocks += 1
        if n != expected:
            rep.add(Problem(f"block number {n} where {expected} was expected", "database", n))
        if blk.previous_hash != prev_hash:
            rep.add(Problem("previous_hash does not match the previous block's hash",
                            "database", n))
        if blk.compute_hash() != blk.block_hash:
            rep.add(Problem("block_hash does not recompute from the block's fields",
                            "database", n))
        group: list[Entry] = []
        while (e := entries.peek()) is not None and (e.leaf_index or 0) < blk.tree_size:
            group.append(entries.pop())
        leaf_group: list[bytes] = []
        for j, e in enumerate(group):
            lh, signed = e.leaf_hash_and_signed()
            leaf_group.append(lh)
            if e.leaf_index != size + j:
                rep.add(Problem(f"entry at leaf index {e.leaf_index} where {size + j} was "
                                "expected (entry deleted, added or moved)", "database", n,
                                e.entry_id))
            if e.block_number != n:
                rep.add(Problem(f"entry claims block {e.block_number}", "database", n,
                                e.entry_id))
            check_entry(e, lh, signed, n)
        if len(group) != blk.data_count or size + len(group) != blk.tree_size:
            rep.add(Problem(f"block holds {len(group)} entries but records data_count "
                            f"{blk.data_count}, tree_size {blk.tree_size}", "database", n))
        if merkle.root(leaf_group).hex() != blk.merkle_root:
            rep.add(Problem("merkle_root does not recompute from the block's entries",
                            "database", n))
        new_nodes, troot = merkle.append_nodes(size, frontier, leaf_group)
        size += len(group)
        if troot.hex() != blk.tree_root:
            rep.add(Problem("tree_root does not recompute from all entries so far",
                            "database", n))
        for lv, _, h in new_nodes:
            if lv == len(levels):
                levels.append([])
            levels[lv].append(h)
        made = {(lv, i): h for lv, i, h in new_nodes}
        old = dict(zip(merkle.compact_range_coords(size - len(group)), frontier, strict=True))
        frontier = [made.get(c) or old[c] for c in merkle.compact_range_coords(size)]
        ends.append(size)
        numbers.append(n)
        prev_hash, expected = blk.block_hash, n + 1
        rep.entries += len(group)
        if progress is not None:
            progress(len(group))
    rep.tree_size = size
    rep.tree_root = _fold(frontier).hex() if frontier else merkle.EMPTY_ROOT.hex()
    while (e := entries.peek()) is not None:
        e = entries.pop()
        rep.add(Problem(f"entry claims block {e.block_number} / leaf {e.leaf_index}, "
                        "beyond the last block", "database", e.block_number, e.entry_id))
    for e in store.pending():
        rep.pending += 1
        check_entry(e, *e.leaf_hash_and_signed(), None)

    def block_of_leaf(index: int) -> int | None:
        k = bisect.bisect_right(ends, index)
        return numbers[k] if k < len(numbers) else None

    _check_nodes(store, levels, rep, block_of_leaf)

    if checkpoint is not None:
        cp_size, cp_root = checkpoint
        if cp_size > len(leaves):
            rep.add(Problem(f"checkpoint has tree size {cp_size} but the ledger only "
                            f"{len(leaves)} entries (history deleted?)", "database"))
        elif merkle.root(leaves[:cp_size]) != cp_root:
            rep.add(Problem(f"tree of size {cp_size} does not match the signed checkpoint "
                            "(history rewritten)", "database", block_of_leaf(cp_size - 1)))

    if jl is not None and jsonl is not None:
        if unmatched and jentries:  # lines in another layout: compare canonical content
            canon = jsonl.canonical_keys(set(jentries.values()))
            by_key = {k: ln for ln, k in canon.items()}
            raw_key = {ln: k for k, ln in jentries.items()}
            still = []
            for index, key, eid, block in unmatched:
                ln = by_key.pop(key, 0)
                if ln:
                    line_of[index] = ln
                    del jentries[raw_key[ln]]
                    rep.jsonl_reserialized += 1
                else:
                    still.append((index, key, eid, block))
            unmatched = still
        for _, _, eid, block in unmatched:
            rep.missing_in_jsonl.append(eid)
            rep.add(
                Problem("entry is missing from the JSONL mirror or differs there", "jsonl",
                        block, eid),
                tamper=False,
            )
        block_line = {b.block_number: ln for ln, b in jl.blocks}
        wrong = _check_jsonl_order(line_of, jl.reconciled, block_line, ends, numbers)
        described = jsonl.describe_lines(
            set(sorted(jentries.values())[:MAX_PROBLEMS]) | {ln for ln, _ in wrong[:MAX_PROBLEMS]}
        )
        for k, (ln, what) in enumerate(wrong):
            who = described.get(ln, (None, None))[0] if k < MAX_PROBLEMS else None
            e = store.entry(who) if who is not None else None
            rep.add(Problem(f"line {ln}: {what}", "jsonl",
                            e.block_number if e is not None else None, who))
        _check_jsonl(jl, jentries, db_blocks, rep, described=described, store=store)
    return rep


def _check_jsonl_order(
    line_of: array[int],
    reconciled: list[tuple[int, int]],
    block_line: dict[int, int],
    ends: list[int],
    numbers: list[int],
) -> list[tuple[int, str]]:
    """Entry lines must be in ledger order, each before the line of its block.

    ``line_of[i]`` is the line of the i-th entry in ledger order (leaf order, then
    pending).  Lines a reconcile marker announces were appended late: they are in
    ledger order among themselves, and exempt from both rules otherwise.
    """
    starts = [a for a, _ in reconciled]
    if not starts:  # the usual case, at C speed: nothing to report?
        found = [ln for ln in line_of if ln]
        in_order = found == sorted(found)
        lo = 0
        for hi, n in zip(ends, numbers, strict=True):
            bl = block_line.get(n)
            if in_order and bl is not None and hi > lo and max(line_of[lo:hi]) > bl:
                in_order = False
            lo = hi
        if in_order:
            return []

    def batch(ln: int) -> int:
        k = bisect.bisect_right(starts, ln) - 1
        return k if k >= 0 and ln <= reconciled[k][1] else -1

    wrong: list[tuple[int, str]] = []
    prev: dict[int, int] = {}  # batch (-1: none) -> line of the previous entry in it
    k = 0
    for i, ln in enumerate(line_of):
        while k < len(ends) and i >= ends[k]:
            k += 1
        if not ln:
            continue
        b = batch(ln) if starts else -1
        before = prev.get(b, 0)
        if ln < before:
            wrong.append((ln, f"entry line is out of order: the ledger puts it after the "
                              f"entry on line {before}"))
        prev[b] = ln
        if b < 0 and k < len(ends):
            bl = block_line.get(numbers[k])
            if bl is not None and ln > bl:
                wrong.append((ln, f"entry line comes after the line of its block "
                                  f"{numbers[k]} (line {bl})"))
    return wrong


def _fold(frontier: list[bytes]) -> bytes:
    acc = frontier[-1]
    for h in reversed(frontier[:-1]):
        acc = merkle.node_hash(h, acc)
    return acc


def _check_nodes(
    store: Store,
    levels: list[list[bytes]],
    rep: ChainReport,
    block_of_leaf: Callable[[int], int | None],
) -> None:
    """Stored complete-subtree nodes must equal the recomputed tree (``levels``).

    Streams the stored nodes level by level, so only one stored level is in memory.
    """
    n_leaves = max(len(levels[0]), 1)

    def compare(lv: int, got: list[bytes]) -> None:
        want = levels[lv] if lv < len(levels) else []
        if got == want:
            return
        for i in range(max(len(got), len(want))):
            a = got[i] if i < len(got) else None
            b = want[i] if i < len(want) else None
            if a != b:
                what = ("is missing" if a is None or a == b"" else
                        "should not exist" if b is None else
                        "does not match the recomputed tree")
                last = min((i + 1) << lv, n_leaves) - 1
                rep.add(Problem(f"stored tree node (level {lv}, index {i}) {what}",
                                "database", block_of_leaf(last)))
                return

    level = 0
    row: list[bytes] = []
    for lv, ix, h in store.all_nodes():
        while lv > level:
            compare(level, row)
            level, row = level + 1, []
        if ix != len(row):
            row.extend([b""] * max(0, ix - len(row)))
        row.append(bytes(h))
    compare(level, row)
    for lv in range(level + 1, len(levels)):
        compare(lv, [])


def _check_jsonl(
    jl: JsonlContents,
    leftover: dict[bytes, int],
    db_blocks: dict[int, Block],
    rep: ChainReport,
    *,
    described: dict[int, tuple[str | None, str | None]],
    store: Store,
) -> None:
    for lineno, bad in jl.bad_lines:
        torn = lineno == jl.torn_tail
        rep.torn_jsonl_tail = rep.torn_jsonl_tail or torn
        rep.add(Problem(f"line {lineno}: {bad}", "jsonl"), tamper=not torn)
    for lineno in sorted(leftover.values()):
        eid, why = described.get(lineno, (None, None))
        if eid is None:
            rep.add(Problem(f"line {lineno}: {why or 'unreadable line'}", "jsonl"))
            continue
        e = store.entry(eid)
        rep.add(Problem(f"line {lineno}: entry is not in the database (or differs from it)",
                        "jsonl", e.block_number if e is not None else None, eid))
    seen: set[int] = set()
    last_number = 0
    prev: str | None = None
    for lineno, b in jl.blocks:
        n = b.block_number
        db = db_blocks.get(n)
        if n in seen:
            rep.add(Problem(f"line {lineno}: block appears twice", "jsonl", n))
        elif db is None:
            rep.add(Problem(f"line {lineno}: block is not in the database", "jsonl", n))
        elif db != b:
            rep.add(Problem(f"line {lineno}: block differs from the database", "jsonl", n))
        if n <= last_number or (prev is not None and b.previous_hash != prev):
            rep.add(Problem(f"line {lineno}: block is out of order in the file", "jsonl", n))
        seen.add(n)
        last_number, prev = max(last_number, n), b.block_hash
    for n in sorted(db_blocks):
        if n not in seen:
            tail = n > last_number
            if tail:
                rep.blocks_missing_in_jsonl.append(n)
            rep.add(Problem("block is missing from the JSONL mirror", "jsonl", n),
                    tamper=not tail)
