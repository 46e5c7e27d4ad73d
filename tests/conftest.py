"""Shared fixtures: a real, throwaway PostgreSQL server on loopback.

``pg_dsn`` (session) starts one cluster for the whole run: ``initdb`` in a temp
directory (as the ``postgres`` system user when running as root, because
initdb refuses root), a free 127.0.0.1 port, unix sockets inside the temp
directory, and ``pg_ctl stop`` plus removal at teardown.  ``pg_database``
(function) gives each test its own fresh database on that server.

Missing PostgreSQL binaries fail loudly: ``scripts/setup`` installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

# Test drivers run in subprocesses (``python -c ...``) import the shared test
# servers (tests/_servers.py) too: put tests/ on their path as on ours.
_TESTS = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS, os.environ.get("PYTHONPATH", "")) if p
)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if cands:
        return cands[-1]
    pytest.fail(
        f"PostgreSQL binary {name!r} not found: run scripts/setup (installs Debian's postgresql)",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """DSN of a running throwaway PostgreSQL server (superuser ``postgres``, db ``postgres``)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but no 'postgres' system user: run scripts/setup",
                        pytrace=False)
        user = "postgres"
    tmp = Path(tempfile.mkdtemp(prefix="auraseal-pg-"))
    if user:
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    data, log = tmp / "data", tmp / "server.log"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    started = False
    try:
        subprocess.run(
            _as_owner([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--no-sync", "--no-instructions"], user),
            check=True, capture_output=True, env=env, cwd=tmp,
        )
        opts = (f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
        subprocess.run(
            _as_owner([pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60",
                       "start"], user),
            check=True, capture_output=True, env=env, cwd=tmp,
        )
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    except subprocess.CalledProcessError as exc:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"PostgreSQL failed to start: {exc.stderr!r} {tail}", pytrace=False)
    finally:
        if started:
            subprocess.run(
                _as_owner([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], user),
                capture_output=True, env=env, cwd=tmp, check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def pg_database(pg_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database on the session server (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    yield pg_dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests never read the user's real ~/.config/auraseal/config.toml."""
    missing = tmp_path_factory.getbasetemp() / "no-such-config.toml"
    monkeypatch.setenv("AURASEAL_CONFIG", str(missing))
