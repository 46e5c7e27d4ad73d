"""HTTP message signatures for browsers (WICG signature-based SRI, RFC 9421, RFC 9530).

A browser given ``<script integrity="ed25519-<base64 public key>">`` runs the
script only if its response carries

* ``Unencoded-Digest: sha-512=:<base64>:`` (or ``sha-256``; RFC 9530 syntax;
  ``sha-384`` is refused by Chromium) matching the body, and
* ``Signature-Input: <label>=("unencoded-digest";sf);keyid="<same key>";
  tag="ed25519-integrity"[;created=N][;expires=N]`` and
  ``Signature: <label>=:<base64 Ed25519 signature>:`` over the RFC 9421
  signature base::

      "unencoded-digest";sf: sha-512=:<base64>:
      "@signature-params": ("unencoded-digest";sf);keyid="...";tag="ed25519-integrity"...

The signatures are made once, when a package is sealed (or re-signed), and
stored in the signed manifest (``FileEntry.extra["http"]``, docs/FORMAT.md), so
any static host can send them. This module builds, formats, parses and
verifies those headers; it also formats ``Repr-Digest`` values from digests a
manifest already records (no re-hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auraseal.errors import BadSignatureError, MalformedIntegrityError, ManifestFormatError
from auraseal.integrity import AuraSealString, parse_integrity, parse_sri
from auraseal.signing import PublicKey, Signer

__all__ = [
    "FAIL",
    "HTTP_ALGORITHMS",
    "PASS",
    "SIGNATURE_TAG",
    "UNVERIFIED",
    "FileSignatures",
    "HTTPSignature",
    "browser_verdict",
    "digest_field",
    "parse_digest_field",
    "parse_signature_headers",
    "read_header_file",
    "repr_digest_for",
    "sign_digest",
    "signature_base",
    "signature_params",
    "verify_signature_headers",
]

#: Our hash names → RFC 9530 algorithm keys that browsers accept for Unencoded-Digest.
HTTP_ALGORITHMS: dict[str, str] = {"sha256": "sha-256", "sha512": "sha-512"}
_FROM_HTTP = {v: k for k, v in HTTP_ALGORITHMS.items()}
SIGNATURE_TAG = "ed25519-integrity"
#: tags a browser accepts for signature-based SRI
ACCEPTED_TAGS = (SIGNATURE_TAG, "sri")
COMPONENT = '"unencoded-digest";sf'
_LABEL = re.compile(r"^[a-z*][a-z0-9_\-.*]*$")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def digest_field(algorithm: str, digest: bytes) -> str:
    """One RFC 9530 dictionary member: ``sha-512=:<base64>:``."""
    return f"{HTTP_ALGORITHMS[algorithm]}=:{_b64(digest)}:"


def parse_digest_field(value: str, where: str = "digest header") -> dict[str, bytes]:
    """An RFC 9530 ``*-Digest`` dictionary → {our algorithm name: raw digest};
    members of other algorithms are skipped."""
    out: dict[str, bytes] = {}
    for member in _split_members(value):
        key, sep, val = member.partition("=")
        key = key.strip().lower()
        val = val.strip().split(";", 1)[0].strip()
        if not sep or key not in _FROM_HTTP:
            continue
        out[_FROM_HTTP[key]] = _byte_sequence(val, where)
    return out


def _split_members(value: str) -> list[str]:
    """Split a structured-field dictionary at top-level commas (not inside
    quotes or parentheses)."""
    out: list[str] = []
    depth, quoted, start = 0, False, 0
    i = 0
    while i < len(value):
        c = value[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    tail = value[start:].strip()
    if tail:
        out.append(tail)
    return [m for m in out if m]


def _byte_sequence(val: str, where: str) -> bytes:
    if len(val) < 2 or val[0] != ":" or val[-1] != ":":
        raise BadSignatureError("expected a byte sequence :<base64>:", where)
    try:
        return base64.b64decode(val[1:-1], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadSignatureError("byte sequence is not base64", where) from exc


def _digest_of(integrity: str) -> tuple[str, bytes] | None:
    """The (algorithm, digest) an Unencoded-Digest can carry, from an integrity
    string (the primary digest of the strongest algorithm), or None for sha384."""
    integ = parse_integrity(integrity)
    if integ.algorithm not in HTTP_ALGORITHMS:
        return None
    digest = integ.primary if isinstance(integ, AuraSealString) else integ.digests[0]
    return integ.algorithm, digest


def repr_digest_for(integrities: Iterable[str], wanted: Sequence[str] | None = None) -> str | None:
    """A ``Repr-Digest`` value from recorded integrity strings (no hashing):
    one member per algorithm browsers and RFC 9530 know (sha-256, sha-512).
    ``wanted`` (RFC 9530 algorithm keys, from ``Want-Repr-Digest``) narrows it
    when it names any algorithm we have. None when nothing applies."""
    members: dict[str, str] = {}
    for text in integrities:
        got = _digest_of(text)
        if got is not None:
            members.setdefault(HTTP_ALGORITHMS[got[0]], digest_field(*got))
    if wanted:
        picked = {k: v for k, v in members.items() if k in wanted}
        members = picked or members
    return ", ".join(members[k] for k in sorted(members)) if members else None


def parse_want(value: str) -> list[str]:
    """``Want-Repr-Digest: sha-512=3, sha-256=1, md5=0`` → algorithm keys with a
    non-zero preference, most wanted first."""
    prefs: list[tuple[int, str]] = []
    for member in _split_members(value):
        key, sep, val = member.partition("=")
        try:
            weight = int(val.strip()) if sep else 1
        except ValueError:
            continue
        if weight > 0:
            prefs.append((weight, key.strip().lower()))
    return [k for _, k in sorted(prefs, key=lambda p: -p[0])]


# --- signatures --------------------------------------------------------------------


def signature_params(
    keyid: str, created: datetime | None = None, expires: datetime | None = None,
    tag: str = SIGNATURE_TAG,
) -> str:
    """The ``@signature-params`` value (an inner list with parameters)."""
    out = f'({COMPONENT});keyid="{keyid}";tag="{tag}"'
    if created is not None:
        out += f";created={int(created.timestamp())}"
    if expires is not None:
        out += f";expires={int(expires.timestamp())}"
    return out


def signature_base(unencoded_digest: str, params: str) -> bytes:
    """The RFC 9421 signature base for the one covered component (as Chromium
    builds it: the component identifier keeps its ``;sf`` parameter)."""
    return f"{COMPONENT}: {unencoded_digest}\n\"@signature-params\": {params}".encode()


@dataclass(frozen=True)
class HTTPSignature:
    """One signature: its label, ``Signature-Input`` member value, and bytes."""

    label: str
    params: str
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {"label": self.label, "params": self.params, "signature": _b64(self.signature)}


@dataclass(frozen=True)
class FileSignatures:
    """What a file response needs for signature-based SRI."""

    unencoded_digest: str
    signatures: tuple[HTTPSignature, ...]

    def headers(self) -> tuple[tuple[str, str], ...]:
        if not self.signatures:
            return (("Unencoded-Digest", self.unencoded_digest),)
        return (
            ("Unencoded-Digest", self.unencoded_digest),
            ("Signature-Input", ", ".join(f"{s.label}={s.params}" for s in self.signatures)),
            ("Signature", ", ".join(f"{s.label}=:{_b64(s.signature)}:" for s in self.signatures)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "unencoded_digest": self.unencoded_digest,
            "signatures": [s.to_dict() for s in self.signatures],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> FileSignatures:
        if not isinstance(d, dict) or not isinstance(d.get("unencoded_digest"), str):
            raise ManifestFormatError("http must be an object with 'unencoded_digest'", where)
        sigs = d.get("signatures", [])
        if not isinstance(sigs, list):
            raise ManifestFormatError("http.signatures must be a list", where)
        out = []
        for i, s in enumerate(sigs):
            sw = f"{where}.signatures[{i}]"
            if not isinstance(s, dict) or not all(
                isinstance(s.get(k), str) for k in ("label", "params", "signature")
            ):
                raise ManifestFormatError("signature needs label, params, signature", sw)
            if not _LABEL.match(s["label"]):
                raise ManifestFormatError("bad signature label", sw)
            try:
                raw = base64.b64decode(s["signature"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ManifestFormatError("signature is not base64", sw) from exc
            out.append(HTTPSignature(s["label"], s["params"], raw))
        return cls(d["unencoded_digest"], tuple(out))


def sign_digest(
    integrity: str,
    keys: Sequence[Signer],
    created: datetime | None = None,
    expires: datetime | None = None,
) -> FileSignatures | None:
    """Sign a file's recorded digest for HTTP by each of ``keys`` (labels
    ``sig0``, ``sig1``, ...). None when the digest is sha384 (browsers refuse it)."""
    got = _digest_of(integrity)
    if got is None:
        return None
    ud = digest_field(*got)
    sigs = []
    for i, key in enumerate(keys):
        params = signature_params(_b64(key.public.raw), created, expires)
        sigs.append(HTTPSignature(f"sig{i}", params, key.sign(signature_base(ud, params))))
    return FileSignatures(ud, tuple(sigs))


# --- verification (auraseal check --signature-headers) -------------------------------


@dataclass(frozen=True)
class _Input:
    label: str
    params: str
    components: tuple[str, ...]
    keyid: str | None
    tag: str | None
    created: int | None
    expires: int | None


_PARAM = re.compile(r';\s*([a-z][a-z0-9_\-.*]*)(?:=("(?:[^"\\]|\\.)*"|[^;,\s]+))?')


def _parse_input(label: str, value: str, where: str) -> _Input:
    value = value.strip()
    if not value.startswith("("):
        raise BadSignatureError("Signature-Input member is not an inner list", where)
    close = value.find(")")
    if close < 0:
        raise BadSignatureError("unterminated inner list in Signature-Input", where)
    comps = tuple(value[1:close].split())
    params: dict[str, str] = {}
    for m in _PARAM.finditer(value[close + 1 :]):
        params[m.group(1)] = m.group(2) or "?1"

    def text(name: str) -> str | None:
        v = params.get(name)
        return v[1:-1] if v is not None and v.startswith('"') else v

    def num(name: str) -> int | None:
        v = params.get(name)
        return int(v) if v is not None and v.lstrip("-").isdigit() else None

    return _Input(label, value, comps, text("keyid"), text("tag"), num("created"), num("expires"))


def parse_signature_headers(
    headers: Mapping[str, str], where: str = "signature headers"
) -> tuple[str | None, list[tuple[_Input, bytes]]]:
    """``(Unencoded-Digest value, [(Signature-Input member, signature bytes)])``
    from response headers (names case-insensitive)."""
    low = {k.lower(): v for k, v in headers.items()}
    sigs: dict[str, bytes] = {}
    for member in _split_members(low.get("signature", "")):
        label, sep, val = member.partition("=")
        if sep:
            try:
                sigs[label.strip()] = _byte_sequence(val.strip(), where)
            except BadSignatureError:
                continue
    out = []
    for member in _split_members(low.get("signature-input", "")):
        label, sep, val = member.partition("=")
        label = label.strip()
        if sep and label in sigs:
            try:
                out.append((_parse_input(label, val, where), sigs[label]))
            except BadSignatureError:
                continue
    return low.get("unencoded-digest"), out


def verify_signature_headers(
    body_digests: Mapping[str, bytes] | bytes,
    headers: Mapping[str, str],
    public_key: bytes,
    now: datetime,
    where: str = "signature headers",
) -> None:
    """Give the browser's verdict for ``integrity="ed25519-<public_key>"``:
    the headers' Unencoded-Digest must match the body (``body_digests``:
    the body itself, or {algorithm: digest}) and a signature by ``public_key``
    (keyid = its base64), tag ``ed25519-integrity`` or ``sri``, covering
    exactly ``"unencoded-digest";sf``, not expired, must verify. Raises
    :class:`~auraseal.errors.BadSignatureError` otherwise."""
    ud, inputs = parse_signature_headers(headers, where)
    if ud is None:
        raise BadSignatureError("no Unencoded-Digest header", where)
    claimed = parse_digest_field(ud, where)
    if not claimed:
        raise BadSignatureError("Unencoded-Digest has no sha-256 or sha-512 member", where)
    for alg, want in claimed.items():
        have = (
            hashlib.new(alg, body_digests).digest()
            if isinstance(body_digests, bytes | bytearray)
            else body_digests.get(alg)
        )
        if have is None:
            raise BadSignatureError(f"no {alg} digest of the body to compare", where)
        if not hmac.compare_digest(have, want):
            raise BadSignatureError("Unencoded-Digest does not match the body", where)
    keyid = _b64(public_key)
    pub = PublicKey.from_raw(public_key)
    stamp = int(now.timestamp())
    reasons = []
    for inp, sig in inputs:
        if inp.keyid != keyid:
            reasons.append(f"{inp.label}: other key")
            continue
        if inp.components != (COMPONENT,) or inp.tag not in ACCEPTED_TAGS:
            reasons.append(f"{inp.label}: not an integrity signature")
            continue
        if inp.expires is not None and inp.expires < stamp:
            reasons.append(f"{inp.label}: expired")
            continue
        try:
            pub.verify(sig, signature_base(ud.strip(), inp.params), where)
        except BadSignatureError:
            reasons.append(f"{inp.label}: signature does not verify")
            continue
        return
    raise BadSignatureError(
        "no valid signature by the key: " + ("; ".join(reasons) or "no signatures"), where
    )


# --- the browser's verdict (SRI parity) ------------------------------------------------

#: A browser runs the resource (it matched) / blocks it / runs it unchecked
#: (no usable token at all: AuraSeal refuses those, docs/WEB.md).
PASS, FAIL, UNVERIFIED = "pass", "fail", "unverified"


def browser_verdict(
    integrity: str,
    body: bytes,
    headers: Mapping[str, str] | None,
    now: datetime,
) -> tuple[str, str]:
    """What Chromium does with ``<script integrity=INTEGRITY>`` whose response
    is ``body`` with ``headers``: ``(verdict, reason)``, verdict one of
    :data:`PASS`, :data:`FAIL`, :data:`UNVERIFIED`.

    Hash tokens: the strongest algorithm's digests, one must match. ``ed25519-``
    tokens: a valid signature by one of those keys (see
    :func:`verify_signature_headers`); with both kinds, both must hold. A
    response whose ``Unencoded-Digest`` does not match its body is blocked
    whatever the integrity says (Chromium enforces the header itself)."""
    meta = parse_sri(integrity)
    if headers is not None:
        low = {k.lower(): v for k, v in headers.items()}
        if "unencoded-digest" in low:
            try:
                claimed = parse_digest_field(low["unencoded-digest"])
            except BadSignatureError as exc:
                return FAIL, exc.what
            for alg, want in claimed.items():
                if not hmac.compare_digest(hashlib.new(alg, body).digest(), want):
                    return FAIL, "Unencoded-Digest does not match the body"
    if not meta.tokens and not meta.signatures:
        return UNVERIFIED, "no usable integrity token: a browser would run it unchecked"
    if meta.tokens and not meta.matches(hashlib.new(meta.algorithm, body).digest()):
        return FAIL, f"no {meta.algorithm} token matches the body"
    if meta.signatures:
        if headers is None:
            return FAIL, "an ed25519 token needs the response's signature headers"
        reasons = []
        for key in meta.signatures:
            if len(key) != 32:
                reasons.append("ed25519 token is not a 32-byte key")
                continue
            try:
                verify_signature_headers(body, headers, key, now)
            except BadSignatureError as exc:
                reasons.append(exc.what)
                continue
            return PASS, "signature verified" + (" and digest matched" if meta.tokens else "")
        return FAIL, "; ".join(reasons)
    return PASS, "digest matched"


def read_header_file(data: bytes, where: str) -> dict[str, str]:
    """Response headers from a file: ``Name: value`` lines (a status line, as
    ``curl -D`` writes, and blank lines are skipped; repeats joined with ``, ``)."""
    out: dict[str, str] = {}
    for line in data.decode("latin-1").splitlines():
        if not line.strip() or line.startswith("HTTP/"):
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise MalformedIntegrityError("expected 'Name: value' header lines", where)
        key = name.strip().lower()
        out[key] = f"{out[key]}, {value.strip()}" if key in out else value.strip()
    return out
