"""Module-level API: seed-style sync/async calls, the record_event hook, URLs, migrations."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import platformdirs
import psycopg
import pytest

from auraseal.cli._events import event_sink, resolve_ledger_url
from auraseal.errors import (
    ConfigError,
    InputError,
    LedgerError,
    MerkleProofError,
    MissingSecretError,
    StorageError,
)
from auraseal.ledger import (
    AsyncLedger,
    Block,
    BlockPolicy,
    Ledger,
    ahash_and_record,
    default_ledger_url,
    hash_and_record,
    open_ledger,
    open_store,
    verify_bundle,
)
from auraseal.signing import SigningKey

from .conftest import SECRET


def test_default_url_in_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    url = default_ledger_url()
    assert url == f"sqlite://{platformdirs.user_data_path('auraseal') / 'ledger.db'}"
    monkeypatch.delenv("AURASEAL_LEDGER", raising=False)
    assert resolve_ledger_url(None) == url
    monkeypatch.setenv("AURASEAL_LEDGER", "sqlite:///tmp/x.db")
    assert resolve_ledger_url(None) == "sqlite:///tmp/x.db"
    assert resolve_ledger_url("postgresql://h/db") == "postgresql://h/db"


def test_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url, path in [(f"sqlite://{tmp_path}/a.db", tmp_path / "a.db"),
                      ("sqlite:rel.db", tmp_path / "rel.db"),
                      (str(tmp_path / "plain.db"), tmp_path / "plain.db")]:
        store = open_store(url)
        store.close()
        assert path.exists()
    with pytest.raises(ConfigError):
        open_store("mysql://x/y")
    with pytest.raises(ConfigError):
        open_store("sqlite://")


def record_event(entry_type: str, data: dict[str, Any],
                 metadata: dict[str, Any] | None = None, *,
                 ledger_url: str | None = None) -> None:
    """What the old ``record_event`` hook did, through the CLI's event sink."""
    with event_sink(ledger_url, metadata=metadata) as sink:
        if sink is not None:
            sink.record(entry_type, data)


def test_cli_event_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AURASEAL_LEDGER", raising=False)
    monkeypatch.delenv("INTEGRITY_HMAC_SECRET", raising=False)
    monkeypatch.setenv("AURASEAL_CONFIG", str(tmp_path / "none.toml"))
    record_event("seal", {"name": "x"})  # no ledger configured: nothing happens
    assert not any(tmp_path.iterdir())
    url = f"sqlite://{tmp_path / 'hook.db'}"
    monkeypatch.setenv("AURASEAL_LEDGER", url)
    monkeypatch.setenv("AURASEAL_LEDGER_JSONL", str(tmp_path / "hook.jsonl"))
    record_event("seal", {"name": "x"}, {"files": 3})  # unsigned: no secret
    monkeypatch.setenv("INTEGRITY_HMAC_SECRET", "s")
    record_event("repair", {"name": "x"})
    other = tmp_path / "explicit.db"
    record_event("unseal", {"n": 1}, ledger_url=f"sqlite://{other}")
    with open_ledger(url, tmp_path / "hook.jsonl", secret=b"s") as led:
        pending = led.pending()
        assert [(e.entry_type, e.signature is None) for e in pending] == [
            ("seal", True), ("repair", False)]
        assert pending[0].metadata == {"files": 3}
        assert led.verify_chain().ok
    with open_ledger(f"sqlite://{other}") as led:
        assert [e.entry_type for e in led.pending()] == ["unseal"]


def test_cli_event_sink_failure_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger that cannot be written never fails the command: one warning."""
    (tmp_path / "dir.db").mkdir()
    monkeypatch.setenv("AURASEAL_LEDGER", f"sqlite://{tmp_path / 'dir.db'}")
    monkeypatch.delenv("AURASEAL_LEDGER_JSONL", raising=False)
    with event_sink() as sink:
        assert sink is not None
        sink.record("seal", {"name": "x"})
        sink.record("seal", {"name": "y"})
    err = capsys.readouterr().err
    assert err.count("auraseal: warning: ledger:") == 1, err


def test_seed_style_sync_and_async(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEGRITY_HMAC_SECRET", SECRET.decode())
    url = f"sqlite://{tmp_path / 's.db'}"
    r1 = hash_and_record("memory_write", {"key": "value"}, {"scope": "user"}, ledger_url=url)
    r2 = asyncio.run(ahash_and_record("memory_write", {"key": "v2"}, ledger_url=url,
                                      jsonl=tmp_path / "s.jsonl"))
    assert r1.signature and r2.signature and r2.file_recorded and not r1.file_recorded

    async def flow() -> None:
        al = await AsyncLedger.open(url, secret=SECRET)
        res = await asyncio.gather(*[al.hash_and_record("t", {"i": i}) for i in range(20)])
        assert len({r.entry_id for r in res}) == 20
        blocks = await al.commit()
        assert blocks[-1].tree_size == 22
        check = await al.verify_entry(r1.entry_id, {"key": "value"})
        assert check["verified"]
        (await al.inclusion(r2.entry_id)).verify()
        assert (await al.verify_chain()).ok
        await al.close()

    asyncio.run(flow())


def test_sqlite_newer_schema_refused(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'n.db'}"
    open_ledger(url).close()
    db = sqlite3.connect(tmp_path / "n.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(LedgerError):
        open_ledger(url)


SEED_SQL = """
CREATE SCHEMA ledger;
CREATE TABLE ledger.blocks (
    block_number BIGSERIAL PRIMARY KEY,
    previous_hash VARCHAR(64) NOT NULL,
    block_hash VARCHAR(64) UNIQUE NOT NULL,
    merkle_root VARCHAR(64) NOT NULL,
    timestamp TIMESTAMPTZ DEFAULT NOW(),
    data_count INTEGER DEFAULT 0
);
CREATE TABLE ledger.entries (
    id UUID PRIMARY KEY,
    block_number BIGINT REFERENCES ledger.blocks(block_number),
    entry_type VARCHAR(100) NOT NULL,
    data_hash VARCHAR(64) NOT NULL,
    metadata JSONB DEFAULT '{}',
    signature VARCHAR(256),
    created_at TIMESTAMPTZ DEFAULT NOW()
);
"""


@pytest.mark.postgres
def test_postgres_migrates_the_seed_schema(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(SEED_SQL)  # type: ignore[arg-type]
    with open_ledger(pg_database, secret=SECRET) as led:
        r = led.record("t", {"a": 1})
        led.commit()
        assert led.verify_entry(r.entry_id, {"a": 1})["verified"]
    with psycopg.connect(pg_database, autocommit=True) as conn:
        cols = {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'ledger' AND table_name = 'entries'")}
        assert {"id", "metadata", "created_at", "leaf_index", "seq", "metadata_c"} <= cols
        meta, created = conn.execute(
            "SELECT metadata, created_at FROM ledger.entries").fetchone()  # type: ignore[misc]
        assert meta == {} and created is not None  # the seed's columns are filled too
        tables = {row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ledger'")}
        assert tables == {"blocks", "entries", "nodes", "meta"}
        conn.execute("UPDATE ledger.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError):
        open_ledger(pg_database)


@pytest.mark.postgres
def test_postgres_connection_lost_mid_write(pg_database: str) -> None:
    """Fault injection: the server kills our session; nothing is acknowledged or half-written."""
    led = open_ledger(pg_database, secret=SECRET, policy=BlockPolicy(max_entries=10))
    try:
        led.record_many([("t", {"i": i}, None) for i in range(25)])
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StorageError):
            led.record_many([("lost", {"i": i}, None) for i in range(10)])
    finally:
        led.close()
    with open_ledger(pg_database, secret=SECRET) as again:
        rep = again.verify_chain()
        assert rep.ok and rep.entries == 20 and rep.pending == 5
        assert all(e.entry_type == "t" for e in again.pending())


def test_durable_mode_and_missing_secret_for_signed_entry(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'd.db'}"
    with open_ledger(url, tmp_path / "d.jsonl", durable=True, secret=SECRET) as led:
        assert led.mirror is not None and led.mirror.fsync == "always"
        sync = led.store._db.execute("PRAGMA synchronous").fetchone()[0]  # type: ignore[attr-defined]
        assert sync == 2  # FULL
        r = led.record("t", {"a": 1})
        led.commit()
    with open_ledger(url, secret=None) as led:
        with pytest.raises(MissingSecretError):
            led.verify_entry(r.entry_id, {"a": 1})
        assert led.verify_chain().signatures_checked is False


def test_async_block_timer(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 't.db'}"

    async def flow() -> int:
        al = await AsyncLedger.open(
            url, secret=SECRET, policy=BlockPolicy(max_age=timedelta(seconds=0.2)))
        await al.hash_and_record("t", {"i": 1})
        timer = asyncio.create_task(al.block_timer(interval=0.1))
        for _ in range(50):
            await asyncio.sleep(0.1)
            if al.ledger.head() is not None:
                break
        timer.cancel()
        head = al.ledger.head()
        await al.close()
        return head.data_count if head else 0

    assert asyncio.run(flow()) == 1


def test_config_file_names_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AURASEAL_LEDGER", raising=False)
    monkeypatch.delenv("AURASEAL_LEDGER_JSONL", raising=False)
    monkeypatch.delenv("INTEGRITY_HMAC_SECRET", raising=False)
    cfg = tmp_path / "config.toml"
    monkeypatch.setenv("AURASEAL_CONFIG", str(cfg))
    url = f"sqlite://{tmp_path / 'cfg.db'}"
    cfg.write_text(f'[ledger]\nurl = "{url}"\njsonl = "{tmp_path / "cfg.jsonl"}"\n')
    assert resolve_ledger_url(None) == url
    record_event("seal", {"name": "x"})
    assert (tmp_path / "cfg.jsonl").exists()
    with open_ledger(url) as led:
        assert [e.entry_type for e in led.pending()] == ["seal"]
    cfg.write_text("[ledger]\nurl = 5\n")
    with pytest.raises(ConfigError, match=r"\[ledger\]"):
        resolve_ledger_url(None)


def test_bundle_for_a_later_block_checks_its_chain_link(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    """Block 3 of 4: merkle_root, tree_root and previous_hash are all proven; a zeroed
    merkle_root (hash recomputed) or a previous block from elsewhere is refused."""
    led = make_ledger(max_entries=7)
    ids = [r.entry_id for r in led.record_many([("t", {"i": i}, None) for i in range(30)])]
    led.commit()
    key = SigningKey.generate()
    bundle = led.proof_bundle(ids[17], "k", key)
    assert bundle["block"]["block_number"] == 3 and bundle["previous_block"]["block_number"] == 2
    res = verify_bundle(bundle, "k", key.public)
    assert res["block_checked"] and res["block_number"] == 3
    last = led.proof_bundle(ids[29], "k", key)  # the head block: tree_root is the checkpoint's
    assert verify_bundle(last, "k", key.public)["block_number"] == 5

    def refused(mutate: Callable[[dict[str, Any]], None]) -> str:
        bad = json.loads(json.dumps(bundle))
        mutate(bad)
        with pytest.raises(MerkleProofError) as exc:
            verify_bundle(bad, "k", key.public)
        return exc.value.where

    def zero_root(b: dict[str, Any]) -> None:
        b["block"]["merkle_root"] = "0" * 64
        b["block"]["block_hash"] = Block.from_json(b["block"]).compute_hash()

    def other_previous(b: dict[str, Any]) -> None:
        b["previous_block"] = led.block(1).to_json()
        b["block"]["previous_hash"] = b["previous_block"]["block_hash"]
        b["block"]["block_hash"] = Block.from_json(b["block"]).compute_hash()

    def previous_root(b: dict[str, Any]) -> None:
        b["previous_block"]["tree_root"] = led.block(1).tree_root
        b["previous_block"]["block_hash"] = Block.from_json(b["previous_block"]).compute_hash()
        b["block"]["previous_hash"] = b["previous_block"]["block_hash"]
        b["block"]["block_hash"] = Block.from_json(b["block"]).compute_hash()

    assert refused(zero_root) == "bundle: block.merkle_root"
    assert refused(other_previous) == "bundle: previous_block"
    assert refused(previous_root) == "bundle: previous_block.tree_root"
    with pytest.raises(InputError, match="previous_block"):
        verify_bundle({**bundle, "previous_block": None}, "k", key.public)
