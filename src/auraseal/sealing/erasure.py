"""Reed-Solomon erasure coding of one stripe, behind one small interface.

Three format engines (``docs/FORMAT.md`` §4), each pinned to its own code:

* ``zfec`` — :class:`ZfecEngine`, the ``zfec`` library (systematic
  Vandermonde RS over GF(2^8)); releases the GIL. Always available.
* ``isa_l`` — systematic RS with ISA-L's Cauchy matrix
  (``gf_gen_cauchy1_matrix``). :class:`IsalEngine` calls the ``libisal`` that
  the pyeclib wheel bundles (GB/s); when that library is missing, lacks a
  symbol or fails the self-test, :class:`PortableCauchyEngine` computes the
  *same bytes* in Python (GF(2^8) on big integers; about zfec's speed). zfec's
  matrix differs from ISA-L's, so zfec itself cannot stand in for ``isa_l``
  parts; the portable code is the fallback that keeps them byte-identical.
* ``pyeclib`` — :class:`PyeclibEngine`, liberasurecode fragments with their
  80-byte header; only on request, and only where pyeclib imports.

Engines are loaded once per process by :func:`engines` (cached): it probes
every ISA-L symbol we call, self-tests the library against the portable
reference, and reports why anything is not in use (:attr:`Engines.warning`,
:attr:`Engines.statuses`); the library never prints, the CLI does.
:func:`choose_engine` picks one by fragment width; ``bench/seal_vs_par2.py``
prints the measurements behind the choice.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zfec

from auraseal.errors import (
    EngineUnavailableError,
    PartFormatError,
    UnrecoverableError,
    UsageError,
)
from auraseal.sealing.source import Buffer

__all__ = [
    "ENGINE_NAMES",
    "ISAL_SYMBOLS",
    "EngineStatus",
    "Engines",
    "ErasureEngine",
    "IsalEngine",
    "PortableCauchyEngine",
    "PyeclibEngine",
    "ZfecEngine",
    "cauchy_matrix",
    "choose_engine",
    "engines",
    "get_engine",
    "load_engines",
    "loaded_engines",
]


ENGINE_NAMES = ("zfec", "isa_l", "pyeclib")

#: Fragments at least this wide go to ISA-L when ``choose_engine`` prefers it.
ISAL_MIN_FRAGMENT = 64 << 10

#: Every ISA-L function this module calls; a library lacking one is not used.
ISAL_SYMBOLS = ("ec_init_tables", "ec_encode_data", "gf_gen_cauchy1_matrix", "gf_invert_matrix")

#: Decode tables kept per engine, keyed by (k, m, chosen parts, missing rows).
DECODE_CACHE_SIZE = 32


class ErasureEngine(Protocol):
    """Encode a stripe into ``k + m`` equal fragments; any ``k`` give it back."""

    name: str

    def fragment_size(self, k: int, m: int, stripe_len: int) -> int: ...

    def encode(self, k: int, m: int, stripe: Buffer) -> list[Buffer]: ...

    def decode(
        self, k: int, m: int, fragments: Mapping[int, Buffer], stripe_len: int
    ) -> Buffer: ...


def _check_km(k: int, m: int) -> None:
    if not (k >= 1 and m >= 1 and k + m <= 256):
        raise UsageError(f"need 1 <= k, 1 <= m, k + m <= 256 (k={k}, m={m})", "erasure")


def _need(k: int, m: int, have: int, where: str = "stripe") -> None:
    if have < k:
        raise UnrecoverableError(f"only {have} of {k + m} fragments, {k} needed", where)


def _usable(k: int, m: int, fragments: Mapping[int, Buffer], width: int) -> list[int]:
    """The fragment numbers usable for a decode (sorted), refusing fewer than
    ``k`` of them or one that is not ``width`` bytes."""
    nums = sorted(i for i in fragments if 0 <= i < k + m)
    _need(k, m, len(nums))
    for i in nums:
        if len(fragments[i]) != width:
            raise PartFormatError(f"fragment {i} is {len(fragments[i])} bytes, not {width}")
    return nums


class ZfecEngine:
    """zfec: blocks of ``ceil(L / k)`` bytes, zero-padded, systematic."""

    name = "zfec"

    def fragment_size(self, k: int, m: int, stripe_len: int) -> int:
        return max(1, -(-stripe_len // k))

    def encode(self, k: int, m: int, stripe: Buffer) -> list[Buffer]:
        _check_km(k, m)
        n = len(stripe)
        w = self.fragment_size(k, m, n)
        buf: Buffer = (
            memoryview(stripe).cast("B") if n == k * w else bytes(stripe) + bytes(k * w - n)
        )
        view = memoryview(buf)
        blocks: list[Buffer] = [view[i * w : (i + 1) * w] for i in range(k)]
        parity = zfec.Encoder(k, k + m).encode(list(blocks), list(range(k, k + m)))
        return blocks + list(parity)

    def decode(self, k: int, m: int, fragments: Mapping[int, Buffer], stripe_len: int) -> Buffer:
        _check_km(k, m)
        w = self.fragment_size(k, m, stripe_len)
        nums = _usable(k, m, fragments, w)
        if all(i in fragments for i in range(k)):
            out = b"".join(fragments[i] for i in range(k))
        else:
            chosen = nums[:k]  # primaries first (sorted), then parity
            # zfec reorders the block list it is given: always pass fresh lists.
            blocks = zfec.Decoder(k, k + m).decode([fragments[i] for i in chosen], list(chosen))
            out = b"".join(blocks)
        return out[:stripe_len] if len(out) != stripe_len else out


# --- GF(2^8), polynomial 0x11d (ISA-L's and zfec's field) -------------------


def _gf_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = exp[i + 255] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= 0x11D
    return tuple(exp), tuple(log)


_EXP, _LOG = _gf_tables()


def _gf_mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def _gf_inv(a: int) -> int:
    return 0 if a == 0 else _EXP[255 - _LOG[a]]


@functools.cache
def _mul_table(c: int) -> bytes:
    """``bytes.translate`` table multiplying every byte by ``c``."""
    return bytes(_gf_mul(c, v) for v in range(256))


@functools.cache
def cauchy_matrix(k: int, m: int) -> bytes:
    """The ``(k + m) x k`` generator the ``isa_l`` format pins (row-major):
    identity on top, then ``1 / (i ^ j)`` — ISA-L's ``gf_gen_cauchy1_matrix``."""
    _check_km(k, m)
    mat = bytearray((k + m) * k)
    for i in range(k):
        mat[i * k + i] = 1
    for i in range(k, k + m):
        for j in range(k):
            mat[i * k + j] = _gf_inv(i ^ j)
    return bytes(mat)


def _gf_invert(mat: bytes, k: int) -> bytes | None:
    """The inverse of the ``k x k`` matrix ``mat`` (Gauss-Jordan), or None if singular."""
    rows = [bytearray(mat[r * k : (r + 1) * k]) + bytes(r * [0]) + b"\x01" + bytes(k - r - 1)
            for r in range(k)]
    for col in range(k):
        piv = next((r for r in range(col, k) if rows[r][col]), None)
        if piv is None:
            return None
        rows[col], rows[piv] = rows[piv], rows[col]
        prow = bytes(rows[col]).translate(_mul_table(_gf_inv(rows[col][col])))
        rows[col] = bytearray(prow)
        pint = int.from_bytes(prow, "little")
        for r in range(k):
            c = rows[r][col]
            if r != col and c:
                scaled = pint if c == 1 else int.from_bytes(prow.translate(_mul_table(c)), "little")
                rows[r] = bytearray(
                    (int.from_bytes(rows[r], "little") ^ scaled).to_bytes(2 * k, "little")
                )
    return b"".join(bytes(r[k:]) for r in rows)


def _gf_matmul(coeffs: Sequence[bytes], srcs: Sequence[Buffer], width: int) -> list[bytes]:
    """``out[r] = sum_j coeffs[r][j] * srcs[j]`` over GF(2^8), ``width`` bytes each.

    Bytes are packed into one big integer per row, so each step works on a
    whole row at C speed: multiplying by ``x`` (0x02) is a masked shift, and
    each output row is Horner's rule over the 8 bits of its coefficients:
    ``acc = x * acc + XOR(srcs[j] whose coefficient has bit b)``, b = 7..0.
    """
    ints = [int.from_bytes(s, "little") for s in srcs]
    lo7 = int.from_bytes(b"\x7f" * width, "little")
    hi = int.from_bytes(b"\x80" * width, "little")
    xor = functools.partial(functools.reduce, operator.xor)
    out = []
    for row in coeffs:
        acc = 0
        for bit in range(7, -1, -1):
            if acc:
                acc = ((acc & lo7) << 1) ^ (((acc & hi) >> 7) * 0x1D)
            picked = [ints[j] for j, c in enumerate(row) if c >> bit & 1]
            if picked:
                acc ^= xor(picked, 0)
        out.append(acc.to_bytes(width, "little"))
    return out


# --- ISA-L: located, bound and checked once ---------------------------------


def _isal_candidates(search: Sequence[Path] | None) -> tuple[list[Path], str | None]:
    """Where to look for libisal: ``search`` (files or directories) if given,
    else the pyeclib wheel's ``pyeclib.libs`` and the system's ``libisal.so.2``.
    Returns the candidates and, when pyeclib cannot be located, why."""
    why = None
    if search is None:
        found: list[Path] = []
        try:
            spec = importlib.util.find_spec("pyeclib")
        except (ImportError, ValueError) as exc:
            spec, why = None, f"pyeclib cannot be imported ({exc})"
        if spec is not None and spec.origin:
            base = Path(spec.origin).resolve().parent.parent
            found = sorted(base.glob("pyeclib.libs/libisal*.so*"))
        elif why is None:
            why = "pyeclib is not installed"
        return [*found, Path("libisal.so.2")], why
    out: list[Path] = []
    for p in search:
        found = sorted(p.glob("libisal*.so*")) if p.is_dir() else [p]
        if not found:
            why = f"no libisal*.so* in {p}" if why is None else f"{why}, {p}"
        out += found
    return out, why


def _bind_isal(lib: ctypes.CDLL) -> str | None:
    """Declare the signature of every symbol we call; the missing one's name, if any."""
    vp, i = ctypes.c_void_p, ctypes.c_int
    sigs: dict[str, tuple[list[Any], Any]] = {
        "ec_init_tables": ([i, i, vp, vp], None),
        "ec_encode_data": ([i, i, i, vp, ctypes.POINTER(vp), ctypes.POINTER(vp)], None),
        "gf_gen_cauchy1_matrix": ([vp, i, i], None),
        "gf_invert_matrix": ([vp, vp, i], i),
    }
    for name in ISAL_SYMBOLS:
        try:
            fn = getattr(lib, name)
        except AttributeError:
            return name
        fn.argtypes, fn.restype = sigs[name]
    return None


def _find_isal(search: Sequence[Path] | None = None) -> tuple[ctypes.CDLL | None, str, str]:
    """The first ISA-L library that loads and has every symbol in :data:`ISAL_SYMBOLS`.

    Returns ``(library, path, reason)``: the library and where it came from,
    or ``None`` and why none was usable.
    """
    cands, why = _isal_candidates(search)
    reasons = [why] if why else []
    for cand in cands:
        try:
            lib = ctypes.CDLL(str(cand))
        except OSError as exc:
            if cand.is_absolute() or search is not None:
                reasons.append(f"{cand}: cannot load ({exc})")
            else:
                reasons.append(f"{cand}: not found by the loader")
            continue
        missing = _bind_isal(lib)
        if missing is not None:
            reasons.append(f"{cand}: missing symbol {missing}")
            continue
        return lib, str(cand), ""
    return None, "", "; ".join(reasons) or "no ISA-L library found"


def _addr(buf: bytearray | memoryview) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)) if len(buf) else 0


class _DecodeCache:
    """Bounded LRU of decode tables per (k, m, chosen parts, missing rows):
    every stripe (and column window) of one component with the same parts
    missing reuses one inversion. ``inversions`` counts the matrices inverted."""

    def __init__(self, size: int = DECODE_CACHE_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.inversions = 0

    def get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        # ``make`` runs under the lock: threads decoding stripes of the same
        # component wait for the one inversion instead of each doing it.
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
            value = make()
            self.inversions += 1
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            return value


class IsalEngine:
    """ISA-L Reed-Solomon (Cauchy matrix, ``gf_gen_cauchy1_matrix``), called directly.

    Uses a ``libisal`` found and checked by :func:`load_engines` (normally the
    one the pyeclib wheel bundles), through ctypes: the code is systematic
    (fragments ``0..k-1`` are the stripe's slices, zero padded), parity rows
    come from ISA-L's Cauchy matrix (MDS for every k, m with k + m <= 256),
    and the GIL is released during each call, so stripes encode on both cores
    at GB/s.
    """

    name = "isa_l"

    def __init__(self, lib: ctypes.CDLL, path: str = "") -> None:
        self._lib = lib
        self.path = path
        self._lock = threading.Lock()
        self._matrices: dict[tuple[int, int], bytearray] = {}
        self._tables: dict[tuple[int, int], bytearray] = {}
        self._decoders = _DecodeCache()

    @property
    def inversions(self) -> int:
        """Decode matrices inverted so far (one per erasure pattern, cached)."""
        return self._decoders.inversions

    def _matrix(self, k: int, m: int) -> tuple[bytearray, bytearray]:
        _check_km(k, m)
        with self._lock:
            mat = self._matrices.get((k, m))
            if mat is None:
                mat = bytearray((k + m) * k)
                self._lib.gf_gen_cauchy1_matrix(_addr(mat), k + m, k)
                tbls = bytearray(k * m * 32)
                self._lib.ec_init_tables(k, m, _addr(mat) + k * k, _addr(tbls))
                self._matrices[(k, m)] = mat
                self._tables[(k, m)] = tbls
            return mat, self._tables[(k, m)]

    def fragment_size(self, k: int, m: int, stripe_len: int) -> int:
        return max(1, -(-stripe_len // k))

    def _decode_tables(
        self, k: int, m: int, chosen: tuple[int, ...], missing: tuple[int, ...]
    ) -> bytearray:
        """Tables rebuilding ``missing`` data rows from ``chosen`` fragments (cached:
        every stripe of a component uses the same set)."""

        def make() -> bytearray:
            mat, _tbls = self._matrix(k, m)
            sub = bytearray(k * k)
            for r, idx in enumerate(chosen):
                sub[r * k : (r + 1) * k] = mat[idx * k : (idx + 1) * k]
            inv = bytearray(k * k)
            if self._lib.gf_invert_matrix(_addr(sub), _addr(inv), k):
                raise UnrecoverableError("ISA-L decode matrix is singular", "stripe")
            rows = bytearray(len(missing) * k)
            for r, i in enumerate(missing):
                rows[r * k : (r + 1) * k] = inv[i * k : (i + 1) * k]
            tbls = bytearray(k * len(missing) * 32)
            self._lib.ec_init_tables(k, len(missing), _addr(rows), _addr(tbls))
            return tbls

        tbls: bytearray = self._decoders.get((k, m, chosen, missing), make)
        return tbls

    def _run(  # noqa: PLR0917 - private
        self,
        width: int,
        k: int,
        rows: int,
        tbls: bytearray,
        bufs: tuple[bytearray | memoryview, bytearray],
        strides: tuple[int, int],
    ) -> None:
        """ec_encode_data over ``k`` source rows and ``rows`` output rows, each
        ``width`` bytes, laid out ``strides`` apart in ``bufs``."""
        src, dst = bufs
        sbase, dbase = _addr(src), _addr(dst)
        sp = (ctypes.c_void_p * k)(*[sbase + i * strides[0] for i in range(k)])
        dp = (ctypes.c_void_p * rows)(*[dbase + i * strides[1] for i in range(rows)])
        self._lib.ec_encode_data(width, k, rows, _addr(tbls), sp, dp)

    def encode(self, k: int, m: int, stripe: Buffer) -> list[Buffer]:
        n = len(stripe)
        w = self.fragment_size(k, m, n)
        pstride = _stride(w)
        _mat, tbls = self._matrix(k, m)
        view = memoryview(stripe).cast("B") if n else memoryview(b"")
        src: bytearray | memoryview
        if n == k * w and not view.readonly and view.contiguous and w % 64 not in (0, 32):
            src, sstride = view, w  # zero copy: data fragments are views of the input
        else:
            sstride = pstride
            src = bytearray(k * sstride)
            for i in range(k):
                chunk = view[i * w : (i + 1) * w]
                src[i * sstride : i * sstride + len(chunk)] = chunk
        parity = bytearray(m * pstride)
        self._run(w, k, m, tbls, (src, parity), (sstride, pstride))
        sv, pv = memoryview(src), memoryview(parity)
        out: list[Buffer] = [sv[i * sstride : i * sstride + w] for i in range(k)]
        out += [pv[i * pstride : i * pstride + w] for i in range(m)]
        return out

    def decode(self, k: int, m: int, fragments: Mapping[int, Buffer], stripe_len: int) -> Buffer:
        w = self.fragment_size(k, m, stripe_len)
        nums = _usable(k, m, fragments, w)
        # One copy per fragment: data fragments go straight to their row of the
        # output stripe, missing rows are rebuilt in place there (ISA-L takes
        # any row addresses), and the stripe is returned writable, so
        # re-encoding it (repair) needs no copy either.
        out = bytearray(k * w)
        ov = memoryview(out)
        for i in nums:
            if i < k:
                ov[i * w : (i + 1) * w] = fragments[i]
        missing = [i for i in range(k) if i not in fragments]
        if missing:
            chosen = nums[:k]
            tbls = self._decode_tables(k, m, tuple(chosen), tuple(missing))
            extra = [i for i in chosen if i >= k]
            stride = _stride(w)
            par = bytearray(len(extra) * stride)
            for r, idx in enumerate(extra):
                par[r * stride : r * stride + w] = fragments[idx]
            base, pbase = _addr(out), _addr(par)
            rows = {idx: pbase + r * stride for r, idx in enumerate(extra)}
            srcs = [base + i * w if i < k else rows[i] for i in chosen]
            dsts = [base + i * w for i in missing]
            self._run_ptrs(w, tbls, srcs, dsts)
        return ov[:stripe_len] if len(out) != stripe_len else out

    def _run_ptrs(self, width: int, tbls: bytearray, srcs: list[int], dsts: list[int]) -> None:
        """ec_encode_data from the rows at ``srcs`` into the rows at ``dsts``."""
        sp = (ctypes.c_void_p * len(srcs))(*srcs)
        dp = (ctypes.c_void_p * len(dsts))(*dsts)
        self._lib.ec_encode_data(width, len(srcs), len(dsts), _addr(tbls), sp, dp)


def _stride(width: int) -> int:
    """Distance between rows handed to ISA-L: the width plus 1000 bytes.

    With rows exactly a power of two (or a multiple of 64) apart, the k
    source streams collide in the same cache sets and encoding drops to
    ~0.6 GB/s; 1000 extra bytes (not a multiple of 64) keep it at ~2.6 GB/s
    for every width measured here (64 KiB .. 256 KiB, k=244, m=12). Seal
    picks ISA-L fragment widths with ``width % 64 == 40`` so a stripe already
    in memory can be encoded in place at its natural stride.
    """
    return width + 1000


class PortableCauchyEngine:
    """The ``isa_l`` format without ISA-L: the same systematic Cauchy code
    (:func:`cauchy_matrix`), computed in Python by :func:`_gf_matmul`.

    Byte-identical to :class:`IsalEngine` (the fallback self-test and
    ``tests/sealing/test_engines.py`` check it), ~10x slower. Decode tables
    (the inverted matrix rows) are cached like ISA-L's.
    """

    name = "isa_l"

    def __init__(self) -> None:
        self._decoders = _DecodeCache()

    @property
    def inversions(self) -> int:
        return self._decoders.inversions

    def fragment_size(self, k: int, m: int, stripe_len: int) -> int:
        return max(1, -(-stripe_len // k))

    def encode(self, k: int, m: int, stripe: Buffer) -> list[Buffer]:
        _check_km(k, m)
        n = len(stripe)
        w = self.fragment_size(k, m, n)
        view = memoryview(stripe).cast("B") if n else memoryview(b"")
        if n != k * w:
            view = memoryview(bytes(view) + bytes(k * w - n))
        blocks: list[Buffer] = [view[i * w : (i + 1) * w] for i in range(k)]
        mat = cauchy_matrix(k, m)
        rows = [mat[r * k : (r + 1) * k] for r in range(k, k + m)]
        return blocks + list(_gf_matmul(rows, blocks, w))

    def decode(self, k: int, m: int, fragments: Mapping[int, Buffer], stripe_len: int) -> Buffer:
        _check_km(k, m)
        w = self.fragment_size(k, m, stripe_len)
        nums = _usable(k, m, fragments, w)
        out = bytearray(k * w)
        for i in nums:
            if i < k:
                out[i * w : (i + 1) * w] = fragments[i]
        missing = tuple(i for i in range(k) if i not in fragments)
        if missing:
            chosen = tuple(nums[:k])

            def make() -> list[bytes]:
                mat = cauchy_matrix(k, m)
                sub = b"".join(mat[i * k : (i + 1) * k] for i in chosen)
                inv = _gf_invert(sub, k)
                if inv is None:
                    raise UnrecoverableError("Cauchy decode matrix is singular", "stripe")
                return [inv[i * k : (i + 1) * k] for i in missing]

            rows: list[bytes] = self._decoders.get((k, m, chosen, missing), make)
            for i, row in zip(missing, _gf_matmul(rows, [fragments[c] for c in chosen], w),
                              strict=True):
                out[i * w : (i + 1) * w] = row
        return memoryview(out)[:stripe_len] if len(out) != stripe_len else out


class PyeclibEngine:
    """pyeclib ``isa_l_rs_cauchy``; fragments carry liberasurecode's 80-byte header."""

    name = "pyeclib"

    def __init__(self, module: Any) -> None:
        self._iface = module  # pyeclib.ec_iface, imported by load_engines
        self._drivers: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    def _driver(self, k: int, m: int) -> Any:
        _check_km(k, m)
        with self._lock:
            d = self._drivers.get((k, m))
            if d is None:
                d = self._iface.ECDriver(k=k, m=m, ec_type="isa_l_rs_cauchy")
                self._drivers[(k, m)] = d
            return d

    def fragment_size(self, k: int, m: int, stripe_len: int) -> int:
        if stripe_len < 1:
            raise UsageError("pyeclib cannot encode an empty stripe", "erasure")
        info = self._driver(k, m).get_segment_info(stripe_len, stripe_len)
        return int(info["fragment_size"])

    def encode(self, k: int, m: int, stripe: Buffer) -> list[Buffer]:
        if len(stripe) < 1:
            raise UsageError("pyeclib cannot encode an empty stripe", "erasure")
        frags = self._driver(k, m).encode(bytes(stripe))
        return list(frags)

    def decode(self, k: int, m: int, fragments: Mapping[int, Buffer], stripe_len: int) -> Buffer:
        nums = sorted(i for i in fragments if 0 <= i < k + m)
        _need(k, m, len(nums))
        chosen = nums[:k]
        try:
            out = self._driver(k, m).decode([bytes(fragments[i]) for i in chosen])
        except self._iface.ECDriverError as exc:
            raise UnrecoverableError(f"pyeclib decode failed: {exc}", "stripe") from exc
        if len(out) != stripe_len:
            raise PartFormatError(f"pyeclib decoded {len(out)} bytes, expected {stripe_len}")
        return bytes(out)


# --- the registry -------------------------------------------------------------


@dataclass(frozen=True)
class EngineStatus:
    """One engine as ``auraseal version --engines`` shows it."""

    name: str  # "isa-l" | "portable" | "zfec" | "pyeclib"
    available: bool
    in_use: bool
    path: str | None
    reason: str | None  # why it is not available / not in use
    serves: tuple[str, ...]  # the format engines it computes here

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": self.available,
            "in_use": self.in_use,
            "path": self.path,
            "reason": self.reason,
            "serves": list(self.serves),
        }


@functools.cache
def _pyeclib() -> tuple[PyeclibEngine | None, str | None, str]:
    """pyeclib's engine, imported on first need (it is slow to import):
    ``(engine, path, reason)``; the engine is None when it cannot be imported."""
    try:
        import pyeclib.ec_iface as iface  # noqa: PLC0415 - optional, heavy
    except ImportError as exc:
        return None, None, f"cannot import pyeclib ({exc})"
    return PyeclibEngine(iface), str(Path(iface.__file__ or "").parent), ""


@dataclass(frozen=True)
class Engines:
    """The erasure engines of this process, loaded and checked once.

    pyeclib is imported only when a ``pyeclib`` package needs it or its
    status is asked for (:meth:`statuses`)."""

    zfec: ZfecEngine
    isa_l: IsalEngine | PortableCauchyEngine
    #: Why ISA-L is not in use ("" when it is).
    isal_reason: str
    #: False when the caller asked to act as if pyeclib were not installed.
    pyeclib_allowed: bool
    #: Why something is not in use and what is used instead (one line), or None.
    warning: str | None

    def _pyeclib(self) -> tuple[PyeclibEngine | None, str | None, str]:
        return _pyeclib() if self.pyeclib_allowed else (None, None, "pyeclib disabled")

    def get(self, name: str) -> ErasureEngine:
        if name == "zfec":
            return self.zfec
        if name == "isa_l":
            return self.isa_l
        if name == "pyeclib":
            eng, _path, why = self._pyeclib()
            if eng is None:
                raise EngineUnavailableError(
                    f"engine pyeclib is not available here: {why}", "engine pyeclib"
                )
            return eng
        raise UsageError(
            f"unknown erasure engine {name!r} (use {', '.join(ENGINE_NAMES)})", "engine"
        )

    def statuses(self) -> tuple[EngineStatus, ...]:
        """Each engine, whether it is in use, where it is, and why not."""
        native = isinstance(self.isa_l, IsalEngine)
        lib_path = self.isa_l.path if isinstance(self.isa_l, IsalEngine) else None
        py, py_path, py_why = self._pyeclib()
        return (
            EngineStatus("isa-l", native, native, lib_path, self.isal_reason or None,
                         ("isa_l",) if native else ()),
            EngineStatus("portable", True, not native, None,
                         "ISA-L is in use" if native else None,
                         () if native else ("isa_l",)),
            EngineStatus("zfec", True, True, str(Path(zfec.__file__ or "").parent), None,
                         ("zfec",)),
            EngineStatus("pyeclib", py is not None, False, py_path,
                         py_why or "used only with seal --engine pyeclib",
                         ("pyeclib",) if py is not None else ()),
        )


def _self_test(native: IsalEngine) -> str | None:
    """Encode and decode known bytes with ISA-L and with the portable reference;
    why they disagree, or None."""
    k, m = 5, 3
    data = bytes((i * 37 + 11) & 0xFF for i in range(5 * 67 - 3))
    ref = PortableCauchyEngine()
    try:
        mat = bytearray((k + m) * k)
        native._lib.gf_gen_cauchy1_matrix(_addr(mat), k + m, k)
        if bytes(mat) != cauchy_matrix(k, m):
            return "gf_gen_cauchy1_matrix differs from the pinned Cauchy matrix"
        got = [bytes(f) for f in native.encode(k, m, data)]
        if got != [bytes(f) for f in ref.encode(k, m, data)]:
            return "encoding differs from the pinned Cauchy code"
        frags = {i: got[i] for i in (1, 3, 5, 6, 7)}
        if bytes(native.decode(k, m, frags, len(data))) != data:
            return "decoding with 2 data fragments missing gave other bytes"
    except (OSError, ValueError, ctypes.ArgumentError, UnrecoverableError) as exc:
        return f"self-test failed: {exc}"
    return None


def load_engines(isal_search: Sequence[Path] | None = None, *, pyeclib: bool = True) -> Engines:
    """Load and check the engines (uncached; :func:`engines` is the per-process one).

    ``isal_search`` replaces the places ISA-L is looked for (files or
    directories); ``pyeclib=False`` acts as if pyeclib were not installed.
    """
    lib, lib_path, isal_reason = _find_isal(isal_search)
    isal: IsalEngine | PortableCauchyEngine = PortableCauchyEngine()
    if lib is not None:
        native = IsalEngine(lib, lib_path)
        why = _self_test(native)
        if why is None:
            isal = native
        else:
            isal_reason = f"{lib_path}: {why}"
    warning = None
    if not isinstance(isal, IsalEngine):
        warning = (
            f"ISA-L not used ({isal_reason}); isa_l parts are computed by the portable "
            "Cauchy code (same bytes, slower)"
        )
    return Engines(
        zfec=ZfecEngine(),
        isa_l=isal,
        isal_reason=isal_reason,
        pyeclib_allowed=pyeclib,
        warning=warning,
    )


@functools.cache
def engines() -> Engines:
    """This process's engines, loaded and checked on first use."""
    return load_engines()


def loaded_engines() -> Engines | None:
    """This process's engines if something has loaded them, else None (loads nothing)."""
    return engines() if engines.cache_info().currsize else None


def get_engine(name: str) -> ErasureEngine:
    """The engine for format engine ``name`` (``zfec``, ``isa_l`` or ``pyeclib``)."""
    return engines().get(name)


def choose_engine(fragment_width: int, prefer: str | None = None) -> str:
    """The engine for fragments of ``fragment_width`` bytes.

    Measured here (``bench/seal_vs_par2.py`` prints the table): for k=244,
    m=12, ISA-L called directly encodes at ~1.1 GB/s per core (GIL released,
    so ~2.2 GB/s on two) against zfec's ~130-145 MB/s; but ISA-L's decode
    inverts a k x k matrix in plain C per erasure pattern (~60 ms at k=244,
    once per pattern: the tables are cached), which dominates for small
    fragments, where zfec decodes faster. So fragments of at least 64 KiB
    (components above ~16 MiB at k=244) go to ISA-L, smaller ones to zfec.
    The choice does not depend on whether ISA-L loaded: without it the
    portable code writes the same ``isa_l`` bytes, so a package is the same
    on every machine. pyeclib's ECDriver (same ISA-L, but holding the GIL,
    copying, and adding an 80-byte header per fragment) reached only
    200-460 MB/s and is kept only on request.
    """
    if prefer is not None:
        get_engine(prefer)
        return prefer
    return "isa_l" if fragment_width >= ISAL_MIN_FRAGMENT else "zfec"
