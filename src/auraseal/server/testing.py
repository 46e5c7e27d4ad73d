"""Start the real server for tests: uvicorn on a free loopback port in a thread.

>>> with run_server(root) as base_url:          # doctest: +SKIP
...     httpx.get(f"{base_url}/packages")

Other parts' tests (client, web) use this to run against the real server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from auraseal.errors import NetworkError
from auraseal.server.app import create_app
from auraseal.server.config import ServerConfig

__all__ = ["free_port", "run_app", "run_server"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def run_app(app: Starlette, timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<free port>; yield the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise NetworkError("test server did not start", f"127.0.0.1:{port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@contextlib.contextmanager
def run_server(root: Path, **config: Any) -> Iterator[str]:
    """Run ``create_app(ServerConfig(root, **config))``; yield ``http://127.0.0.1:<port>``.

    Background healing is on unless ``healing=False`` is passed. The server is
    shut down (lifespan exit, sockets closed, thread joined) when the block ends.
    """
    cfg = ServerConfig(root=Path(root), **config)
    app = create_app(cfg)
    with run_app(app) as url:
        yield url
