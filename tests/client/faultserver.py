"""A real HTTP server on 127.0.0.1 that serves a directory and injects faults.

Each request path (URL path without the leading ``/``) can be given a
:class:`Fault`; every request is counted in ``hits``. Regular files carry an
``ETag`` and answer ``If-None-Match`` with 304, like a CDN.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Fault:
    """What to do instead of serving the file faithfully.

    kind: ``flip`` (one byte inverted), ``truncate`` (Content-Length says the
    full size, half is sent, connection closed), ``short`` (a consistent but
    half-length response), ``endless`` (random bytes forever, no length),
    ``stall`` (headers and a few bytes, then silence), ``trickle`` (a byte
    every ``delay`` seconds), ``status`` (answer ``status``), ``body``
    (serve ``body`` instead: an older manifest, a file of another version).
    """

    kind: str
    status: int = 500
    body: bytes = b""
    delay: float = 0.2


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        with srv.lock:
            srv.hits[rel] += 1
            fault = srv.faults.get(rel)
        if fault is not None and fault.kind == "status":
            self._send_status(fault.status)
            return
        if fault is not None and fault.kind == "body":
            data: bytes | None = fault.body
        else:
            p = (srv.root / rel) if rel else srv.root / "index.html"
            try:
                real = p.resolve()
                if srv.root.resolve() not in real.parents or not real.is_file():
                    raise FileNotFoundError(rel)
                data = real.read_bytes()
            except OSError:
                data = None
        if data is None:
            self._send_status(404)
            return
        if fault is None or fault.kind == "body":
            etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send(data, etag=etag)
            return
        kind = fault.kind
        if kind == "flip":
            b = bytearray(data)
            if b:
                b[len(b) // 2] ^= 0xFF
            self._send(bytes(b))
        elif kind == "short":
            self._send(data[: len(data) // 2])
        elif kind == "truncate":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            chunk = b"\xa5" * 65536
            try:
                while not srv.stopping.is_set():
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif kind == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:10])
            self.wfile.flush()
            srv.stopping.wait(60)
            self.close_connection = True
        elif kind == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(len(data)):
                    if srv.stopping.wait(fault.delay):
                        break
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
        else:
            raise ValueError(kind)

    def _send(self, data: bytes, etag: str | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        with suppress(OSError):
            self.wfile.write(data)

    def _send_status(self, status: int) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.faults: dict[str, Fault] = {}
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()


class FaultServer:
    """Handle on a running server: ``url``, ``faults``, ``hits``."""

    def __init__(self, srv: _Server) -> None:
        self._srv = srv
        host, port = srv.server_address[:2]
        self.url = f"http://{host!s}:{port}/"

    @property
    def faults(self) -> dict[str, Fault]:
        return self._srv.faults

    @property
    def hits(self) -> Counter[str]:
        return self._srv.hits

    def fault(self, path: str, kind: str, **kw: object) -> None:
        self._srv.faults[path] = Fault(kind, **kw)  # type: ignore[arg-type]

    def clear(self) -> None:
        self._srv.faults.clear()
        self._srv.hits.clear()


@contextmanager
def fault_server(root: Path) -> Iterator[FaultServer]:
    srv = _Server(root)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield FaultServer(srv)
    finally:
        srv.stopping.set()
        srv.shutdown()
        srv.server_close()
        t.join(5)
        time.sleep(0)
