#!/usr/bin/env python3
"""Benchmark: start-up of the ``auraseal`` command.

Times (wall clock, median of ``--runs``, default 10) of:

* ``python3 -c pass`` (the interpreter alone — the floor);
* ``auraseal --help`` (target: < 150 ms);
* ``auraseal --version``, and ``auraseal version`` where that command exists.

Each command is run as a fresh process, as a user runs it. Usage:
``python bench/startup.py [--runs 10]``. For where the time goes:
``.venv/bin/python -X importtime .venv/bin/auraseal --help``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AURASEAL = ROOT / ".venv" / "bin" / "auraseal"
TARGET_MS = 150.0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def median_ms(cmd: list[str], runs: int) -> tuple[float, float] | None:
    """Median wall and CPU (user+sys) time of ``cmd`` in ms (None if it fails).

    CPU time is the steadier figure on a busy machine."""
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = _children_cpu(), time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((_children_cpu() - c0) * 1000)
        if proc.returncode != 0:
            return None
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--runs", type=int, default=10)
    opts = ap.parse_args()
    python = sys.executable
    base = median_ms([python, "-c", "pass"], opts.runs)
    assert base is not None
    floor, floor_cpu = base
    print(f"{'python3 -c pass':<22} {floor:7.1f} ms wall {floor_cpu:7.1f} ms cpu")
    ok = True
    for label, args in [
        ("auraseal --help", ["--help"]),
        ("auraseal --version", ["--version"]),
        ("auraseal version", ["version"]),
    ]:
        got = median_ms([str(AURASEAL), *args], opts.runs)
        if got is None:
            print(f"{label:<22} (not available)")
            continue
        ms, cpu = got
        line = (
            f"{label:<22} {ms:7.1f} ms wall {cpu:7.1f} ms cpu"
            f"  ({ms - floor:+.1f} ms over python, {ms / floor:.1f}x)"
        )
        if args == ["--help"]:
            met = ms < TARGET_MS
            ok &= met
            line += f"  target < {TARGET_MS:.0f} ms: {'met' if met else 'MISSED'}"
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
