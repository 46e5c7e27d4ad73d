"""``auraseal ledger ...`` end to end through the real argument parser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auraseal.cli import main
from auraseal.ledger import Block, BlockPolicy, open_ledger
from auraseal.signing import generate_keypair

from .conftest import SECRET, run_sql


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        data = json.loads(out) if "--json" in argv and out.strip() else out
    except ValueError:
        data = out
    return code, data, err


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, ledger_url: str, tmp_path: Path) -> dict[str, str]:
    monkeypatch.setenv("INTEGRITY_HMAC_SECRET", SECRET.decode())
    return {"url": ledger_url, "jsonl": str(tmp_path / "cli.jsonl")}


def test_record_commit_verify_show(capsys: pytest.CaptureFixture[str], env: dict[str, str],
                                   tmp_path: Path) -> None:
    common = ["--ledger", env["url"], "--jsonl", env["jsonl"], "--json"]
    code, rec, _ = _run(capsys, "ledger", "record", "seal", "--data", '{"file": "a.txt"}',
                        "--metadata", '{"who": "test"}', *common)
    assert code == 0 and rec["signed"] and rec["file_recorded"] and len(rec["data_hash"]) == 64
    code, rec2, _ = _run(capsys, "ledger", "record", "note", "--data", "[1,2]", "--unsigned",
                         "--commit", *common)
    assert code == 0 and rec2["signature"] is None and rec2["blocks_committed"] == [1]
    code, rep, _ = _run(capsys, "ledger", "verify", *common)
    assert code == 0 and rep["overall_valid"] and rep["database_chain"]["entry_count"] == 2
    code, ent, _ = _run(capsys, "ledger", "verify", "--entry", rec["entry_id"], "--data",
                        '{"file": "a.txt"}', *common)
    assert code == 0 and ent["verified"] and ent["block_number"] == 1
    code, ent, _ = _run(capsys, "ledger", "verify", "--entry", rec["entry_id"], "--data",
                        '{"file": "b.txt"}', *common)
    assert code == 1 and ent["hash_valid"] is False
    code, head, _ = _run(capsys, "ledger", "show", *common)
    assert code == 0 and head["head"]["block_number"] == 1 and head["pending"] == 0
    code, blk, _ = _run(capsys, "ledger", "show", "--block", "1", *common)
    assert blk["data_count"] == 2
    code, e, _ = _run(capsys, "ledger", "show", "--entry", rec["entry_id"], *common)
    assert e["metadata"] == {"who": "test"} and e["leaf_index"] == 0
    code, blocks, _ = _run(capsys, "ledger", "show", "--blocks", *common)
    assert [b["block_number"] for b in blocks] == [1]
    code, text, _ = _run(capsys, "ledger", "verify", "--ledger", env["url"])
    assert code == 0 and text.startswith("OK:")
    code, rec3, _ = _run(capsys, "ledger", "record", "t", "--data", "1", "--block-entries",
                         "1", *common)
    assert rec3["blocks_committed"] == [2]
    code, _, err = _run(capsys, "ledger", "commit", "--block-age", "soon", *common)
    assert code == 2 and "duration" in err


def test_tampered_ledger_exit_1(capsys: pytest.CaptureFixture[str], env: dict[str, str]) -> None:
    common = ["--ledger", env["url"], "--json"]
    for i in range(3):
        _run(capsys, "ledger", "record", "t", "--data", str(i), *common)
    _run(capsys, "ledger", "commit", *common)
    run_sql(env["url"], "UPDATE {e} SET data_hash = %s WHERE leaf_index = 1", ("00" * 32,))
    code, rep, _ = _run(capsys, "ledger", "verify", *common)
    assert code == 1 and rep["overall_valid"] is False and rep["first_bad_block"] == 1
    code, text, _ = _run(capsys, "ledger", "verify", "--ledger", env["url"])
    assert code == 1 and "TAMPERED" in text and "first bad block: 1" in text


def test_checkpoint_proof_bundle_consistency(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], tmp_path: Path
) -> None:
    key = tmp_path / "ledger.key"
    generate_keypair(key)
    pub = str(key) + ".pub"
    common = ["--ledger", env["url"], "--json"]
    ids = []
    for i in range(5):
        _, rec, _ = _run(capsys, "ledger", "record", "t", "--data", json.dumps({"i": i}), *common)
        ids.append(rec["entry_id"])
    _run(capsys, "ledger", "commit", *common)
    old = tmp_path / "old.note"
    code, cp, _ = _run(capsys, "ledger", "checkpoint", "--key", str(key), "--out", str(old),
                       *common)
    assert code == 0 and cp["note"].split("\n")[1] == "5" and old.read_text() == cp["note"]
    assert cp["verifier_key"].startswith("auraseal-ledger+")
    for i in range(5, 12):
        _run(capsys, "ledger", "record", "t", "--data", json.dumps({"i": i}), *common)
    _run(capsys, "ledger", "commit", *common)
    new = tmp_path / "new.note"
    _run(capsys, "ledger", "checkpoint", "--key", str(key), "--out", str(new), *common)
    code, chk, _ = _run(capsys, "ledger", "checkpoint", "--check", str(new), "--pub", pub,
                        "--json")
    assert code == 0 and chk["tree_size"] == 12
    code, cons, _ = _run(capsys, "ledger", "consistency", str(old), str(new), "--pub", pub,
                         *common)
    assert code == 0 and cons["verified"] and cons["size1"] == 5 and cons["size2"] == 12
    code, cons, _ = _run(capsys, "ledger", "consistency", "--size1", "3", *common)
    assert code == 0 and cons["size2"] == 12
    bundle = tmp_path / "b.json"
    code, pr, _ = _run(capsys, "ledger", "proof", ids[2], "--bundle", str(bundle), "--key",
                       str(key), *common)
    assert code == 0 and pr["leaf_index"] == 2 and pr["tree_size"] == 12
    data = tmp_path / "d.json"
    data.write_text('{"i": 2}')
    # offline: no ledger needed, only the public key
    code, ok, _ = _run(capsys, "ledger", "proof", "--check", str(bundle), "--pub", pub,
                       "--data-file", str(data), "--json")
    assert code == 0 and ok["verified"] and ok["data_checked"] and ok["block_checked"]
    # a bundle whose block claims a zeroed merkle_root (hash recomputed) is refused: exit 1
    forged = json.loads(bundle.read_text())
    forged["block"]["merkle_root"] = "0" * 64
    forged["block"]["block_hash"] = Block.from_json(forged["block"]).compute_hash()
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, _, err = _run(capsys, "ledger", "proof", "--check", str(tmp_path / "forged.json"),
                        "--pub", pub)
    assert code == 1 and "forged.json: block.merkle_root: does not recompute" in err
    data.write_text('{"i": 3}')
    code, _, err = _run(capsys, "ledger", "proof", "--check", str(bundle), "--pub", pub,
                        "--data-file", str(data))
    assert code == 1 and "data_hash" in err
    other = tmp_path / "other.key"
    generate_keypair(other)
    code, _, err = _run(capsys, "ledger", "checkpoint", "--check", str(new), "--pub",
                        str(other) + ".pub")
    assert code == 3 and err.count("\n") == 1
    tampered = tmp_path / "t.note"
    tampered.write_text(new.read_text().replace("\n12\n", "\n13\n"))
    code, _, _ = _run(capsys, "ledger", "checkpoint", "--check", str(tampered), "--pub", pub)
    assert code == 3


def test_usage_errors(capsys: pytest.CaptureFixture[str], env: dict[str, str],
                      tmp_path: Path) -> None:
    common = ["--ledger", env["url"]]
    code, _, err = _run(capsys, "ledger", "record", "t", "--data", "{nope", *common)
    assert code == 2 and "JSON" in err
    code, _, err = _run(capsys, "ledger", "show", "--entry", "nope", *common)
    assert code == 2 and err.startswith("auraseal: error:")
    code, _, err = _run(capsys, "ledger", "checkpoint", *common)
    assert code == 2 and "--key" in err
    code, _, err = _run(capsys, "ledger", "show", "--ledger", "ftp://x/y")
    assert code == 2
    assert main(["ledger", "frobnicate"]) == 2


def test_record_without_secret_is_refused(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INTEGRITY_HMAC_SECRET", raising=False)
    monkeypatch.setenv("AURASEAL_LEDGER", f"sqlite://{tmp_path / 'env.db'}")
    code, _, err = _run(capsys, "ledger", "record", "t", "--data", "1")
    assert code == 2 and "INTEGRITY_HMAC_SECRET" in err
    code, out, _ = _run(capsys, "ledger", "record", "t", "--data", "1", "--unsigned", "--json")
    assert code == 0 and out["signature"] is None
    assert (tmp_path / "env.db").exists()  # $AURASEAL_LEDGER was honoured


def test_verify_reports_swapped_jsonl_lines_and_accepts_crlf(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    with open_ledger(env["url"], Path(env["jsonl"]), secret=SECRET,
                     policy=BlockPolicy(max_entries=5)) as led:
        led.record_many([("t", {"i": i}, None) for i in range(12)])
    common = ["ledger", "verify", "--ledger", env["url"], "--jsonl", env["jsonl"]]
    path = Path(env["jsonl"])
    good = path.read_bytes()
    path.write_bytes(good.replace(b"\n", b"\r\n"))  # the whole file re-saved with CRLF
    code, text, _ = _run(capsys, *common)
    assert code == 0 and text.startswith("OK:"), text
    lines = good.splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))
    code, text, _ = _run(capsys, *common)
    assert code == 1 and "TAMPERED" in text and "out of order" in text


def test_ledger_verify_missing_database_fails_exit_5_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    db, jsonl = work / "typo.db", work / "typo.jsonl"
    for url in (str(db), f"sqlite://{db}"):  # sqlite:///abs/path
        for extra in ((), ("--jsonl", str(jsonl)), ("--reconcile",)):
            code, out, err = _run(capsys, "ledger", "verify", "--ledger", url, *extra)
            assert code == 5, (url, extra, out, err)
            assert out == "" and "JSONL checked" not in out
            lines = err.strip().splitlines()
            assert len(lines) == 1
            assert lines[0] == f"auraseal: error: {db}: no ledger database here " \
                               "(nothing was created)"
            assert list(work.iterdir()) == []


def test_ledger_verify_missing_jsonl_mirror_is_not_reported_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db, jsonl = tmp_path / "l.db", tmp_path / "gone.jsonl"
    assert _run(capsys, "ledger", "record", "t", "--data", "1", "--unsigned", "--ledger",
                str(db))[0] == 0
    code, out, err = _run(capsys, "ledger", "verify", "--ledger", str(db), "--jsonl", str(jsonl))
    assert code == 5 and "JSONL checked" not in out
    assert err.strip() == f"auraseal: error: {jsonl}: no JSONL mirror here (nothing was created)"
    assert not jsonl.exists()
