"""Trust anchors pinned per package name (trust on first use; docs/CLIENT.md).

A :class:`TrustAnchor` says what a package's manifests must be signed by.
Today it is a set of Ed25519 keys and a threshold (``kind: "keys"``); a
signed root document (TUF-style ``root.json`` with key rotation) is meant to
become another ``kind`` of the same record, so the fetch flow only ever asks
an anchor for the :class:`~auraseal.signing.TrustPolicy` to apply.

Pins live in the cache directory, one file per package name::

    CACHE/pins/<name>.json   {"format": "auraseal-trust-pin", "version": 1,
                              "name", "kind": "keys", "keys": [hex raw key...],
                              "threshold", "pinned_at", "source"}

``<name>`` is the package name when it is a plain file name (letters, digits,
``.``, ``_``, ``-``, not starting with ``.``), else ``sha256-<hex of name>``.
They are written (atomically) under the cache's trust lock; reading one
writes nothing, so a refused fetch leaves no trace.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from auraseal._time import format_time, parse_time
from auraseal.errors import AuraSealError, ConfigError, StorageError
from auraseal.signing import PublicKey, TrustPolicy

__all__ = ["PIN_FORMAT", "PIN_VERSION", "TrustAnchor", "load_pin", "pin_path"]

PIN_FORMAT = "auraseal-trust-pin"
PIN_VERSION = 1
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class TrustAnchor:
    """What one package's manifests must be signed by."""

    name: str
    keys: tuple[PublicKey, ...]
    threshold: int
    kind: str = "keys"
    pinned_at: datetime | None = None
    source: str = ""

    def policy(self) -> TrustPolicy:
        return TrustPolicy(list(self.keys), self.threshold)

    def key_ids(self) -> list[str]:
        return sorted(k.key_id for k in self.keys)

    def same_trust(self, other: TrustAnchor) -> bool:
        return (self.kind, self.key_ids(), self.threshold) == (
            other.kind, other.key_ids(), other.threshold
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PIN_FORMAT,
            "version": PIN_VERSION,
            "name": self.name,
            "kind": self.kind,
            "keys": sorted(k.raw.hex() for k in self.keys),
            "key_ids": self.key_ids(),
            "threshold": self.threshold,
            "pinned_at": None if self.pinned_at is None else format_time(self.pinned_at),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TrustAnchor:
        if not isinstance(d, dict) or d.get("format") != PIN_FORMAT:
            raise StorageError(f"not a {PIN_FORMAT} document", where)
        if d.get("version") != PIN_VERSION:
            raise StorageError(f"unsupported pin version {d.get('version')!r}", where)
        if d.get("kind") != "keys":
            raise StorageError(f"unsupported pin kind {d.get('kind')!r}", where)
        name, keys, threshold = d.get("name"), d.get("keys"), d.get("threshold")
        if not isinstance(name, str) or not isinstance(keys, list) or not keys:
            raise StorageError("pin needs a 'name' and a non-empty 'keys' list", where)
        if not isinstance(threshold, int) or not 1 <= threshold <= len(keys):
            raise StorageError("pin 'threshold' must be 1..number of keys", where)
        try:
            pubs = tuple(PublicKey.from_raw(bytes.fromhex(str(k))) for k in keys)
        except (ValueError, ConfigError) as exc:
            raise StorageError(f"pin holds a malformed key: {exc}", where) from exc
        at = d.get("pinned_at")
        src = d.get("source")
        return cls(
            name=name,
            keys=pubs,
            threshold=threshold,
            pinned_at=parse_time(at, where) if isinstance(at, str) else None,
            source=src if isinstance(src, str) else "",
        )


def pin_path(cache_dir: Path, name: str) -> Path:
    """Where the pin for package ``name`` lives in ``cache_dir``."""
    stem = name if _PLAIN.fullmatch(name) else (
        "sha256-" + hashlib.sha256(name.encode("utf-8")).hexdigest()
    )
    return Path(cache_dir) / "pins" / f"{stem}.json"


def load_pin(cache_dir: Path, name: str) -> TrustAnchor | None:
    """The anchor pinned for ``name``, or None; writes nothing. A pin file
    that cannot be read is an error (never silently "not pinned")."""
    p = pin_path(cache_dir, name)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read pin: {exc.strerror}", str(p)) from exc
    try:
        anchor = TrustAnchor.from_dict(json.loads(data), str(p))
    except ValueError as exc:
        raise StorageError("pin is not JSON", str(p)) from exc
    except AuraSealError:
        raise
    if anchor.name != name:
        raise StorageError(f"pin is for package '{anchor.name}', not '{name}'", str(p))
    return anchor
