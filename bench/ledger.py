"""Ledger benchmark: append rate (SQLite, PostgreSQL), 1M-entry verification, proof latency.

Runs AuraSeal's ledger and the peer — pymerkle's ``SqliteTree`` (RFC 9162
tree in SQLite) — on the same entries in one run and prints figures and
ratios.  Installs pymerkle (pip) if missing; starts a throwaway PostgreSQL
cluster with default durability (fsync on) on loopback and removes it after.

    .venv/bin/python bench/ledger.py            # full: 1,000,000 entries
    .venv/bin/python bench/ledger.py --entries 200000
    .venv/bin/python bench/ledger.py --only tiles   # just the tlog-tiles figures

Tiles (issue 15): tile writing cost per 1,000 entries, append rate with a tile
directory kept current after every commit (targets unchanged: >= 20,000/s
SQLite, >= 10,000/s PostgreSQL), and an inclusion proof assembled from tiles
fetched over HTTP from ``auraseal serve`` vs Debian nginx serving the same
tile tree.

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

import httpx

from auraseal import merkle
from auraseal.ledger import BlockPolicy, Ledger, open_ledger
from auraseal.ledger.note import Ed25519NoteSigner
from auraseal.ledger.tilelog import TileWriter
from auraseal.ledger.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, parse_hash_tile
from auraseal.signing import SigningKey

# the test servers (tests/_servers.py) are shared with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _servers import free_port, run_nginx, run_server

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


# --- tlog-tiles ------------------------------------------------------------------


def _tile_getter(client: httpx.Client, base: str, size: int) -> merkle.NodeGetter:
    """A node getter reading complete subtrees from tiles over HTTP (one fetch per tile)."""
    cache: dict[tuple[int, int], list[bytes]] = {}

    def get(level: int, index: int) -> bytes:
        tl, r = divmod(level, TILE_HEIGHT)
        first = index << r
        n = first // TILE_WIDTH
        key = (tl, n)
        if key not in cache:
            count = size >> (TILE_HEIGHT * tl)
            width = min(TILE_WIDTH, count - n * TILE_WIDTH)
            resp = client.get(f"{base}/{Tile(tl, n, width).path()}")
            resp.raise_for_status()
            cache[key] = parse_hash_tile(resp.content, width)
        hashes = cache[key]
        off = first - n * TILE_WIDTH
        return merkle.root(hashes[off : off + (1 << r)])

    return get


def proof_from_tiles(client: httpx.Client, base: str, index: int, size: int,
                     root: bytes, leaf: bytes) -> None:
    """Fetch the tiles an inclusion proof needs, build the proof, verify it."""
    get = _tile_getter(client, base, size)
    proof = merkle.inclusion_proof_from(get, index, size)
    merkle.verify_inclusion(leaf, index, size, proof, root)


def _nginx_conf(d: Path, root: Path, port: int) -> Path:
    conf = d / "nginx.conf"
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n"
        f" fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n"
        f" server {{ listen 127.0.0.1:{port}; root {root};\n"
        "  location ~ \\.p/ { add_header Cache-Control \"public, max-age=60\"; }\n"
        "  location /tile/ { add_header Cache-Control \"public, max-age=31536000, immutable\"; }\n"
        "  location = /checkpoint { add_header Cache-Control no-cache; } } }\n")
    return conf


def tiles_bench(args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str, str]]) -> None:
    signer = Ed25519NoteSigner("bench-log", SigningKey.generate())
    policy = BlockPolicy()
    n = args.rate_entries
    # 1. tile writing cost: the whole tree from scratch, then per 1,000 new entries
    url = f"sqlite://{tmp / 'tiles.db'}"
    led = open_ledger(url, secret=SECRET, policy=policy)
    append_rate(led, n)
    t = time.perf_counter()
    res = TileWriter(tmp / "tiles-full", signer).update(led)
    t_full = time.perf_counter() - t
    writer = TileWriter(tmp / "tiles-full", signer)
    incr = []
    for k in range(5):
        led.record_many(_items(n + k * 1000, 1000))
        t = time.perf_counter()
        writer.update(led)
        incr.append(time.perf_counter() - t)
    rows += [(f"write all tiles of {n:,} entries from scratch", f"{t_full:.2f} s",
              f"{res['tiles_written']} files; {t_full / (n / 1000) * 1e3:.1f} ms per 1,000"),
             ("write the new tiles after 1,000 more entries",
              f"median {statistics.median(incr) * 1e3:.1f} ms", "incl. checkpoint, fsync each")]
    # 2. append rate with the tile directory kept current as blocks commit, next to the
    #    same run without tiles (the machine's load moves both alike)
    def rate(url: str, tiles: TileWriter | None) -> float:
        lg = open_ledger(url, secret=SECRET, policy=policy, tiles=tiles)
        r = append_rate(lg, n)
        lg.close()
        return r

    for label, target, mk in (("SQLite", "20,000", lambda k: f"sqlite://{tmp / k}.db"),):
        r_off = rate(mk("off"), None)
        r_each = rate(mk("each"), TileWriter(tmp / "t-each", signer))
        r_1s = rate(mk("1s"), TileWriter(tmp / "t-1s", signer, min_interval=1.0))
        rows += [(f"{label} append, batched, no tiles", f"{r_off:,.0f} entries/s", ""),
                 (f"{label} append, tiles after every batch (target >= {target}/s)",
                  f"{r_each:,.0f} entries/s", f"{r_each / r_off:.0%} of no tiles"),
                 (f"{label} append, tiles at most once a second",
                  f"{r_1s:,.0f} entries/s", f"{r_1s / r_off:.0%} of no tiles")]
    with postgres() as dsn:  # tiles first: its first update then scans a small tree
        r_1s = rate(dsn, TileWriter(tmp / "t-pg", signer, min_interval=1.0))
        r_off = rate(dsn, None)
    rows += [("PostgreSQL append, batched, no tiles", f"{r_off:,.0f} entries/s", ""),
             ("PostgreSQL append, tiles at most once a second (target >= 10,000/s)",
              f"{r_1s:,.0f} entries/s", f"{r_1s / r_off:.0%} of no tiles")]
    # 3. inclusion proofs from tiles: auraseal serve vs nginx on the same tree
    led.commit()
    size = led.checkpoint().size
    root_hash = led.tree_root()
    out = tmp / "tiles-static"
    TileWriter(out, signer).update(led)
    rnd = random.Random(5)
    sample = [rnd.randrange(size) for _ in range(args.tile_proofs)]
    leaves = {i: merkle.leaf_hash(e.leaf()) for i in sample
              for e in led.store.entry_range(i, i + 1)}
    led.close()
    srv_root = tmp / "srv"
    srv_root.mkdir()
    lat: dict[str, list[float]] = {"auraseal serve": [], "nginx": []}
    ngx = tmp / "nginx"
    ngx.mkdir()
    port = free_port()
    with run_server(srv_root, ledger_url=url, healing=False) as base, \
            run_nginx(_nginx_conf(ngx, out, port), port) as nbase, httpx.Client() as client:
        for name, b in (("auraseal serve", f"{base}/ledger/log"), ("nginx", nbase)):
            for i in sample[:20]:  # warm up
                proof_from_tiles(client, b, i, size, root_hash, leaves[i])
            for i in sample:
                t = time.perf_counter()
                proof_from_tiles(client, b, i, size, root_hash, leaves[i])
                lat[name].append(time.perf_counter() - t)
    for name, xs in lat.items():
        rows.append((f"inclusion proof from tiles over HTTP, {name}, tree {size:,}",
                     f"median {statistics.median(xs) * 1e3:.2f} ms, "
                     f"p99 {_pct(xs, .99) * 1e3:.2f} ms", "fetch 3 tiles + verify"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000, help="size of the big ledger")
    ap.add_argument("--rate-entries", type=int, default=100_000)
    ap.add_argument("--proofs", type=int, default=2000)
    ap.add_argument("--tile-proofs", type=int, default=300)
    ap.add_argument("--only", choices=("all", "tiles"), default="all")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    rows: list[tuple[str, str, str]] = []
    policy = BlockPolicy()  # 100 entries or 5 minutes
    print(f"ledger bench: {os.cpu_count()} cores, batches of {BATCH}, signed entries, "
          f"blocks of {policy.max_entries}")
    if args.only == "tiles":
        tiles_bench(args, tmp, rows)
        _print(rows)
        shutil.rmtree(tmp, ignore_errors=True)
        return

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
    tiles_bench(args, tmp, rows)
    _print(rows)
    shutil.rmtree(tmp, ignore_errors=True)


def _print(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print()
    for name, fig, note in rows:
        print(f"{name:<{width}}  {fig:<36} {note}")


if __name__ == "__main__":
    main()
