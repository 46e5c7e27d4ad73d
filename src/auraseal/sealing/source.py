"""Where a component's bytes come from: the one source interface of the pipeline.

Every step that reads a package's members (an original, its part files, the
manifest) reads them through a :class:`MemberSource`: a package directory or
zip (:class:`~auraseal.sealing.package.Package` implements it), bytes held in
memory (:class:`MemorySource`), or parts downloaded over HTTP (the client's
spool). :class:`CountingSource` wraps any of them and counts the bytes each
member hands out, which is how tests show that a step reads each byte once.

A source answers two questions and never raises for a missing member:

* ``size(name)``: the member's size, or ``None`` if it is absent;
* ``reader(name)``: a ``read(offset, length)`` callable, or ``None``.

A read that fails for an environment reason raises
:class:`~auraseal.errors.StorageError` naming the member (exit 5).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Protocol

__all__ = ["Buffer", "CountingSource", "MemberSource", "MemorySource", "ReadRange"]

Buffer = bytes | bytearray | memoryview
#: ``read(offset, length)``: at most ``length`` bytes of one member from ``offset``.
ReadRange = Callable[[int, int], Buffer]


class MemberSource(Protocol):
    """Read access to the members of one package (see the module docstring)."""

    @property
    def where(self) -> str: ...

    def size(self, name: str) -> int | None: ...

    def reader(self, name: str) -> ReadRange | None: ...


class MemorySource:
    """Members held as bytes (tests, uploads already in memory, small fetches)."""

    def __init__(self, members: Mapping[str, Buffer], where: str = "<memory>") -> None:
        self._members = {k: memoryview(v) for k, v in members.items()}
        self._where = where

    @property
    def where(self) -> str:
        return self._where

    def size(self, name: str) -> int | None:
        view = self._members.get(name)
        return None if view is None else view.nbytes

    def reader(self, name: str) -> ReadRange | None:
        view = self._members.get(name)
        if view is None:
            return None
        return lambda off, length: view[off : off + length]


class CountingSource:
    """Wraps a source and counts, per member, the bytes its readers returned."""

    def __init__(self, inner: MemberSource) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return self.inner.where

    def size(self, name: str) -> int | None:
        return self.inner.size(name)

    def reader(self, name: str) -> ReadRange | None:
        read = self.inner.reader(name)
        if read is None:
            return None

        def counted(off: int, length: int) -> Buffer:
            data = read(off, length)
            with self._lock:
                self.counts[name] += len(data)
            return data

        return counted
