"""Shared helpers for the sealing tests."""

from __future__ import annotations

import os
from pathlib import Path

from auraseal._fs import is_temp_name
from auraseal.manifest import FileEntry
from auraseal.sealing.seal import SealOptions, seal_file


def seal_bytes(
    data: bytes, out: Path, rel: str = "c.bin", **opts: object
) -> tuple[FileEntry, dict[int, bytes]]:
    """Seal one buffer into ``out``; return its entry and its parts' bytes."""
    entry = seal_file(data, rel, out, SealOptions(**opts))  # type: ignore[arg-type]
    assert entry.recovery is not None
    parts = {p.number: (out / f"{rel}.part.{p.number}").read_bytes() for p in entry.recovery.parts}
    return entry, parts


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def leftovers(root: Path) -> list[str]:
    """Temp files (``.name.xxx.tmp``) left anywhere below ``root``."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        out += [os.path.join(dirpath, f) for f in files if f.endswith(".tmp") or is_temp_name(f)]
    return out
