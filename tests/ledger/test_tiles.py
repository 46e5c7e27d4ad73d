"""C2SP tlog-tiles: path encoding, which tiles exist, tile bytes from the stored
tree, the /ledger/log/ endpoint of the real server, `auraseal ledger tiles`, and
Go's sumdb/tlog reading our tiles over HTTP (server and a plain static host)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _servers import free_port, run_server, wait_listening

from auraseal import merkle
from auraseal.errors import InputError, NotFoundError
from auraseal.ledger import BlockPolicy, Ledger, open_ledger
from auraseal.ledger.checkpoint import Checkpoint
from auraseal.ledger.note import Ed25519NoteSigner, open_note, parse_verifier_key, sign_note
from auraseal.ledger.tilelog import TileWriter
from auraseal.ledger.tiles import (
    ENTRIES,
    Tile,
    encode_index,
    new_tiles,
    parse_entry_bundle,
    parse_hash_tile,
    parse_tile_path,
    tiles_for_size,
)
from auraseal.signing import SigningKey, generate_keypair

from .gotool import run_go

N = 65_600

# --- pure tile math -----------------------------------------------------------------


@pytest.mark.parametrize(("n", "text"), [
    (0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067"),
    (1_000_000, "x001/x000/000"),
])
def test_index_encoding_matches_the_spec(n: int, text: str) -> None:
    assert encode_index(n) == text
    assert parse_tile_path(f"tile/0/{text}") == Tile(0, n)


@pytest.mark.parametrize(("path", "tile"), [
    ("tile/0/x001/234", Tile(0, 1234)),
    ("tile/1/000.p/5", Tile(1, 0, 5)),
    ("tile/entries/x001/234.p/255", Tile(ENTRIES, 1234, 255)),
])
def test_tile_paths_round_trip(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path() == path


@pytest.mark.parametrize("path", [
    "tile/0/1234", "tile/0/x001/23", "tile/0/x000/234", "tile/0/001.p/256", "tile/0/001.p/0",
    "tile/0/001.p/07", "tile/00/001", "tile/data/001", "tile/0/001/", "tile/-1/001",
    "tile/0/../001", "checkpoint/x",
])
def test_malformed_tile_paths_are_refused(path: str) -> None:
    with pytest.raises(InputError):
        parse_tile_path(path)


def _go_new_tiles(old: int, new: int) -> list[Tile]:
    """Go's tlog.NewTiles with H=8, transcribed."""
    out: list[Tile] = []
    level = 0
    while new >> (8 * level) > 0:
        old_n, new_n = old >> (8 * level), new >> (8 * level)
        if old_n != new_n:
            for n in range(old_n >> 8, new_n >> 8):
                out.append(Tile(level, n))
            if w := new_n - ((new_n >> 8) << 8):
                out.append(Tile(level, new_n >> 8, w))
        level += 1
    return out


@pytest.mark.parametrize(("old", "new"), [
    (0, 1), (0, 255), (0, 256), (0, 257), (255, 256), (256, 512), (100, 70000), (65535, 65536),
    (65536, 65537), (0, 1_048_577),
])
def test_new_tiles_matches_go(old: int, new: int) -> None:
    assert new_tiles(old, new, entries=False) == _go_new_tiles(old, new)
    ours = new_tiles(old, new)
    assert [t for t in ours if t.level == ENTRIES] == [
        Tile(ENTRIES, t.index, t.width) for t in _go_new_tiles(old, new) if t.level == 0]


# --- tiles from a ledger -------------------------------------------------------------


def _fill(led: Ledger, n: int) -> None:
    for start in range(0, n, 5000):
        led.record_many([("t", {"i": i}, None) for i in range(start, min(n, start + 5000))],
                        with_signature=False)
    led.commit()


# --- over HTTP, with Go's reference code ----------------------------------------------


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A server with a 65,600-entry SQLite ledger (three tile levels); the checkpoint at
    size 300 kept."""
    tmp = tmp_path_factory.mktemp("tiled")
    url = f"sqlite://{tmp / 'ledger.db'}"
    led = open_ledger(url, None, policy=BlockPolicy(max_entries=300), secret=None)
    _fill(led, 300)
    root = tmp / "root"
    root.mkdir()
    with run_server(root, ledger_url=url, healing=False) as base:
        old = httpx.get(f"{base}/ledger/log/checkpoint").content
        (tmp / "old.note").write_bytes(old)
        _fill(led, N - 300)
        vkey = httpx.get(f"{base}/ledger/verifier-key").text.strip()
        yield {"base": base, "vkey": vkey, "old": tmp / "old.note", "ledger": led, "url": url,
               "tmp": tmp}
    led.close()


def test_tiles_hold_the_trees_nodes_and_entries(tiled: dict[str, object]) -> None:
    led = tiled["ledger"]
    assert isinstance(led, Ledger)
    leaves = [e.leaf() for e in led.store.committed_entries()]
    hashes = [merkle.leaf_hash(x) for x in leaves]
    levels = merkle.tree_levels(hashes)
    tiles = tiles_for_size(N)
    assert Tile(2, 0, 1) in tiles and Tile(1, 1, 0) not in tiles and Tile(0, 256, 64) in tiles
    for tile in [Tile(0, 0), Tile(0, 256, 64), Tile(1, 0), Tile(2, 0, 1),
                 Tile(ENTRIES, 5), Tile(ENTRIES, 256, 64)]:
        data = led.tile(tile)
        level, start, end = tile.node_coords()
        if tile.level == ENTRIES:
            assert parse_entry_bundle(data) == leaves[start:end]
        else:
            assert parse_hash_tile(data, tile.width) == levels[level][start:end]
    assert merkle.root(hashes) == led.tree_root()
    for missing in [Tile(0, 257), Tile(0, 256, 65), Tile(1, 1, 1), Tile(2, 0, 2), Tile(3, 0, 1)]:
        with pytest.raises(NotFoundError):
            led.tile(missing)


def test_server_serves_tiles_with_immutable_caching(tiled: dict[str, object]) -> None:
    base = f"{tiled['base']}/ledger/log"
    cp = httpx.get(f"{base}/checkpoint")
    assert cp.status_code == 200 and cp.headers["cache-control"] == "no-cache"
    note, _ = open_note(cp.content, [parse_verifier_key(str(tiled["vkey"]))])
    assert note.text.split("\n")[1] == str(N)
    full = httpx.get(f"{base}/tile/0/000")
    assert full.status_code == 200 and len(full.content) == 256 * 32
    assert "immutable" in full.headers["cache-control"]
    part = httpx.get(f"{base}/tile/0/256.p/64")
    assert part.status_code == 200 and "immutable" not in part.headers["cache-control"]
    assert httpx.get(f"{base}/tile/0/257").status_code == 404
    assert httpx.get(f"{base}/tile/0/x000/001").status_code == 404


def test_go_checks_our_tiles_over_http(tiled: dict[str, object], go_checker: Path) -> None:
    res = run_go(go_checker, "tiles", f"{tiled['base']}/ledger/log", str(tiled["vkey"]),
                 str(tiled["old"]), "0,255,256,299,65535,65536,65599")
    assert res.returncode == 0, res.stderr.decode()
    assert b"consistent with size 300" in res.stdout


def _write_static(url: str, out: Path, key_path: Path) -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", "auraseal", "ledger", "tiles", "--ledger", url,
                        "--out", str(out), "--key", str(key_path), "--name", "static-log",
                        "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    d: dict[str, object] = json.loads(r.stdout)
    return d


@contextlib.contextmanager
def _static_host(directory: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, 10, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_static_tiles_match_the_server_and_go_reads_them(
    tiled: dict[str, object], go_checker: Path, tmp_path: Path
) -> None:
    out, key_path = tmp_path / "log", tmp_path / "log.key"
    key = generate_keypair(key_path)
    url = str(tiled["url"])
    first = _write_static(url, out, key_path)
    assert first["tree_size"] == N and first["tiles_written"] == len(tiles_for_size(N))
    assert _write_static(url, out, key_path)["tiles_written"] == 0  # a rerun writes nothing
    for t in ["tile/0/000", "tile/1/000", "tile/2/000.p/1", "tile/entries/256.p/64"]:
        assert (out / t).read_bytes() == httpx.get(f"{tiled['base']}/ledger/log/{t}").content
    vkey = str(first["verifier_key"])
    assert vkey == Ed25519NoteSigner("static-log", key).verifier().vkey()
    led = tiled["ledger"]
    assert isinstance(led, Ledger)
    old = tmp_path / "old.note"
    old.write_text(led.signed_checkpoint("static-log", key, 300))
    with _static_host(out) as base:
        res = run_go(go_checker, "tiles", base, vkey, str(old), "0,299,65536,65599")
        assert res.returncode == 0, res.stderr.decode()
        # Go refuses a tampered tile from the static host
        tile = out / "tile/0/001"
        good = tile.read_bytes()
        tile.write_bytes(good[:5] + bytes([good[5] ^ 1]) + good[6:])
        bad = run_go(go_checker, "tiles", base, vkey, str(old), "300")
        assert bad.returncode == 1 and b"FAIL" in bad.stderr
        tile.write_bytes(good)
    # grow the ledger: only the new tiles are written
    led.record_many([("t", {"i": -1}, None)] * 300, with_signature=False)
    led.commit()
    again = _write_static(url, out, key_path)
    assert again["tree_size"] == N + 300
    assert again["tiles_written"] == len(new_tiles(N, N + 300))


def test_tile_writer_never_replaces_a_newer_checkpoint(make_ledger: object,
                                                       tmp_path: Path) -> None:
    led = make_ledger(jsonl=False, max_entries=10)  # type: ignore[operator]
    _fill(led, 20)
    signer = Ed25519NoteSigner("w", SigningKey.generate())
    w = TileWriter(tmp_path / "log", signer)
    assert w.update(led)["checkpoint_written"] == 1
    # another writer (sharing the directory) already published a larger tree
    newer = sign_note(Checkpoint(led.origin, 25, bytes(32)).body(), [signer])
    (tmp_path / "log/checkpoint").write_text(newer)
    assert w.update(led)["checkpoint_written"] == 0
    assert (tmp_path / "log/checkpoint").read_text() == newer


def test_tile_writer_min_interval_defers_then_flushes_on_close(tmp_path: Path) -> None:
    now = [100.0]
    signer = Ed25519NoteSigner("w", SigningKey.generate())
    w = TileWriter(tmp_path / "log", signer, min_interval=1.0, clock=lambda: now[0])
    led = open_ledger(f"sqlite://{tmp_path / 'l.db'}", None, policy=BlockPolicy(max_entries=10),
                      secret=None, tiles=w)
    _fill(led, 10)  # first commit: written
    assert (tmp_path / "log/tile/0/000.p/10").exists()
    _fill(led, 10)  # within the interval: deferred
    assert not (tmp_path / "log/tile/0/000.p/20").exists()
    now[0] += 1.5
    _fill(led, 10)  # interval passed: brought up to date
    assert (tmp_path / "log/tile/0/000.p/30").exists()
    _fill(led, 10)
    led.close()  # flushes what was deferred
    assert (tmp_path / "log/tile/0/000.p/40").exists()
    assert b"\n40\n" in (tmp_path / "log/checkpoint").read_bytes()
