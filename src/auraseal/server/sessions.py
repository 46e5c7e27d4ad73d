"""Operator sessions of the dashboard, and the limits on unauthenticated verify runs.

``POST /login`` with the publish token creates a session: a random id (never
the token) in an ``HttpOnly; SameSite=Strict`` cookie (``Secure`` over
https). The server keeps only the SHA-256 of the id and its expiry, as a file
under ``ROOT/.auraseal/sessions/`` so every worker process (and a restart)
sees it. State-changing dashboard posts need the session plus a same-origin
``Origin`` (or ``Referer``) header (:func:`same_origin`).

Without any publish token configured nobody can log in; ``POST /verify`` is
then open but runs one at a time and at most once per
:attr:`OperatorAuth.min_interval` seconds (:class:`RunLimiter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from auraseal._fs import atomic_writer, clean_stale_temps, is_temp_name
from auraseal.server.publish import TokenSet

__all__ = ["COOKIE_NAME", "OperatorAuth", "RunLimiter", "same_origin"]

COOKIE_NAME = "auraseal_session"
SESSION_SECONDS = 12 * 3600
#: Temp-file kind (``_fs.temp_name``) of session files being written.
SESSION_KIND = "session"


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """True if the request's ``Origin`` (else ``Referer``) names this host.

    A POST with neither header is refused: browsers send ``Origin`` on every
    form POST, so only a forged or stripped request lacks both."""
    origin = headers.get("origin")
    if origin is None or origin == "null":
        origin = headers.get("referer")
    if not origin:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host and bool(host)


@dataclass
class RunLimiter:
    """One run at a time, and no more than one per ``min_interval`` seconds."""

    min_interval: float = 10.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _busy: bool = False
    _last: float = -1e18

    def try_start(self) -> float | None:
        """None if a run may start now (then call :meth:`done`), else seconds to wait."""
        with self._lock:
            now = time.monotonic()
            wait = self._last + self.min_interval - now
            if self._busy:
                return max(wait, 1.0)
            if wait > 0:
                return wait
            self._busy = True
            self._last = now
            return None

    def done(self) -> None:
        with self._lock:
            self._busy = False


class OperatorAuth:
    """Who may trigger a verify: bearer token or logged-in session (files below ``dir``)."""

    def __init__(self, tokens: TokenSet, directory: Path, min_interval: float = 10.0) -> None:
        self.tokens = tokens
        self.dir = Path(directory)
        self.limiter = RunLimiter(min_interval)
        with contextlib.suppress(OSError):
            clean_stale_temps(self.dir, {SESSION_KIND})

    @property
    def enabled(self) -> bool:
        """True if a publish token is configured (then verify needs auth)."""
        return bool(self.tokens.hashes)

    def bearer_ok(self, authorization: str | None) -> bool:
        return self.tokens.check(authorization)

    def _path(self, session_id: str) -> Path:
        return self.dir / hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()

    def login(self, token: str) -> str | None:
        """A new session id if ``token`` is a publish token, else None."""
        if not token or len(token) > 512 or not self.tokens.check(f"Bearer {token}"):
            return None
        sid = secrets.token_urlsafe(32)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_writer(self._path(sid), 0o600, kind=SESSION_KIND) as fh:
            fh.write(str(int(time.time()) + SESSION_SECONDS).encode())
        self._prune()
        return sid

    def session_ok(self, session_id: str | None) -> bool:
        if not session_id or len(session_id) > 128:
            return False
        try:
            expires = int(self._path(session_id).read_text("ascii").strip())
        except (OSError, ValueError):
            return False
        return expires > time.time()

    def logout(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            with contextlib.suppress(OSError):
                self._path(session_id).unlink()

    def _prune(self) -> None:
        """Drop expired sessions (a few files; done on each login)."""
        now = time.time()
        with contextlib.suppress(OSError):
            for n in os.listdir(self.dir):
                if is_temp_name(n):
                    continue
                p = self.dir / n
                try:
                    if int(p.read_text("ascii").strip()) <= now:
                        p.unlink()
                except (OSError, ValueError):
                    continue
