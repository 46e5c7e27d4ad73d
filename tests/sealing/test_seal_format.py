"""The part file parser and the codecs: round trips, fuzzing, outside answers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.errors import AuraSealError, ChecksumError, IntegrityError, PartFormatError
from auraseal.sealing.codecs import compress, iter_decompress
from auraseal.sealing.format import (
    FOOTER_SIZE,
    HEADER_SIZE,
    MAGIC,
    PartHeader,
    build_part,
    parse_part,
)


def _header(payload: int = 10, **kw: object) -> PartHeader:
    base: dict[str, object] = dict(
        part_number=1,
        total_parts=3,
        k=2,
        codec="zstd",
        engine="zfec",
        digest_alg="sha256",
        component_size=100,
        compressed_size=20,
        stripe_size=20,
        fragment_size=payload,
        payload_size=payload,
        component_digest=b"\x11" * 32,
    )
    base.update(kw)
    return PartHeader(**base)  # type: ignore[arg-type]


headers = st.builds(
    lambda total, k, num, codec, engine, alg, size, frag, stripes, last: PartHeader(
        part_number=num % total,
        total_parts=total,
        k=1 + k % (total - 1),
        codec=codec,
        engine=engine,
        digest_alg=alg[0],
        component_size=size,
        compressed_size=(stripes - 1) * 7 + 1 if codec != "none" else size,
        stripe_size=7 if codec != "none" else max(1, -(-size // stripes)),
        fragment_size=frag,
        payload_size=(stripes - 1) * frag + min(last, frag),
        component_digest=os.urandom(alg[1]),
    ),
    st.integers(2, 256),
    st.integers(0, 300),
    st.integers(0, 300),
    st.sampled_from(["zstd", "huffman"]),
    st.sampled_from(["zfec", "isa_l"]),
    st.sampled_from([("sha256", 32), ("sha384", 48), ("sha512", 64)]),
    st.integers(1, 1 << 40),
    st.integers(1, 1 << 30),
    st.just(1),
    st.integers(1, 1 << 30),
)


@settings(max_examples=200, deadline=None)
@given(h=headers)
def test_header_round_trips(h: PartHeader) -> None:
    raw = h.pack()
    assert len(raw) == HEADER_SIZE and raw.startswith(MAGIC)
    assert PartHeader.unpack(raw) == h


def test_header_is_little_endian_at_documented_offsets() -> None:
    raw = _header(component_size=0x0102030405, payload=10).pack()
    assert struct.unpack_from("<HHHHH", raw, 8) == (1, 128, 1, 3, 2)
    assert raw[18:21] == bytes([2, 1, 1])  # zstd, zfec, sha256
    assert raw[24:32] == bytes([5, 4, 3, 2, 1, 0, 0, 0])
    assert raw[64:96] == b"\x11" * 32 and raw[96:128] == bytes(32)


def test_footer_is_sha256_and_crc32_of_header_and_payload() -> None:
    payload = os.urandom(10)
    blob = build_part(_header(), payload)
    body = blob[:-FOOTER_SIZE]
    assert blob[-40:-8] == hashlib.sha256(body).digest()
    assert struct.unpack("<I", blob[-8:-4])[0] == zlib.crc32(body)
    assert blob[-4:] == b"ASPF"
    h, _f, p = parse_part(blob)
    assert h == _header() and bytes(p) == payload


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"total_parts": 1}, "total_parts"),
        ({"total_parts": 257}, "total_parts"),
        ({"k": 3}, "k"),
        ({"part_number": 3}, "part_number"),
        ({"codec": "lzma"}, "codec"),
        ({"component_digest": b"1" * 31}, "digest"),
        ({"payload": 0}, ">= 1"),
    ],
)
def test_header_refuses_out_of_range_fields(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(PartFormatError, match=msg):
        _header(**kw).pack()  # type: ignore[arg-type]


def test_unknown_version_and_magic_are_refused() -> None:
    blob = bytearray(build_part(_header(), b"0123456789"))
    blob[8] = 2
    with pytest.raises(PartFormatError, match="version 2"):
        parse_part(bytes(blob))
    with pytest.raises(PartFormatError, match="magic"):
        parse_part(b"PK\x03\x04" + bytes(200))


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=400))
def test_parser_fuzz_random_bytes_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(PartFormatError, ChecksumError):
        parse_part(data)


@settings(max_examples=400, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=64),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 10**6),
    mode=st.sampled_from(["set", "truncate", "append"]),
)
def test_parser_fuzz_mutated_parts_only_typed_errors(payload, edits, cut, mode) -> None:
    h = _header(payload=len(payload))
    blob = bytearray(build_part(h, payload))
    orig = bytes(blob)
    for pos, val in edits:
        blob[pos % len(blob)] = val
    if mode == "truncate":
        del blob[cut % len(blob) :]
    elif mode == "append":
        blob += bytes(cut % 50 + 1)
    try:
        got = parse_part(bytes(blob))
    except (PartFormatError, ChecksumError):
        return
    assert bytes(blob) == orig and got[0] == h  # only an unmodified part parses


# --- codecs --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=50_000), codec=st.sampled_from(["none", "huffman", "zstd"]))
def test_codecs_round_trip_streaming(data: bytes, codec: str) -> None:
    comp = bytes(compress(codec, data))
    chunks = [comp[i : i + 777] for i in range(0, len(comp), 777)] or [b""]
    assert b"".join(bytes(c) for c in iter_decompress(codec, chunks, len(data))) == data


def test_huffman_is_raw_deflate_without_matches() -> None:
    data = b"abc" * 10_000
    huff = bytes(compress("huffman", data))
    assert zlib.decompress(huff, -15) == data  # outside decoder: plain raw deflate
    lz = zlib.compress(data, 9)
    # literals only: ~2 bits per byte over 3 symbols, while LZ77 collapses the repeats
    assert len(huff) > 6_000 and len(lz) < 300


def test_zstd_is_a_standard_frame() -> None:
    data = b"hello " * 1000
    z = bytes(compress("zstd", data))
    assert z[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.ZstdDecompressor().decompress(z) == data


@pytest.mark.parametrize("codec", ["huffman", "zstd"])
def test_decompress_refuses_truncation_trailing_bytes_and_bombs(codec: str) -> None:
    data = os.urandom(1000) + b"z" * 100_000
    comp = bytes(compress(codec, data))
    with pytest.raises(IntegrityError):
        list(iter_decompress(codec, [comp[:-5]], len(data)))
    with pytest.raises(IntegrityError):
        list(iter_decompress(codec, [comp + b"junk"], len(data)))
    with pytest.raises(IntegrityError):
        list(iter_decompress(codec, [comp], 1000))  # more output than declared
    with pytest.raises(IntegrityError):
        list(iter_decompress(codec, [os.urandom(200)], 10))


def test_none_codec_checks_length() -> None:
    with pytest.raises(AuraSealError):
        list(iter_decompress("none", [b"abc"], 2))
    with pytest.raises(AuraSealError):
        list(iter_decompress("none", [b"abc"], 4))
