"""Helpers for the key tests: roots, rotations, packages, timestamps on disk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from auraseal._time import utcnow
from auraseal.manifest import MANIFEST_NAME, Manifest, build_manifest, dump_signed
from auraseal.root import Role, Root, add_signatures, sign_root
from auraseal.signing import Signer, SigningKey

FILES = {"index.html": b"<html>keys</html>\n", "js/app.js": b"console.log('k');\n" * 40}


def root_v1(
    release: Sequence[SigningKey], threshold: int, *, timestamp: Sequence[SigningKey] = (),
    expires: timedelta | None = timedelta(days=365),
) -> tuple[Root, bytes]:
    r = Root.new([k.public for k in release], threshold,
                 timestamp=[k.public for k in timestamp], expires=expires)
    return r, sign_root(r, release)


def rotate(
    old: Root, release: Sequence[SigningKey], threshold: int, signers: Sequence[Signer],
    *, timestamp: Sequence[SigningKey] | None = None, expires: timedelta = timedelta(days=365),
) -> tuple[Root, bytes]:
    """Root version old+1 with ``release`` keys, signed by ``signers`` only."""
    keys = {k.public.key_id: k.public for k in release}
    ts_role = old.timestamp
    if timestamp is not None:
        ts_role = Role(tuple(sorted(k.public.key_id for k in timestamp)), 1)
        keys.update({k.public.key_id: k.public for k in timestamp})
    elif old.timestamp is not None:
        keys.update({kid: old.keys[kid] for kid in old.timestamp.keyids})
    now = utcnow()
    new = replace(
        old, version=old.version + 1, created=now, expires=now + expires, keys=keys,
        release=Role(tuple(sorted(keys_of(release))), threshold), timestamp=ts_role,
    )
    return new, sign_root(new, signers)


def keys_of(ks: Sequence[SigningKey]) -> list[str]:
    return [k.public.key_id for k in ks]


def cosign(data: bytes, signer: Signer) -> bytes:
    return add_signatures(data, [signer])


def write_package(
    root: Path, signers: Sequence[Signer], *, version: int = 1, name: str = "site",
    files: Mapping[str, bytes] = FILES, expires: timedelta | None = timedelta(days=90),
) -> Manifest:
    """Write ``files`` and their signed manifest into ``root`` (its ``root/``
    and ``timestamp.json`` stay outside the manifest's file list)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    extra = {
        p.relative_to(root).as_posix()
        for p in [*root.glob("root/*"), root / "timestamp.json"]
        if p.exists()
    }
    m = build_manifest(root, name=name, version=version, expires=expires,
                       exclude=frozenset({MANIFEST_NAME, *extra}))
    (root / MANIFEST_NAME).write_bytes(dump_signed(m, signers))
    return m


def publish_root(tree: Path, data: bytes, version: int) -> None:
    d = tree / "root"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{version}.json").write_bytes(data)
