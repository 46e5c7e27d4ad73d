"""Client recovery at real file sizes: damaged originals of 0 B .. 64 MiB,
served by our server, by nginx (``auraseal nginx-conf``) and by a plain static
host (``python3 -m http.server``), are rebuilt byte-exact by ``auraseal fetch``,
in bounded memory.

One package holding every size is sealed once per module; each damage kind
gets its own copy of the served tree (parts hard-linked, originals damaged)
under its own package name, so three servers serve all four copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _servers import free_port, run_nginx, stop_process, wait_listening

from auraseal.cli import main as cli_main
from auraseal.manifest import MANIFEST_NAME, Manifest, dump_signed, part_name
from auraseal.sealing import seal_tree
from auraseal.signing import SigningKey

from .helpers import no_leftovers

pytestmark = pytest.mark.nginx

SIZES = {
    "empty.bin": 0,
    "one.bin": 1,
    "small.bin": 5 << 10,
    "mid.bin": 1 << 20,
    "big/20m.bin": 20 << 20,
    "big/64m.bin": 64 << 20,
}
KINDS = ("region", "replaced", "truncated", "missing")
SERVERS = ("serve", "nginx", "http.server")


def _damage(p: Path, kind: str, rnd: random.Random) -> None:
    """Damage one served original in place of the hard link (never the sealed copy)."""
    data = p.read_bytes()
    p.unlink()  # break the hard link: the other trees keep their own bytes
    if kind == "missing":
        return
    n = len(data)
    if kind == "region":
        off = n // 3 if n > 4096 else 0
        end = min(n, off + 4096)
        region = bytes(b ^ 0xFF for b in data[off:end])  # every byte differs
        data = data[:off] + region + data[end:]
    elif kind == "replaced":
        data = bytes(b ^ 0xFF for b in data) if n < 64 else rnd.randbytes(n)
    elif kind == "truncated":
        data = data[: n // 2]
    p.write_bytes(data)


def _link_parts(src: str, dst: str) -> None:
    """Hard-link part files (never written); copy originals (our server repairs them)."""
    if ".part." in Path(src).name:
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@dataclasses.dataclass
class Served:
    root: Path
    root_serve: Path
    sealed: Path
    manifest: Manifest
    digests: dict[str, str]
    pub: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    base = tmp_path_factory.mktemp("recovery")
    key = SigningKey.generate()
    src = base / "src"
    digests = {}
    for rel, size in SIZES.items():
        data = os.urandom(size)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    sealed = base / "sealed"
    m = seal_tree(src, sealed, keys=[key], name="site")
    root = base / "root"
    rnd = random.Random(10)
    for kind in KINDS:
        pkg = root / f"site-{kind}"
        for p in sorted(sealed.rglob("*")):
            if p.is_file() and p.name != MANIFEST_NAME:
                (pkg / p.relative_to(sealed)).parent.mkdir(parents=True, exist_ok=True)
                os.link(p, pkg / p.relative_to(sealed))
        signed = dump_signed(dataclasses.replace(m, name=f"site-{kind}"), [key])
        (pkg / MANIFEST_NAME).write_bytes(signed)
        for rel, size in SIZES.items():
            if size or kind == "missing":
                _damage(pkg / rel, kind, rnd)
        if kind == "missing":  # and a data part: the 64 MiB file needs parity decoding
            (pkg / part_name("big/64m.bin", 0)).unlink()
        # our server repairs what it serves (and adopts the tree): its own copy
        shutil.copytree(pkg, base / "root-serve" / pkg.name, copy_function=_link_parts)
    pub = base / "key.pub"
    pub.write_bytes(key.public.pem())
    return Served(root, base / "root-serve", sealed, m, digests, pub)


@pytest.fixture(scope="module")
def urls(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URL of each server, to which ``{kind}`` is appended as the package."""
    d = tmp_path_factory.mktemp("nginx")
    ngx_port, static_port, our_port = free_port(), free_port(), free_port()
    conf = d / "nginx.conf"
    rc = cli_main(["nginx-conf", str(served.root), "--listen", f"127.0.0.1:{ngx_port}",
                   "--standalone", str(d), "-o", str(conf)])
    assert rc == 0
    auraseal = str(Path(sys.executable).parent / "auraseal")
    with contextlib.ExitStack() as stack:
        ngx = stack.enter_context(run_nginx(conf, ngx_port))
        # both in their own process (our server repairs on the other core)
        for port, cmd in (
            (static_port, [sys.executable, "-m", "http.server", str(static_port), "--bind",
                           "127.0.0.1", "--directory", str(served.root)]),
            (our_port, [auraseal, "serve", str(served.root_serve), "--host", "127.0.0.1",
                        "--port", str(our_port), "--workers", "1",
                        "--scrub-interval", "100000"]),
        ):
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            stack.callback(stop_process, proc)
            wait_listening(port, 30, proc)
        yield {
            "serve": f"http://127.0.0.1:{our_port}/packages/site-{{kind}}/files/",
            "nginx": f"{ngx}/packages/site-{{kind}}/files/",
            "http.server": f"http://127.0.0.1:{static_port}/site-{{kind}}/",
        }


def _fetch(url: str, dest: Path, pub: Path) -> dict[str, object]:
    buf = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = cli_main(["fetch", url, "-o", str(dest), "--trusted-key", str(pub),
                       "--no-cache", "--json"])
    assert rc == 0, (rc, err.getvalue())
    doc: dict[str, object] = json.loads(buf.getvalue())
    return doc


def _check_installed(served: Served, dest: Path) -> None:
    got = {}
    for rel in SIZES:
        got[rel] = hashlib.sha256((dest / rel).read_bytes()).hexdigest()
    assert got == served.digests
    extra = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert [x for x in extra if x not in SIZES and not x.startswith(".auraseal")] == [], extra
    no_leftovers(dest)


def _run(served: Served, urls: dict[str, str], kind: str, server: str, tmp: Path) -> None:
    dest = tmp / "out" / "site"
    rep = _fetch(urls[server].format(kind=kind), dest, served.pub)
    _check_installed(served, dest)
    files = {f["path"]: f for f in rep["files"]}  # type: ignore[attr-defined]
    if server != "serve":  # static hosts hand out the damaged bytes: rebuilt by the client
        for rel in ("big/20m.bin", "big/64m.bin"):
            assert files[rel]["source"] == "parts", (rel, files[rel])


@pytest.mark.parametrize("server", ["nginx", "http.server"])
def test_fetch_rebuilds_20_and_64_mib_originals_with_4k_overwritten(
    served: Served, urls: dict[str, str], server: str, tmp_path: Path
) -> None:
    """Issue 10.1: a 4 KiB region overwritten in a >= 20 MiB original made
    the salvage fail with `error: : fileno`, exit 5, nothing installed."""
    _run(served, urls, "region", server, tmp_path)


#: the region cells against static hosts are the test above, and the
#: missing-nginx cell is the memory test below (run in a subprocess)
MATRIX = [(k, s) for k in KINDS for s in SERVERS
          if (k, s) not in {("region", "nginx"), ("region", "http.server"), ("missing", "nginx")}]


@pytest.mark.parametrize(("kind", "server"), MATRIX)
def test_fetch_recovery_matrix_byte_exact(
    served: Served, urls: dict[str, str], kind: str, server: str, tmp_path: Path
) -> None:
    """Sizes 0 B .. 64 MiB x damage kind x server: byte-exact installs, exit 0."""
    _run(served, urls, kind, server, tmp_path)


#: Runs the CLI; prints its exit code, its RSS before the fetch and its peak
#: RSS (VmHWM: this process's own high-water mark, fresh at exec — unlike
#: ru_maxrss, which keeps the forking parent's), after the code is loaded.
FETCH_RSS_DRIVER = textwrap.dedent("""
    import sys
    from auraseal.cli import main
    # the CLI imports lazily: load the fetch's code (and the erasure engines)
    # first, so that the growth measured below is data, not code
    import auraseal.cli._fetch, auraseal.client.fetch, auraseal.sealing.pipeline
    from auraseal.sealing.erasure import engines
    engines()

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])  # KiB
        raise SystemExit("no " + field)

    before = status("VmRSS")
    rc = main(sys.argv[1:])
    print(rc, before, status("VmHWM"), file=sys.stderr)
""")


def test_fetch_rebuild_memory_stays_bounded_well_below_file_size(
    served: Served, urls: dict[str, str], tmp_path: Path
) -> None:
    """The matrix's missing x nginx cell, run as a subprocess: every original
    missing (and data part 0 of the 64 MiB file, so it is decoded with
    parity), all files come from parts alone, byte-exact; the fetch's peak
    RSS grows far less than the 64 MiB file (it used to hold every part, then
    the whole rebuilt file, in memory: +204 MiB)."""
    dest = tmp_path / "out" / "site"
    cmd = [sys.executable, "-c", FETCH_RSS_DRIVER, "fetch",
           urls["nginx"].format(kind="missing"), "-o", str(dest),
           "--trusted-key", str(served.pub), "--no-cache", "--jobs", "1", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    rc, before, peak = (int(x) for x in r.stderr.strip().splitlines()[-1].split())
    assert rc == 0, r.stderr
    _check_installed(served, dest)
    files = {f["path"]: f for f in json.loads(r.stdout)["files"]}
    assert {p for p, f in files.items() if f["source"] == "parts"} == set(SIZES)
    growth_mib = (peak - before) / 1024
    print(f"fetch RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB")
    assert growth_mib < 48, f"peak RSS grew {growth_mib:.0f} MiB rebuilding 64 MiB"
