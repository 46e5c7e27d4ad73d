"""The client's HTTP seam: one :class:`Fetcher` wrapping an ``httpx.Client``.

Everything the client downloads goes through here, so tests can inject an
``httpx.BaseTransport`` (faults, counting) and every request is bounded:

* a per-operation timeout (connect / read / write / pool), so a server that
  goes silent fails over after ``timeout`` seconds;
* a minimum average rate after a grace period, so a server that trickles a
  byte now and then (which keeps a read timeout happy) is abandoned too;
* a hard byte cap: a body is never read past the size the signed manifest
  gives (``Content-Length`` above it is refused before reading, and a body
  that keeps coming is cut off at cap + 1 bytes), so endless data costs at
  most one chunk more than the file.

The library never prints; failures are :class:`~auraseal.errors.NetworkError`.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from auraseal.errors import DigestMismatchError, NetworkError

__all__ = ["Fetched", "Fetcher", "HttpConfig", "Sink"]

CHUNK = 256 * 1024


@dataclass(frozen=True)
class HttpConfig:
    """Limits for every request (seconds, bytes per second, bytes)."""

    timeout: float = 15.0
    min_rate: float = 16 * 1024
    grace: float = 5.0
    max_manifest_bytes: int = 64 * 1024 * 1024
    max_connections: int = 16
    user_agent: str = "auraseal-fetch/0.1"
    trust_env: bool = True
    #: pipeline runs of part requests on one connection (client/_parts_http.py)
    pipeline: bool = True
    #: at most this many parts / bytes in one pipelined run
    run_parts: int = 64
    run_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    """A small body fetched whole (a manifest): status 200 or 304."""

    status: int
    data: bytes
    etag: str | None
    last_modified: str | None


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _PlainOrTls(httpx.BaseTransport):
    """httpx's default transport, with the TLS one (whose certificate store
    takes ~0.1 s to load) made on the first ``https://`` request only: a
    fetch over plain HTTP never pays for it."""

    def __init__(self, limits: httpx.Limits, trust_env: bool) -> None:
        self._limits = limits
        self._trust_env = trust_env
        # verify=False only skips loading CA certificates: this transport
        # never speaks TLS (https goes to the verifying one below)
        self._plain = httpx.HTTPTransport(limits=limits, verify=False, trust_env=trust_env)
        self._tls: httpx.HTTPTransport | None = None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "https":
            return self._plain.handle_request(request)
        with self._lock:
            if self._tls is None:
                self._tls = httpx.HTTPTransport(limits=self._limits, trust_env=self._trust_env)
            tls = self._tls
        return tls.handle_request(request)

    def close(self) -> None:
        self._plain.close()
        with self._lock:
            if self._tls is not None:
                self._tls.close()


class Fetcher:
    """Bounded GETs over one connection pool (thread-safe)."""

    def __init__(
        self, config: HttpConfig | None = None, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config or HttpConfig()
        c = self.config
        self._injected = transport is not None
        limits = httpx.Limits(
            max_connections=c.max_connections, max_keepalive_connections=c.max_connections
        )
        if transport is None and not (c.trust_env and urllib.request.getproxies()):
            # (a transport given to httpx turns off its proxy variables: only without them)
            transport = _PlainOrTls(limits, c.trust_env)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(c.timeout),
            limits=limits,
            follow_redirects=True,
            headers={"User-Agent": c.user_agent, "Accept-Encoding": "identity"},
            trust_env=c.trust_env,
        )

    def close(self) -> None:
        self._client.close()

    def can_pipeline(self, url: str) -> bool:
        """Whether part requests to ``url`` may be pipelined on a plain socket:
        enabled, ``http://``, no transport injected (tests) and no proxy
        (httpx's own reading of the proxy variables when ``trust_env``)."""
        c = self.config
        if not c.pipeline or self._injected:
            return False
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or "@" in parts.netloc:
            return False
        if c.trust_env:
            proxies = urllib.request.getproxies()
            if proxies.get("http") or proxies.get("all"):
                return bool(urllib.request.proxy_bypass(parts.hostname))
        return True

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_small(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int | None = None,
    ) -> Fetched:
        """GET a whole small document, revalidating with ``If-None-Match`` /
        ``If-Modified-Since``; a 304 answer comes back with empty ``data``."""
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        cap = max_bytes if max_bytes is not None else self.config.max_manifest_bytes
        buf = bytearray()
        status, resp_headers = self._stream(url, buf, cap, headers, allow_304=True, exact=None)
        return Fetched(
            status=status,
            data=bytes(buf),
            etag=resp_headers.get("etag"),
            last_modified=resp_headers.get("last-modified"),
        )

    def download(
        self,
        url: str,
        sink: Sink,
        size: int,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream exactly ``size`` bytes of ``url`` into ``sink``.

        Raises :class:`NetworkError` on an HTTP error, a stall, a rate below
        the minimum, a body longer than ``size`` (read stops at the first
        chunk past it) or a connection dropped mid-body (truncated), and
        :class:`~auraseal.errors.DigestMismatchError` for a complete answer
        of another size (``Content-Length`` or a clean end of body)."""
        self._stream(url, sink, size, {}, allow_304=False, exact=size, progress=progress)
        return size

    def _stream(
        self,
        url: str,
        sink: Sink | bytearray,
        cap: int,
        headers: dict[str, str],
        *,
        allow_304: bool,
        exact: int | None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[int, httpx.Headers]:
        c = self.config
        start = time.monotonic()
        got = 0
        try:
            with self._client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 304 and allow_304:
                    return 304, resp.headers
                if resp.status_code != 200:
                    raise NetworkError(f"HTTP {resp.status_code}", url)
                length = resp.headers.get("content-length")
                if exact is not None and length is not None and length.isdigit():
                    if int(length) != exact:
                        # a complete answer of the wrong size: not the file we want
                        raise DigestMismatchError(
                            f"server's copy is {int(length)} bytes, expected {exact}", url
                        )
                elif length is not None and length.isdigit() and int(length) > cap:
                    raise NetworkError(
                        f"server announces {int(length)} bytes, more than the {cap} expected",
                        url,
                    )
                for chunk in resp.iter_bytes():
                    got += len(chunk)
                    if got > cap:
                        raise NetworkError(
                            f"server sent more than the {cap} bytes expected (endless data?)",
                            url,
                        )
                    if isinstance(sink, bytearray):
                        sink.extend(chunk)
                    else:
                        sink.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    elapsed = time.monotonic() - start
                    if elapsed > c.grace and got < c.min_rate * elapsed:
                        raise NetworkError(
                            f"too slow: {got} bytes in {elapsed:.1f}s "
                            f"(minimum {c.min_rate:.0f} B/s)",
                            url,
                        )
                if exact is not None and got != exact:
                    raise DigestMismatchError(f"body ended after {got} of {exact} bytes", url)
                return resp.status_code, resp.headers
        except httpx.TimeoutException as exc:
            raise NetworkError(
                f"stalled: no progress for {c.timeout:g}s ({type(exc).__name__})", url
            ) from exc
        except httpx.HTTPError as exc:
            raise NetworkError(f"request failed: {type(exc).__name__}: {exc}", url) from exc
        except OSError as exc:
            raise NetworkError(f"request failed: {exc}", url) from exc
