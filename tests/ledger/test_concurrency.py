"""Several writer processes append to one ledger at once: no fork, no reuse, no loss."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

from auraseal.ledger import open_ledger

from .conftest import SECRET

WORKER = rf"""
import random, sys
from auraseal.ledger import BlockPolicy, open_ledger
url, jsonl, wid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
led = open_ledger(url, jsonl or None, secret=b"{SECRET.decode()}",
                  policy=BlockPolicy(max_entries=7))
rnd = random.Random(wid)
done = 0
while done < n:
    k = min(n - done, rnd.choice([1, 1, 3, 10, 25]))
    led.record_many([("w%d" % wid, {{"w": wid, "i": done + j}}, None) for j in range(k)])
    done += k
    if rnd.random() < 0.2:
        led.commit()
led.close()
"""

WRITERS, PER_WRITER = 5, 120


def _run_writers(url: str, jsonl: Path | None) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, str(jsonl or ""), str(w),
                          str(PER_WRITER)], stderr=subprocess.PIPE)
        for w in range(WRITERS)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-2000:]


def test_concurrent_writers_never_fork(ledger_url: str, tmp_path: Path) -> None:
    jsonl = tmp_path / "shared.jsonl"
    _run_writers(ledger_url, jsonl)
    led = open_ledger(ledger_url, jsonl, secret=SECRET)
    try:
        led.commit()
        blocks = list(led.blocks())
        numbers = [b.block_number for b in blocks]
        assert numbers == list(range(1, len(blocks) + 1))  # no gap, no reuse
        assert len({b.block_hash for b in blocks}) == len(blocks)
        for a, b in itertools.pairwise(blocks):
            assert b.previous_hash == a.block_hash  # one chain, no fork
        assert blocks[-1].tree_size == WRITERS * PER_WRITER  # no entry lost
        assert led.pending() == []
        seen = {(e.entry_type, e.data_hash) for e in led.store.committed_entries()}
        assert len(seen) == WRITERS * PER_WRITER
        rep = led.verify_chain()
        assert rep.ok, [str(p) for p in rep.problems[:5]]
    finally:
        led.close()
