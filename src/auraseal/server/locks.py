"""Cross-process locks below ROOT (several workers share one ROOT).

``fcntl.flock`` locks belong to an open file description, so they exclude
other processes and other threads of this process alike (each call opens
the lock file anew). Lock files live in ``ROOT/.auraseal/locks`` (never served).
"""

from __future__ import annotations

from auraseal._fs import file_lock

__all__ = ["file_lock"]
