"""Ledger benchmark: append rate (SQLite, PostgreSQL), 1M-entry verification, proof latency.

Runs AuraSeal's ledger and the peer — pymerkle's ``SqliteTree`` (RFC 9162
tree in SQLite) — on the same entries in one run and prints figures and
ratios.  Installs pymerkle (pip) if missing; starts a throwaway PostgreSQL
cluster with default durability (fsync on) on loopback and removes it after.

    .venv/bin/python bench/ledger.py            # full: 1,000,000 entries
    .venv/bin/python bench/ledger.py --entries 200000

Targets (issue 4): >= 20,000 entries/s SQLite, >= 10,000 entries/s PostgreSQL
(signed entries, default block policy), 1M-entry verification < 30 s,
inclusion proof < 1 ms median.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from auraseal import merkle
from auraseal.ledger import BlockPolicy, Ledger, open_ledger

SECRET = b"bench-secret"
BATCH = 1000


def _items(start: int, n: int) -> list[tuple[str, dict[str, object], dict[str, object]]]:
    return [
        ("seal", {"path": f"pkg/file-{i}.bin", "size": i * 7, "sha256": f"{i:064x}"},
         {"host": "bench", "n": i})
        for i in range(start, start + n)
    ]


def append_rate(led: Ledger, n: int, batch: int = BATCH) -> float:
    t = time.perf_counter()
    for start in range(0, n, batch):
        led.record_many(_items(start, min(batch, n - start)))
    return n / (time.perf_counter() - t)


def single_rate(led: Ledger, n: int) -> float:
    items = _items(0, n)
    t = time.perf_counter()
    for typ, data, meta in items:
        led.record(typ, data, meta)
    return n / (time.perf_counter() - t)


# --- PostgreSQL throwaway cluster -------------------------------------------------


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(
        f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True)
        return _pg_bin(name)
    return found


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    user = "postgres" if os.geteuid() == 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if user:
        pw = pwd.getpwnam(user)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    wrap = ["runuser", "-u", user, "--"] if user else []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "data"
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run([*wrap, _pg_bin("initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True, env=env,
                   cwd=tmp)
    subprocess.run([*wrap, _pg_bin("pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w",
                    "-o", f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True, env=env, cwd=tmp)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*wrap, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, env=env, cwd=tmp, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


# --- peer --------------------------------------------------------------------------


def pymerkle_module() -> object:
    try:
        return importlib.import_module("pymerkle")
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pymerkle"], check=True)
        return importlib.import_module("pymerkle")


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000, help="size of the big ledger")
    ap.add_argument("--rate-entries", type=int, default=100_000)
    ap.add_argument("--proofs", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    rows: list[tuple[str, str, str]] = []
    policy = BlockPolicy()  # 100 entries or 5 minutes
    print(f"ledger bench: {os.cpu_count()} cores, batches of {BATCH}, signed entries, "
          f"blocks of {policy.max_entries}")

    # SQLite append
    led = open_ledger(f"sqlite://{tmp / 'rate.db'}", secret=SECRET, policy=policy)
    r_sqlite = append_rate(led, args.rate_entries)
    led.close()
    led = open_ledger(f"sqlite://{tmp / 'rate2.db'}", tmp / "rate2.jsonl", secret=SECRET,
                      policy=policy)
    r_sqlite_jsonl = append_rate(led, args.rate_entries)
    r_sqlite_single = single_rate(led, 3000)
    led.close()
    rows += [("SQLite append, batched (target >= 20,000/s)", f"{r_sqlite:,.0f} entries/s", ""),
             ("SQLite + JSONL dual write, batched", f"{r_sqlite_jsonl:,.0f} entries/s", ""),
             ("SQLite + JSONL, one record() per entry", f"{r_sqlite_single:,.0f} entries/s", "")]

    # PostgreSQL append (default durability: fsync on, synchronous_commit on)
    with postgres() as dsn:
        led = open_ledger(dsn, secret=SECRET, policy=policy)
        r_pg = append_rate(led, args.rate_entries)
        r_pg_single = single_rate(led, 2000)
        t = time.perf_counter()
        rep = led.verify_chain()
        t_pg_verify = time.perf_counter() - t
        assert rep.ok, rep.problems[:3]
        ids = [e.entry_id for e in led.store.committed_entries()]
        lat = []
        for eid in random.Random(1).sample(ids, min(500, len(ids))):
            t = time.perf_counter()
            led.inclusion(eid)
            lat.append(time.perf_counter() - t)
        pg_n = len(ids)
        led.close()
    rows += [("PostgreSQL append, batched (target >= 10,000/s)", f"{r_pg:,.0f} entries/s", ""),
             ("PostgreSQL, one record() per entry", f"{r_pg_single:,.0f} entries/s", ""),
             (f"PostgreSQL verify {pg_n:,} entries", f"{t_pg_verify:.2f} s", ""),
             (f"PostgreSQL inclusion proof at {pg_n:,}",
              f"median {statistics.median(lat) * 1e3:.3f} ms, p99 {_pct(lat, .99) * 1e3:.3f} ms",
              "")]

    # Peer: pymerkle SqliteTree
    pm = pymerkle_module()
    tree_cls = pm.SqliteTree  # type: ignore[attr-defined]
    tree = tree_cls(str(tmp / "pymerkle1.db"))
    n_single = 2000
    t = time.perf_counter()
    for i in range(n_single):
        tree.append_entry(f"entry {i}".encode())
    p_single = n_single / (time.perf_counter() - t)
    tree.close()
    tree = tree_cls(str(tmp / "pymerkle2.db"))
    data = [f"entry {i}".encode() for i in range(args.rate_entries)]
    t = time.perf_counter()
    tree.append_entries(data, chunksize=BATCH)
    p_batch = args.rate_entries / (time.perf_counter() - t)
    lat_pm = []
    for i in random.Random(2).sample(range(1, args.rate_entries + 1), min(300, args.proofs)):
        t = time.perf_counter()
        tree.prove_inclusion(i, args.rate_entries)
        lat_pm.append(time.perf_counter() - t)
    tree.close()
    rows += [("pymerkle SqliteTree append_entry (commit each)", f"{p_single:,.0f} entries/s",
              f"ours (one record() each, + JSONL): {r_sqlite_single / p_single:.1f}x"),
             ("pymerkle SqliteTree append_entries (batched)", f"{p_batch:,.0f} entries/s",
              f"ours batched: {r_sqlite / p_batch:.2f}x (they store raw leaves only:"
              " no HMAC, no entry hash, no blocks)"),
             (f"pymerkle inclusion proof at {args.rate_entries:,}",
              f"median {statistics.median(lat_pm) * 1e3:.3f} ms", "")]

    # 1M-entry ledger: build, verify end to end (with JSONL), proofs
    n = args.entries
    big = tmp / "big.db"
    led = open_ledger(f"sqlite://{big}", tmp / "big.jsonl", secret=SECRET, policy=policy)
    t = time.perf_counter()
    append_rate(led, n, batch=5000)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    rep = led.verify_chain()
    t_verify = time.perf_counter() - t
    assert rep.ok and rep.entries == n, (rep.entries, rep.problems[:3])
    led.close()
    led = open_ledger(f"sqlite://{big}", secret=SECRET, policy=policy)
    t = time.perf_counter()
    rep2 = led.verify_chain()
    t_verify_db = time.perf_counter() - t
    assert rep2.ok
    ids = [e.entry_id for e in led.store.committed_entries()]
    sample = random.Random(3).sample(ids, args.proofs)
    lat, vlat = [], []
    for eid in sample:
        t = time.perf_counter()
        p = led.inclusion(eid)
        lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        merkle.verify_inclusion(p.entry.leaf_hash(), p.leaf_index, p.tree_size, p.proof, p.root)
        vlat.append(time.perf_counter() - t)
    led.close()
    rows += [(f"SQLite build {n:,} entries (+ JSONL, batches of 5000)", f"{t_build:.1f} s",
              f"{n / t_build:,.0f} entries/s"),
             (f"verify {n:,} entries end to end, DB + JSONL (target < 30 s)",
              f"{t_verify:.1f} s", "chain, roots, all nodes, HMACs, mirror"),
             (f"verify {n:,} entries, DB only", f"{t_verify_db:.1f} s", ""),
             (f"inclusion proof at {n:,} (target < 1 ms median)",
              f"median {statistics.median(lat) * 1e3:.3f} ms, p99 {_pct(lat, .99) * 1e3:.3f} ms",
              f"vs pymerkle at {args.rate_entries:,}: "
              f"{statistics.median(lat_pm) / statistics.median(lat):.1f}x faster"),
             ("verify one inclusion proof (client side)",
              f"median {statistics.median(vlat) * 1e6:.0f} us", "")]
    width = max(len(r[0]) for r in rows)
    print()
    for name, fig, note in rows:
        print(f"{name:<{width}}  {fig:<36} {note}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
