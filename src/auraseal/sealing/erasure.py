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

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import zfec
from pyeclib.ec_iface import ECDriver, ECDriverError

from auraseal.errors import PartFormatError, UnrecoverableError, UsageError

__all__ = [
    "ENGINE_NAMES",
    "ErasureEngine",
    "IsalEngine",
    "ZfecEngine",
    "choose_engine",
    "get_engine",
]

Buffer = bytes | bytearray | memoryview

ENGINE_NAMES = ("zfec", "isa_l")

#: Fragments at least this wide go to ISA-L when ``choose_engine`` prefers it.
ISAL_MIN_FRAGMENT = 1 << 30


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


class IsalEngine:
    """pyeclib ``isa_l_rs_cauchy``; fragments carry an 80-byte header."""

    name = "isa_l"

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
            raise UsageError("isa_l cannot encode an empty stripe", "erasure")
        info = self._driver(k, m).get_segment_info(stripe_len, stripe_len)
        return int(info["fragment_size"])

    def encode(self, k: int, m: int, stripe: Buffer) -> list[Buffer]:
        if len(stripe) < 1:
            raise UsageError("isa_l cannot encode an empty stripe", "erasure")
        frags = self._driver(k, m).encode(bytes(stripe))
        return list(frags)

    def decode(self, k: int, m: int, fragments: Mapping[int, Buffer], stripe_len: int) -> Buffer:
        nums = sorted(i for i in fragments if 0 <= i < k + m)
        _need(k, m, len(nums))
        chosen = nums[:k]
        try:
            out = self._driver(k, m).decode([bytes(fragments[i]) for i in chosen])
        except ECDriverError as exc:
            raise UnrecoverableError(f"isa_l decode failed: {exc}", "stripe") from exc
        if len(out) != stripe_len:
            raise PartFormatError(f"isa_l decoded {len(out)} bytes, expected {stripe_len}")
        return bytes(out)


def get_engine(name: str) -> ErasureEngine:
    """A fresh engine object by name (``zfec`` or ``isa_l``)."""
    if name == "zfec":
        return ZfecEngine()
    if name == "isa_l":
        return IsalEngine()
    raise UsageError(f"unknown erasure engine {name!r} (use {', '.join(ENGINE_NAMES)})", "engine")


def choose_engine(fragment_width: int, prefer: str | None = None) -> str:
    """The engine for fragments of ``fragment_width`` bytes.

    zfec serves every width by default: on this 2-core machine it encodes at
    ~145 MB/s per core and releases the GIL (so stripes run on both cores),
    while pyeclib holds the GIL and reaches 200-320 MB/s on one core for
    k=244, m=12; below ~64 KiB fragments pyeclib's per-call matrix set-up
    makes decode collapse. ``bench/seal_vs_par2.py`` prints the table.
    """
    if prefer is not None:
        get_engine(prefer)
        return prefer
    return "isa_l" if fragment_width >= ISAL_MIN_FRAGMENT else "zfec"


def engines_for(names: Sequence[str]) -> dict[str, ErasureEngine]:
    return {n: get_engine(n) for n in names}
