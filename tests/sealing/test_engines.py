"""Erasure engines: loaded once, checked, and a fallback that writes the same bytes.

The ``isa_l`` format pins ISA-L's Cauchy matrix; zfec's matrix is another
one, so without ISA-L the portable Cauchy code computes ``isa_l`` parts
(``docs/FORMAT.md`` §4). These tests hide ISA-L (and pyeclib) from a CLI
subprocess through a small driver, never through the environment.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from auraseal.cli import main
from auraseal.sealing import erasure
from auraseal.sealing.erasure import (
    IsalEngine,
    PortableCauchyEngine,
    ZfecEngine,
    cauchy_matrix,
    load_engines,
)

WARNING = "auraseal: warning: ISA-L not used ("

# Runs the CLI with ISA-L looked for only in argv[1] (an empty directory).
HIDE_ISAL = """
import sys
from pathlib import Path
from auraseal.sealing import erasure
find = erasure._find_isal
erasure._find_isal = lambda search=None: find([Path(sys.argv[1])])
from auraseal.cli import main
sys.exit(main(sys.argv[2:]))
"""

# Runs the CLI as if the pyeclib wheel were not installed (argv[1] is unused).
BLOCK_PYECLIB = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pyeclib" or name.startswith(("pyeclib.", "pyeclib_c")):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, Block())
from auraseal.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _cli(driver: str, tmp: Path, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    empty = tmp / "no-isal"
    empty.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", driver, str(empty), *map(str, argv)],
        capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 MiB random file (isa_l parts at --part-size 256 KiB) and a small text file."""
    root = tmp_path_factory.mktemp("site")
    (root / "big.bin").write_bytes(random.Random(13).randbytes(2 << 20))
    (root / "a.txt").write_bytes(b"hello, engines\n" * 100)
    return root


SEAL = ("--part-size", "262144", "--coherence", "0.8")  # k=8 (or 9), m=2


@pytest.fixture(scope="module")
def ref_pkg(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package sealed here with ISA-L (in this process)."""
    assert isinstance(erasure.engines().isa_l, IsalEngine), "ISA-L must load in the test venv"
    pkg = tmp_path_factory.mktemp("ref") / "pkg"
    assert main(["seal", str(site), "-o", str(pkg), *SEAL]) == 0
    engines = {path: f["recovery"]["engine"] for path, f in _entries(pkg).items()}
    assert engines == {"big.bin": "isa_l", "a.txt": "zfec"}
    return pkg


def _entries(pkg: Path) -> dict[str, Any]:
    """The manifest's file entries (the rest holds times)."""
    doc = json.loads((pkg / "integrity-manifest.json").read_text())
    files: dict[str, Any] = doc["signed"]["files"]
    return files


def _files(pkg: Path) -> dict[str, bytes]:
    """Every file of the package but the manifest (which holds times), by name."""
    return {
        p.name: p.read_bytes()
        for p in sorted(pkg.iterdir())
        if p.is_file() and p.name != "integrity-manifest.json"
    }


def _one_warning(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(WARNING), proc.stderr
    return lines[0]


def test_cli_without_isal_seals_unseals_repairs_same_bytes_one_warning(
    site: Path, ref_pkg: Path, tmp_path: Path
) -> None:
    pkg = tmp_path / "pkg"
    line = _one_warning(_cli(HIDE_ISAL, tmp_path, "seal", site, "-o", pkg, *SEAL))
    assert "no-isal" in line and "portable Cauchy code" in line
    # byte-identical to the package sealed with ISA-L: same parts, same entries
    assert _files(pkg) == _files(ref_pkg)
    assert _entries(pkg) == _entries(ref_pkg)

    # lose the original and two data parts of the isa_l component: unseal decodes
    (pkg / "big.bin").unlink()
    (pkg / "big.bin.part.0").unlink()
    (pkg / "big.bin.part.2").write_bytes(b"damaged")
    out = tmp_path / "out"
    _one_warning(_cli(HIDE_ISAL, tmp_path, "unseal", pkg, "-o", out))
    assert (out / "big.bin").read_bytes() == (site / "big.bin").read_bytes()
    assert (out / "a.txt").read_bytes() == (site / "a.txt").read_bytes()

    # repair rebuilds the original and the parts, byte for byte
    _one_warning(_cli(HIDE_ISAL, tmp_path, "repair", pkg))
    assert _files(pkg) == _files(ref_pkg)


def test_seal_without_pyeclib_importable_falls_back_with_one_warning(
    site: Path, ref_pkg: Path, tmp_path: Path
) -> None:
    pkg = tmp_path / "pkg"
    line = _one_warning(_cli(BLOCK_PYECLIB, tmp_path, "seal", site, "-o", pkg, *SEAL))
    assert "pyeclib" in line
    assert _files(pkg) == _files(ref_pkg)

    proc = _cli(BLOCK_PYECLIB, tmp_path, "version", "--engines", "--json")
    _one_warning(proc)
    rows = {e["name"]: e for e in json.loads(proc.stdout)["engines"]}
    assert not rows["pyeclib"]["available"] and "blocked by the test" in rows["pyeclib"]["reason"]
    assert not rows["isa-l"]["in_use"] and rows["portable"]["in_use"]


def test_unseal_pyeclib_package_without_pyeclib_refuses_naming_engine(
    site: Path, tmp_path: Path
) -> None:
    pkg = tmp_path / "pkg"
    assert main(["seal", str(site), "-o", str(pkg), "--engine", "pyeclib", *SEAL]) == 0
    (pkg / "big.bin").unlink()
    (pkg / "big.bin.part.0").unlink()
    proc = _cli(BLOCK_PYECLIB, tmp_path, "unseal", pkg, "-o", tmp_path / "out")
    assert proc.returncode == 5, proc.stderr
    assert "engine pyeclib" in proc.stderr and "not available" in proc.stderr


# --- a libisal that is not the real one ------------------------------------

STUB_C = """
void ec_init_tables(int k, int rows, unsigned char *a, unsigned char *t) {}
void ec_encode_data(int len, int k, int rows, unsigned char *t,
                    unsigned char **src, unsigned char **dst) {}
void gf_gen_cauchy1_matrix(unsigned char *a, int m, int k) {}
#ifndef DROP_INVERT
int gf_invert_matrix(unsigned char *in, unsigned char *out, int n) { return 0; }
#endif
"""


@pytest.fixture(scope="module")
def stub_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a stub libisal")
    d = tmp_path_factory.mktemp("stubs")
    (d / "stub.c").write_text(STUB_C)
    out = {}
    for name, flags in (("wrong", []), ("noinvert", ["-DDROP_INVERT"])):
        so = d / f"libisal-{name}.so"
        subprocess.run([cc, "-shared", "-fPIC", *flags, "-o", str(so), str(d / "stub.c")],
                       check=True)
        out[name] = so
    return out


def test_isal_missing_one_symbol_falls_back(stub_libs: dict[str, Path]) -> None:
    found = load_engines([stub_libs["noinvert"]])
    assert isinstance(found.isa_l, PortableCauchyEngine)
    assert found.warning is not None and "missing symbol gf_invert_matrix" in found.warning
    isal = next(s for s in found.statuses() if s.name == "isa-l")
    assert not isal.in_use and "gf_invert_matrix" in (isal.reason or "")


def test_isal_that_computes_other_bytes_fails_self_test_and_falls_back(
    stub_libs: dict[str, Path],
) -> None:
    found = load_engines([stub_libs["wrong"]])
    assert isinstance(found.isa_l, PortableCauchyEngine)
    assert found.warning is not None and "differs from the pinned Cauchy" in found.warning
    # the real library passes the same checks
    real = erasure.engines().isa_l
    assert isinstance(real, IsalEngine)
    assert isinstance(load_engines([Path(real.path)]).isa_l, IsalEngine)


def test_engines_are_loaded_once_per_process() -> None:
    assert erasure.get_engine("isa_l") is erasure.get_engine("isa_l")
    assert erasure.engines() is erasure.engines()


# --- the pinned matrices ----------------------------------------------------


@pytest.mark.parametrize(("k", "m", "n"), [(1, 1, 7), (3, 2, 100), (10, 4, 1001), (244, 12, 48800)])
def test_portable_cauchy_is_byte_identical_to_isal_and_not_zfec(k: int, m: int, n: int) -> None:
    native = erasure.engines().isa_l
    assert isinstance(native, IsalEngine)
    data = random.Random(k).randbytes(n)
    ours = [bytes(f) for f in PortableCauchyEngine().encode(k, m, data)]
    assert ours == [bytes(f) for f in native.encode(k, m, data)]
    mat = bytearray((k + m) * k)
    native._lib.gf_gen_cauchy1_matrix(erasure._addr(mat), k + m, k)
    assert bytes(mat) == cauchy_matrix(k, m)
    if m > 1 or k > 1:  # zfec's Vandermonde parity is another code: it cannot stand in
        assert [bytes(f) for f in ZfecEngine().encode(k, m, data)][k:] != ours[k:]
    lost = random.Random(n).sample(range(k + m), m)
    frags = {i: ours[i] for i in range(k + m) if i not in lost}
    assert bytes(PortableCauchyEngine().decode(k, m, frags, n)) == data
    assert bytes(native.decode(k, m, frags, n)) == data


# --- decode tables: one inversion per erasure pattern -------------------------


@pytest.fixture(scope="module")
def big_pkg(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A 20 MiB random component (isa_l, k=244) sealed with the default part size."""
    root = tmp_path_factory.mktemp("big")
    data = os.urandom(20 << 20)
    (root / "site").mkdir()
    (root / "site" / "c.bin").write_bytes(data)
    assert main(["seal", str(root / "site"), "-o", str(root / "pkg")]) == 0
    rec = _entries(root / "pkg")["c.bin"]["recovery"]
    assert rec["engine"] == "isa_l" and rec["k"] == 244
    return root / "pkg", data


@pytest.fixture(params=["native", "portable"])
def which_engines(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[
    erasure.Engines
]:
    if request.param == "native":
        yield erasure.engines()
        return
    portable = load_engines([])
    monkeypatch.setattr(erasure, "engines", functools.cache(lambda: portable))
    yield portable


def test_decode_of_20mib_component_two_parts_missing_inverts_once(
    big_pkg: tuple[Path, bytes], which_engines: erasure.Engines, tmp_path: Path
) -> None:
    pkg, data = big_pkg
    work = tmp_path / "pkg"
    shutil.copytree(pkg, work)
    (work / "c.bin").unlink()
    (work / "c.bin.part.5").unlink()
    (work / "c.bin.part.100").unlink()
    engine = which_engines.isa_l
    before = engine.inversions
    assert main(["unseal", str(work), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "c.bin").read_bytes() == data
    assert engine.inversions - before == 1


def _decode_all(engine: erasure.ErasureEngine, coded: list[list[bytes]], k: int, m: int,
                lost: set[int], n: int) -> list[bytes]:
    def one(f: list[bytes]) -> bytes:
        return bytes(engine.decode(k, m, {i: f[i] for i in range(k + m) if i not in lost}, n))

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, coded))


def test_parallel_stripe_decodes_share_one_inversion() -> None:
    """Stripes decoded on a thread pool (iter_stripes) wait for one inversion."""
    real = erasure.engines().isa_l
    assert isinstance(real, IsalEngine)
    k, m, w = 244, 12, 64
    for engine in (IsalEngine(real._lib, real.path), PortableCauchyEngine()):
        stripes = [random.Random(i).randbytes(k * w) for i in range(16)]
        coded = [[bytes(f) for f in engine.encode(k, m, s)] for s in stripes]
        assert _decode_all(engine, coded, k, m, {0, 77}, k * w) == stripes
        assert engine.inversions == 1
