"""Fixtures for the key tests: release keys, a plain static host
(``python3 -m http.server`` on 127.0.0.1) serving a package tree with its
``root/`` and ``timestamp.json``, and a SoftHSM2 token in a temp dir."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from auraseal.signing import SigningKey


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def keys() -> dict[str, SigningKey]:
    """Named release and timestamp keys, shared by the module's tests."""
    return {n: SigningKey.generate() for n in ("k1", "k2", "k3", "k4", "k5", "t1", "t2")}


class StaticHost:
    """A package tree ``root`` served at ``url``."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url


@pytest.fixture(scope="module")
def _http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """One ``python3 -m http.server`` per module (starting one costs ~1-2 s)."""
    root = tmp_path_factory.mktemp("www")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield root, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def static_host(_http_server: tuple[Path, int], request: pytest.FixtureRequest) -> StaticHost:
    """A fresh package tree of this test, served by the module's http.server."""
    www, port = _http_server
    name = request.node.name[:60].replace("[", "_").replace("]", "_")
    root = www / name
    root.mkdir()
    return StaticHost(root, f"http://127.0.0.1:{port}/{name}/")


SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class Token:
    def __init__(self, label: str, pin: str, module: str) -> None:
        self.label = label
        self.pin = pin
        self.module = module

    def uri(self, obj: str) -> str:
        return f"pkcs11:token={self.label};object={obj}?module-path={self.module}"


@pytest.fixture(scope="module")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """A fresh SoftHSM2 token in a temp dir (SOFTHSM2_CONF points at its config)."""
    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        pytest.fail("SoftHSM2 is not installed (scripts/setup installs Debian's softhsm2)")
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("SOFTHSM2_CONF", str(conf))
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "release",
         "--pin", "1234", "--so-pin", "5678"],
        check=True, capture_output=True,
    )
    try:
        yield Token("release", "1234", SOFTHSM_MODULE)
    finally:
        mp.undo()
