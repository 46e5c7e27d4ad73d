"""AuraSeal: integrity-verified, self-healing distribution of files.

The public API is re-exported here; modules starting with ``_`` are private.
Parts: :mod:`auraseal.integrity` (integrity strings), :mod:`auraseal.manifest`
(manifests), :mod:`auraseal.signing` (Ed25519 trust), :mod:`auraseal.sealing`
(sealed packages and repair), :mod:`auraseal.ledger` and :mod:`auraseal.merkle`
(tamper-evident ledger), :mod:`auraseal.server`, :mod:`auraseal.client` and
:mod:`auraseal.web`.
"""

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

__version__ = "0.1.0"

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
