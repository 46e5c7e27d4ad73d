#!/usr/bin/env python3
"""Benchmark: `auraseal manifest build` vs `sha512sum` over the same ~1 GiB tree.

Generates a tree of a few thousand files (1 KiB .. 64 MiB, log-uniform, about
1 GiB in all), then in one run times:

* ``sha512sum`` over every file (one process, one core — the peer);
* ``auraseal manifest build`` over the tree (our CLI, both cores).

Target (issue 13): ours at least 2x as fast as sha512sum (same tree, same
run, best of two each; peak RSS and the load average are printed too).
Caches are warmed first so both read from the page cache.
Usage: ``python bench/hash_manifest.py [--gib 1.0]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AURASEAL = ROOT / ".venv" / "bin" / "auraseal"


def make_tree(root: Path, total: int, seed: int = 1) -> tuple[int, int]:
    rng = random.Random(seed)
    block = os.urandom(1 << 20)
    n = size_sum = 0
    big = [64 << 20] * 4  # a few 64 MiB files, then log-uniform 1 KiB .. 2 MiB
    while size_sum < total:
        size = big.pop() if big else int(2 ** rng.uniform(10, 21))
        size = min(size, total - size_sum) or 1
        d = root / f"d{n % 37:02d}" / f"e{n % 5}"
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f"f{n:05d}.bin", "wb") as fh:
            left = size
            off = rng.randrange(len(block))
            while left:
                chunk = block[off : off + left] or block[:left]
                fh.write(chunk)
                left -= len(chunk)
                off = 0
        n += 1
        size_sum += size
    return n, size_sum


#: GNU time, printing the peak RSS (KiB) of the command it runs on its last line
TIME = ["/usr/bin/time", "-f", "%M"] if Path("/usr/bin/time").exists() else []
PEAK: dict[str, int] = {}
CPU: dict[str, float] = {}


def timed(cmd: list[str], tag: str, stdin: bytes | None = None) -> float:
    """Wall time of ``cmd``; its peak RSS (KiB, from GNU time: wait4's would
    also count this process's RSS at the fork) in PEAK[tag], CPU in CPU[tag]."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [*TIME, *cmd], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stderr is not None
    if stdin:
        proc.stdin.write(stdin)
    proc.stdin.close()
    err = proc.stderr.read().decode(errors="replace").strip()
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err[-400:]}")
    last = err.rsplit("\n", 1)[-1]
    PEAK[tag] = max(PEAK.get(tag, 0), int(last) if TIME and last.isdigit() else 0)
    cpu = usage.ru_utime + usage.ru_stime
    CPU[tag] = min(CPU.get(tag, cpu), cpu)
    return dt


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not shutil.which("sha512sum"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "coreutils"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="auraseal-bench-"))
    tree = tmp / "tree"
    try:
        n, total = make_tree(tree, int(args.gib * (1 << 30)))
        files = sorted(str(p) for p in tree.rglob("*.bin"))
        print(f"tree: {n} files, {total / 2**20:.0f} MiB, {os.cpu_count()} cores, "
              f"load average {load()}")
        # warm the page cache
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        listing = "\0".join(files).encode()
        peer = min(timed(["xargs", "-0", "sha512sum"], "peer", listing) for _ in range(2))
        ours = min(
            timed([str(AURASEAL), "manifest", "build", str(tree), "-o", str(tmp / "m.json"),
                   "--name", "bench"], "ours")
            for _ in range(2)
        )
        mb = total / 1e6
        print(f"sha512sum:               {peer:7.2f} s  {mb / peer:8.1f} MB/s  "
              f"peak {PEAK['peer'] / 1024:6.0f} MiB")
        print(f"auraseal manifest build: {ours:7.2f} s  {mb / ours:8.1f} MB/s  "
              f"peak {PEAK['ours'] / 1024:6.0f} MiB")
        ratio = peer / ours
        print(f"ratio (sha512sum time / ours): {ratio:.2f}x  target >= 2.00x: "
              f"{'met' if ratio >= 2 else 'MISSED'}")
        print(f"CPU seconds (user + system, best of two): sha512sum {CPU['peer']:.2f}, "
              f"ours {CPU['ours']:.2f} (ratio {CPU['peer'] / CPU['ours']:.2f}x; on a busy "
              "machine the wall ratio tends to this one)")
        print(f"load average at the end: {load()}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
