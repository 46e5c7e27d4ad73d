"""Cross-process locks below ROOT (several workers share one ROOT).

``fcntl.flock`` locks belong to an open file description, so they exclude
other processes and other threads of this process alike (each call opens
the lock file anew). Lock files live in ``ROOT/.auraseal/locks`` (never served).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from auraseal.errors import StorageError

__all__ = ["file_lock"]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open lock file: {exc.strerror}", str(path)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
