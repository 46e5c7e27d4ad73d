"""Ledger fixtures: the same tests run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auraseal.ledger import BlockPolicy, Ledger, open_ledger

SECRET = b"test-secret-for-the-ledger"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ledger_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def make_ledger(ledger_url: str, tmp_path: Path) -> Iterator[Callable[..., Ledger]]:
    opened: list[Ledger] = []

    def make(*, jsonl: bool = True, secret: bytes | None = SECRET, max_entries: int = 100,
             **kw: Any) -> Ledger:
        led = open_ledger(ledger_url, tmp_path / "ledger.jsonl" if jsonl else None,
                          secret=secret, policy=BlockPolicy(max_entries=max_entries), **kw)
        opened.append(led)
        return led

    yield make
    for led in opened:
        led.close()


def run_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run tamper SQL against the raw store: ``{e}``, ``{b}``, ``{n}`` name the tables."""
    if url.startswith("sqlite://"):
        q = sql.format(e="entries", b="blocks", n="nodes").replace("%s", "?")
        db = sqlite3.connect(url[len("sqlite://"):])
        try:
            rows = db.execute(q, params).fetchall()
            db.commit()
            return rows
        finally:
            db.close()
    q = sql.format(e="ledger.entries", b="ledger.blocks", n="ledger.nodes")
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(q, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="session")
def go_checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go reference checker, built once per session (fails if Go is missing)."""
    from .gotool import build_go_checker  # noqa: PLC0415

    return build_go_checker(tmp_path_factory.mktemp("go"))
