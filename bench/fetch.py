#!/usr/bin/env python3
"""`auraseal fetch` vs `curl` on a ~100 MiB package of a few hundred files, over loopback.

    .venv/bin/python bench/fetch.py [--mib 100] [--files 300] [--part-size 5120] [--runs 3]

1. Seals the package (signed), serves it with `auraseal serve` (granian,
   2 workers) and fetches it: `auraseal fetch --no-cache` (the CLI, in a
   fresh process, and `fetch_package` in this process) vs one `curl`
   process fetching the same files one after another over one connection.
   Target: within 1.2x of curl.
2. Corrupts every original file in copies of the tree and serves each copy
   with nginx (`auraseal nginx-conf`; our server repairs damaged files from
   parity before serving them, so it never hands out a corrupt copy): every
   file must be rebuilt from parts by the client. Two kinds of damage, each
   its own row:
   * "region": in every original, one 4 KiB region at a random offset
     (seeded) is overwritten with random bytes — a bad sector / torn write.
     The client salvages the data parts the downloaded copy still re-creates
     (those matching the manifest) and fetches only the rest.
   * "replaced": every original is replaced by random bytes of the same size,
     so nothing can be salvaged and k parts of every file are fetched.
   Compared with curl fetching the intact files from another nginx on the
   same tree. Targets: intact <= 1.5x curl, region <= 3x, replaced <= 6x.
3. Memory: one --rebuild-mib (256) MiB random file whose served original
   (nginx) is replaced by other bytes, so all its data comes from parts: the
   CLI fetch (its own process) salvages nothing, fetches k parts, rebuilds
   and verifies the file; prints its time and peak RSS (VmHWM of the fetch
   process). Target: peak RSS < 200 MiB. `--rebuild-only` runs just this row.

Installs curl and nginx-light with apt-get if missing. Prints times (best of
--runs) and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from auraseal.client import fetch_package
from auraseal.manifest import Manifest
from auraseal.sealing import seal_tree
from auraseal.server.nginx import render_nginx_conf
from auraseal.signing import SigningKey, TrustPolicy

# the test servers (tests/_servers.py) are shared with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _servers import free_port, wait_listening

VENV_BIN = Path(sys.executable).parent


def ensure_tools() -> None:
    missing = [p for p, b in (("curl", "curl"), ("nginx-light", "nginx")) if not shutil.which(b)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def make_tree(root: Path, total: int, count: int) -> None:
    """``count`` files of varied sizes adding up to ``total`` bytes: random
    data and text, in a few directories."""
    rnd = random.Random(42)
    weights = [rnd.uniform(0.2, 1.8) for _ in range(count)]
    scale = total / sum(weights)
    for i, w in enumerate(weights):
        size = max(1, int(w * scale))
        p = root / f"d{i % 7}" / f"f{i:04d}.{'bin' if i % 3 else 'txt'}"
        p.parent.mkdir(parents=True, exist_ok=True)
        if i % 3:
            p.write_bytes(rnd.randbytes(size))
        else:
            line = f"line {i} of some text that compresses well enough\n".encode()
            p.write_bytes((line * (size // len(line) + 1))[:size])


def curl_all(base: str, manifest: Manifest, out: Path) -> float:
    """One curl process, the files one after another over one connection."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = out.parent / "curl.cfg"
    lines = []
    for e in manifest.files:
        lines.append(f'url = "{base}{e.path}"\noutput = "{out / e.path}"\n')
    cfg.write_text("".join(lines))
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "--create-dirs", "-K", str(cfg)], check=True)
    return time.perf_counter() - t0


def cli_fetch(url: str, dest: Path, pub: Path, jobs: int) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(
        [str(VENV_BIN / "auraseal"), "fetch", url, "-o", str(dest), "--trusted-key", str(pub),
         "--no-cache", "--jobs", str(jobs), "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def lib_fetch(url: str, dest: Path, policy: TrustPolicy, jobs: int) -> tuple[float, dict[str, int]]:
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    rep = fetch_package(url, dest, policy=policy, jobs=jobs)
    return time.perf_counter() - t0, rep.sources()


#: Runs the CLI and prints its exit code and peak RSS in KiB (VmHWM: this
#: process's own high-water mark, fresh at exec, unlike a forked ru_maxrss).
FETCH_RSS_DRIVER = textwrap.dedent("""
    import sys
    from auraseal.cli import main
    rc = main(sys.argv[1:])
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(rc, hwm, file=sys.stderr)
""")


def start_nginx(root: Path, work: Path, procs: list[subprocess.Popen[bytes]]) -> int:
    port = free_port()
    d = work / f"nginx-{port}"
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(render_nginx_conf(root, listen=f"127.0.0.1:{port}", standalone=d))
    cmd = ["nginx", "-p", str(d), "-c", str(conf)]
    if os.geteuid() == 0:
        cmd += ["-g", "user root;"]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_listening(port, 60)
    return port


def rebuild_row(work: Path, key: SigningKey, pub: Path, mib: int, jobs: int,
                procs: list[subprocess.Popen[bytes]]) -> None:
    """One big file rebuilt from parts alone by the CLI: time and peak RSS."""
    src = work / "big-src"
    src.mkdir()
    h = hashlib.sha256()
    with open(src / "big.bin", "wb") as fh:
        for _ in range(mib // 16):
            chunk = os.urandom(16 << 20)
            h.update(chunk)
            fh.write(chunk)
    t0 = time.perf_counter()
    m = seal_tree(src, work / "big-root" / "big", keys=[key], name="big")
    rec = m.files[0].recovery
    assert rec is not None
    print(f"\nrebuild one {mib} MiB file: sealed in {time.perf_counter() - t0:.1f}s "
          f"(k={rec.k}, m={rec.m}, codec {rec.codec}, engine {rec.engine})")
    shutil.rmtree(src)
    orig = work / "big-root" / "big" / "big.bin"
    orig.unlink()
    with open(orig, "wb") as fh:  # other bytes of the same size: nothing to salvage
        for _ in range(mib // 16):
            fh.write(os.urandom(16 << 20))
    port = start_nginx(work / "big-root", work, procs)
    dest = work / "out-big"
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", FETCH_RSS_DRIVER, "fetch",
         f"http://127.0.0.1:{port}/packages/big/files/", "-o", str(dest),
         "--trusted-key", str(pub), "--no-cache", "--jobs", str(jobs), "--json"],
        capture_output=True, text=True, check=False,
    )
    secs = time.perf_counter() - t0
    rc, hwm = (int(x) for x in r.stderr.strip().splitlines()[-1].split())
    assert rc == 0, r.stderr
    got = hashlib.sha256()
    with open(dest / "big.bin", "rb") as fh:
        while chunk := fh.read(16 << 20):
            got.update(chunk)
    assert got.digest() == h.digest(), "rebuilt file differs"
    assert '"source": "parts"' in r.stdout, r.stdout
    print(f"  original replaced, all data from parts (nginx), auraseal fetch (CLI): "
          f"{secs:6.2f} s, peak RSS {hwm / 1024:.0f} MiB   target < 200 MiB")


def best(fn, runs: int):  # type: ignore[no-untyped-def]
    results = [fn() for _ in range(runs)]
    return min(results, key=lambda r: r if isinstance(r, float) else r[0])


def same_tree(a: Path, b: Path, manifest: Manifest) -> bool:
    return all((a / e.path).read_bytes() == (b / e.path).read_bytes() for e in manifest.files)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=100)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--part-size", type=int, default=5120)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--rebuild-mib", type=int, default=256)
    ap.add_argument("--rebuild-only", action="store_true")
    args = ap.parse_args()
    ensure_tools()
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="auraseal-bench-fetch-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.rebuild_only:
            key = SigningKey.generate()
            pub = work / "key.pub"
            pub.write_bytes(key.public.pem())
            rebuild_row(work, key, pub, args.rebuild_mib, args.jobs, procs)
            return 0
        src = work / "src"
        make_tree(src, args.mib << 20, args.files)
        key = SigningKey.generate()
        pub = work / "key.pub"
        pub.write_bytes(key.public.pem())
        policy = TrustPolicy([key.public])
        t0 = time.perf_counter()
        m = seal_tree(src, work / "root" / "site", keys=[key], name="site",
                      part_size=args.part_size)
        nparts = sum(len(e.recovery.parts) for e in m.files if e.recovery)
        print(f"package: {len(m.files)} files, {m.total_size / 2**20:.1f} MiB, "
              f"{nparts} parts of ~{args.part_size} B (sealed in {time.perf_counter() - t0:.1f}s)")

        # 1. clean, from our server
        port = free_port()
        procs.append(subprocess.Popen(
            [str(VENV_BIN / "auraseal"), "serve", str(work / "root"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "2", "--scrub-interval", "100000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        wait_listening(port, 60)
        base = f"http://127.0.0.1:{port}/packages/site/files/"
        curl_all(base, m, work / "warm")  # warm the server's caches
        t_curl = best(lambda: curl_all(base, m, work / "curl"), args.runs)
        t_cli = best(lambda: cli_fetch(base, work / "out-cli", pub, args.jobs), args.runs)
        t_lib, src_lib = best(lambda: lib_fetch(base, work / "out-lib", policy, args.jobs),
                              args.runs)
        assert same_tree(work / "curl", work / "out-lib", m)
        assert src_lib == {"primary": len(m.files)}, src_lib
        print("\nclean fetch from auraseal serve (granian, 2 workers):")
        print(f"  curl, one after another          {t_curl:7.2f} s")
        print(f"  auraseal fetch (CLI process)     {t_cli:7.2f} s   {t_cli / t_curl:5.2f}x curl")
        print(f"  fetch_package (library)          {t_lib:7.2f} s   {t_lib / t_curl:5.2f}x curl"
              "   target <= 1.2x")
        procs[-1].terminate()
        procs[-1].wait(20)

        # 2. every original corrupt: rebuilt from parts (nginx serves raw bytes)
        good_site = (work / "root" / "site").resolve()
        rnd = random.Random(7)
        bad_region, bad_replaced = work / "bad-region", work / "bad-replaced"
        for bad in (bad_region, bad_replaced):
            shutil.copytree(good_site, bad / "site", symlinks=False)
        for e in m.files:
            p = bad_region / "site" / e.path
            data = bytearray(p.read_bytes())
            off = rnd.randrange(0, max(1, len(data) - 4096))
            data[off : off + 4096] = rnd.randbytes(len(data[off : off + 4096]))
            p.write_bytes(bytes(data))
            (bad_replaced / "site" / e.path).write_bytes(rnd.randbytes(e.size))
        shutil.copytree(good_site, work / "goodroot" / "site")
        ngx_port_region, ngx_port_repl, ngx_port_good = free_port(), free_port(), free_port()
        for root, port_n in ((bad_region, ngx_port_region), (bad_replaced, ngx_port_repl),
                             (work / "goodroot", ngx_port_good)):
            d = work / f"nginx-{port_n}"
            d.mkdir()
            conf = d / "nginx.conf"
            conf.write_text(render_nginx_conf(root, listen=f"127.0.0.1:{port_n}", standalone=d))
            cmd = ["nginx", "-p", str(d), "-c", str(conf)]
            if os.geteuid() == 0:
                cmd += ["-g", "user root;"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            wait_listening(port_n, 60)
        region_base = f"http://127.0.0.1:{ngx_port_region}/packages/site/files/"
        repl_base = f"http://127.0.0.1:{ngx_port_repl}/packages/site/files/"
        good_base = f"http://127.0.0.1:{ngx_port_good}/packages/site/files/"
        t_curl_n = best(lambda: curl_all(good_base, m, work / "curl-n"), args.runs)
        t_clean_n, _ = best(lambda: lib_fetch(good_base, work / "out-n", policy, args.jobs),
                            args.runs)
        runs_rb = max(1, args.runs - 1)
        t_rg, src_rg = best(lambda: lib_fetch(region_base, work / "out-rg", policy, args.jobs),
                            runs_rb)
        assert same_tree(work / "curl-n", work / "out-rg", m)
        assert src_rg == {"parts": len(m.files)}, src_rg
        t_rg_cli = best(lambda: cli_fetch(region_base, work / "out-rg-cli", pub, args.jobs),
                        runs_rb)
        t_rb, src_rb = best(lambda: lib_fetch(repl_base, work / "out-rb", policy, args.jobs),
                            runs_rb)
        t_rb_cli = best(lambda: cli_fetch(repl_base, work / "out-rb-cli", pub, args.jobs), runs_rb)
        assert same_tree(work / "curl-n", work / "out-rb", m)
        assert src_rb == {"parts": len(m.files)}, src_rb
        print("\nfrom nginx (auraseal nginx-conf, 2 workers):")
        print(f"  curl, intact files               {t_curl_n:7.2f} s")
        print(f"  fetch_package, intact            {t_clean_n:7.2f} s   "
              f"{t_clean_n / t_curl_n:5.2f}x curl   target <= 1.5x")
        print("  every original with a 4 KiB region overwritten (salvage + missing parts):")
        print(f"    fetch_package, all rebuilt     {t_rg:7.2f} s   {t_rg / t_curl_n:5.2f}x curl"
              "   target <= 3x")
        print(f"    auraseal fetch (CLI)           {t_rg_cli:7.2f} s   "
              f"{t_rg_cli / t_curl_n:5.2f}x curl")
        print("  every original replaced by random bytes (nothing to salvage, k parts each):")
        print(f"    fetch_package, all rebuilt     {t_rb:7.2f} s   {t_rb / t_curl_n:5.2f}x curl"
              "   target <= 6x")
        print(f"    auraseal fetch (CLI)           {t_rb_cli:7.2f} s   "
              f"{t_rb_cli / t_curl_n:5.2f}x curl")
        print(f"  (each rebuild downloads the corrupt original, then the parts it lacks of "
              f"k; {nparts} parts in all; part requests pipelined in runs on one "
              "connection, client/_parts_http.py)")
        print(f"  load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        rebuild_row(work, key, pub, args.rebuild_mib, args.jobs, procs)
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
