"""A full disk during ``auraseal fetch`` (issue 13).

A real static host (``python3 -m http.server``) serves sealed packages; DIR
and the cache live on a small tmpfs that runs out of space while a 20 MiB
file is downloaded (or rebuilt from its parts). The fetch must exit 5 with
one line naming DIR's file, leave no temp files and the previous install
intact; with room again the same fetch succeeds.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _servers import free_port, stop_process, wait_listening
from sealing.fulldisk import MiB, Mount, assert_enospc, cli, digests, fill, grow, temps, tmpfs
from sealing.helpers import write_tree

from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

__all__ = ["tmpfs"]


@contextlib.contextmanager
def _static_host(cmd: list[str], port: int) -> Iterator[str]:
    """Run a static HTTP server (``cmd``) on 127.0.0.1:``port``; yield its URL."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, 10, proc)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_process(proc)


class Site:
    """Three versions of package ``site`` under one static host: ``v1``
    (small), ``v2`` (a 20 MiB file) and ``v3`` (v2 without the original of
    the big file: rebuilt from its parts); and package ``small``: ``s1``,
    ``s2`` and ``s3`` (the same manifest as ``s2``)."""

    def __init__(self, root: Path, base: str, pub: Path, src: dict[str, Path]) -> None:
        self.root, self.base, self.pub, self.src = root, base, pub, src

    def args(self, version: str, dest: Path, cache: Path) -> list[str]:
        name = "small" if version.startswith("s") else "site"
        return ["fetch", f"{self.base}{version}/", "-o", str(dest), "--package", name,
                "--trusted-key", str(self.pub), "--cache", str(cache), "--jobs", "2"]

    def fetch(self, version: str, dest: Path, cache: Path) -> subprocess.CompletedProcess[str]:
        return cli(*self.args(version, dest, cache))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("fulldisk-fetch")
    key = SigningKey.generate()
    pub = tmp / "key.pub"
    pub.write_bytes(key.public.pem())
    srv = tmp / "srv"
    src = {v: tmp / f"src-{v}" for v in ("v1", "v2", "s1", "s2")}
    write_tree(src["v1"], {"index.html": b"<html>v1</html>\n", "big.bin": b"v1\n" * 1000})
    write_tree(src["v2"], {"index.html": b"<html>v2</html>\n",
                           "big.bin": random.randbytes(20 * MiB)})
    write_tree(src["s1"], {"a.txt": b"small v1\n" * 100})
    write_tree(src["s2"], {"a.txt": b"small v2\n" * 100, "b.bin": random.randbytes(100_000)})
    for v, tree in src.items():
        name = "small" if v.startswith("s") else "site"
        seal_tree(tree, srv / v, keys=[key], name=name, version=int(v[1]))
    shutil.copytree(srv / "v2", srv / "v3")
    (srv / "v3" / "big.bin").unlink()
    shutil.copytree(srv / "s2", srv / "s3")
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
           "--directory", str(srv)]
    with _static_host(cmd, port) as url:
        yield Site(srv, url, pub, src)


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_fetch_20mib_onto_a_full_tmpfs_exits_5_and_keeps_the_previous_install(
    site: Site, tmpfs: Mount, version: str
) -> None:
    mnt = tmpfs("16m")
    dest, cache = mnt / "site", mnt / "cache"
    first = site.fetch("v1", dest, cache)
    assert first.returncode == 0, first.stderr
    v1 = digests(dest)
    assert v1 == digests(site.src["v1"])
    proc = site.fetch(version, dest, cache)  # v2: downloaded; v3: rebuilt from parts
    assert_enospc(proc, dest / "big.bin")
    assert digests(dest) == v1  # the previous install, whole
    assert not temps(mnt)
    grow(mnt, "64m")  # room again: the same fetch installs the new version
    done = site.fetch(version, dest, cache)
    assert done.returncode == 0, done.stderr
    assert digests(dest) == digests(site.src["v2"]) and not temps(mnt)


def test_fetch_with_only_the_cache_full_exits_5_and_keeps_the_previous_install(
    site: Site, tmp_path: Path, tmpfs: Mount
) -> None:
    dest = tmp_path / "site"
    cache = tmpfs("8m")
    assert site.fetch("s1", dest, cache).returncode == 0
    v1 = digests(dest)
    filler = fill(cache, 0)
    proc = site.fetch("s2", dest, cache)
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"auraseal: error: {cache}"), proc.stderr
    assert "No space left" in lines[0]
    assert digests(dest) == v1 and not temps(cache) and not temps(tmp_path)
    filler.unlink()
    done = site.fetch("s2", dest, cache)
    assert done.returncode == 0, done.stderr
    assert digests(dest) == digests(site.src["s2"])


def test_fetch_with_no_room_for_a_cached_copy_installs_and_leaves_no_cache_temps(
    site: Site, tmp_path: Path, tmpfs: Mount
) -> None:
    dest = tmp_path / "site"
    cache = tmpfs("4m")  # the manifest and rollback state fit; a copy of big.bin does not
    done = site.fetch("v2", dest, cache)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr  # a warning in the report
    assert "cannot store in cache" in said and "No space left" in said
    assert digests(dest) == digests(site.src["v2"])
    assert not temps(cache) and not temps(tmp_path)


def test_fetch_into_a_file_in_the_way_of_dir_exits_5_naming_it(
    site: Site, tmp_path: Path
) -> None:
    dest = tmp_path / "site"
    dest.write_bytes(b"not a directory\n")
    proc = site.fetch("v1", dest, tmp_path / "cache")
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.startswith(f"auraseal: error: {dest}: "), proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert dest.read_bytes() == b"not a directory\n" and not temps(tmp_path)


# Runs the CLI with the disk of argv[1] filled just before the install record
# is written for the second time (the journal fits; the final record does not).
_FULL_AT_RECORD = """
import os, sys
from pathlib import Path
from auraseal.client import install
mnt, argv = Path(sys.argv[1]), sys.argv[2:]
real, calls = install.write_record, []
def write_record(dest, record):
    calls.append(dest)
    if len(calls) == 2:
        st = os.statvfs(mnt)
        try:
            with open(mnt / "filler", "ab") as fh:
                fh.write(bytes(st.f_bavail * st.f_frsize))
        except OSError:
            pass
    real(dest, record)
install.write_record = write_record
from auraseal.cli import main
sys.exit(main(argv))
"""


def test_fetch_with_no_room_for_the_install_record_exits_5_and_leaves_no_trash(
    site: Site, tmp_path: Path, tmpfs: Mount
) -> None:
    mnt = tmpfs("4m")
    dest, cache = mnt / "site", tmp_path / "cache"
    for v in ("s1", "s2"):  # DIR holds s2, the previous copy s1
        assert site.fetch(v, dest, cache).returncode == 0
    # s2 again (from s3, the same manifest): DIR is replaced, its old tree trashed
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_AT_RECORD, str(mnt), *site.args("s3", dest, cache)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert_enospc(proc, mnt / ".site.auraseal.json")
    # the swap was journaled: DIR is whole, and no old copy is left behind
    assert digests(dest) == digests(site.src["s2"])
    assert not temps(mnt)
    (mnt / "filler").unlink()
    done = site.fetch("s3", dest, cache)  # finishes the journaled install
    assert done.returncode == 0, done.stderr
    assert digests(dest) == digests(site.src["s2"]) and not temps(mnt)
    back = cli("rollback", str(dest))
    assert back.returncode == 0, back.stderr
    assert digests(dest) == digests(site.src["s1"])


#: ``python3 -m http.server`` answering HTTP/1.1 with keep-alive: the client
#: pipelines its part requests to it (client/_parts_http.py), so the parts of
#: v3 reach the spool through that path rather than one request per part.
KEEPALIVE_SERVER = """
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
handler.func.protocol_version = "HTTP/1.1"
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


@pytest.fixture(scope="module")
def keepalive_site(site: Site) -> Iterator[Site]:
    port = free_port()
    with _static_host([sys.executable, "-c", KEEPALIVE_SERVER, str(port), str(site.root)],
                      port) as url:
        yield Site(site.root, url, site.pub, site.src)


def test_pipelined_part_runs_onto_a_full_tmpfs_exit_5_not_lost(
    keepalive_site: Site, tmpfs: Mount
) -> None:
    """A full disk while pipelined part answers are written into the spool is
    the local disk failing (exit 5 naming DIR's file), not a refused server
    answer (which ended as "too few good parts", exit 4)."""
    mnt = tmpfs("16m")
    dest, cache = mnt / "site", mnt / "cache"
    assert keepalive_site.fetch("v1", dest, cache).returncode == 0
    v1 = digests(dest)
    proc = keepalive_site.fetch("v3", dest, cache)
    assert_enospc(proc, dest / "big.bin")
    assert digests(dest) == v1 and not temps(mnt)
