"""Start the real server for tests: uvicorn on a free loopback port in a thread.

>>> with run_server(root) as base_url:          # doctest: +SKIP
...     httpx.get(f"{base_url}/packages")

Other parts' tests (client, web) use this to run against the real server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from auraseal.errors import ConfigError, NetworkError
from auraseal.server.app import create_app
from auraseal.server.config import ServerConfig

__all__ = ["free_port", "run_app", "run_nginx", "run_server", "stop_process", "wait_listening"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Terminate ``proc`` (kill it if it does not exit within ``timeout`` s) and
    close its stderr pipe."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if proc.stderr:
        proc.stderr.close()


def wait_listening(
    port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``.

    Raises :class:`NetworkError` after ``timeout`` seconds, or as soon as
    ``proc`` (the process expected to listen) has exited, with its stderr.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            argv = proc.args if isinstance(proc.args, list | tuple) else [proc.args]
            name = os.path.basename(str(argv[0]))
            raise NetworkError(f"{name} exited: {err.strip()}", f"127.0.0.1:{port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise NetworkError("nothing started listening", f"127.0.0.1:{port}")
        time.sleep(0.05)


@contextlib.contextmanager
def run_app(
    app: Starlette, timeout: float = 20.0, tls: tuple[Path, Path] | None = None
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<free port>; yield the base URL.

    ``tls=(certfile, keyfile)`` serves HTTPS (browsers deliver Reporting API
    reports only to secure origins)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    ssl: dict[str, Any] = (
        {} if tls is None else {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **ssl)
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
        yield f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


@contextlib.contextmanager
def run_server(root: Path, **config: Any) -> Iterator[str]:
    """Run ``create_app(ServerConfig(root, **config))``; yield ``http://127.0.0.1:<port>``.

    Background healing is on unless ``healing=False`` is passed; ``tls=(cert, key)``
    serves HTTPS. The server is
    shut down (lifespan exit, sockets closed, thread joined) when the block ends.
    """
    tls = config.pop("tls", None)
    cfg = ServerConfig(root=Path(root), **config)
    app = create_app(cfg)
    with run_app(app, tls=tls) as url:
        yield url


@contextlib.contextmanager
def run_nginx(conf: Path, port: int, timeout: float = 10.0) -> Iterator[str]:
    """Run Debian's nginx in the foreground with ``conf`` (written by
    ``auraseal nginx-conf --standalone DIR --listen 127.0.0.1:PORT``); yield
    ``http://127.0.0.1:<port>``; stop it when the block ends."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise ConfigError("nginx is not installed (scripts/setup installs nginx-light)", nginx)
    cmd = [nginx, "-p", str(Path(conf).parent), "-c", str(conf)]
    if os.geteuid() == 0:
        cmd += ["-g", "user root;"]  # workers must read pytest's tmp tree (mode 0700)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, timeout, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
