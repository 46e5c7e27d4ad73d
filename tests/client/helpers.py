"""Helpers shared by the client tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from auraseal._fs import is_temp_name
from auraseal.client import HttpConfig
from auraseal.manifest import MANIFEST_NAME, Manifest, build_manifest, dump_signed
from auraseal.signing import SigningKey

#: Short limits so stall and trickle tests finish in about a second.
FAST = HttpConfig(timeout=1.0, min_rate=20_000, grace=0.5, trust_env=False)

FILES_V1: dict[str, bytes] = {
    "index.html": b"<html>v1</html>\n",
    "js/app.js": b"console.log('v1');\n" * 50,
    "data/blob.bin": os.urandom(200_000),
}


def files_v2() -> dict[str, bytes]:
    d = dict(FILES_V1)
    d["index.html"] = b"<html>v2</html>\n"
    d["js/app.js"] = b"console.log('v2');\n" * 50
    return d


def write_package(
    root: Path,
    files: Mapping[str, bytes],
    keys: list[SigningKey],
    *,
    version: int = 1,
    name: str = "site",
    expires: timedelta | None = timedelta(days=30),
    algorithm: str = "sha512",
) -> Manifest:
    """Write ``files`` and a signed manifest into ``root`` (replacing both)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    m = build_manifest(root, name=name, version=version, expires=expires, algorithm=algorithm)
    (root / MANIFEST_NAME).write_bytes(dump_signed(m, keys))
    return m


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file below ``d`` (or {} if absent) — DIR's exact state."""
    if not d.exists():
        return {}
    return {
        p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
    }


def no_leftovers(dest: Path) -> None:
    """No staging tree, swap or half-deleted copy is left beside DIR."""
    if not dest.parent.exists():
        return
    stages = [
        p.name
        for p in dest.parent.iterdir()
        if "auraseal-stage" in p.name or is_temp_name(p.name) or p.name.endswith(".swap")
    ]
    assert stages == [], stages
