"""JSONL mirror: dual write, tampering named by block, interrupted writes reconciled."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from auraseal._canonical import canonical_json
from auraseal.errors import LedgerTamperError, StorageError
from auraseal.ledger import JsonlMirror, Ledger, open_ledger

from .conftest import SECRET


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _setup(make: Callable[..., Ledger], tmp_path: Path) -> tuple[Ledger, list[str], Path]:
    led = make(max_entries=10)
    ids = [r.entry_id for r in led.record_many([("t", {"i": i}, {"k": i}) for i in range(45)])]
    path = tmp_path / "ledger.jsonl"
    assert led.verify_chain().ok
    return led, ids, path


def _line_of(path: Path, entry_id: str) -> int:
    for i, line in enumerate(_lines(path)):
        if entry_id in line:
            return i
    raise AssertionError(entry_id)


def test_lines_follow_the_seed_format(make_ledger: Callable[..., Ledger], tmp_path: Path) -> None:
    led, _ids, path = _setup(make_ledger, tmp_path)
    recs = [json.loads(x) for x in _lines(path)]
    assert [r["record_type"] for r in recs].count("entry") == 45
    assert [r["block_number"] for r in recs if r["record_type"] == "block"] == [1, 2, 3, 4]
    first = next(r for r in recs if r["record_type"] == "entry")
    assert set(first) == {"record_type", "v", "entry_id", "entry_type", "data_hash", "metadata",
                          "signature", "timestamp"}
    blk = next(r for r in recs if r["record_type"] == "block")
    assert blk == led.block(1).to_json()
    assert all(line.endswith("\n") for line in _lines(path))


def test_edited_line_names_block(make_ledger: Callable[..., Ledger], tmp_path: Path) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    n = _line_of(path, ids[27])
    lines[n] = lines[n].replace('"entry_type":"t"', '"entry_type":"x"')
    path.write_text("".join(lines))
    rep = led.verify_chain()
    assert not rep.ok and rep.first_bad_block == 3 and not rep.reconcilable
    assert {p.source for p in rep.problems} == {"jsonl"}
    with pytest.raises(LedgerTamperError):
        led.reconcile()


def test_edited_block_line(make_ledger: Callable[..., Ledger], tmp_path: Path) -> None:
    led, _, path = _setup(make_ledger, tmp_path)
    text = path.read_text()
    h = led.block(2).merkle_root
    path.write_text(text.replace(h, "0" * 64))
    rep = led.verify_chain()
    assert rep.first_bad_block == 2 and not rep.reconcilable


def test_truncated_line_in_middle(make_ledger: Callable[..., Ledger], tmp_path: Path) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    n = _line_of(path, ids[12])
    lines[n] = lines[n][:40] + "\n"
    path.write_text("".join(lines))
    rep = led.verify_chain()
    assert rep.first_bad_block == 2 and not rep.reconcilable
    assert any("unreadable" in p.what for p in rep.problems)


def test_deleted_line(make_ledger: Callable[..., Ledger], tmp_path: Path) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    del lines[_line_of(path, ids[5])]
    path.write_text("".join(lines))
    rep = led.verify_chain()
    assert rep.first_bad_block == 1
    assert any(p.entry == ids[5] for p in rep.problems)


def test_torn_tail_and_missing_lines_are_reconciled(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, _ids, path = _setup(make_ledger, tmp_path)
    full = path.read_bytes()
    # crash: the last entry lines never reached the file, the last one half-written
    lines = _lines(path)
    keep = "".join(lines[:-6]) + lines[-6][:25]
    path.write_text(keep)
    rep = led.verify_chain()
    assert not rep.ok and rep.reconcilable and rep.torn_jsonl_tail
    assert rep.missing_in_jsonl  # named, never silently ignored
    fixed = led.reconcile()
    assert fixed["torn_lines_removed"] == 1
    assert fixed["entries_appended"] + fixed["blocks_appended"] == 6
    assert led.verify_chain().ok
    assert sorted(x for x in _lines(path) if '"record_type":"reconcile"' not in x) == \
        sorted(full.decode().splitlines(keepends=True))
    led.record("after", {"ok": True})
    assert led.verify_chain().ok


def test_missing_block_line_at_tail_is_reconciled(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, _, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    path.write_text("".join(x for x in lines if '"block_number":4' not in x))
    rep = led.verify_chain()
    assert rep.reconcilable and rep.blocks_missing_in_jsonl == [4]
    led.reconcile()
    assert led.verify_chain().ok


class _FailingMirror(JsonlMirror):
    """Fault injection: the file write fails after the database committed."""

    fail = True

    def append_lines(self, lines: Sequence[bytes], *, sync: bool = False) -> None:
        if self.fail:
            raise StorageError("injected: disk full", str(self.path))
        super().append_lines(lines, sync=sync)


def test_failed_mirror_write_is_not_acknowledged(ledger_url: str, tmp_path: Path) -> None:
    mirror = _FailingMirror(tmp_path / "m.jsonl")
    led = open_ledger(ledger_url, secret=SECRET)
    led.mirror = mirror
    try:
        with pytest.raises(StorageError):
            led.record("t", {"i": 1})
        rep = led.verify_chain()
        assert not rep.ok and rep.reconcilable and len(rep.missing_in_jsonl) == 1
        mirror.fail = False
        assert led.reconcile()["entries_appended"] == 1
        assert led.verify_chain().ok
    finally:
        led.close()


def test_unknown_record_type_and_garbage(make_ledger: Callable[..., Ledger],
                                         tmp_path: Path) -> None:
    led, _, path = _setup(make_ledger, tmp_path)
    with path.open("a") as fh:
        fh.write('{"record_type":"other"}\n[1,2]\n')
    rep = led.verify_chain()
    assert not rep.ok and not rep.reconcilable
    assert sum("line" in p.what for p in rep.problems) == 2


def test_fsync_policy_validated(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="fsync"):
        JsonlMirror(tmp_path / "x", fsync="sometimes")
    m = JsonlMirror(tmp_path / "x", fsync="always")
    m.append([{"record_type": "x"}])
    m.close()
    assert (tmp_path / "x").read_text() == '{"record_type":"x"}\n'


# --- position and canonical content (issue 10) ---------------------------------


def test_swapped_entry_lines_are_reported_out_of_order(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    a, b = _line_of(path, ids[12]), _line_of(path, ids[13])
    lines[a], lines[b] = lines[b], lines[a]
    path.write_text("".join(lines))
    rep = led.verify_chain()
    assert not rep.ok and not rep.reconcilable and rep.first_bad_block == 2
    assert any("out of order" in p.what and p.source == "jsonl" for p in rep.problems)
    with pytest.raises(LedgerTamperError):
        led.reconcile()


def test_entry_line_moved_after_its_block_line_is_reported(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    n = _line_of(path, ids[44])  # last entry of block 5 (pending: committed later)
    led.commit()
    lines = _lines(path)
    entry = lines.pop(n)
    lines.append(entry)  # now after the line of block 5, which commits it
    path.write_text("".join(lines))
    rep = led.verify_chain()
    assert not rep.ok and rep.first_bad_block == 5
    assert any("after the line of its block" in p.what for p in rep.problems)


def test_entry_line_reserialized_with_other_whitespace_or_crlf_is_not_tampering(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    n = _line_of(path, ids[3])
    lines[n] = json.dumps(json.loads(lines[n]), indent=None) + "\n"  # ", " and ": "
    assert lines[n].startswith('{"data_hash": ')
    m = _line_of(path, ids[20])
    lines[m] = lines[m].replace("\n", "\r\n")
    k = _line_of(path, ids[30])
    rec = json.loads(lines[k])
    lines[k] = json.dumps(dict(reversed(rec.items())), ensure_ascii=True) + "\n"
    path.write_text("".join(lines), newline="")
    rep = led.verify_chain()
    assert rep.ok, [str(p) for p in rep.problems]
    assert rep.jsonl_reserialized == 3
    assert rep.to_dict()["file_chain"]["reserialized_lines"] == 3


def test_entry_line_with_added_field_is_tampering(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, ids, path = _setup(make_ledger, tmp_path)
    lines = _lines(path)
    n = _line_of(path, ids[7])
    rec = json.loads(lines[n])
    rec["approved_by"] = "mallory"
    lines[n] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))
    rep = led.verify_chain()
    assert not rep.ok and not rep.reconcilable and rep.first_bad_block == 1


def test_entry_lines_are_canonical_json(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    led, _ids, path = _setup(make_ledger, tmp_path)
    led.record("t", {"x": 1.5}, {"é": [1.0, "\u2028", None], "a": {"z": 1, "b": 2}})
    for line in path.read_bytes().splitlines(keepends=True):
        assert canonical_json(json.loads(line)) + b"\n" == line


def test_reconciled_lines_out_of_order_still_verify(
    ledger_url: str, tmp_path: Path
) -> None:
    """An entry whose line was lost is appended later by reconcile: not tampering."""
    mirror = _FailingMirror(tmp_path / "m.jsonl")
    led = open_ledger(ledger_url, secret=SECRET)
    led.mirror = mirror
    try:
        mirror.fail = False
        led.record("t", {"i": 0})
        mirror.fail = True
        with pytest.raises(StorageError):
            led.record("t", {"i": 1})  # in the database, not in the file
        mirror.fail = False
        led.record("t", {"i": 2})
        led.commit()
        rep = led.verify_chain()
        assert rep.reconcilable and len(rep.missing_in_jsonl) == 1
        assert led.reconcile()["entries_appended"] == 1
        assert led.verify_chain().ok
        led.record("t", {"i": 3})
        assert led.verify_chain().ok
        # the same shape without the reconcile marker is a swap
        lines = _lines(tmp_path / "m.jsonl")
        (tmp_path / "m.jsonl").write_text(
            "".join(x for x in lines if '"record_type":"reconcile"' not in x))
        rep = led.verify_chain()
        assert not rep.ok and any("out of order" in p.what for p in rep.problems)
    finally:
        led.close()
