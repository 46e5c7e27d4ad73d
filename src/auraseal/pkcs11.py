"""Ed25519 keys held in a PKCS#11 token (hardware key, HSM, SoftHSM2).

A key is named by an RFC 7512 URI such as
``pkcs11:token=release;object=k1?module-path=/usr/lib/softhsm/libsofthsm2.so``.
Path attributes used: ``token`` (label), ``object`` (label), ``id`` (hex,
percent-encoded bytes), ``serial`` (token serial); query attributes:
``module-path`` (the PKCS#11 library) and ``pin-value``. Any other attribute
is refused rather than ignored, so a typo never selects another key.

The signature mechanism is ``CKM_EDDSA`` (pure Ed25519), so a signature made
in the token verifies with :class:`auraseal.signing.PublicKey` exactly like
one made from a key file. The library reads no environment: the PIN is an
argument (the CLI takes it from ``--pin-file`` or ``$AURASEAL_PKCS11_PIN``).
Uses ``python-pkcs11`` (PyPI), tested against Debian's SoftHSM2 2.6.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pkcs11

from auraseal.errors import ConfigError, MissingSecretError, NotFoundError, TrustError
from auraseal.signing import PublicKey

__all__ = [
    "DEFAULT_MODULES",
    "Pkcs11Signer",
    "Pkcs11Uri",
    "export_public",
    "generate_ed25519",
    "open_signer",
    "parse_uri",
]

#: tried in order when neither the URI nor the caller names a module
DEFAULT_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
)
#: DER of the Ed25519 curve OID 1.3.101.112 (``CKA_EC_PARAMS``)
_ED25519_PARAMS = bytes.fromhex("06032b6570")
_PATH_ATTRS = {"token", "object", "id", "serial", "type"}
_QUERY_ATTRS = {"module-path", "pin-value", "module-name"}


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI AuraSeal uses."""

    token: str | None = None
    object: str | None = None
    id: bytes | None = None
    serial: str | None = None
    module_path: str | None = None
    pin_value: str | None = None


def _text(raw: str, where: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("PKCS#11 URI attribute is not UTF-8", where) from exc


def parse_uri(uri: str) -> Pkcs11Uri:
    """Parse ``pkcs11:path-attrs[?query-attrs]`` (RFC 7512 §2.3)."""
    where = uri.split("?", 1)[0]
    if not uri.startswith("pkcs11:"):
        raise ConfigError("not a PKCS#11 URI (pkcs11:...)", where)
    body = uri[len("pkcs11:"):]
    path, _, query = body.partition("?")
    vals: dict[str, str] = {}
    idv: bytes | None = None
    for part in (p for p in path.split(";") if p):
        name, eq, value = part.partition("=")
        if not eq or name not in _PATH_ATTRS:
            raise ConfigError(f"unsupported PKCS#11 URI path attribute {name!r}", where)
        if name == "id":
            idv = unquote_to_bytes(value)
        elif name == "type":
            if value not in ("private", "public"):
                raise ConfigError(f"PKCS#11 URI type={value} is not a key", where)
        else:
            vals[name] = _text(value, where)
    q: dict[str, str] = {}
    for part in (p for p in query.split("&") if p):
        name, eq, value = part.partition("=")
        if not eq or name not in _QUERY_ATTRS:
            raise ConfigError(f"unsupported PKCS#11 URI query attribute {name!r}", where)
        q[name] = _text(value, where)
    if "object" not in vals and idv is None:
        raise ConfigError("PKCS#11 URI names no key (object=... or id=...)", where)
    return Pkcs11Uri(
        token=vals.get("token"),
        object=vals.get("object"),
        id=idv,
        serial=vals.get("serial"),
        module_path=q.get("module-path"),
        pin_value=q.get("pin-value"),
    )


def _module(uri: Pkcs11Uri, module: str | None, where: str) -> str:
    path = uri.module_path or module
    if path:
        if not Path(path).is_file():
            raise NotFoundError("PKCS#11 module not found", path)
        return path
    for candidate in DEFAULT_MODULES:
        if Path(candidate).is_file():
            return candidate
    raise ConfigError("no PKCS#11 module: give ?module-path=... in the URI", where)


def _pkcs11() -> Any:
    return pkcs11


_LIBS: dict[str, Any] = {}
_LIBS_LOCK = threading.Lock()


def _lib(path: str) -> Any:
    # a PKCS#11 module may be initialised once per process; python-pkcs11
    # refuses a second lib() of the same path, so share the handle
    with _LIBS_LOCK:
        if path not in _LIBS:
            _LIBS[path] = _pkcs11().lib(path)
        return _LIBS[path]


def _token(lib: Any, uri: Pkcs11Uri, where: str) -> Any:
    tokens = [
        t
        for t in lib.get_tokens()
        if (uri.token is None or t.label == uri.token)
        and (uri.serial is None or _serial(t) == uri.serial)
    ]
    if not tokens:
        raise NotFoundError("no PKCS#11 token matches", where)
    if len(tokens) > 1:
        raise ConfigError("several PKCS#11 tokens match; add token=... or serial=...", where)
    return tokens[0]


def _serial(token: Any) -> str:
    raw = token.serial
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    return text.strip()


def _public_raw(point: bytes, where: str) -> bytes:
    # CKA_EC_POINT of an Edwards key: the 32 raw bytes, DER OCTET STRING wrapped
    # (SoftHSM2, the v3.0 spec's wording) or bare (some tokens)
    if len(point) == 34 and point[0] == 0x04 and point[1] == 32:
        return point[2:]
    if len(point) == 32:
        return point
    raise ConfigError("token's public key is not an Ed25519 point", where)


class Pkcs11Signer:
    """An Ed25519 private key in a token; a :class:`~auraseal.signing.Signer`.

    Each :meth:`sign` opens a session, logs in with the PIN, signs and closes
    it: no session (and so no login, which PKCS#11 shares across all of a
    process's sessions) outlives a signature."""

    def __init__(
        self, token: Any, uri: Pkcs11Uri, pin: str, public: PublicKey, where: str
    ) -> None:
        self._token = token
        self._uri = uri
        self._pin = pin
        self._lock = threading.Lock()
        self.public = public
        self.key_id = public.key_id
        self.where = where

    def sign(self, data: bytes) -> bytes:
        p11 = _pkcs11()
        with self._lock, _session(self._token, self._pin, self.where) as session:
            priv = _one_private(session, self._uri, self.where)
            try:
                sig = bytes(priv.sign(data, mechanism=p11.Mechanism.EDDSA))
            except p11.PKCS11Error as exc:
                what = f"token refused to sign: {type(exc).__name__}"
                raise TrustError(what, self.where) from exc
        # never hand out a signature that does not verify (wrong key, broken token)
        self.public.verify(sig, data, self.where)
        return sig

    def close(self) -> None:
        """Nothing stays open between signatures; kept for ``with``."""

    def __enter__(self) -> Pkcs11Signer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.key_id[:16]})"


@contextmanager
def _session(token: Any, pin: str, where: str, rw: bool = False) -> Iterator[Any]:
    p11 = _pkcs11()
    try:
        session = token.open(user_pin=pin, rw=rw)
    except p11.PKCS11Error as exc:
        raise TrustError(f"cannot log in to the token: {type(exc).__name__}", where) from exc
    try:
        yield session
    finally:
        session.close()


def _find(session: Any, cls: Any, uri: Pkcs11Uri) -> list[Any]:
    p11 = _pkcs11()
    attrs: dict[Any, Any] = {
        p11.Attribute.CLASS: cls,
        p11.Attribute.KEY_TYPE: p11.KeyType.EC_EDWARDS,
    }
    if uri.object is not None:
        attrs[p11.Attribute.LABEL] = uri.object
    if uri.id is not None:
        attrs[p11.Attribute.ID] = uri.id
    return list(session.get_objects(attrs))


def _one_private(session: Any, uri: Pkcs11Uri, where: str) -> Any:
    privs = _find(session, _pkcs11().ObjectClass.PRIVATE_KEY, uri)
    if not privs:
        raise NotFoundError("no Ed25519 private key matches in the token", where)
    if len(privs) > 1:
        raise ConfigError("several keys match; add id=... to the URI", where)
    return privs[0]


def open_signer(uri: str, *, pin: str | None = None, module: str | None = None) -> Pkcs11Signer:
    """Find the Ed25519 key ``uri`` names (logging in with ``pin`` to check
    the PIN and read its public key) and return a signer for it."""
    p11 = _pkcs11()
    parsed = parse_uri(uri)
    where = uri.split("?", 1)[0]
    secret = pin if pin is not None else parsed.pin_value
    if secret is None:
        raise MissingSecretError(
            "the token needs a PIN (--pin-file or $AURASEAL_PKCS11_PIN)", where
        )
    lib = _lib(_module(parsed, module, where))
    token = _token(lib, parsed, where)
    with _session(token, secret, where) as session:
        _one_private(session, parsed, where)
        pubs = _find(session, p11.ObjectClass.PUBLIC_KEY, parsed)
        if len(pubs) != 1:
            raise NotFoundError("no single matching Ed25519 public key in the token", where)
        public = PublicKey.from_raw(_public_raw(bytes(pubs[0][p11.Attribute.EC_POINT]), where))
    return Pkcs11Signer(token, parsed, secret, public, where)


def export_public(uri: str, *, pin: str | None = None, module: str | None = None) -> PublicKey:
    """The public key of the key ``uri`` names (for ``--trusted-key`` files)."""
    with open_signer(uri, pin=pin, module=module) as s:
        return s.public


def generate_ed25519(
    token_label: str, label: str, *, pin: str, module: str | None = None, key_id: bytes = b""
) -> PublicKey:
    """Generate a persistent, non-extractable Ed25519 key pair inside a token."""
    p11 = _pkcs11()
    where = f"pkcs11:token={token_label};object={label}"
    lib = _lib(_module(Pkcs11Uri(), module, where))
    token = _token(lib, Pkcs11Uri(token=token_label), where)
    with _session(token, pin, where, rw=True) as session:
        pub, _priv = session.generate_keypair(
            p11.KeyType.EC_EDWARDS,
            mechanism=p11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            store=True,
            label=label,
            id=key_id or label.encode(),
            public_template={p11.Attribute.EC_PARAMS: _ED25519_PARAMS},
            private_template={
                p11.Attribute.SENSITIVE: True,
                p11.Attribute.EXTRACTABLE: False,
                p11.Attribute.SIGN: True,
            },
        )
        return PublicKey.from_raw(_public_raw(bytes(pub[p11.Attribute.EC_POINT]), where))
