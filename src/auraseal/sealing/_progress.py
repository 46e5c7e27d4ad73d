"""Progress in bytes *within* a file, for seal, scrub, repair and unseal.

A :class:`FileMeter` turns reads of a file's bytes into ``progress(nbytes)``
calls as they happen (so a bar moves during one large file), caps each file
at its size (a file read twice is not counted twice) and, when the file is
done, reports what was not read (a file rebuilt from parts), so the bar ends
exactly at the sum of the sizes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auraseal.sealing.package import Package

__all__ = ["FileMeter", "metered"]


class FileMeter:
    """``read(path, n)`` as bytes of ``path`` are processed; ``done(path)`` at its end."""

    def __init__(self, progress: Callable[[int], None], sizes: Mapping[str, int]) -> None:
        self._progress = progress
        self._sizes = dict(sizes)
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def read(self, path: str, n: int) -> None:
        size = self._sizes.get(path)
        if size is None:  # not a file being metered (a part file)
            return
        with self._lock:
            seen = self._seen.get(path, 0)
            add = max(0, min(n, size - seen))
            self._seen[path] = seen + add
        if add:
            self._progress(add)

    def done(self, path: str) -> None:
        with self._lock:
            left = self._sizes.get(path, 0) - self._seen.get(path, 0)
            self._seen[path] = self._sizes.get(path, 0)
        if left > 0:
            self._progress(left)


@contextmanager
def metered(
    pkg: Package, progress: Callable[[int], None] | None
) -> Iterator[Callable[[str], None]]:
    """Meter reads of ``pkg``'s files while the block runs; yields ``done(path)``."""
    if progress is None:
        yield lambda _path: None
        return
    meter = FileMeter(progress, {e.path: e.size for e in pkg.manifest.files})
    before = pkg.on_read
    pkg.on_read = meter.read
    try:
        yield meter.done
    finally:
        pkg.on_read = before
