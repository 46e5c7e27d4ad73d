"""The checked-in fixture package (tests/fixtures/sealing) is read back, so a
format change can never be silent."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from auraseal.errors import TrustError
from auraseal.sealing import open_package, repair, scrub, unseal
from auraseal.sealing.format import HEADER_SIZE, PartHeader, parse_part
from auraseal.signing import TrustPolicy, generate_keypair, load_public_key

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "sealing"

# sha512sum of the fixture inputs, computed with coreutils (outside known answers)
SHA512 = {
    "hello.txt": "07b80361bc51ac9334dd304492bdbd721da9620aadf9e1f771e62799d46eccbc"
    "0f4d256f5b27a42a0e41f2d66d57e6bf92e11a24f4ea3ba695d192cb30992ea3",
    "bytes.bin": "7287918bb4f317af2df425f452edf8f0da6bb6224a01444aaaee6fa9d20f337a"
    "de1c683e239639b3c9a127f5d6077be3cc62fddf1b68bf147daa1f5dffedd810",
}

# The first 64 bytes of hello.txt.part.0, field by field (docs/FORMAT.md §3).
HELLO_PART0_HEAD = bytes.fromhex(
    "894153504152540a"  # magic \x89ASPART\n
    + "0100"  # format_version 1
    + "8000"  # header_size 128
    + "0000"  # part_number 0
    + "0200"  # total_parts 2
    + "0100"  # k 1
    + "00"  # codec none
    + "01"  # engine zfec
    + "03"  # digest_alg sha512
    + "000000"  # reserved
    + "1100000000000000"  # component_size 17
    + "1100000000000000"  # compressed_size 17
    + "1100000000000000"  # stripe_size 17
    + "1100000000000000"  # fragment_size 17
    + "1100000000000000"  # payload_size 17
)


def test_fixture_header_bytes_are_the_documented_layout() -> None:
    data = (FIX / "pkg" / "hello.txt.part.0").read_bytes()
    assert data[:64] == HELLO_PART0_HEAD
    assert data[64:128] == bytes.fromhex(SHA512["hello.txt"])
    assert data[HEADER_SIZE : HEADER_SIZE + 17] == b"Hello, AuraSeal!\n"  # systematic part
    assert data[-4:] == b"ASPF"
    assert hashlib.sha256(data[:-40]).digest() == data[-40:-8]


def test_fixture_parts_parse_with_expected_fields() -> None:
    header, _footer, payload = parse_part((FIX / "pkg" / "bytes.bin.part.13").read_bytes())
    assert (header.part_number, header.total_parts, header.k, header.m) == (13, 14, 13, 1)
    assert (header.codec, header.engine, header.digest_alg) == ("none", "zfec", "sha512")
    assert header.component_size == header.compressed_size == 12800
    assert len(payload) == header.payload_size == 985
    lorem = PartHeader.unpack((FIX / "pkg" / "docs" / "lorem.txt.part.0").read_bytes())
    assert lorem.codec == "zstd" and lorem.compressed_size < lorem.component_size


def test_fixture_manifest_is_signed_and_records_parts() -> None:
    policy = TrustPolicy([load_public_key(FIX / "key.pub")])
    with open_package(FIX / "pkg", policy=policy) as pkg:
        m = pkg.manifest
        assert (m.name, m.version, m.expires) == ("fixture", 3, None)
        e = m.entry("bytes.bin")
        assert e.recovery is not None
        assert (e.recovery.k, e.recovery.m, e.recovery.codec) == (13, 1, "none")
        assert [p.number for p in e.recovery.parts] == list(range(14))
        assert all(p.integrity.startswith("sha256-") for p in e.recovery.parts)
    doc = json.loads((FIX / "pkg" / "integrity-manifest.json").read_bytes())
    assert doc["signed"]["files"]["hello.txt"]["recovery"]["engine"] == "zfec"


@pytest.mark.parametrize("name", ["pkg", "pkg.zip"])
def test_fixture_scrubs_clean_and_unseals_to_known_bytes(name: str, tmp_path: Path) -> None:
    with open_package(FIX / name) as pkg:
        report = scrub(pkg)
        assert report.exit_code == 0 and len(report.by_state("intact")) == 4
        unseal(pkg, tmp_path / "out")
    for rel, hexdigest in SHA512.items():
        assert hashlib.sha512((tmp_path / "out" / rel).read_bytes()).hexdigest() == hexdigest
    assert (tmp_path / "out" / "empty.bin").read_bytes() == b""
    assert (tmp_path / "out" / "docs" / "lorem.txt").read_bytes() == (
        FIX / "src" / "docs" / "lorem.txt"
    ).read_bytes()


def test_fixture_repair_rebuilds_byte_identical_parts(tmp_path: Path) -> None:
    pkg_dir = tmp_path / "pkg"
    shutil.copytree(FIX / "pkg", pkg_dir)
    (pkg_dir / "bytes.bin.part.4").unlink()
    (pkg_dir / "docs" / "lorem.txt").write_bytes(b"tampered")
    with open_package(pkg_dir) as pkg:
        rep = repair(pkg)
    assert sorted(rep.rewritten) == ["bytes.bin.part.4", "docs/lorem.txt"]
    for rel in ("bytes.bin.part.4", "docs/lorem.txt"):
        assert (pkg_dir / rel).read_bytes() == (FIX / "pkg" / rel).read_bytes()


def test_fixture_with_wrong_key_is_refused(tmp_path: Path) -> None:
    other = generate_keypair(tmp_path / "other.pem")
    with pytest.raises(TrustError) as info:
        open_package(FIX / "pkg", policy=TrustPolicy([other.public]))
    assert info.value.exit_code == 3
