"""``parts_from_original``: the data parts a damaged copy of an original still
re-creates byte for byte (the client's salvage), never one that differs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.sealing import ComponentSpec, parts_from_original, verify_part

from .helpers import seal_bytes

DATA = random.Random(7).randbytes(120_000)


@pytest.mark.parametrize(
    ("data", "codec"),
    [(DATA, "none"), (DATA, "zstd"), (b"some text, again and again\n" * 9000, "zstd"),
     (b"some text, again and again\n" * 9000, "huffman")],
)
def test_intact_original_recreates_every_data_part(
    tmp_path: Path, data: bytes, codec: str
) -> None:
    entry, parts = seal_bytes(data, tmp_path, codec=codec, part_size=4096)
    spec = ComponentSpec.from_entry(entry)
    got = parts_from_original(entry, data)
    assert sorted(got) == list(range(spec.k))
    for n, b in got.items():
        assert b == parts[n]


def test_damaged_region_costs_only_its_parts(tmp_path: Path) -> None:
    entry, parts = seal_bytes(DATA, tmp_path, codec="none", part_size=4096)
    spec = ComponentSpec.from_entry(entry)
    assert spec.codec == "none"
    bad = bytearray(DATA)
    start = 50_000
    bad[start : start + 4096] = os.urandom(4096)
    got = parts_from_original(entry, bytes(bad))
    # the region touches the fragments it overlaps in its stripe(s), nothing else
    w, s = spec.plan.fragment_size, spec.plan.stripe_size
    hit = {(off % s) // w for off in range(start, start + 4096)}
    assert set(got) == set(range(spec.k)) - hit
    for n, b in got.items():
        assert b == parts[n]
        verify_part(entry, n, b)


def test_wrong_length_or_compressed_stream_gives_nothing(tmp_path: Path) -> None:
    entry, _ = seal_bytes(DATA, tmp_path, codec="none", part_size=4096)
    assert parts_from_original(entry, DATA + b"x") == {}
    text = b"some text, again and again\n" * 9000
    zentry, _ = seal_bytes(text, tmp_path / "z", codec="zstd", part_size=4096)
    assert ComponentSpec.from_entry(zentry).codec == "zstd"
    # random bytes in the middle change the compressed length: nothing salvaged
    assert parts_from_original(zentry, text[:1000] + os.urandom(5000) + text[6000:]) == {}


@settings(max_examples=25, deadline=None)
@given(pos=st.integers(0, len(DATA) - 1), flip=st.integers(1, 255))
def test_any_flip_never_yields_a_wrong_part(tmp_path_factory: pytest.TempPathFactory,
                                            pos: int, flip: int) -> None:
    out = tmp_path_factory.mktemp("p")
    entry, parts = seal_bytes(DATA, out, codec="none", part_size=4096)
    bad = bytearray(DATA)
    bad[pos] ^= flip
    got = parts_from_original(entry, bytes(bad))
    assert len(got) == ComponentSpec.from_entry(entry).k - 1
    assert all(parts[n] == b for n, b in got.items())
