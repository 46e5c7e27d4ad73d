"""Strict C2SP signed notes and checkpoints: spec examples, malformed-note table,
and interop with Go's reference ``golang.org/x/mod/sumdb/note`` both ways."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from auraseal.errors import BadSignatureError, MalformedNoteError, ThresholdError, UnknownKeyError
from auraseal.ledger import Checkpoint, open_checkpoint, sign_checkpoint, verifier_key
from auraseal.ledger.checkpoint import open_checkpoint_note
from auraseal.ledger.note import (
    CosignatureSigner,
    Ed25519NoteSigner,
    open_note,
    parse_note,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    signer_key_string,
    verified_witnesses,
)
from auraseal.signing import SigningKey

from .gotool import run_go

# The example of Go's note package and of C2SP signed-note.
PN_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PN_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PN_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
PN_SIG = ("— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
          "ngotpRZb6KE6RyyBwJnAM=\n")
PN_NOTE = PN_TEXT + "\n" + PN_SIG

# The example of C2SP tlog-checkpoint.
CP_TEXT = ("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
CP_SIG = ("— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
          "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n")


def test_spec_example_note_verifies() -> None:
    v = parse_verifier_key(PN_VKEY)
    note, ok = open_note(PN_NOTE.encode(), [v])
    assert note.text == PN_TEXT and ok == [v]


def test_spec_example_signer_key_signs_the_same_note() -> None:
    s = parse_signer_key(PN_SKEY)
    assert sign_note(PN_TEXT, [s]) == PN_NOTE  # Ed25519 is deterministic
    assert s.key_id.hex() == "c74f20a3"


def test_spec_example_checkpoint_parses() -> None:
    cp = Checkpoint.parse_body(CP_TEXT)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.body() == CP_TEXT
    note = parse_note((CP_TEXT + "\n" + CP_SIG).encode())
    assert note.signatures[0].name == "example.com/behind-the-sofa"
    # a signature by an unknown key is ignored, and then nothing verified it
    with pytest.raises(UnknownKeyError):
        open_note((CP_TEXT + "\n" + CP_SIG).encode(), [parse_verifier_key(PN_VKEY)])


def test_extension_lines_round_trip() -> None:
    cp = Checkpoint.parse_body(CP_TEXT + "ext one\next two\n")
    assert cp.extensions == ("ext one", "ext two")
    assert cp.body() == CP_TEXT + "ext one\next two\n"


ROOT64 = base64.b64encode(bytes(32)).decode()


@pytest.mark.parametrize(("body", "why"), [
    (f"o\n\u00b2\n{ROOT64}\n", "superscript two as the size (crashed with a traceback)"),
    (f"o\n\u0661\u0662\n{ROOT64}\n", "Arabic-Indic digits"),
    (f"o\n012\n{ROOT64}\n", "leading zero"),
    (f"o\n00\n{ROOT64}\n", "double zero"),
    (f"o\n+12\n{ROOT64}\n", "plus sign"),
    (f"o\n-1\n{ROOT64}\n", "negative"),
    (f"o\n 12\n{ROOT64}\n", "leading space"),
    (f"o\n12 \n{ROOT64}\n", "trailing space"),
    (f"o\n1_000\n{ROOT64}\n", "underscore (Python int() accepts it)"),
    (f"o\n18446744073709551616\n{ROOT64}\n", "above 2**64-1"),
    (f"o\n\n{ROOT64}\n", "empty size"),
    (f"o\r\n12\n{ROOT64}\n", "CR before newline"),
    (f"o\n12\r\n{ROOT64}\n", "CR after the size"),
    (f"o\x01\n12\n{ROOT64}\n", "control character in the origin"),
    (f"o\t\n12\n{ROOT64}\n", "tab"),
    (f"\n12\n{ROOT64}\n", "empty origin"),
    ("o\n12\nAAAA\n", "root too short"),
    (f"o\n12\n{ROOT64[:-1]}\n", "root without padding"),
    (f"o\n12\n{ROOT64[:-2]}B=\n", "root with non-canonical padding bits"),
    (f"o\n12\n{ROOT64}", "no final newline"),
    (f"o\n12\n{ROOT64}\n\nx\n", "empty extension line"),
    ("o\n12\n", "no root line"),
])
def test_malformed_checkpoint_body_is_refused(body: str, why: str) -> None:
    with pytest.raises(MalformedNoteError):
        Checkpoint.parse_body(body.encode("utf-8"))


@pytest.mark.parametrize(("note", "why"), [
    (PN_TEXT + PN_SIG, "no blank line before the signatures"),
    (PN_TEXT + "\n" + PN_SIG.rstrip("\n"), "signature block without final newline"),
    (PN_TEXT + "\n", "empty signature block"),
    (PN_TEXT + "\n" + PN_SIG.replace("— ", "-- "), "ASCII dashes instead of the em dash"),
    (PN_TEXT + "\n" + PN_SIG.replace("— ", "—"), "no space after the dash"),
    (PN_TEXT + "\n" + PN_SIG + "— Other !!!!\n", "unknown key's line not base64"),
    (PN_TEXT + "\n" + PN_SIG + "— Other AAAA\n", "unknown key's signature too short"),
    (PN_TEXT + "\n" + PN_SIG + "— Other\n", "signature line without signature"),
    (PN_TEXT + "\n" + PN_SIG + "— Other  AAAAAAA=\n", "two spaces"),
    (PN_TEXT + "\n" + PN_SIG + "— Oth+er AAAAAAA=\n", "plus in the key name"),
    (PN_TEXT + "\n" + PN_SIG + "\n", "blank line in the signature block"),
    (PN_TEXT + "\n" + PN_SIG + "trailing text\n", "text after the signatures"),
    (PN_TEXT.replace("\n", "\r\n") + "\r\n" + PN_SIG, "CRLF line endings"),
    (PN_TEXT.replace("answer", "ans\x00wer") + "\n" + PN_SIG, "NUL in the text"),
    (PN_TEXT + "\n" + PN_SIG.replace("x08go", "x08g\x7fo"), "DEL inside base64"),
])
def test_malformed_note_is_refused(note: str, why: str) -> None:
    with pytest.raises(MalformedNoteError):
        open_note(note.encode("utf-8"), [parse_verifier_key(PN_VKEY)])


def test_invalid_utf8_note_is_refused() -> None:
    with pytest.raises(MalformedNoteError):
        open_note(PN_NOTE.encode() + b"\xff", [parse_verifier_key(PN_VKEY)])


def test_more_than_100_signatures_is_refused() -> None:
    extra = "".join(f"— k{i} AAAAAAA=\n" for i in range(100))
    with pytest.raises(MalformedNoteError):
        open_note((PN_NOTE + extra).encode(), [parse_verifier_key(PN_VKEY)])


def test_split_is_the_last_blank_line() -> None:
    # text may contain blank lines; the signature block follows the LAST "\n\n"
    s = parse_signer_key(PN_SKEY)
    text = "para one\n\npara two\n"
    note, _ = open_note(sign_note(text, [s]).encode(), [s.verifier()])
    assert note.text == text


def test_bad_signature_by_known_key_is_refused() -> None:
    tampered = PN_NOTE.replace("answer", "ANSWER")
    with pytest.raises(BadSignatureError):
        open_note(tampered.encode(), [parse_verifier_key(PN_VKEY)])


@pytest.mark.parametrize("vkey", [
    "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
    "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # short id
    "PeterNeumann+c74f20a3+AhpzZ2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # alg 2
    "PeterNeumann+c74f20a3",
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
])
def test_malformed_verifier_key_is_refused(vkey: str) -> None:
    with pytest.raises(MalformedNoteError):
        parse_verifier_key(vkey)


def test_checkpoint_cli_refuses_superscript_size_without_traceback(tmp_path: Path) -> None:
    key = SigningKey.generate()
    good = sign_checkpoint(Checkpoint("o", 12, bytes(32)), "log", key)
    body = f"o\n\u00b2\n{ROOT64}\n"
    sig = Ed25519NoteSigner("log", key)
    bad = sign_note(body, [sig])
    note_file = tmp_path / "cp.note"
    note_file.write_bytes(bad.encode())
    vkey = verifier_key("log", key.public)
    res = subprocess.run([sys.executable, "-m", "auraseal", "ledger", "checkpoint", "--check",
                          str(note_file), "--pub", vkey], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stderr.startswith("auraseal: error:")
    note_file.write_bytes(good.encode())
    ok = subprocess.run([sys.executable, "-m", "auraseal", "ledger", "checkpoint", "--check",
                         str(note_file), "--pub", vkey], capture_output=True, text=True,
                        check=False)
    assert ok.returncode == 0, ok.stderr


def test_checkpoint_cli_reads_bytes_so_crlf_is_refused(tmp_path: Path) -> None:
    key = SigningKey.generate()
    note = sign_checkpoint(Checkpoint("o", 12, bytes(32)), "log", key)
    f = tmp_path / "cp.note"
    f.write_bytes(note.replace("\n", "\r\n").encode())
    res = subprocess.run([sys.executable, "-m", "auraseal", "ledger", "checkpoint", "--check",
                          str(f), "--pub", verifier_key("log", key.public)],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2 and "control character" in res.stderr, res.stderr


def test_witness_threshold_counts_only_valid_cosignatures() -> None:
    log = SigningKey.generate()
    w1, w2 = CosignatureSigner("w1", SigningKey.generate()), CosignatureSigner(
        "w2", SigningKey.generate())
    cp = Checkpoint("o", 3, bytes(32))
    note = sign_note(cp.body(), [Ed25519NoteSigner("log", log), w1])
    ws = [w1.verifier(), w2.verifier()]
    got = open_checkpoint_note(note, Ed25519NoteSigner("log", log).verifier(), witnesses=ws,
                               witness_threshold=1)
    assert got == cp
    with pytest.raises(ThresholdError):
        open_checkpoint(note, "log", log.public, witnesses=ws, witness_threshold=2)
    # a cosignature over another checkpoint body does not count (and is refused)
    forged = note.replace(cp.body(), Checkpoint("o", 3, b"\x01" * 32).body())
    with pytest.raises(BadSignatureError):
        verified_witnesses(parse_note(forged), ws, 1)


# --- Go interop ------------------------------------------------------------------


def test_go_verifies_our_checkpoint_and_cosignatures(go_checker: Path) -> None:
    log = Ed25519NoteSigner("example.com/log", SigningKey.generate())
    wit = CosignatureSigner("example.com/witness", SigningKey.generate())
    body = Checkpoint("example.com/log", 1234, bytes(range(32))).body()
    note = sign_note(body, [log, wit])
    res = run_go(go_checker, "open", log.verifier().vkey(), wit.verifier().vkey(),
                 stdin=note.encode())
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode() == body
    # Go refuses it when we tamper, as we do
    bad = run_go(go_checker, "open", log.verifier().vkey(),
                 stdin=note.replace("1234", "1235").encode())
    assert bad.returncode == 1


def test_we_verify_notes_go_signs(go_checker: Path) -> None:
    keys = run_go(go_checker, "keygen", "go.example/log")
    assert keys.returncode == 0, keys.stderr
    skey, vkey = keys.stdout.decode().split()
    body = Checkpoint("go.example/log", 77, bytes(32)).body()
    signed = run_go(go_checker, "sign", skey, stdin=body.encode())
    assert signed.returncode == 0, signed.stderr
    cp = open_checkpoint_note(signed.stdout, parse_verifier_key(vkey))
    assert (cp.origin, cp.size) == ("go.example/log", 77)
    # Go's signer key string is accepted where we take a key, and signs identically
    ours = parse_signer_key(skey)
    assert sign_note(body, [ours]).encode() == signed.stdout


def test_our_signer_key_string_works_in_go(go_checker: Path) -> None:
    key = SigningKey.generate()
    skey = signer_key_string("ours", key)
    res = run_go(go_checker, "sign", skey, stdin=PN_TEXT.encode())
    assert res.returncode == 0, res.stderr
    open_note(res.stdout, [Ed25519NoteSigner("ours", key).verifier()])


@pytest.mark.parametrize("note", [
    PN_TEXT + "\n" + PN_SIG + "— Other !!!!\n",
    PN_TEXT.replace("\n", "\r\n") + "\r\n" + PN_SIG,
    PN_TEXT + PN_SIG,
])
def test_go_refuses_what_we_refuse(go_checker: Path, note: str) -> None:
    res = run_go(go_checker, "open", PN_VKEY, stdin=note.encode())
    assert res.returncode == 1
    with pytest.raises(MalformedNoteError):
        parse_note(note.encode())
