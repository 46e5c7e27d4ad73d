"""The server's log: one line per request (access) and per event, to a stream.

The library never chooses where lines go: ``auraseal serve`` builds a
:class:`ServerLog` on ``sys.stderr`` and hands it to
:func:`auraseal.server.app.create_app`; without one the server logs nothing.

Two formats (``--log-format``):

``text`` (default)::

    2026-11-28T20:30:27Z access 127.0.0.1 "GET /packages/site/files/index.html" 200 1234B 0.8ms
    2026-11-28T20:30:28Z event publish package=site version=2 files=5 bytes=40960

``json``: one JSON object per line, ``{"time", "log": "access"|"event", ...}``
(access: ``client``, ``method``, ``path``, ``query``, ``status``, ``bytes``,
``duration_ms``; event: ``event`` plus the event's fields).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "ServerLog"]

LOG_FORMATS = ("text", "json")

Message = MutableMapping[str, Any]
SendFn = Callable[[Message], Awaitable[None]]


#: a JSON string literal (the C escaper json.dumps uses)
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
_JSON_ACCESS = (
    '{"time":"%s","log":"access","client":%s,"method":%s,"path":%s,"query":%s,'
    '"status":%d,"bytes":%d,"duration_ms":%.3f}'
)


def _text_value(v: Any) -> str:
    if isinstance(v, str):
        return v if v and not any(c.isspace() or c in '"=' for c in v) else json.dumps(v)
    return json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)


class ServerLog:
    """Writes access and event lines to ``stream`` (thread-safe, one write per line)."""

    def __init__(self, stream: TextIO, fmt: str = "text", *, access: bool = True) -> None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {LOG_FORMATS}")
        self.stream = stream
        self.fmt = fmt
        self.access_enabled = access
        self._lock = threading.Lock()
        self._second = -1
        self._stamp = ""

    def _now(self) -> str:
        """The current UTC time as ``2026-11-28T20:30:27Z`` (formatted once a second)."""
        sec = int(time.time())
        if sec != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))
            self._second = sec
        return self._stamp

    def _write(self, line: str) -> None:
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken log stream never fails a request

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """One line for an event (publish, repair, tamper, lost, expiry_warning, ...)."""
        now = self._now()
        fields = {k: v for k, v in data.items() if k not in ("type", "time")}
        if self.fmt == "json":
            rec = {"time": now, "log": "event", "event": kind, **fields}
            self._write(json.dumps(rec, separators=(",", ":"), default=str))
        else:
            parts = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
            self._write(f"{now} event {kind} {parts}".rstrip())

    def access(
        self, *, client: str, method: str, path: str, query: str, status: int, size: int,
        duration_ms: float,
    ) -> None:
        """One line for a completed HTTP request."""
        if not self.access_enabled:
            return
        now = self._now()
        if self.fmt == "json":  # formatted by hand: this runs once per request
            self._write(_JSON_ACCESS % (now, _quote(client), _quote(method), _quote(path),
                                        _quote(query), status, size, duration_ms))
        else:
            target = _quote(f"{method} {path}?{query}" if query else f"{method} {path}")
            self._write(f"{now} access {client or '-'} {target} {status} {size}B "
                        f"{duration_ms:.1f}ms")

    def wrap_send(self, scope: MutableMapping[str, Any], send: SendFn) -> SendFn:
        """``send`` for one HTTP request that writes its access line when the
        response ends (the last body message)."""
        start = time.perf_counter()
        status = 0
        size = 0
        declared = 0
        done = False
        client = scope.get("client") or ("", 0)
        raw_query = scope.get("query_string", b"")

        async def logged_send(message: Message) -> None:
            nonlocal status, size, declared, done
            kind = message["type"]
            if kind == "http.response.start":
                status = int(message["status"])
                for k, v in message.get("headers", ()):
                    if k.lower() == b"content-length" and v.isdigit():
                        declared = int(v)
            elif kind == "http.response.body":
                size += len(message.get("body", b""))
            elif kind == "http.response.pathsend":
                size = declared  # the server sends the whole file itself
            await send(message)
            last = kind == "http.response.pathsend" or (
                kind == "http.response.body" and not message.get("more_body", False)
            )
            if last and not done:
                done = True
                self.access(
                    client=str(client[0]), method=str(scope.get("method", "")),
                    path=str(scope.get("path", ""))[:2048],
                    query=raw_query.decode("latin-1")[:2048],
                    status=status, size=size,
                    duration_ms=(time.perf_counter() - start) * 1000,
                )

        return logged_send
