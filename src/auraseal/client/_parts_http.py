"""Runs of part requests pipelined on one HTTP/1.1 connection.

Rebuilding a file from parts means thousands of small GETs (``<path>.part.<M>``,
5 KiB each by default); one request per part through ``httpx`` costs far more
than the bytes. :func:`fetch_run` writes a bounded run of GETs to one plain
socket at once (HTTP/1.1 pipelining, RFC 9112 section 9.3.2) and parses the
answers in order with ``httptools`` (llhttp), streaming each body into its own
file in the spool while it is hashed and checked against the manifest.

Nothing a server sends is trusted more than in the one-request path:

* every answer must be ``200`` with a ``Content-Length`` equal to the part's
  size in the signed manifest; anything else (an error status, a redirect,
  another length, no length, chunked) ends the run: the part is rejected and
  the parts not yet answered are handed back for the one-request path;
* a body is never read past its size, and each part is verified against the
  manifest's integrity before it counts; a wrong body (an answer for another
  part, a flipped byte) is rejected, the framing being intact the run goes on;
* a connection closed mid-run (``Connection: close``, HTTP/1.0, EOF) hands
  the rest back; an answer beyond the last request is ignored (the connection
  is closed after the run);
* every ``recv`` is bounded by the timeout and the run by the minimum average
  rate after the grace period; memory is one receive buffer plus at most
  ``HEAD_CAP`` bytes of an unfinished status line and headers.

``persistent`` in the result is False when the server does not keep the
connection open for a run (HTTP/1.0, ``Connection: close``) or misbehaved:
the caller then stops pipelining to that source.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

from auraseal._fs import pwrite_all
from auraseal.errors import AuraSealError, StorageError
from auraseal.integrity import StreamVerifier

__all__ = ["PartRequest", "RunResult", "fetch_run", "pipelinable"]

RECV = 256 * 1024
#: bytes a server may send without completing a status line + headers or
#: adding to a body (httptools holds an unfinished header in memory)
HEAD_CAP = 64 * 1024


@dataclass(frozen=True)
class PartRequest:
    """One part to fetch: its number, absolute ``http://`` URL, size and
    integrity (from the signed manifest), and where it goes: ``size`` bytes
    at ``offset`` of the open file ``fd`` (its slot in the spool)."""

    number: int
    url: str
    size: int
    integrity: str
    fd: int
    offset: int
    #: the spool file, named when a write to it fails
    spool: str = ""


@dataclass
class RunResult:
    #: numbers of the parts verified and written to their slot
    got: list[int] = field(default_factory=list)
    #: (number, why) for parts whose answer was refused
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: numbers not answered (to fetch another way)
    leftover: list[int] = field(default_factory=list)
    #: False: do not pipeline to this server again
    persistent: bool = True


def pipelinable(url: str) -> bool:
    """Whether ``url`` can be fetched on a plain socket (``http://``, no userinfo)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname is not None and "@" not in parts.netloc


class _Stop(Exception):
    """End of the run: ``why`` rejects the current part (None: nothing to reject)."""

    def __init__(self, why: str | None, persistent: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.persistent = persistent


class _Run:
    """httptools callbacks: one response per request, in order."""

    def __init__(self, reqs: Sequence[PartRequest], count: Callable[[int], None]) -> None:
        self.reqs = reqs
        self.count = count
        self.result = RunResult()
        self.idx = 0  # the request the current/next response answers
        self.parser = httptools.HttpResponseParser(self)
        self.ver: StreamVerifier | None = None
        self.got = 0
        self.total = 0
        self.keep = True
        #: parser events so far (headers done, body bytes, messages done)
        self.events = 0
        self._length: int | None = None  # Content-Length of the answer being parsed

    def on_message_begin(self) -> None:
        if self.idx >= len(self.reqs):
            raise _Stop(None)  # an answer nobody asked for: ignored, connection closed
        self.got = 0
        self._length = None

    def on_headers_complete(self) -> None:
        p = self.parser
        r = self.reqs[self.idx]
        status = p.get_status_code()
        if status != 200:  # a proper answer: the server may still pipeline
            raise _Stop(f"HTTP {status}", persistent=True)
        length = self._length
        if length is None:
            raise _Stop("no Content-Length in a pipelined answer")
        if length != r.size:
            raise _Stop(f"server's copy is {length} bytes, expected {r.size}")
        self.keep = p.should_keep_alive() and p.get_http_version() == "1.1"
        self.ver = StreamVerifier(r.integrity, r.url)
        self.events += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low == b"content-length":
            v = value.strip()
            if not v.isdigit() or (self._length is not None and self._length != int(v)):
                raise _Stop("malformed Content-Length")
            self._length = int(v)
        elif low == b"transfer-encoding":
            raise _Stop("chunked answer to a part request")

    def on_body(self, data: bytes) -> None:
        r = self.reqs[self.idx]
        self.got += len(data)
        if self.got > r.size:  # cannot happen with a checked Content-Length; kept as a guard
            raise _Stop(f"body longer than the {r.size} bytes expected")
        assert self.ver is not None
        self.ver.update(data)
        # a failed write is the local disk, not the server: the fetch stops (exit 5)
        pwrite_all(r.fd, data, r.offset + self.got - len(data), r.spool or r.url)
        self.total += len(data)
        self.events += 1
        self.count(len(data))

    def on_message_complete(self) -> None:
        r = self.reqs[self.idx]
        assert self.ver is not None
        if self.got != r.size:
            raise _Stop(f"body ended after {self.got} of {r.size} bytes")
        try:
            self.ver.verify()
        except AuraSealError as exc:  # its slot is never read
            self.result.rejected.append((r.number, exc.what))
        else:
            self.result.got.append(r.number)
        self.ver = None
        self._length = None
        self.events += 1
        self.idx += 1
        if not self.keep and self.idx < len(self.reqs):
            raise _Stop(None, persistent=False)

    def abort_current(self, why: str | None) -> None:
        """The run ends here: reject the part being answered (if any)."""
        if self.idx < len(self.reqs) and why is not None:
            self.result.rejected.append((self.reqs[self.idx].number, why))
            self.idx += 1
        self.result.leftover = [r.number for r in self.reqs[self.idx :]]


def _request_bytes(reqs: Sequence[PartRequest], user_agent: str) -> tuple[str, int, bytes]:
    first = urlsplit(reqs[0].url)
    host = first.hostname
    assert host is not None
    port = first.port or 80
    out = []
    for r in reqs:
        u = urlsplit(r.url)
        if (u.scheme, u.netloc) != (first.scheme, first.netloc):
            raise ValueError("a run of parts must share one origin")
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        out.append(
            f"GET {target} HTTP/1.1\r\nHost: {first.netloc}\r\nUser-Agent: {user_agent}\r\n"
            "Accept-Encoding: identity\r\n\r\n"
        )
    return host, port, "".join(out).encode("ascii")


def fetch_run(
    reqs: Sequence[PartRequest],
    *,
    timeout: float,
    min_rate: float,
    grace: float,
    user_agent: str,
    count: Callable[[int], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Fetch ``reqs`` (one origin) pipelined on one connection; see the module doc.

    Never raises for what the server does: every part ends up in ``got``,
    ``rejected`` or ``leftover``."""
    run = _Run(reqs, count)
    if not reqs:
        return run.result
    try:
        host, port, payload = _request_bytes(reqs, user_agent)
    except (ValueError, UnicodeEncodeError):
        run.result.leftover = [r.number for r in reqs]
        run.result.persistent = False
        return run.result
    start = time.monotonic()
    idle = 0  # bytes received since the last parser event
    sock: socket.socket | None = None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(payload)
        while run.idx < len(reqs):
            if cancelled():
                raise _Stop(None)
            data = sock.recv(RECV)
            if not data:
                raise _Stop(
                    "connection closed mid-answer" if run.ver is not None else None
                )
            before = run.events
            try:
                run.parser.feed_data(data)
            except httptools.HttpParserCallbackError as exc:
                ctx = exc.__context__
                if isinstance(ctx, (_Stop, StorageError)):
                    raise ctx from None
                raise _Stop(f"bad answer: {ctx or exc}") from exc
            except httptools.HttpParserError as exc:
                raise _Stop(f"malformed answer: {exc}") from exc
            idle = 0 if run.events != before else idle + len(data)
            if idle > HEAD_CAP:
                raise _Stop(f"more than {HEAD_CAP} bytes of status line and headers")
            elapsed = time.monotonic() - start
            if elapsed > grace and run.total < min_rate * elapsed:
                raise _Stop(
                    f"too slow: {run.total} bytes in {elapsed:.1f}s "
                    f"(minimum {min_rate:.0f} B/s)"
                )
    except _Stop as stop:
        if run.idx >= len(reqs):
            pass  # everything answered; the rest (an extra answer) is ignored
        else:
            run.result.persistent = stop.persistent or (
                stop.why is None and run.keep and not cancelled()
            )
            run.abort_current(stop.why)
    except TimeoutError:
        run.result.persistent = False
        run.abort_current(f"stalled: no progress for {timeout:g}s")
    except OSError as exc:
        run.result.persistent = False
        run.abort_current(f"request failed: {exc.strerror or exc}")
    finally:
        if sock is not None:
            sock.close()
    return run.result
