"""RFC 9162 Merkle Tree Hash, inclusion and consistency proofs: pure functions.

Leaves are hashed ``SHA-256(0x00 || data)`` and interior nodes
``SHA-256(0x01 || left || right)``; a tree of ``n`` leaves is split at the
largest power of two smaller than ``n`` (RFC 9162 §2.1.1), never by
duplicating the last node.  Nothing here does I/O: every function takes bytes
and returns bytes or raises :class:`~auraseal.errors.MerkleProofError`.

Stores keep the hashes of *complete* subtrees ("nodes") addressed by
``(level, index)``: the node ``(L, i)`` covers leaves ``[i * 2**L, (i + 1) * 2**L)``
and level 0 holds the leaf hashes.  :func:`inclusion_proof_from` and
:func:`consistency_proof_from` build proofs from such a node getter with
``O(log n)`` look-ups; :func:`inclusion_coords` / :func:`consistency_coords`
list the coordinates first, so a store can fetch them in one query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from auraseal.errors import MerkleProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "NodeGetter",
    "append_nodes",
    "compact_range_coords",
    "consistency_coords",
    "consistency_proof",
    "consistency_proof_from",
    "extend_tree",
    "inclusion_coords",
    "inclusion_proof",
    "inclusion_proof_from",
    "leaf_hash",
    "next_level",
    "node_hash",
    "root",
    "root_from",
    "tree_levels",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: ``get(level, index)`` returns the hash of the complete subtree ``(level, index)``.
NodeGetter = Callable[[int, int], bytes]

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    """Pair complete nodes of one level; an odd last node is *not* carried."""
    sha = _sha256
    it = iter(level)
    return [sha(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=False)]


def next_level(level: Sequence[bytes]) -> list[bytes]:
    """The complete nodes one level up: pairs hashed, an odd last node dropped."""
    return _next_level(level)


def tree_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All complete-subtree nodes: ``levels[L][i]`` is node ``(L, i)``."""
    levels: list[list[bytes]] = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        levels.append(_next_level(levels[-1]))
    return levels


def _fold_compact(nodes: Sequence[bytes]) -> bytes:
    """Fold compact-range nodes (largest subtree first) into a root, right to left."""
    acc = nodes[-1]
    for h in reversed(nodes[:-1]):
        acc = node_hash(h, acc)
    return acc


def compact_range_coords(size: int) -> list[tuple[int, int]]:
    """Coordinates of the complete subtrees that make up a tree of ``size`` leaves.

    Largest (leftmost) first; one per set bit of ``size``.
    """
    out: list[tuple[int, int]] = []
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            out.append((level, (size >> level) - 1))
    return out


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 Merkle Tree Hash of a list of leaf hashes (``EMPTY_ROOT`` if none)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    levels = tree_levels(leaf_hashes)
    return _fold_compact([levels[lv][i] for lv, i in compact_range_coords(n)])


def root_from(get: NodeGetter, size: int) -> bytes:
    """Root of the first ``size`` leaves from stored complete-subtree nodes."""
    if size == 0:
        return EMPTY_ROOT
    return _fold_compact([get(lv, i) for lv, i in compact_range_coords(size)])


def _range_hash(get: NodeGetter, lo: int, hi: int) -> bytes:
    """MTH of leaves ``[lo, hi)`` where ``lo`` is aligned to the range's split."""
    n = hi - lo
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return get(level, lo >> level)
    k = _split(n)
    return node_hash(_range_hash(get, lo, lo + k), _range_hash(get, lo + k, hi))


def inclusion_proof_from(get: NodeGetter, index: int, size: int) -> list[bytes]:
    """Audit path for leaf ``index`` in a tree of ``size`` leaves (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise MerkleProofError(f"leaf index {index} outside tree of size {size}", "inclusion")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_range_hash(get, lo + k, hi))
            hi = lo + k
        else:
            path.append(_range_hash(get, lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_proof_from(get: NodeGetter, size1: int, size2: int) -> list[bytes]:
    """Consistency proof between tree sizes ``size1`` and ``size2`` (RFC 9162 §2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise MerkleProofError(
            f"no consistency proof from size {size1} to size {size2}", "consistency"
        )
    if size1 == size2:
        return []
    path: list[bytes] = []
    m, lo, hi, whole = size1, 0, size2, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(_range_hash(get, lo + k, hi))
            hi = lo + k
        else:
            path.append(_range_hash(get, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        path.append(_range_hash(get, lo, hi))
    path.reverse()
    return path


def _recorded(fn: Callable[[NodeGetter], object]) -> list[tuple[int, int]]:
    coords: list[tuple[int, int]] = []

    def fake(level: int, index: int) -> bytes:
        coords.append((level, index))
        return EMPTY_ROOT

    fn(fake)
    return coords


def inclusion_coords(index: int, size: int) -> list[tuple[int, int]]:
    """Node coordinates :func:`inclusion_proof_from` will read (``O(log size)``)."""
    return _recorded(lambda g: inclusion_proof_from(g, index, size))


def consistency_coords(size1: int, size2: int) -> list[tuple[int, int]]:
    """Node coordinates :func:`consistency_proof_from` will read (``O(log size2)``)."""
    return _recorded(lambda g: consistency_proof_from(g, size1, size2))


def _list_getter(leaf_hashes: Sequence[bytes]) -> NodeGetter:
    levels = tree_levels(leaf_hashes)

    def get(level: int, index: int) -> bytes:
        return levels[level][index]

    return get


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path for ``leaf_hashes[index]`` in the tree of all ``leaf_hashes``."""
    return inclusion_proof_from(_list_getter(leaf_hashes), index, len(leaf_hashes))


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """Consistency proof from the first ``size1`` leaves to all ``leaf_hashes``."""
    return consistency_proof_from(_list_getter(leaf_hashes), size1, len(leaf_hashes))


def extend_tree(
    size: int, frontier: Sequence[bytes], new_leaves: Sequence[bytes]
) -> tuple[list[tuple[int, int, bytes]], bytes, list[bytes]]:
    """Append leaves to a tree of ``size`` leaves.

    ``frontier`` holds the hashes at :func:`compact_range_coords` ``(size)``
    (largest first).  Returns every node ``(level, index, hash)`` that becomes
    complete (level 0, the new leaves, included), the new root, and the new
    frontier.  Costs one hash per new node, never a recomputation.
    """
    coords = compact_range_coords(size)
    if len(frontier) != len(coords):
        raise MerkleProofError("frontier does not match tree size", "append")
    border = {lv: h for (lv, _), h in zip(coords, frontier, strict=True)}
    total = size + len(new_leaves)
    out: list[tuple[int, int, bytes]] = []
    compact: list[bytes] = []  # smallest subtree first
    level, start, current = 0, size, list(new_leaves)
    while True:
        out.extend((level, start + j, h) for j, h in enumerate(current))
        count = total >> level
        if count & 1:
            compact.append(current[-1] if count - 1 >= start else border[level])
        if count <= 1:
            break
        children = [border[level], *current] if start & 1 else current
        current, start = _next_level(children), start >> 1
        level += 1
    if total == 0:
        return out, EMPTY_ROOT, []
    compact.reverse()
    return out, _fold_compact(compact), compact


def append_nodes(
    size: int, frontier: Sequence[bytes], new_leaves: Sequence[bytes]
) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """:func:`extend_tree` without the new frontier: ``(nodes, root)``."""
    nodes, new_root, _ = extend_tree(size, frontier, new_leaves)
    return nodes, new_root


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check an inclusion proof exactly as RFC 9162 §2.1.3.2; raise on any failure."""
    where = f"inclusion of leaf {index} in tree of size {tree_size}"
    if index < 0 or tree_size < 0 or index >= tree_size:
        raise MerkleProofError("leaf index is not below the tree size", where)
    if len(leaf) != HASH_SIZE or len(root_hash) != HASH_SIZE:
        raise MerkleProofError(f"leaf hash and root must be {HASH_SIZE} bytes", where)
    if any(len(p) != HASH_SIZE for p in proof):
        raise MerkleProofError(f"proof hashes must be {HASH_SIZE} bytes", where)
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise MerkleProofError("proof is longer than the path to the root", where)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("proof is shorter than the path to the root", where)
    if r != root_hash:
        raise MerkleProofError("recomputed root does not match", where)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check a consistency proof exactly as RFC 9162 §2.1.4.2; raise on any failure.

    Equal sizes need an empty proof and equal roots.  A proof from the empty
    tree proves nothing and is refused (RFC 9162 defines proofs for
    ``0 < size1``).
    """
    where = f"consistency from size {size1} to size {size2}"
    if size1 < 0 or size2 < size1:
        raise MerkleProofError("size1 is greater than size2", where)
    if size1 == 0:
        raise MerkleProofError("a consistency proof from the empty tree proves nothing", where)
    if size1 == size2:
        if proof:
            raise MerkleProofError("sizes are equal but the proof is not empty", where)
        if root1 != root2:
            raise MerkleProofError("sizes are equal but the roots differ", where)
        return
    path = list(proof)
    if not path:
        raise MerkleProofError("empty proof", where)
    if any(len(p) != HASH_SIZE for p in path):
        raise MerkleProofError(f"proof hashes must be {HASH_SIZE} bytes", where)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError("proof is longer than needed", where)
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("proof is shorter than needed", where)
    if fr != root1:
        raise MerkleProofError("proof does not recompute the first root", where)
    if sr != root2:
        raise MerkleProofError("proof does not recompute the second root", where)
