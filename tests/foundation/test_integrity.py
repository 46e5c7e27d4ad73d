"""Integrity strings: outside known answers, SRI spec semantics, property tests."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auraseal.errors import DigestMismatchError, MalformedIntegrityError
from auraseal.integrity import (
    AuraSealString,
    SRIMetadata,
    StreamVerifier,
    auraseal_string,
    check_integrity,
    hash_bytes,
    hash_file,
    parse_auraseal,
    parse_integrity,
    parse_sri,
    sri_token,
    verify_bytes,
    verify_file,
    verify_stream,
)

# The W3C SRI specification's example resource and its published digests (§3.3.1).
SPEC_BODY = b"alert('Hello, world.');"
SPEC_SHA256 = "sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng="
SPEC_SHA384 = "sha384-H8BRh8j48O9oYatfu5AZzq6A9RINhZO5H16dQZngK7T62em8MUt1FLm52t+eX6xO"
SPEC_SHA512 = (
    "sha512-Q2bFTOhEALkN8hOms2FKTDLy7eugP2zFZ1T8LCvX42Fp3WoNr3bjZSAHeOsHrbV1Fu9/A0EzCinRE7Af1ofPrw=="
)


def test_spec_example_digests() -> None:
    for alg, token in (("sha256", SPEC_SHA256), ("sha384", SPEC_SHA384), ("sha512", SPEC_SHA512)):
        assert sri_token(alg, hash_bytes(SPEC_BODY, alg)) == token
        verify_bytes(SPEC_BODY, token)


@pytest.mark.parametrize("alg", ["sha256", "sha384", "sha512"])
def test_matches_openssl(tmp_path: Path, alg: str) -> None:
    f = tmp_path / "blob"
    f.write_bytes(bytes(range(256)) * 4099)
    out = subprocess.run(
        f"openssl dgst -{alg} -binary < {f} | base64 -w0",
        shell=True, check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert sri_token(alg, hash_file(f, alg)) == f"{alg}-{out}"
    assert auraseal_string(hash_file(f, alg), algorithm=alg) == f"auraseal-{alg}-{out}"


def test_matches_sha256sum_and_sha512sum(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_bytes(b"AuraSeal\n" * 10000)
    for tool, alg in (("sha256sum", "sha256"), ("sha512sum", "sha512")):
        hexd = subprocess.run([tool, str(f)], check=True, capture_output=True, text=True).stdout
        assert hash_file(f, alg).hex() == hexd.split()[0]


def test_strongest_algorithm_wins() -> None:
    # A wrong sha512 token defeats a right sha256 token: only the strongest counts.
    wrong512 = sri_token("sha512", hashlib.sha512(b"other").digest())
    with pytest.raises(DigestMismatchError):
        verify_bytes(SPEC_BODY, f"{SPEC_SHA256} {wrong512}")
    # Any token of the strongest algorithm matching passes.
    verify_bytes(SPEC_BODY, f"{SPEC_SHA256} {wrong512} {SPEC_SHA512}")
    assert parse_sri(f"{SPEC_SHA256} {SPEC_SHA384}").algorithm == "sha384"


def test_options_ignored_and_unknown_reported() -> None:
    meta = parse_sri(f"{SPEC_SHA384}?foo=bar md5-abc blake3-xyz")
    assert meta.algorithm == "sha384"
    assert meta.unknown == ("md5-abc", "blake3-xyz")
    verify_bytes(SPEC_BODY, meta)


def test_unknown_only_is_an_error_not_a_pass() -> None:
    with pytest.raises(MalformedIntegrityError, match="no usable integrity token"):
        verify_bytes(SPEC_BODY, "md5-rL0Y20zC+Fzt72VPzMSk2A==")
    with pytest.raises(MalformedIntegrityError, match="empty"):
        parse_integrity("   ")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("sha256-", "no usable"),  # skipped, as browsers do: nothing usable left
        ("sha512-!!!!", "no usable"),
        ("auraseal-md5-AAAA", "unsupported algorithm"),
        ("auraseal-sha512", "expected auraseal-"),
        ("auraseal-sha512-a-b-c", "expected auraseal-"),
        ("auraseal-sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng=-AAAA", "32 bytes"),
    ],
)
def test_malformed_names_token_and_reason(text: str, why: str) -> None:
    with pytest.raises(MalformedIntegrityError, match=why) as ei:
        parse_integrity(text)
    assert ei.value.where  # names the bad token
    assert "\n" not in str(ei.value)


def test_sri_reads_tokens_as_chromium_does() -> None:
    # recorded in Chromium (tests/fixtures/web/sri_verdicts.json): a short
    # digest is a token that never matches; base64url and unpadded are fine;
    # malformed neighbours are skipped
    digest = hashlib.sha256(b"abc").digest()
    url = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    meta = parse_sri(f"sha256-AAAA sha256-{url} sha256-!!! md5-x")
    assert meta.matches(digest) and len(meta.tokens) == 2
    assert meta.unknown == ("sha256-!!!", "md5-x")
    assert not parse_sri("sha256-AAAA").matches(digest)


def test_dual_string_accepts_either_and_converts_to_sri() -> None:
    p, s = hashlib.sha512(b"primary").digest(), hashlib.sha512(b"secondary").digest()
    dual = auraseal_string(p, s)
    parsed = parse_auraseal(dual)
    assert parsed.is_dual and str(parsed) == dual
    verify_bytes(b"primary", dual)
    verify_bytes(b"secondary", dual)
    with pytest.raises(DigestMismatchError):
        verify_bytes(b"third", dual)
    b64p, b64s = base64.b64encode(p).decode(), base64.b64encode(s).decode()
    assert parsed.to_sri() == f"sha512-{b64p} sha512-{b64s}"
    assert dual == f"auraseal-sha512-{b64p}-{b64s}"


def test_stream_and_file_and_verifier(tmp_path: Path) -> None:
    data = b"x" * (3 << 20) + b"tail"
    f = tmp_path / "big"
    f.write_bytes(data)
    integ = auraseal_string(hash_bytes(data))
    seen: list[int] = []
    verify_file(f, integ, progress=seen.append)
    assert sum(seen) == len(data)
    verify_stream(io.BytesIO(data), integ)
    v = StreamVerifier(integ, "url")
    for i in range(0, len(data), 65536):
        v.update(data[i : i + 65536])
    v.verify()
    bad = StreamVerifier(integ, "url")
    bad.update(data[:-1])
    with pytest.raises(DigestMismatchError) as ei:
        bad.verify()
    assert ei.value.where == "url" and ei.value.expected == integ


@settings(max_examples=150, deadline=None)
@given(
    alg=st.sampled_from(["sha256", "sha384", "sha512"]),
    a=st.binary(min_size=0, max_size=64),
    b=st.binary(min_size=0, max_size=64),
    dual=st.booleans(),
)
def test_format_parse_round_trip(alg: str, a: bytes, b: bytes, dual: bool) -> None:
    da, db = hash_bytes(a, alg), hash_bytes(b, alg)
    s = auraseal_string(da, db if dual else None, alg)
    parsed = parse_integrity(s)
    assert isinstance(parsed, AuraSealString)
    assert str(parsed) == s
    assert parsed.digests == ((da, db) if dual else (da,))
    sri = parse_integrity(parsed.to_sri())
    assert isinstance(sri, SRIMetadata)
    assert set(sri.digests) == set(parsed.digests)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=4096),
    alg=st.sampled_from(["sha256", "sha384", "sha512"]),
    bit=st.integers(min_value=0),
)
def test_verify_passes_and_any_bit_flip_fails(data: bytes, alg: str, bit: int) -> None:
    integ = auraseal_string(hash_bytes(data, alg), algorithm=alg)
    verify_bytes(data, integ)
    verify_bytes(data, sri_token(alg, hash_bytes(data, alg)))
    pos = bit % (len(data) * 8)
    flipped = bytearray(data)
    flipped[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises(DigestMismatchError):
        verify_bytes(bytes(flipped), integ)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_never_crashes_untyped(text: str) -> None:
    try:
        parsed = parse_integrity(text)
    except MalformedIntegrityError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert parsed.digests


def _agrees(text: str) -> None:
    try:
        parse_integrity(text)
        ok = True
    except MalformedIntegrityError:
        ok = False
    try:
        check_integrity(text)
        assert ok, f"check_integrity accepted what parse_integrity refuses: {text!r}"
    except MalformedIntegrityError:
        assert not ok, f"check_integrity refused what parse_integrity accepts: {text!r}"


@settings(max_examples=300, deadline=None)
@given(
    alg=st.sampled_from(["sha256", "sha384", "sha512"]),
    a=st.binary(max_size=8),
    b=st.binary(max_size=8),
    form=st.sampled_from(["sri", "single", "dual", "sri-dual", "options", "trunc", "md5"]),
    cut=st.integers(0, 200),
)
def test_check_integrity_agrees_with_parse(
    alg: str, a: bytes, b: bytes, form: str, cut: int
) -> None:
    da, db = hash_bytes(a, alg), hash_bytes(b, alg)
    text = {
        "sri": sri_token(alg, da),
        "single": auraseal_string(da, None, alg),
        "dual": auraseal_string(da, db, alg),
        "sri-dual": sri_token(alg, da) + "-" + base64.b64encode(db).decode(),
        "options": sri_token(alg, da) + "?x=1",
        "trunc": auraseal_string(da, db, alg)[:cut],
        "md5": "md5-" + base64.b64encode(da[:16]).decode(),
    }[form]
    _agrees(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ash2561-+/=ABCxyz09 ?", max_size=100))
def test_check_integrity_agrees_on_noise(text: str) -> None:
    _agrees(text)


def test_hash_file_reads_a_pipe_whole_and_reuses_a_given_buffer(tmp_path: Path) -> None:
    """hash_file sizes its buffer from fstat: a pipe (size 0) must still be
    read in full (and in big reads), and a reused buffer must not leak bytes
    of the previous file into the next digest."""
    import threading  # noqa: PLC0415

    from auraseal.integrity import hash_file  # noqa: PLC0415

    data = os.urandom((3 << 20) + 7)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as fh:
            fh.write(data)

    t = threading.Thread(target=feed)
    t.start()
    assert hash_file(fifo) == hashlib.sha512(data).digest()
    t.join()
    buf = bytearray(1 << 20)
    for size in (5 << 20, 10, 0, (1 << 20) + 1):
        blob = os.urandom(size)
        (tmp_path / "f").write_bytes(blob)
        got = hash_file(tmp_path / "f", "sha256", buffer=buf, flags=os.O_NOFOLLOW)
        assert got == hashlib.sha256(blob).digest()
