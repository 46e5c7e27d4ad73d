"""Part requests pipelined on one HTTP/1.1 connection (client/_parts_http.py).

Hostile answers replayed by a scripted server on 127.0.0.1 (wrong length, an
extra answer, a connection closed mid-run, an answer for another part, a
stall, an HTTP/1.0 server), then whole fetches that rebuild from parts through
real nginx and through ``python3 -m http.server`` (HTTP/1.0: no pipelining,
one request per part)."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from _servers import free_port, run_nginx, stop_process, wait_listening

import auraseal.client.fetch as fetch_mod
from auraseal.client._parts_http import PartRequest, RunResult, fetch_run
from auraseal.manifest import Manifest
from auraseal.sealing import seal_tree
from auraseal.server.nginx import render_nginx_conf
from auraseal.signing import SigningKey, TrustPolicy

from .conftest import Client
from .helpers import snapshot

PARTS = [os.urandom(5000) for _ in range(4)]


def _sri(data: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def _answer(body: bytes, *, length: int | None = None, version: str = "1.1",
            extra: str = "") -> bytes:
    n = len(body) if length is None else length
    return (f"HTTP/{version} 200 OK\r\nContent-Length: {n}\r\n{extra}\r\n").encode() + body


@contextmanager
def scripted(script: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server accepting one connection: reads the pipelined requests, then
    lets ``script`` write whatever it likes."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while buf.count(b"\r\n\r\n") < len(PARTS):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            with suppress(OSError):
                script(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield port
    finally:
        srv.close()
        t.join(10)


def _run(port: int, tmp_path: Path, timeout: float = 5.0) -> tuple[RunResult, int]:
    fd = os.open(tmp_path / "spool", os.O_RDWR | os.O_CREAT, 0o600)
    reqs = [
        PartRequest(n, f"http://127.0.0.1:{port}/f.part.{n}", len(d), _sri(d), fd, n * 5000)
        for n, d in enumerate(PARTS)
    ]
    try:
        return fetch_run(reqs, timeout=timeout, min_rate=1, grace=60, user_agent="t",
                         count=lambda n: None), fd
    finally:
        os.close(fd)


def _slots(tmp_path: Path) -> bytes:
    return (tmp_path / "spool").read_bytes()


def test_pipelined_run_gets_every_part_in_order(tmp_path: Path) -> None:
    with scripted(lambda c: c.sendall(b"".join(_answer(d) for d in PARTS))) as port:
        res, _ = _run(port, tmp_path)
    assert sorted(res.got) == [0, 1, 2, 3] and not res.rejected and not res.leftover
    assert res.persistent
    assert _slots(tmp_path) == b"".join(PARTS)


def test_pipelined_answer_of_wrong_length_refused_rest_handed_back(tmp_path: Path) -> None:
    """A Content-Length other than the manifest's part size ends the run before
    its body is read (it could be endless): that part is refused, the parts not
    answered yet go back to the one-request path."""
    def script(c: socket.socket) -> None:
        c.sendall(_answer(PARTS[0]) + _answer(PARTS[1] * 1000, length=5_000_000))

    with scripted(script) as port:
        res, _ = _run(port, tmp_path)
    assert res.got == [0]
    assert res.rejected == [(1, "server's copy is 5000000 bytes, expected 5000")]
    assert res.leftover == [2, 3] and not res.persistent


def test_pipelined_extra_answer_ignored(tmp_path: Path) -> None:
    """An answer beyond the last request (a smuggled response) is never read
    as a part: the run ends when every request is answered."""
    evil = os.urandom(5000)
    with scripted(lambda c: c.sendall(
        b"".join(_answer(d) for d in PARTS) + _answer(evil)
    )) as port:
        res, _ = _run(port, tmp_path)
    assert sorted(res.got) == [0, 1, 2, 3] and not res.rejected
    assert _slots(tmp_path) == b"".join(PARTS)


def test_pipelined_connection_closed_mid_answer(tmp_path: Path) -> None:
    with scripted(lambda c: c.sendall(_answer(PARTS[0]) + _answer(PARTS[1])[:-2000])) as port:
        res, _ = _run(port, tmp_path)
    assert res.got == [0]
    assert res.rejected == [(1, "connection closed mid-answer")]
    assert res.leftover == [2, 3]


def test_pipelined_answer_for_another_part_refused(tmp_path: Path) -> None:
    """Answers in the wrong order (part 2's bytes for part 1 and back): same
    size, so the framing holds; each is checked against its own integrity."""
    order = [PARTS[0], PARTS[2], PARTS[1], PARTS[3]]
    with scripted(lambda c: c.sendall(b"".join(_answer(d) for d in order))) as port:
        res, _ = _run(port, tmp_path)
    assert sorted(res.got) == [0, 3] and [n for n, _ in res.rejected] == [1, 2]
    assert all("mismatch" in why or "digest" in why.lower() for _, why in res.rejected), res


def test_pipelined_stalled_server_times_out(tmp_path: Path) -> None:
    def script(c: socket.socket) -> None:
        c.sendall(_answer(PARTS[0]) + _answer(PARTS[1])[:100])
        time.sleep(3)

    t0 = time.monotonic()
    with scripted(script) as port:
        res, _ = _run(port, tmp_path, timeout=0.5)
        took = time.monotonic() - t0
    assert took < 2.5
    assert res.got == [0] and res.rejected[0][0] == 1 and "stalled" in res.rejected[0][1]
    assert res.leftover == [2, 3] and not res.persistent


def test_pipelined_endless_headers_cut_off(tmp_path: Path) -> None:
    """A header that never ends is not buffered without bound."""
    def script(c: socket.socket) -> None:
        c.sendall(_answer(PARTS[0]) + b"HTTP/1.1 200 OK\r\nX-Junk: ")
        for _ in range(64):  # 4 MiB of one header value
            c.sendall(b"a" * 65536)

    with scripted(script) as port:
        res, _ = _run(port, tmp_path)
    assert res.got == [0] and res.rejected[0][0] == 1
    assert "status line and headers" in res.rejected[0][1]
    assert res.leftover == [2, 3]


def test_pipelined_http10_server_stops_pipelining(tmp_path: Path) -> None:
    with scripted(lambda c: c.sendall(_answer(PARTS[0], version="1.0"))) as port:
        res, _ = _run(port, tmp_path)
    assert res.got == [0] and not res.rejected and res.leftover == [1, 2, 3]
    assert not res.persistent


# --- whole fetches rebuilt from parts ------------------------------------------


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, dict[str, bytes],
                                                              SigningKey]:
    """A package whose originals are all replaced by other bytes: every file
    comes from parts (k of them each)."""
    tmp = tmp_path_factory.mktemp("pipelined")
    rnd = random.Random(3)
    files = {f"d/f{i}.bin": rnd.randbytes(150_000 + i * 7_000) for i in range(6)}
    src = tmp / "src"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    key = SigningKey.generate()
    m = seal_tree(src, tmp / "root" / "site", keys=[key], name="site", part_size=5120)
    for rel, data in files.items():
        (tmp / "root" / "site" / rel).write_bytes(rnd.randbytes(len(data)))
    return tmp, m, files, key


def _count_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    seen = {"runs": 0, "parts": 0}
    real = fetch_mod.fetch_run

    def counting(reqs: Any, **kw: Any) -> RunResult:
        seen["runs"] += 1
        res = real(reqs, **kw)
        seen["parts"] += len(res.got)
        return res

    monkeypatch.setattr(fetch_mod, "fetch_run", counting)
    return seen


def test_rebuild_from_nginx_pipelines_part_requests(
    damaged: tuple[Path, Manifest, dict[str, bytes], SigningKey], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp, m, files, key = damaged
    seen = _count_runs(monkeypatch)
    port = free_port()
    d = tmp_path / "ngx"
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(render_nginx_conf(tmp / "root", listen=f"127.0.0.1:{port}", standalone=d))
    client = Client(tmp_path, _policy(key))
    with run_nginx(conf, port) as url:
        r = client(f"{url}/packages/site/files/")
    assert snapshot(client.dest) == files
    assert r.sources() == {"parts": len(files)}
    k_total = sum(e.recovery.k for e in m.files if e.recovery)
    # every part came through pipelined runs, far fewer runs than parts
    assert seen["parts"] == k_total and 0 < seen["runs"] <= k_total // 8
    assert all(f.bad_parts == 0 and f.parts_used for f in r.files)


def test_rebuild_from_http10_static_host_one_request_per_part(
    damaged: tuple[Path, Manifest, dict[str, bytes], SigningKey], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``python3 -m http.server`` answers HTTP/1.0 and closes: the client stops
    pipelining to it after one run and fetches one part per request."""
    tmp, _m, files, key = damaged
    seen = _count_runs(monkeypatch)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp / "root" / "site")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, 30, proc)
        client = Client(tmp_path, _policy(key))
        r = client(f"http://127.0.0.1:{port}/", package="site")
    finally:
        stop_process(proc)
    assert snapshot(client.dest) == files
    assert r.sources() == {"parts": len(files)}
    assert seen["runs"] <= 4  # the runs already under way when the first one learnt


def _policy(key: SigningKey) -> TrustPolicy:
    return TrustPolicy([key.public])
