"""`auraseal serve` as a process: busy ports, start-up failures, the access log
of real workers, and the fetch line it prints for the bundled example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port, wait_listening

from auraseal.server.defaults import ensure_example

AURASEAL = [sys.executable, "-m", "auraseal"]


def _run(args: list[str], timeout: float = 30) -> tuple[int | None, str, float]:
    """Run ``auraseal ARGS``; (exit code or None if it was still running, stderr, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([*AURASEAL, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        rc = None
    return rc, err.decode(errors="replace"), time.monotonic() - t0


@pytest.fixture(scope="module")
def example_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "root"
    ensure_example(root)
    return root


@pytest.fixture(scope="module")
def running(example_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[int, Path]
]:
    """`auraseal serve --workers 2 --log-format json` (granian) on a free port; its stderr file."""
    port = free_port()
    log = tmp_path_factory.mktemp("log") / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*AURASEAL, "serve", str(example_root), "--port", str(port), "--workers", "2",
             "--log-format", "json", "--scrub-interval", "1h"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        wait_listening(port, 60, proc)
        # both workers up: answer a request before the tests start
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize(("server", "workers"), [
    ("granian", "1"), ("granian", "2"), ("uvicorn", "1"), ("uvicorn", "2"),
])
def test_second_serve_on_a_busy_port_exits_5_with_one_line(
    running: tuple[int, Path], example_root: Path, server: str, workers: str
) -> None:
    port, _ = running
    rc, err, took = _run(["serve", str(example_root), "--port", str(port), "--server", server,
                          "--workers", workers], timeout=20)
    assert rc == 5, (rc, err)
    assert took < 15
    lines = err.strip().splitlines()
    assert lines == [f"auraseal: error: 127.0.0.1:{port}: cannot listen: Address already in use"]
    # the first server is still the only one answering
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


def test_access_log_of_granian_workers_is_one_json_object_per_request(
    running: tuple[int, Path],
) -> None:
    port, log = running
    for q in ("a=1", "a=2", "a=3"):
        r = httpx.get(f"http://127.0.0.1:{port}/packages/site/files/index.html?{q}", timeout=10)
        assert r.status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/packages/nope/files/x", timeout=10
                     ).status_code == 404
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in log.read_text().splitlines()]
        access = [r for r in records if r["log"] == "access"
                  and r["path"].startswith("/packages/")]
        if len(access) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    ok = [r for r in access if r["path"] == "/packages/site/files/index.html"]
    assert sorted(r["query"] for r in ok) == ["a=1", "a=2", "a=3"]
    assert all(r["status"] == 200 and r["method"] == "GET" and r["bytes"] > 0 for r in ok)
    assert [r["status"] for r in access if r["path"] == "/packages/nope/files/x"] == [404]
    serving = [r for r in records if r.get("event") == "serving"]
    assert serving and serving[0]["workers"] == 2


def _token_file(d: Path, text: str) -> Path:
    p = d / "tokens.txt"
    p.write_text(text)
    return p


STARTUP_FAILURES = [
    # (id, extra args (with {tmp}, {port}, {free}), exit code, words in the message)
    ("missing-token-file", ["--publish-token-file", "{tmp}/none.txt"], 2, "no such file"),
    ("malformed-token-file", ["--publish-token-file", "{tmp}/tokens.txt"], 2, "sha256:"),
    ("bad-ledger-url", ["--ledger", "mysql://localhost/x"], 2, "ledger URL"),
    ("unreachable-postgresql", ["--ledger", "postgresql://127.0.0.1:{free}/x"], 5,
     "PostgreSQL"),
    ("port-out-of-range", ["--port", "99999"], 2, "--port"),
    ("port-zero", ["--port", "0"], 2, "--port"),
    ("host-unresolvable", ["--host", "no-such-host.invalid"], 2, "--host"),
    ("host-not-local", ["--host", "192.0.2.1"], 5, "cannot listen"),
    ("missing-config-file", ["--config", "{tmp}/none.toml"], 2, "no such config file"),
    ("malformed-config-file", ["--config", "{tmp}/bad.toml"], 2, "not valid TOML"),
    ("unknown-config-key", ["--config", "{tmp}/unknown.toml"], 2, "unknown key 'prot'"),
]


@pytest.mark.parametrize(("args", "code", "words"), [c[1:] for c in STARTUP_FAILURES],
                         ids=[c[0] for c in STARTUP_FAILURES])
def test_startup_failure_is_one_line_without_traceback(
    example_root: Path, tmp_path: Path, args: list[str], code: int, words: str
) -> None:
    _token_file(tmp_path, "this is not a token hash\n")
    (tmp_path / "bad.toml").write_text("port = [\n")
    (tmp_path / "unknown.toml").write_text("prot = 8001\n")
    port, free = free_port(), free_port()
    argv = ["serve", str(example_root), "--port", str(port)]
    argv += [a.format(tmp=tmp_path, port=port, free=free) for a in args]
    rc, err, _ = _run(argv, timeout=25)
    assert "Traceback" not in err
    assert rc == code, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(("auraseal: error: ", "auraseal: usage: ")), lines[0]
    assert words in lines[0]


def test_serve_prints_a_fetch_line_for_the_example_that_works(
    example_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*AURASEAL, "serve", str(example_root), "--port", str(port), "--server", "uvicorn"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        fetch = ""
        for _ in range(5):
            line = proc.stderr.readline().decode()
            if "auraseal fetch " in line:
                fetch = line.split(": ", 2)[-1].strip()
                break
        key = (example_root / ".auraseal" / "publisher.key.pub").resolve()
        assert fetch == (f"auraseal fetch http://127.0.0.1:{port}/packages/site -o site-copy "
                         f"--trusted-key {key}")
        wait_listening(port, 30, proc)
        argv = fetch.split()[1:]
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # a fresh client
        done = subprocess.run([*AURASEAL, *argv], cwd=tmp_path, capture_output=True,
                              timeout=60, check=False, env=env)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "site-copy" / "index.html").is_file()
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()
