"""Reed-Solomon erasure coding of one stripe, behind one small interface.

Two engines (``docs/FORMAT.md`` §4):

* :class:`ZfecEngine` — ``zfec`` (systematic Vandermonde RS over GF(2^8));
  releases the GIL, so stripes encode on both cores. No per-fragment overhead.
* :class:`IsalEngine` — ``pyeclib`` with liberasurecode's ISA-L backend,
  ``isa_l_rs_cauchy`` (MDS for every k, m; ``isa_l_rs_vand`` is not for
  m >= 5). Each fragment carries liberasurecode's 80-byte header.

:func:`choose_engine` picks one by fragment width; ``bench/seal_vs_par2.py``
prints the measurements behind the choice.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import zfec
from pyeclib.ec_iface import ECDriver, ECDriverError

from auraseal.errors import PartFormatError, UnrecoverableError, UsageError

__all__ = [
    "ENGINE_NAMES",
    "ErasureEngine",
    "IsalEngine",
    "PyeclibEngine",
    "ZfecEngine",
    "choose_engine",
    "get_engine",
]

Buffer = bytes | bytearray | memoryview

ENGINE_NAMES = ("zfec", "isa_l", "pyeclib")

#: Fragments at least this wide go to ISA-L when ``choose_engine`` prefers it.
ISAL_MIN_FRAGMENT = 64 << 10


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
        nums = sorted(i for i in fragments if 0 <= i < k + m)
        _need(k, m, len(nums))
        for i in nums:
            if len(fragments[i]) != w:
                raise PartFormatError(f"fragment {i} is {len(fragments[i])} bytes, not {w}")
        if all(i in fragments for i in range(k)):
            out = b"".join(fragments[i] for i in range(k))
        else:
            chosen = nums[:k]  # primaries first (sorted), then parity
            # zfec reorders the block list it is given: always pass fresh lists.
            blocks = zfec.Decoder(k, k + m).decode([fragments[i] for i in chosen], list(chosen))
            out = b"".join(blocks)
        return out[:stripe_len] if len(out) != stripe_len else out


def _find_isal() -> ctypes.CDLL | None:
    """The ISA-L shared library bundled in the pyeclib wheel (``pyeclib.libs``)."""
    import pyeclib  # noqa: PLC0415 - only to locate the wheel's bundled libraries

    base = Path(pyeclib.__file__).resolve().parent.parent
    for cand in [*sorted(base.glob("pyeclib.libs/libisal*.so*")), Path("libisal.so.2")]:
        try:
            lib = ctypes.CDLL(str(cand))
            lib.ec_encode_data  # noqa: B018 - probe the symbol
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _addr(buf: bytearray | memoryview) -> int:
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)) if len(buf) else 0


class IsalEngine:
    """ISA-L Reed-Solomon (Cauchy matrix, ``gf_gen_cauchy1_matrix``), called directly.

    Uses the ``libisal`` that the pyeclib wheel bundles, through ctypes: the
    code is systematic (fragments ``0..k-1`` are the stripe's slices, zero
    padded), parity rows come from ISA-L's Cauchy matrix (MDS for every k, m
    with k + m <= 256), and the GIL is released during each call, so stripes
    encode on both cores at GB/s.
    """

    name = "isa_l"

    def __init__(self) -> None:
        lib = _find_isal()
        if lib is None:
            raise UsageError("ISA-L (bundled with pyeclib) is not available", "engine")
        self._lib = lib
        self._lock = threading.Lock()
        self._matrices: dict[tuple[int, int], bytearray] = {}
        self._tables: dict[tuple[int, int], bytearray] = {}
        self._decoders: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], bytearray] = {}

    def _matrix(self, k: int, m: int) -> tuple[bytearray, bytearray]:
        _check_km(k, m)
        with self._lock:
            mat = self._matrices.get((k, m))
            if mat is None:
                mat = bytearray((k + m) * k)
                self._lib.gf_gen_cauchy1_matrix(
                    ctypes.c_void_p(_addr(mat)), ctypes.c_int(k + m), ctypes.c_int(k)
                )
                tbls = bytearray(k * m * 32)
                self._lib.ec_init_tables(
                    ctypes.c_int(k),
                    ctypes.c_int(m),
                    ctypes.c_void_p(_addr(mat) + k * k),
                    ctypes.c_void_p(_addr(tbls)),
                )
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
        key = (k, m, chosen, missing)
        with self._lock:
            cached = self._decoders.get(key)
        if cached is not None:
            return cached
        mat, _tbls = self._matrix(k, m)
        sub = bytearray(k * k)
        for r, idx in enumerate(chosen):
            sub[r * k : (r + 1) * k] = mat[idx * k : (idx + 1) * k]
        inv = bytearray(k * k)
        if self._lib.gf_invert_matrix(
            ctypes.c_void_p(_addr(sub)), ctypes.c_void_p(_addr(inv)), ctypes.c_int(k)
        ):
            raise UnrecoverableError("ISA-L decode matrix is singular", "stripe")
        rows = bytearray(len(missing) * k)
        for r, i in enumerate(missing):
            rows[r * k : (r + 1) * k] = inv[i * k : (i + 1) * k]
        tbls = bytearray(k * len(missing) * 32)
        self._lib.ec_init_tables(
            ctypes.c_int(k),
            ctypes.c_int(len(missing)),
            ctypes.c_void_p(_addr(rows)),
            ctypes.c_void_p(_addr(tbls)),
        )
        with self._lock:
            if len(self._decoders) > 16:
                self._decoders.clear()
            self._decoders[key] = tbls
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
        self._lib.ec_encode_data(
            ctypes.c_int(width),
            ctypes.c_int(k),
            ctypes.c_int(rows),
            ctypes.c_void_p(_addr(tbls)),
            sp,
            dp,
        )

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
        nums = sorted(i for i in fragments if 0 <= i < k + m)
        _need(k, m, len(nums))
        for i in nums:
            if len(fragments[i]) != w:
                raise PartFormatError(f"fragment {i} is {len(fragments[i])} bytes, not {w}")
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
        self._lib.ec_encode_data(
            ctypes.c_int(width),
            ctypes.c_int(len(srcs)),
            ctypes.c_int(len(dsts)),
            ctypes.c_void_p(_addr(tbls)),
            sp,
            dp,
        )


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


class PyeclibEngine:
    """pyeclib ``isa_l_rs_cauchy``; fragments carry liberasurecode's 80-byte header."""

    name = "pyeclib"

    def __init__(self) -> None:
        self._drivers: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()

    def _driver(self, k: int, m: int) -> Any:
        _check_km(k, m)
        with self._lock:
            d = self._drivers.get((k, m))
            if d is None:
                d = ECDriver(k=k, m=m, ec_type="isa_l_rs_cauchy")
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
        except ECDriverError as exc:
            raise UnrecoverableError(f"pyeclib decode failed: {exc}", "stripe") from exc
        if len(out) != stripe_len:
            raise PartFormatError(f"pyeclib decoded {len(out)} bytes, expected {stripe_len}")
        return bytes(out)


def get_engine(name: str) -> ErasureEngine:
    """A fresh engine object by name (``zfec`` or ``isa_l``)."""
    if name == "zfec":
        return ZfecEngine()
    if name == "isa_l":
        return IsalEngine()
    if name == "pyeclib":
        return PyeclibEngine()
    raise UsageError(f"unknown erasure engine {name!r} (use {', '.join(ENGINE_NAMES)})", "engine")


def choose_engine(fragment_width: int, prefer: str | None = None) -> str:
    """The engine for fragments of ``fragment_width`` bytes.

    Measured here (``bench/seal_vs_par2.py`` prints the table): for k=244,
    m=12, ISA-L called directly encodes at ~1.1 GB/s per core (GIL released,
    so ~2.2 GB/s on two) against zfec's ~130-145 MB/s; but ISA-L's decode
    inverts a k x k matrix in plain C per erasure pattern (~60 ms at k=244),
    which dominates for small fragments, where zfec decodes faster. So
    fragments of at least 64 KiB (components above ~16 MiB at k=244) go to
    ISA-L, smaller ones to zfec. pyeclib's ECDriver (same ISA-L, but holding
    the GIL, copying, and adding an 80-byte header per fragment) reached only
    200-460 MB/s and is kept only on request.
    """
    if prefer is not None:
        get_engine(prefer)
        return prefer
    return "isa_l" if fragment_width >= ISAL_MIN_FRAGMENT else "zfec"


def engines_for(names: Sequence[str]) -> dict[str, ErasureEngine]:
    return {n: get_engine(n) for n in names}
