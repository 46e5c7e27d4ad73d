"""Unseal and repair rebuild a 256 MiB component from parts in bounded
memory: two data parts missing (so parity is decoded) and the original
missing (unseal) or damaged (repair). Unseal's peak RSS stays under 200 MiB
(the pipeline streams a window of stripes, never the whole file); repair,
which also re-encodes the missing parts, is bounded by the stripe size."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


class Sealed:
    def __init__(self, pkg: Path, digest: bytes, k: int) -> None:
        self.pkg, self.digest, self.k = pkg, digest, k

    def copy(self, dest: Path) -> Path:
        """A copy of the package made of hard links (repair and unseal replace
        files by rename, never write into them)."""
        shutil.copytree(self.pkg, dest, copy_function=os.link)
        return dest


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Sealed:
    tmp = tmp_path_factory.mktemp("memory")
    src = tmp / "src"
    src.mkdir()
    h = hashlib.sha256()
    with open(src / "big.bin", "wb") as fh:  # never the whole file in this process
        for _ in range(SIZE >> 22):
            chunk = os.urandom(4 << 20)
            h.update(chunk)
            fh.write(chunk)
    pkg = tmp / "pkg"
    seal_tree(src, pkg, codec="zstd")
    (src / "big.bin").unlink()
    with open_package(pkg) as p:
        rec = p.manifest.entry("big.bin").recovery
    assert rec is not None and rec.k > 6
    return Sealed(pkg, h.digest(), rec.k)


def _run(*argv: str) -> int:
    """Peak RSS (KiB) of ``auraseal ARGV`` run in a fresh process (exit 0 checked)."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *argv],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rc, hwm, maxrss = (int(x) for x in proc.stdout.split()[-3:])
    print(f"{argv[0]} 256 MiB: peak RSS {hwm / 1024:.0f} MiB (ru_maxrss {maxrss / 1024:.0f} MiB)")
    assert rc == 0
    return hwm


def _sha256(path: Path) -> bytes:
    got = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            got.update(chunk)
    return got.digest()


def test_unseal_of_256_mib_with_parity_decoded_stays_under_200_mib(
    sealed: Sealed, tmp_path: Path
) -> None:
    pkg = sealed.copy(tmp_path / "pkg")
    (pkg / "big.bin").unlink()
    for n in (1, sealed.k // 2):  # two data parts: their rows come from parity
        (pkg / part_name("big.bin", n)).unlink()
    out = tmp_path / "out"
    hwm = _run("unseal", str(pkg), "-o", str(out))
    assert _sha256(out / "big.bin") == sealed.digest
    assert hwm < 200 * 1024, f"peak RSS {hwm / 1024:.0f} MiB unsealing 256 MiB"


def test_repair_of_256_mib_damaged_original_and_parts_stays_bounded_by_the_stripe(
    sealed: Sealed, tmp_path: Path
) -> None:
    """Repair used to keep the whole decoded stream of a component up to
    512 MiB in memory while it checked the original (peak 414 MiB here).
    Now its memory is bounded by the stripe (at most 244 x 256 KiB = 61 MiB;
    54 MiB here), not the file: a stripe being decoded, the one behind it and
    its re-encoded fragments, about 260 MiB here and for any bigger file."""
    pkg = sealed.copy(tmp_path / "pkg")
    orig = pkg / "big.bin"
    damaged = tmp_path / "damaged"
    with open(orig, "rb") as fi, open(damaged, "wb") as fo:  # a file of its own
        while chunk := fi.read(8 << 20):
            fo.write(chunk)
        fo.seek(100 << 20)
        fo.write(b"\0" * 4096)
    os.replace(damaged, orig)
    for n in (1, sealed.k // 2):
        (pkg / part_name("big.bin", n)).unlink()
    hwm = _run("repair", str(pkg))
    assert _sha256(orig) == sealed.digest
    assert (pkg / part_name("big.bin", 1)).exists()
    assert hwm < 300 * 1024, f"peak RSS {hwm / 1024:.0f} MiB repairing 256 MiB"
