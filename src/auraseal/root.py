"""Root documents (the signed, self-rotating root of trust) and timestamps.

Pure functions over bytes, like python-tuf's ``metadata.py``: nothing here
touches the network or the disk. Format in ``docs/MANIFEST.md`` ("Root of
trust"). A root is an envelope (:func:`auraseal.signing.sign_envelope`) whose
``signed`` is::

    {"_type": "auraseal/root", "spec_version": 1, "version": N,
     "created": T, "expires": T | null,
     "keys": {"<keyid>": {"keytype": "ed25519", "public": "<hex raw 32 bytes>"}},
     "roles": {"release":   {"keyids": [...], "threshold": k},
               "timestamp": {"keyids": [...], "threshold": t}}}

The release keys sign manifests *and* the next root. Version 1 must be signed
by a threshold of its own release keys; version N+1 by a threshold of version
N's release keys **and** of its own. A root short of either is a *draft*:
:func:`verify_root` refuses it (:class:`~auraseal.errors.ThresholdError`).

A timestamp (``auraseal/timestamp``) is signed by a threshold of the root's
timestamp keys and names the package's current manifest (version and digest)
with a short expiry, so a mirror serving a frozen copy is noticed once it
lapses even though the manifests themselves live for months.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from auraseal._canonical import canonical_sha256
from auraseal._time import format_time, parse_time, utcnow
from auraseal.errors import (
    ConfigError,
    ExpiredError,
    ManifestFormatError,
    PackageMismatchError,
    RollbackError,
    ThresholdError,
    UnknownKeyError,
    UsageError,
)
from auraseal.signing import PublicKey, Signer, TrustPolicy, sign_envelope, verify_envelope

__all__ = [
    "ROOT_TYPE",
    "TIMESTAMP_TYPE",
    "Role",
    "Root",
    "RootStatus",
    "Timestamp",
    "add_signatures",
    "dump_envelope",
    "load_root",
    "make_timestamp",
    "parse_root",
    "root_status",
    "sign_root",
    "verify_root",
    "verify_root_chain",
    "verify_timestamp",
]

ROOT_TYPE = "auraseal/root"
TIMESTAMP_TYPE = "auraseal/timestamp"
SPEC_VERSION = 1
#: no JSON document of these kinds is ever this large
MAX_DOC_BYTES = 1 << 20


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Root:
    """The ``signed`` part of a root document."""

    version: int
    created: datetime
    expires: datetime | None
    keys: Mapping[str, PublicKey]
    release: Role
    timestamp: Role | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        release: Sequence[PublicKey],
        threshold: int,
        *,
        version: int = 1,
        timestamp: Sequence[PublicKey] = (),
        timestamp_threshold: int = 1,
        expires: timedelta | None = timedelta(days=365),
        now: datetime | None = None,
    ) -> Root:
        t = now or utcnow()
        keys = {k.key_id: k for k in [*release, *timestamp]}
        ts = (
            Role(tuple(sorted({k.key_id for k in timestamp})), timestamp_threshold)
            if timestamp
            else None
        )
        root = cls(
            version=version,
            created=t,
            expires=None if expires is None else t + expires,
            keys=keys,
            release=Role(tuple(sorted({k.key_id for k in release})), threshold),
            timestamp=ts,
        )
        root.check("root")
        return root

    def rotated(
        self,
        *,
        add: Sequence[PublicKey] = (),
        remove: Sequence[PublicKey] = (),
        threshold: int | None = None,
        add_timestamp: Sequence[PublicKey] = (),
        remove_timestamp: Sequence[PublicKey] = (),
        timestamp_threshold: int | None = None,
        expires: timedelta | None = timedelta(days=365),
        now: datetime | None = None,
    ) -> Root:
        """Version N+1 of this root: release keys ``add``-ed and ``remove``-d, timestamp
        keys likewise, thresholds kept unless given; keys no role uses are dropped.
        It still needs signatures by both thresholds (:func:`root_status`)."""
        keys = dict(self.keys)
        release = set(self.release.keyids)
        for k in add:
            keys[k.key_id] = k
            release.add(k.key_id)
        for k in remove:
            if k.key_id not in release:
                raise UsageError("not a release key of this root", "--remove-key")
            release.discard(k.key_id)
        ts_ids = set(self.timestamp.keyids) if self.timestamp is not None else set()
        for k in add_timestamp:
            keys[k.key_id] = k
            ts_ids.add(k.key_id)
        for k in remove_timestamp:
            ts_ids.discard(k.key_id)
        used = release | ts_ids
        ts_threshold = timestamp_threshold or (
            self.timestamp.threshold if self.timestamp is not None else 1
        )
        t = now or utcnow()
        new = replace(
            self,
            version=self.version + 1,
            created=t,
            expires=None if expires is None else t + expires,
            keys={kid: k for kid, k in keys.items() if kid in used},
            release=Role(
                tuple(sorted(release)),
                threshold if threshold is not None else self.release.threshold,
            ),
            timestamp=(
                Role(tuple(sorted(ts_ids)), min(ts_threshold, len(ts_ids))) if ts_ids else None
            ),
        )
        new.check("root")
        return new

    def check(self, where: str) -> None:
        """Raise :class:`ManifestFormatError` for an inconsistent root."""
        if self.version < 1:
            raise ManifestFormatError("root version must be at least 1", where)
        for name, role in (("release", self.release), ("timestamp", self.timestamp)):
            if role is None:
                continue
            if not role.keyids:
                raise ManifestFormatError(f"role '{name}' has no keys", where)
            missing = [k for k in role.keyids if k not in self.keys]
            if missing:
                raise ManifestFormatError(f"role '{name}' names unknown key {missing[0]}", where)
            if not 1 <= role.threshold <= len(set(role.keyids)):
                raise ManifestFormatError(
                    f"role '{name}' threshold {role.threshold} is not within "
                    f"1..{len(set(role.keyids))}",
                    where,
                )

    def policy(self) -> TrustPolicy:
        """Who may sign manifests (and the next root)."""
        return TrustPolicy([self.keys[k] for k in self.release.keyids], self.release.threshold)

    def timestamp_policy(self) -> TrustPolicy | None:
        if self.timestamp is None:
            return None
        return TrustPolicy(
            [self.keys[k] for k in self.timestamp.keyids], self.timestamp.threshold
        )

    def to_dict(self) -> dict[str, Any]:
        roles: dict[str, Any] = {
            "release": {"keyids": list(self.release.keyids), "threshold": self.release.threshold}
        }
        if self.timestamp is not None:
            roles["timestamp"] = {
                "keyids": list(self.timestamp.keyids),
                "threshold": self.timestamp.threshold,
            }
        d: dict[str, Any] = dict(self.extra)
        d.update(
            {
                "_type": ROOT_TYPE,
                "spec_version": SPEC_VERSION,
                "version": self.version,
                "created": format_time(self.created),
                "expires": None if self.expires is None else format_time(self.expires),
                "keys": {
                    kid: {"keytype": "ed25519", "public": k.raw.hex()}
                    for kid, k in sorted(self.keys.items())
                },
                "roles": roles,
            }
        )
        return d

    def digest(self) -> str:
        return canonical_sha256(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Root:
        if not isinstance(d, dict) or d.get("_type") != ROOT_TYPE:
            raise ManifestFormatError(f"not a root document (_type {ROOT_TYPE})", where)
        if d.get("spec_version") != SPEC_VERSION:
            raise ManifestFormatError(f"unsupported spec_version {d.get('spec_version')}", where)
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestFormatError("root 'version' must be an integer", where)
        keys_raw = d.get("keys")
        if not isinstance(keys_raw, dict):
            raise ManifestFormatError("root 'keys' must be an object", where)
        keys: dict[str, PublicKey] = {}
        for kid, spec in keys_raw.items():
            if (
                not isinstance(spec, dict)
                or spec.get("keytype") != "ed25519"
                or not isinstance(spec.get("public"), str)
            ):
                raise ManifestFormatError(f"key {kid} is not an ed25519 key", where)
            try:
                key = PublicKey.from_raw(bytes.fromhex(spec["public"]))
            except (ValueError, ConfigError) as exc:
                raise ManifestFormatError(f"key {kid}: bad public key", where) from exc
            if key.key_id != kid:
                raise ManifestFormatError(f"key id {kid} does not match its key", where)
            keys[kid] = key
        roles = d.get("roles")
        if not isinstance(roles, dict) or set(roles) - {"release", "timestamp"}:
            raise ManifestFormatError("root 'roles' must be release [+ timestamp]", where)

        def role(name: str) -> Role | None:
            r = roles.get(name)
            if r is None:
                return None
            ids, th = (r.get("keyids"), r.get("threshold")) if isinstance(r, dict) else (0, 0)
            if (
                not isinstance(ids, list)
                or not all(isinstance(x, str) for x in ids)
                or not isinstance(th, int)
                or isinstance(th, bool)
            ):
                raise ManifestFormatError(f"role '{name}' is malformed", where)
            return Role(tuple(ids), th)

        release = role("release")
        if release is None:
            raise ManifestFormatError("root has no 'release' role", where)
        created = d.get("created")
        expires = d.get("expires")
        if not isinstance(created, str) or not (expires is None or isinstance(expires, str)):
            raise ManifestFormatError("root 'created'/'expires' must be timestamps", where)
        known = {"_type", "spec_version", "version", "created", "expires", "keys", "roles"}
        root = cls(
            version=version,
            created=parse_time(created, where),
            expires=None if expires is None else parse_time(expires, where),
            keys=keys,
            release=release,
            timestamp=role("timestamp"),
            extra={k: v for k, v in d.items() if k not in known},
        )
        root.check(where)
        return root


def _json(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_DOC_BYTES:
        raise ManifestFormatError("document is larger than 1 MiB", where)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestFormatError(f"not JSON: {exc}", where) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list):
        raise ManifestFormatError("not a signed envelope", where)
    return doc


def parse_root(data: bytes, where: str = "root") -> tuple[Root, dict[str, Any]]:
    """Parse a root envelope *without* checking any signature."""
    doc = _json(data, where)
    return Root.from_dict(doc.get("signed"), where), doc


def dump_envelope(env: Mapping[str, Any]) -> bytes:
    return (json.dumps(env, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sign_root(root: Root, signers: Sequence[Signer]) -> bytes:
    """The root envelope signed by each of ``signers``."""
    root.check("root")
    return dump_envelope(sign_envelope(root.to_dict(), signers))


def add_signatures(data: bytes, signers: Sequence[Signer], where: str = "root") -> bytes:
    """Add ``signers``' signatures to a (draft) root; one per key id."""
    root, doc = parse_root(data, where)
    fresh = sign_envelope(root.to_dict(), signers)["signatures"]
    new_ids = {s["keyid"] for s in fresh}
    kept = [s for s in doc["signatures"] if isinstance(s, dict) and s.get("keyid") not in new_ids]
    return dump_envelope({"signed": doc["signed"], "signatures": kept + fresh})


def _count(doc: Mapping[str, Any], policy: TrustPolicy, where: str) -> int:
    """How many of ``policy``'s keys validly signed (a bad one raises)."""
    probe = TrustPolicy(policy.keys, 1)
    try:
        verify_envelope(doc, probe, where)
    except (ThresholdError, UnknownKeyError):
        return 0
    ids = {k.key_id for k in policy.keys}
    return len({s.get("keyid") for s in doc["signatures"] if s.get("keyid") in ids})


@dataclass(frozen=True)
class RootStatus:
    """How far a (draft) root is from complete."""

    version: int
    own_signed: int
    own_needed: int
    previous_signed: int | None
    previous_needed: int | None

    @property
    def complete(self) -> bool:
        ok = self.own_signed >= self.own_needed
        if self.previous_needed is not None:
            ok = ok and (self.previous_signed or 0) >= self.previous_needed
        return ok


def root_status(data: bytes, previous: Root | None = None, where: str = "root") -> RootStatus:
    root, doc = parse_root(data, where)
    own = _count(doc, root.policy(), where)
    prev = None if previous is None else _count(doc, previous.policy(), where)
    return RootStatus(
        root.version,
        own,
        root.release.threshold,
        prev,
        None if previous is None else previous.release.threshold,
    )


def verify_root(
    data: bytes,
    trusted: Root | None = None,
    *,
    where: str = "root",
    now: datetime | None = None,
    check_expiry: bool = True,
) -> Root:
    """Verify a root document and return it.

    Without ``trusted`` (a root the user gives as the anchor) it must be
    signed by a threshold of its own release keys. With ``trusted`` it must be
    version ``trusted.version + 1`` and signed by a threshold of ``trusted``'s
    release keys **and** of its own (a draft short of either is refused). An
    expired root raises :class:`ExpiredError` when ``check_expiry`` (the
    intermediate steps of a walk are not checked for expiry, only the last).
    """
    root, doc = parse_root(data, where)
    if trusted is not None:
        if root.version != trusted.version + 1:
            raise RollbackError(
                f"root version {root.version} does not follow trusted version {trusted.version}",
                where,
            )
        try:
            verify_envelope(doc, trusted.policy(), where)
        except ThresholdError as exc:
            raise ThresholdError(
                f"root v{root.version} is not signed by enough keys of root "
                f"v{trusted.version} ({exc.what}): a draft",
                where,
            ) from exc
        except UnknownKeyError as exc:
            raise UnknownKeyError(
                f"root v{root.version} is signed by none of the keys of root v{trusted.version}",
                where,
            ) from exc
    try:
        verify_envelope(doc, root.policy(), where)
    except (ThresholdError, UnknownKeyError) as exc:
        raise ThresholdError(
            f"root v{root.version} is not signed by enough of its own keys ({exc.what}): a draft",
            where,
        ) from exc
    if check_expiry:
        _not_expired(root, now, where)
    return root


def _not_expired(root: Root, now: datetime | None, where: str) -> None:
    moment = now or utcnow()
    if root.expires is not None and root.expires <= moment:
        raise ExpiredError(
            f"root v{root.version} expired at {format_time(root.expires)}", where
        )


def load_root(data: bytes, where: str = "root", now: datetime | None = None) -> Root:
    """A root given as a trust anchor: self-signed to its threshold, not expired."""
    return verify_root(data, None, where=where, now=now)


def verify_root_chain(
    trusted: Root, newer: Sequence[tuple[bytes, str]], now: datetime | None = None
) -> Root:
    """Walk ``newer`` (the documents of versions trusted+1, +2, ...) from
    ``trusted``; each must verify against the one before. The final root
    must not be expired."""
    cur = trusted
    for data, where in newer:
        cur = verify_root(data, cur, where=where, check_expiry=False)
    _not_expired(cur, now, "root")
    return cur


# --- timestamps ------------------------------------------------------------


@dataclass(frozen=True)
class Timestamp:
    """What an online timestamp key vouches for: the current manifest."""

    name: str
    manifest_version: int
    manifest_digest: str
    created: datetime
    expires: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": TIMESTAMP_TYPE,
            "spec_version": SPEC_VERSION,
            "name": self.name,
            "manifest": {"version": self.manifest_version, "digest": self.manifest_digest},
            "created": format_time(self.created),
            "expires": format_time(self.expires),
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Timestamp:
        if not isinstance(d, dict) or d.get("_type") != TIMESTAMP_TYPE:
            raise ManifestFormatError(f"not a timestamp (_type {TIMESTAMP_TYPE})", where)
        m = d.get("manifest")
        name = d.get("name")
        if (
            not isinstance(m, dict)
            or not isinstance(name, str)
            or not isinstance(m.get("version"), int)
            or not isinstance(m.get("digest"), str)
            or not isinstance(d.get("created"), str)
            or not isinstance(d.get("expires"), str)
        ):
            raise ManifestFormatError("timestamp is malformed", where)
        return cls(
            name=name,
            manifest_version=m["version"],
            manifest_digest=m["digest"],
            created=parse_time(d["created"], where),
            expires=parse_time(d["expires"], where),
        )


def make_timestamp(
    name: str,
    manifest_version: int,
    manifest_digest: str,
    signers: Sequence[Signer],
    *,
    lifetime: timedelta = timedelta(days=1),
    now: datetime | None = None,
) -> bytes:
    t = now or utcnow()
    ts = Timestamp(name, manifest_version, manifest_digest, t, t + lifetime)
    return dump_envelope(sign_envelope(ts.to_dict(), signers))


def verify_timestamp(
    data: bytes,
    root: Root,
    *,
    name: str,
    manifest_version: int,
    manifest_digest: str,
    where: str = "timestamp",
    now: datetime | None = None,
) -> Timestamp:
    """Check ``data`` is a valid, unexpired timestamp by ``root``'s timestamp
    keys naming exactly this manifest."""
    policy = root.timestamp_policy()
    if policy is None:
        raise ManifestFormatError("the root names no timestamp key", where)
    doc = _json(data, where)
    ts = Timestamp.from_dict(verify_envelope(doc, policy, where), where)
    moment = now or utcnow()
    if ts.expires <= moment:
        raise ExpiredError(
            f"timestamp expired at {format_time(ts.expires)} (frozen mirror?)", where
        )
    if ts.name != name:
        raise PackageMismatchError(f"timestamp is for package '{ts.name}', not '{name}'", where)
    if ts.manifest_version != manifest_version or ts.manifest_digest != manifest_digest:
        raise RollbackError(
            f"timestamp names manifest v{ts.manifest_version} "
            f"({ts.manifest_digest[:16]}), not the v{manifest_version} "
            f"({manifest_digest[:16]}) offered (stale or mixed mirror)",
            where,
        )
    return ts
