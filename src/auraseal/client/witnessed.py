"""The fetch policy "the publish of this version is in a witnessed log".

``auraseal fetch --require-witnessed-log LOGKEY --witness VKEY ... --witness-threshold K``
(docs/CLIENT.md, docs/LEDGER.md §1.11): before any file is installed, the client
gets ``ledger-proof.json`` from beside the package's files (``auraseal serve``
makes it: an ``auraseal-ledger-proof`` bundle, docs/LEDGER.md §1.7, whose
checkpoint carries the witnesses' cosignatures) and checks

* the checkpoint's signature by the log key ``LOGKEY``;
* ``K`` valid cosignatures by distinct listed witnesses (a listed witness's
  cosignature that does not verify refuses the bundle outright);
* the inclusion proof of the entry in the checkpoint's tree (and the entry's block);
* that the entry is a ``server.publish`` of this package, of this version and of
  this manifest (its ``manifest_sha256``), its ``data_hash`` the hash of that record.

Any failure is an :class:`~auraseal.errors.UnwitnessedError` (exit 3): nothing is
installed.  A network failure on the way stays a :class:`NetworkError` (exit 5).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auraseal.client.http import Fetcher
from auraseal.errors import AuraSealError, NetworkError, UnwitnessedError, UsageError
from auraseal.ledger.checkpoint import verify_bundle
from auraseal.ledger.note import NoteVerifier
from auraseal.manifest import Manifest

__all__ = ["LEDGER_PROOF_NAME", "MAX_PROOF_BYTES", "WitnessPolicy", "check_publish_proof",
           "require_witnessed"]

#: the bundle's name under the package's files (``/packages/<name>/files/``)
LEDGER_PROOF_NAME = "ledger-proof.json"
#: a bundle holds O(log n) hashes plus one block's leaf hashes: far below this
MAX_PROOF_BYTES = 4 << 20
#: the ledger entry type ``auraseal serve`` records for a publish
PUBLISH_ENTRY = "server.publish"


@dataclass(frozen=True)
class WitnessPolicy:
    """The log key that signs checkpoints, the trusted witnesses and how many of
    them must have cosigned."""

    log_key: NoteVerifier
    witnesses: tuple[NoteVerifier, ...] = ()
    threshold: int = 0

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise UsageError("a witnessed log needs at least one --witness and "
                             "--witness-threshold of at least 1", "--witness-threshold")
        if self.threshold > len(self.witnesses):
            raise UsageError(
                f"--witness-threshold {self.threshold} needs that many --witness keys",
                "--witness-threshold")


def check_publish_proof(bundle: Mapping[str, Any], manifest: Manifest, digest: str,
                        policy: WitnessPolicy, where: str) -> dict[str, Any]:
    """Check ``bundle`` proves, in a log signed by ``policy.log_key`` and cosigned by
    ``policy.threshold`` of its witnesses, the publish of ``manifest`` (whose
    :func:`~auraseal.manifest.manifest_digest` is ``digest``). Returns the
    :func:`verify_bundle` summary; raises :class:`UnwitnessedError`."""
    entry = bundle.get("entry")
    meta = entry.get("metadata") if isinstance(entry, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(meta, Mapping):
        raise UnwitnessedError("the ledger proof holds no entry", where)
    if entry.get("entry_type") != PUBLISH_ENTRY:
        raise UnwitnessedError(
            f"the ledger entry is a {str(entry.get('entry_type'))[:40]!r} event, not a publish",
            where)
    wanted = {"package": manifest.name, "version": manifest.version, "manifest_sha256": digest}
    for key, value in wanted.items():
        got = meta.get(key)
        if type(got) is not type(value) or got != value:  # no True for 1
            raise UnwitnessedError(
                f"the ledger entry records the publish of {key} {got!r}, "
                f"not {value!r}", where)
    try:
        # the entry's data_hash must be the hash of the very record checked above
        return verify_bundle(bundle, policy.log_key.name, policy.log_key,
                             original_data=dict(meta), where=where,
                             witnesses=policy.witnesses, witness_threshold=policy.threshold)
    except AuraSealError as exc:
        raise UnwitnessedError(f"ledger proof refused: {exc.what}", where) from exc


def require_witnessed(fetcher: Fetcher, base: str, manifest: Manifest, digest: str,
                      policy: WitnessPolicy) -> dict[str, Any]:
    """Fetch ``<base>ledger-proof.json`` and :func:`check_publish_proof` it."""
    url = base + LEDGER_PROOF_NAME
    try:
        got = fetcher.get_small(url, max_bytes=MAX_PROOF_BYTES)
    except NetworkError as exc:
        if exc.what.startswith("HTTP 4"):
            raise UnwitnessedError(f"no ledger proof served ({exc.what})", url) from exc
        raise
    try:
        bundle = json.loads(got.data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnwitnessedError(f"the ledger proof is not JSON: {exc}", url) from exc
    if not isinstance(bundle, dict):
        raise UnwitnessedError("the ledger proof is not a JSON object", url)
    return check_publish_proof(bundle, manifest, digest, policy, url)

