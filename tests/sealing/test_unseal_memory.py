"""Unseal rebuilds a 256 MiB component from parts in bounded memory: the
original missing and two data parts missing (so parity is decoded), peak
RSS stays under 200 MiB (the pipeline streams a window of stripes, never the
whole file)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from auraseal.manifest import part_name
from auraseal.sealing import open_package, seal_tree

SIZE = 256 << 20

#: Runs ``auraseal unseal``; prints its exit code and its peak RSS in KiB:
#: VmHWM (this process's own high-water mark, fresh at exec) and ru_maxrss.
DRIVER = textwrap.dedent("""
    import resource, sys
    from auraseal.cli import main
    rc = main(sys.argv[1:])
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith("VmHWM:"))
    print(rc, hwm, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


def test_unseal_of_256_mib_with_parity_decoded_stays_under_200_mib(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    h = hashlib.sha256()
    with open(src / "big.bin", "wb") as fh:  # never the whole file in this process
        for _ in range(SIZE >> 22):
            chunk = os.urandom(4 << 20)
            h.update(chunk)
            fh.write(chunk)
    pkg = tmp_path / "pkg"
    seal_tree(src, pkg, codec="zstd")
    (src / "big.bin").unlink()
    with open_package(pkg) as p:
        rec = p.manifest.entry("big.bin").recovery
    assert rec is not None and rec.k > 6
    (pkg / "big.bin").unlink()
    for n in (1, rec.k // 2):  # two data parts: their rows come from parity
        (pkg / part_name("big.bin", n)).unlink()
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, "unseal", str(pkg), "-o", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rc, hwm, maxrss = (int(x) for x in proc.stdout.split()[-3:])
    print(f"unseal 256 MiB: peak RSS {hwm / 1024:.0f} MiB (ru_maxrss {maxrss / 1024:.0f} MiB)")
    assert rc == 0
    got = hashlib.sha256()
    with open(out / "big.bin", "rb") as fh:
        while chunk := fh.read(8 << 20):
            got.update(chunk)
    assert got.digest() == h.digest()
    assert hwm < 200 * 1024, f"peak RSS {hwm / 1024:.0f} MiB unsealing 256 MiB"
