"""AuraSeal: integrity-verified, self-healing distribution of files.

The public API is re-exported here; modules starting with ``_`` are private.
Parts: :mod:`auraseal.integrity` (integrity strings), :mod:`auraseal.manifest`
(manifests), :mod:`auraseal.signing` (Ed25519 trust), :mod:`auraseal.sealing`
(sealed packages and repair), :mod:`auraseal.ledger` and :mod:`auraseal.merkle`
(tamper-evident ledger), :mod:`auraseal.server`, :mod:`auraseal.client` and
:mod:`auraseal.web`.
"""

from typing import TYPE_CHECKING, Any

from auraseal._lazy import lazy_attribute
from auraseal._version import VERSION as __version__

if TYPE_CHECKING:
    from auraseal.errors import AuraSealError
    from auraseal.integrity import (
        StreamVerifier,
        auraseal_string,
        hash_bytes,
        hash_file,
        parse_integrity,
        sri_token,
        verify_bytes,
        verify_file,
    )
    from auraseal.manifest import (
        FileEntry,
        Manifest,
        build_manifest,
        dump_signed,
        load_manifest,
        verify_tree,
    )
    from auraseal.signing import (
        PublicKey,
        SigningKey,
        TrustPolicy,
        TrustState,
        generate_keypair,
        load_public_key,
        load_signing_key,
    )

# The names above are imported on first use (PEP 562), so that importing a
# submodule (``auraseal.cli`` for ``auraseal --help``) does not load them all.
_LAZY = {
    "AuraSealError": "auraseal.errors",
    "FileEntry": "auraseal.manifest",
    "Manifest": "auraseal.manifest",
    "PublicKey": "auraseal.signing",
    "SigningKey": "auraseal.signing",
    "StreamVerifier": "auraseal.integrity",
    "TrustPolicy": "auraseal.signing",
    "TrustState": "auraseal.signing",
    "auraseal_string": "auraseal.integrity",
    "build_manifest": "auraseal.manifest",
    "dump_signed": "auraseal.manifest",
    "generate_keypair": "auraseal.signing",
    "hash_bytes": "auraseal.integrity",
    "hash_file": "auraseal.integrity",
    "load_manifest": "auraseal.manifest",
    "load_public_key": "auraseal.signing",
    "load_signing_key": "auraseal.signing",
    "parse_integrity": "auraseal.integrity",
    "sri_token": "auraseal.integrity",
    "verify_bytes": "auraseal.integrity",
    "verify_file": "auraseal.integrity",
    "verify_tree": "auraseal.manifest",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, globals(), name)


__all__ = [
    "AuraSealError",
    "FileEntry",
    "Manifest",
    "PublicKey",
    "SigningKey",
    "StreamVerifier",
    "TrustPolicy",
    "TrustState",
    "__version__",
    "auraseal_string",
    "build_manifest",
    "dump_signed",
    "generate_keypair",
    "hash_bytes",
    "hash_file",
    "load_manifest",
    "load_public_key",
    "load_signing_key",
    "parse_integrity",
    "sri_token",
    "verify_bytes",
    "verify_file",
    "verify_tree",
]
