"""Fixtures for the web tests: one headless Chromium per session, a fresh
context and page per test, and small real loopback HTTP servers ("origins")
that serve exactly the bytes a test puts on them: good copies, tampered
copies, pages. Every request is counted so a test can prove that a URL was
fetched once.

Chromium is Debian's ``/usr/bin/chromium`` (``scripts/setup`` installs it),
driven by Playwright for Python. If it is missing the browser tests fail;
they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from _servers import run_server
from playwright.sync_api import sync_playwright

from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
}


def chromium_path() -> str:
    path = os.environ.get("AURASEAL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "Debian chromium is missing (run scripts/setup: apt-get install chromium); "
            "the browser tests must not be skipped",
            pytrace=False,
        )
    return path


@dataclass
class Origin:
    """A loopback HTTP server serving ``files`` (path → bytes) with CORS."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    cors: bool = True
    unsized: set[str] = field(default_factory=set)  # served without Content-Length

    def put(self, path: str, data: bytes | str, **headers: str) -> str:
        """Serve ``data`` at ``path``; return its absolute URL."""
        path = "/" + path.lstrip("/")
        self.files[path] = data.encode() if isinstance(data, str) else data
        self.headers[path] = dict(headers)
        return self.base + path

    def url(self, path: str) -> str:
        return self.base + "/" + path.lstrip("/")

    def reset(self) -> None:
        self.files.clear()
        self.headers.clear()
        self.hits.clear()
        self.unsized.clear()


def _handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            origin.hits[path] += 1
            data = origin.files.get(path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                if origin.cors:
                    self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                return
            self.send_response(200)
            ctype = TYPES.get(Path(path).suffix, "application/octet-stream")
            extra = origin.headers.get(path, {})
            self.send_header("Content-Type", ctype)
            if path not in origin.unsized:  # else HTTP/1.0: the body ends at close
                self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if origin.cors:
                self.send_header("Access-Control-Allow-Origin", "*")
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture(scope="session")
def _origins() -> Iterator[list[Origin]]:
    servers = []
    origins = []
    for _ in range(3):
        origin = Origin()
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(origin))
        srv.daemon_threads = True
        origin.base = f"http://127.0.0.1:{srv.server_address[1]}"
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        servers.append((srv, t))
        origins.append(origin)
    yield origins
    for srv, t in servers:
        srv.shutdown()
        srv.server_close()
        t.join(5)


@pytest.fixture
def site(_origins: list[Origin]) -> Origin:
    """The origin serving the test page (emptied for each test)."""
    _origins[0].reset()
    return _origins[0]


@pytest.fixture
def cdn(_origins: list[Origin]) -> Origin:
    """A second origin: a CDN or mirror (cross-origin, with CORS)."""
    _origins[1].reset()
    return _origins[1]


@pytest.fixture
def mirror(_origins: list[Origin]) -> Origin:
    """A third origin: a backup mirror."""
    _origins[2].reset()
    return _origins[2]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
    except Exception:
        pw.stop()
        raise
    try:
        yield b
    finally:
        b.close()
        pw.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    out = Path(__file__).resolve().parents[2] / "test-artifacts"
    out.mkdir(exist_ok=True)
    return out


PACKAGE = "webdemo"
PACKAGE_FILES = {
    "a.js": b'window.__ran.push("a");\n',
    "b.js": b'window.__ran.push("b");\n',
    "style.css": b"#box { color: rgb(7, 8, 9); }\n",
}


@dataclass
class Served:
    """The real ``auraseal serve`` on loopback with one sealed, signed package."""

    base: str
    root: Path
    key: Any
    files: dict[str, bytes]

    @property
    def loader_url(self) -> str:
        return f"{self.base}/auraseal-loader.js"

    @property
    def manifest_url(self) -> str:
        return f"{self.base}/packages/{PACKAGE}/integrity-manifest.json"

    def url(self, path: str) -> str:
        return f"{self.base}/packages/{PACKAGE}/files/{path}"


def seal_package(root: Path, src: Path, files: dict[str, bytes], key: Any, name: str) -> None:
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    seal_tree(src, root / name, keys=[key], name=name)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base_dir = tmp_path_factory.mktemp("served")
    root = base_dir / "root"
    root.mkdir()
    key = SigningKey.generate()
    seal_package(root, base_dir / "src", PACKAGE_FILES, key, PACKAGE)
    with run_server(root, trusted_keys=(key.public,), healing=False) as base:
        yield Served(base, root, key, dict(PACKAGE_FILES))
